#include "xrmeta/saved_model.hpp"

#include <algorithm>
#include <fstream>
#include <stdexcept>

#include "xrmeta/search.hpp"

namespace xrmeta {
namespace {

const NpyArray& get(const std::map<std::string, NpyArray>& z, const std::string& name, const std::string& file) {
    auto it = z.find(name);
    if (it == z.end()) throw NpzError(file + ": no array " + name + " (saved by an older xrmeta? load and save it again)");
    return it->second;
}

}  // namespace

SavedModel SavedModel::load(const std::string& dir) {
    SavedModel m;
    const std::string cat_file = dir + "/catalog.npz", lay_file = dir + "/layouts.npz";
    m.catalog_ = read_npz(cat_file);
    m.layouts_ = read_npz(lay_file);
    auto c = [&](const char* name) -> const NpyArray& { return get(m.catalog_, name, cat_file); };
    auto l = [&](const std::string& name) -> const NpyArray& { return get(m.layouts_, name, lay_file); };

    auto& u = m.upper;
    u.feat_ptr = l("upper_feat_ptr").span<int64_t>("upper_feat_ptr");
    u.feats = l("upper_feats").span<int32_t>("upper_feats");
    u.row_ptr = l("upper_row_ptr").span<int64_t>("upper_row_ptr");
    u.slot = l("upper_slot").span<int32_t>("upper_slot");
    u.val = l("upper_val").span<float>("upper_val");
    u.slot_bias = l("upper_slot_bias").span<float>("upper_slot_bias");
    u.slot_node = l("upper_slot_node").span<int64_t>("upper_slot_node");
    u.node_slot = l("upper_node_slot").span<int64_t>("upper_node_slot");
    u.dense_of_group = l("upper_dense_of_group").span<int32_t>("upper_dense_of_group");
    const auto& dense = l("upper_dense_rows");
    u.dense_rows = dense.span<int32_t>("upper_dense_rows");
    u.dense_width = dense.shape.size() == 2 ? dense.shape[1] : 1;
    u.layer_slot_ptr = l("upper_layer_slot_ptr").span<int64_t>("upper_layer_slot_ptr");
    u.group_slot_ptr = l("upper_group_slot_ptr").span<int64_t>("upper_group_slot_ptr");
    u.post = int(l("upper_post").scalar("upper_post"));

    auto& f = m.leaf;
    f.feat_ptr = c("chunk_feat_ptr").span<int64_t>("chunk_feat_ptr");
    f.feats = c("chunk_feats").span<int32_t>("chunk_feats");
    f.row_ptr = c("chunk_row_ptr").span<int64_t>("chunk_row_ptr");
    f.slot = c("chunk_slot").span<int32_t>("chunk_slot");
    f.val = c("chunk_val").span<float>("chunk_val");
    f.base_slot_ptr = c("base_slot_ptr").span<int64_t>("base_slot_ptr");
    f.w_ptr = c("w_ptr").span<int64_t>("w_ptr");
    f.w_idx = c("w_idx").span<int32_t>("w_idx");
    f.w_val = c("w_val").span<float>("w_val");
    f.slot_bias = c("slot_bias").span<float>("slot_bias");
    f.slot_alive = c("slot_alive").span<bool>("slot_alive");
    f.post = int(l("leaf_post").scalar("leaf_post"));
    f.path_exponent = l("leaf_path_exponent").scalar("leaf_path_exponent");

    auto& s = m.inserted;
    auto i64 = [&](const std::string& name) { return l("inserted_" + name).span<int64_t>("inserted_" + name); };
    auto i32 = [&](const std::string& name) { return l("inserted_" + name).span<int32_t>("inserted_" + name); };
    auto f32 = [&](const std::string& name) { return l("inserted_" + name).span<float>("inserted_" + name); };
    s.row_lo = i64("row_lo"), s.row_hi = i64("row_hi"), s.slot_lo = i64("slot_lo"), s.slot_hi = i64("slot_hi");
    s.feats = i32("feats"), s.row_ptr = i64("row_ptr"), s.local = i32("local"), s.val = f32("val");
    s.slots = i32("slots"), s.head = i32("head"), s.entry_slot = i32("entry_slot"), s.entry_next = i32("entry_next");
    s.cluster_part_ptr = i64("cluster_part_ptr"), s.cluster_parts = i32("cluster_parts");
    s.router_lo = i64("router_lo"), s.router_hi = i64("router_hi");
    s.router_idx = i32("router_idx"), s.router_val = f32("router_val");

    m.n_features_ = int64_t(l("n_features").scalar("n_features"));
    m.beam_size = int64_t(l("beam_size").scalar("beam_size"));
    m.inserted_beam = m.beam_size * int64_t(l("inserted_beam_factor").scalar("inserted_beam_factor"));
    m.split_probe = int64_t(l("split_probe").scalar("split_probe"));
    m.memberships = int64_t(l("memberships").scalar("memberships"));
    m.max_group_size = int64_t(l("max_group_size").scalar("max_group_size"));
    int64_t n_slots = int64_t(l("n_slots").scalar("n_slots"));
    if (f.slot_alive.size != n_slots)
        throw NpzError(dir + ": catalog.npz and layouts.npz are of different states");

    std::ifstream ids(dir + "/catalog_ids.txt");
    for (std::string line; std::getline(ids, line);) m.ids_.push_back(line);
    if (int64_t(m.ids_.size()) != n_slots) throw NpzError(dir + "/catalog_ids.txt: expected one id per slot");
    return m;
}

SearchResult SavedModel::search(const Rows& queries, int64_t k, int64_t n_threads) const {
    if (k < 1) throw std::invalid_argument("k must be >= 1");
    const int64_t n = queries.n_rows(), n_clusters = leaf.base_slot_ptr.size - 1;
    for (int64_t i = 0; i < n; ++i)  // the kernel binary-searches each query's sorted features
        if (!std::is_sorted(queries.idx.data + queries.ptr[i], queries.idx.data + queries.ptr[i + 1]))
            throw std::invalid_argument("query " + std::to_string(i) + ": features must be sorted");
    if (query_problem(queries.idx, queries.val, n_features_) != 0)
        throw std::invalid_argument("queries: a feature outside [0, n_features) or a value that is not finite");
    const int64_t beam = std::min(beam_size, n_clusters);
    const int64_t wide = inserted.entry_slot.size ? std::min(inserted_beam, n_clusters) : beam;
    n_threads = std::max<int64_t>(1, std::min(n_threads, n));
    std::vector<float> dense_q(size_t(n_threads * n_features_), 0.0f);
    SearchResult r{std::vector<int64_t>(size_t(n * k)), std::vector<float>(size_t(n * k))};
    search_topk(queries, upper, leaf, inserted, beam, wide, ALL_ITEMS, k, k * memberships, max_group_size, n_threads,
                {dense_q.data(), int64_t(dense_q.size())}, n_features_, split_probe,
                {r.slots.data(), int64_t(r.slots.size())}, {r.scores.data(), int64_t(r.scores.size())});
    return r;
}

}  // namespace xrmeta
