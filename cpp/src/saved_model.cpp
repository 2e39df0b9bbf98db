#include "xrmeta/saved_model.hpp"

#include <algorithm>
#include <fstream>
#include <stdexcept>
#include <type_traits>

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
    auto l = [&](const std::string& name) -> const NpyArray& { return get(m.layouts_, name, lay_file); };
    auto read = [&](const std::map<std::string, NpyArray>& z, const std::string& file, const std::string& key,
                    auto& field) {
        using T = typename std::decay_t<decltype(field)>::value_type;
        field = get(z, key, file).template span<T>(key);
    };
    // layouts.npz holds "upper_<field>" and "inserted_<field>"; catalog.npz the observed items' chunks as
    // "chunk_<field>" and the other leaf arrays as "<field>"
#define XRMETA_UPPER(T, name) read(m.layouts_, lay_file, "upper_" #name, m.upper.name);
#define XRMETA_CHUNK(T, name) read(m.catalog_, cat_file, "chunk_" #name, m.leaf.name);
#define XRMETA_LEAF(T, name) read(m.catalog_, cat_file, #name, m.leaf.name);
#define XRMETA_INSERTED(T, name) read(m.layouts_, lay_file, "inserted_" #name, m.inserted.name);
    XRMETA_UPPER_FIELDS(XRMETA_UPPER)
    XRMETA_FEATURE_MAJOR_FIELDS(XRMETA_CHUNK)
    XRMETA_LEAF_OWN_FIELDS(XRMETA_LEAF)
    XRMETA_INSERTED_FIELDS(XRMETA_INSERTED)
#undef XRMETA_UPPER
#undef XRMETA_CHUNK
#undef XRMETA_LEAF
#undef XRMETA_INSERTED
    const auto& dense = l("upper_dense_rows");
    m.upper.dense_width = dense.shape.size() == 2 ? dense.shape[1] : 1;
    m.upper.post = int(l("upper_post").scalar("upper_post"));
    m.leaf.post = int(l("leaf_post").scalar("leaf_post"));
    m.leaf.path_exponent = l("leaf_path_exponent").scalar("leaf_path_exponent");

    m.n_features_ = int64_t(l("n_features").scalar("n_features"));
    m.beam_size = int64_t(l("beam_size").scalar("beam_size"));
    m.inserted_beam = m.beam_size * int64_t(l("inserted_beam_factor").scalar("inserted_beam_factor"));
    m.split_probe = int64_t(l("split_probe").scalar("split_probe"));
    m.memberships = int64_t(l("memberships").scalar("memberships"));
    m.max_group_size = int64_t(l("max_group_size").scalar("max_group_size"));
    int64_t n_slots = int64_t(l("n_slots").scalar("n_slots"));
    if (m.leaf.slot_alive.size != n_slots)
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
