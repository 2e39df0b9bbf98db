// Bindings of the cold-start kernels (cpp/include/xrmeta/coldstart.hpp, meta.hpp): the argument order and
// results of their numba oracles in `xrmeta/kernels/coldstart.py` and `kernels/meta.py`, n_threads the resolved
// thread count. Arrays are checked with the GIL held (dtype exact, C-contiguous, shapes agreeing), then each
// kernel runs without it.
#include <string>
#include <utility>
#include <vector>

#include "convert.hpp"
#include "xrmeta/coldstart.hpp"
#include "xrmeta/meta.hpp"

namespace py = pybind11;
using namespace xrmeta;
using py_convert::checked;
using py_convert::new_array;
using py_convert::span;

namespace {

// A literal message: nothing is built unless the check fails (composed ones are built under an `if`).
void require(bool ok, const char* message) {
    if (!ok) throw py::value_error(message);
}

// A checked array of ndim dimensions: its flat view and its shape.
template <class T>
struct Shaped {
    Span<T> view;
    std::vector<int64_t> shape;
};

template <class T>
Shaped<T> shaped(py::handle obj, const char* name, py::ssize_t ndim) {
    auto a = checked<T>(obj, name);
    if (a.ndim() != ndim)
        throw py::value_error(std::string(name) + ": expected a " + std::to_string(ndim) + "-d array, got " +
                              std::to_string(a.ndim()) + "-d");
    return {span<T>(obj, name), std::vector<int64_t>(a.shape(), a.shape() + ndim)};
}

// CSR rows from their three arrays, their sizes consistent.
Rows csr(py::handle ptr, py::handle idx, py::handle val, const char* name) {
    const std::string prefix = std::string(name) + " ";
    Rows r{span<int64_t>(ptr, (prefix + "ptr").c_str()), span<int32_t>(idx, (prefix + "idx").c_str()),
           span<float>(val, (prefix + "val").c_str())};
    if (!(r.ptr.size >= 1 && r.idx.size == r.val.size && r.ptr[r.ptr.size - 1] <= r.idx.size && r.ptr[0] >= 0))
        throw py::value_error(std::string(name) + ": inconsistent CSR arrays (ptr, idx, val)");
    return r;
}

// Every id of ids is -1 (none) or a row in [0, n_rows).
void require_ids(Span<int64_t> ids, int64_t n_rows, const char* name) {
    for (int64_t a = 0; a < ids.size; ++a)
        if (ids[a] < -1 || ids[a] >= n_rows)  // the message only on failure: it costs more than the check
            throw py::value_error(std::string(name) + ": id " + std::to_string(ids[a]) + " out of range [-1, " +
                                  std::to_string(n_rows) + ")");
}

void require_threads(int64_t n_threads) { require(n_threads >= 1, "n_threads must be >= 1"); }

// A numpy array owning v's buffer (no copy).
template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
    auto* owned = new std::vector<T>(std::move(v));
    py::capsule owner(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>({static_cast<py::ssize_t>(owned->size())}, owned->data(), owner);
}

py::tuple bind_inverted_index(py::handle z_ptr, py::handle z_idx, py::handle z_val, int64_t n_features,
                              int64_t keep) {
    const Rows z = csr(z_ptr, z_idx, z_val, "z");
    require(n_features >= 0, "n_features must be >= 0");
    InvertedIndex inv;
    {
        py::gil_scoped_release release;
        inv = inverted_index(z, n_features, keep);
    }
    return py::make_tuple(to_numpy(std::move(inv.ptr)), to_numpy(std::move(inv.rows)), to_numpy(std::move(inv.vals)));
}

py::tuple bind_knn_topk(py::handle q_ptr, py::handle q_idx, py::handle q_val, py::handle inv_ptr, py::handle inv_item,
                        py::handle inv_val, py::handle z_ptr, py::handle z_idx, py::handle z_val, int64_t n_items,
                        int64_t n_features, int64_t k, int64_t n_candidates, int64_t n_threads) {
    const Rows q = csr(q_ptr, q_idx, q_val, "q");
    const Rows z = csr(z_ptr, z_idx, z_val, "z");
    auto iptr = span<int64_t>(inv_ptr, "inv_ptr");
    auto item = span<int64_t>(inv_item, "inv_item");
    auto ival = span<float>(inv_val, "inv_val");
    require(k >= 0 && n_items >= 0 && n_features >= 0, "k, n_items and n_features must be >= 0");
    require(iptr.size == n_features + 1, "inv_ptr: expected n_features + 1 entries");
    require(item.size == ival.size && iptr[n_features] <= item.size, "inv_item, inv_val: inconsistent with inv_ptr");
    require(z.n_rows() == n_items, "z: expected n_items rows");
    require_threads(n_threads);
    const auto n = static_cast<py::ssize_t>(q.n_rows());
    auto [items, out_item] = new_array<int64_t>({n, static_cast<py::ssize_t>(k)});
    auto [sims, out_sim] = new_array<float>({n, static_cast<py::ssize_t>(k)});
    {
        py::gil_scoped_release release;
        knn_topk(q, iptr, item, ival, z, n_items, n_features, k, n_candidates, n_threads, out_item, out_sim);
    }
    return py::make_tuple(items, sims);
}

py::array bind_cluster_vote(py::handle nbr_items, py::handle nbr_sims, py::handle item_cluster, py::handle fallback,
                            int64_t m) {
    auto items = shaped<int64_t>(nbr_items, "nbr_items", 2);
    auto sims = shaped<float>(nbr_sims, "nbr_sims", 2);
    auto cluster = span<int32_t>(item_cluster, "item_cluster");
    auto fall = span<int64_t>(fallback, "fallback");
    require(sims.shape == items.shape, "nbr_sims: expected the shape of nbr_items");
    require(fall.size == items.shape[0], "fallback: expected one entry per row of nbr_items");
    require(m >= 1, "m must be >= 1");
    require_ids(items.view, cluster.size, "nbr_items");
    auto [out, out_view] = new_array<int64_t>({static_cast<py::ssize_t>(items.shape[0]), static_cast<py::ssize_t>(m)});
    {
        py::gil_scoped_release release;
        cluster_vote(items.view, sims.view, items.shape[1], cluster, fall, m, out_view);
    }
    return out;
}

py::tuple bind_mix_sparse(py::handle src_item, py::handle src_coef, py::handle w_ptr, py::handle w_idx,
                          py::handle w_val, py::handle self_ptr, py::handle self_idx, py::handle self_val,
                          py::handle self_coef, int64_t n_features, float threshold, py::handle max_nnz) {
    auto items = shaped<int64_t>(src_item, "src_item", 2);
    auto coefs = shaped<float>(src_coef, "src_coef", 2);
    const Rows w = csr(w_ptr, w_idx, w_val, "w");
    const Rows self = csr(self_ptr, self_idx, self_val, "self");
    auto scoef = span<float>(self_coef, "self_coef");
    auto keep = span<int64_t>(max_nnz, "max_nnz");
    const int64_t n = items.shape[0];
    require(coefs.shape == items.shape, "src_coef: expected the shape of src_item");
    require(self.n_rows() == n && scoef.size == n && keep.size == n,
            "self rows, self_coef and max_nnz: expected one per row of src_item");
    require(n_features >= 0, "n_features must be >= 0");
    for (int64_t i = 0; i < n; ++i)
        if (keep[i] < 0) throw py::value_error("max_nnz must be >= 0");
    require_ids(items.view, w.n_rows(), "src_item");
    CsrOut out;
    {
        py::gil_scoped_release release;
        out = mix_sparse(items.view, coefs.view, items.shape[1], w, self, scoef, n_features, threshold, keep);
    }
    return py::make_tuple(to_numpy(std::move(out.ptr)), to_numpy(std::move(out.idx)), to_numpy(std::move(out.val)));
}

py::tuple bind_item_tokens(py::handle s_ptr, py::handle s_idx, py::handle s_val, py::handle nbrs, py::handle sims,
                           py::handle z_ptr, py::handle z_idx, py::handle z_val, py::handle stats,
                           py::handle feature_block, int64_t n_blocks, int64_t n_features, int64_t n_threads) {
    const Rows s = csr(s_ptr, s_idx, s_val, "s");
    const Rows z = csr(z_ptr, z_idx, z_val, "z");
    auto nb = shaped<int64_t>(nbrs, "nbrs", 2);
    auto sm = shaped<float>(sims, "sims", 2);
    auto st = shaped<float>(stats, "stats", 2);
    auto blocks = span<int8_t>(feature_block, "feature_block");
    const int64_t n = s.n_rows(), K = nb.shape[1], n_stats = st.shape[1];
    require(nb.shape[0] == n && sm.shape == nb.shape, "nbrs, sims: expected (rows of s, K) each");
    require(n_blocks >= 1, "n_blocks must be >= 1");
    require(n_features >= 2 * n_blocks + 2 && n_features >= 2 + n_blocks + n_stats,
            "n_features: too few for the item token (2 n_blocks + 2) or a neighbour token (2 + n_blocks + stats)");
    require_ids(nb.view, std::min(z.n_rows(), st.shape[0]), "nbrs");
    require_threads(n_threads);
    const auto rows = static_cast<py::ssize_t>(n), T = static_cast<py::ssize_t>(K + 1);
    auto [tokens, tokens_view] = new_array<float>({rows, T, static_cast<py::ssize_t>(n_features)});
    auto [valid, valid_view] = new_array<bool>({rows, T});
    {
        py::gil_scoped_release release;
        item_tokens(s, nb.view, sm.view, K, z, st.view, n_stats, blocks, n_blocks, n_features, n_threads, tokens_view,
                    valid_view);
    }
    return py::make_tuple(tokens, valid);
}

// meta_forward(tokens, valid, *params, n_heads, n_threads): params the 27 arrays of
// `coldstart.learned.PARAM_ORDER`, each of the shape its size in MetaNet says.
py::tuple bind_meta_forward(py::args args) {
    constexpr size_t n_params = 27;
    if (args.size() != n_params + 4)
        throw py::value_error("meta_forward(tokens, valid, *params (27 arrays, learned.PARAM_ORDER), n_heads, "
                              "n_threads): got " + std::to_string(args.size()) + " arguments");
    auto tokens = shaped<float>(args[0], "tokens", 3);
    auto valid = shaped<bool>(args[1], "valid", 2);
    const int64_t n_heads = args[n_params + 2].cast<int64_t>(), n_threads = args[n_params + 3].cast<int64_t>();
    const int64_t n = tokens.shape[0], T = tokens.shape[1], F = tokens.shape[2];
    require(valid.shape == std::vector<int64_t>{n, T}, "valid: expected the shape of tokens' first two axes");
    require(T >= 1, "tokens: expected at least the item's token");
    require_threads(n_threads);

    MetaNet net;  // its sizes, from the parameters that hold them (PARAM_ORDER positions 2, 7, 17, 25)
    auto param_arg = [&](size_t p) { return args[2 + p]; };
    auto w_in = shaped<float>(param_arg(2), "w_in", 3);
    auto wq = shaped<float>(param_arg(7), "wq", 3);
    auto w1 = shaped<float>(param_arg(17), "w1", 3);
    auto w_self = shaped<float>(param_arg(25), "w_self", 2);
    net.n_features = F;
    net.n_tokens = T;
    net.d_model = w_in.shape[2];
    net.n_layers = wq.shape[0];
    net.d_ff = w1.shape[2];
    net.n_heads = n_heads;
    net.n_self = w_self.shape[1];
    const int64_t d = net.d_model, L = net.n_layers, dff = net.d_ff;
    require(n_heads >= 1 && d % n_heads == 0, "n_heads must be >= 1 and divide d_model");
    require(net.n_self >= 1, "w_self: expected at least one output (the bias)");
    // Each parameter in PARAM_ORDER, the span it fills and its expected shape.
    struct Param {
        const char* name;
        Span<float> MetaNet::*field;
        std::vector<int64_t> shape;
    };
    const Param params[n_params] = {
        {"mu", &MetaNet::mu, {2, F}},          {"sd", &MetaNet::sd, {2, F}},
        {"w_in", &MetaNet::w_in, {2, F, d}},   {"b_in", &MetaNet::b_in, {2, d}},
        {"pos", &MetaNet::pos, {T, d}},        {"ln1_g", &MetaNet::ln1_g, {L, d}},
        {"ln1_b", &MetaNet::ln1_b, {L, d}},    {"wq", &MetaNet::wq, {L, d, d}},
        {"bq", &MetaNet::bq, {L, d}},          {"wk", &MetaNet::wk, {L, d, d}},
        {"bk", &MetaNet::bk, {L, d}},          {"wv", &MetaNet::wv, {L, d, d}},
        {"bv", &MetaNet::bv, {L, d}},          {"wo", &MetaNet::wo, {L, d, d}},
        {"bo", &MetaNet::bo, {L, d}},          {"ln2_g", &MetaNet::ln2_g, {L, d}},
        {"ln2_b", &MetaNet::ln2_b, {L, d}},    {"w1", &MetaNet::w1, {L, d, dff}},
        {"b1", &MetaNet::b1, {L, dff}},        {"w2", &MetaNet::w2, {L, dff, d}},
        {"b2", &MetaNet::b2, {L, d}},          {"lnf_g", &MetaNet::lnf_g, {d}},
        {"lnf_b", &MetaNet::lnf_b, {d}},       {"w_nbr", &MetaNet::w_nbr, {d, 1}},
        {"b_nbr", &MetaNet::b_nbr, {1}},       {"w_self", &MetaNet::w_self, {d, net.n_self}},
        {"b_self", &MetaNet::b_self, {net.n_self}},
    };
    for (size_t p = 0; p < n_params; ++p) {
        const Param& param = params[p];
        auto a = shaped<float>(param_arg(p), param.name, static_cast<py::ssize_t>(param.shape.size()));
        if (a.shape != param.shape) {
            std::string want;
            for (int64_t s : param.shape) want += (want.empty() ? "" : ", ") + std::to_string(s);
            throw py::value_error(std::string(param.name) + ": expected shape (" + want + ")");
        }
        net.*param.field = a.view;
    }
    auto [nbr_out, nbr_view] = new_array<float>({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(T - 1)});
    auto [self_out, self_view] = new_array<float>({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(net.n_self)});
    {
        py::gil_scoped_release release;
        meta_forward(tokens.view, valid.view, n, net, n_threads, nbr_view, self_view);
    }
    return py::make_tuple(nbr_out, self_out);
}

}  // namespace

void bind_coldstart(py::module_& m) {
    using namespace pybind11::literals;
    m.def("inverted_index", &bind_inverted_index, "z_ptr"_a, "z_idx"_a, "z_val"_a, "n_features"_a, "keep"_a,
          "(ptr, rows int64, vals float32): the feature -> rows index of CSR rows Z, each feature's rows in "
          "increasing order; keep > 0 keeps each feature's `keep` largest values (ties: the smaller row).");
    m.def("knn_topk", &bind_knn_topk, "q_ptr"_a, "q_idx"_a, "q_val"_a, "inv_ptr"_a, "inv_item"_a, "inv_val"_a,
          "z_ptr"_a, "z_idx"_a, "z_val"_a, "n_items"_a, "n_features"_a, "k"_a, "n_candidates"_a, "n_threads"_a,
          "(items int64, sims float32), (n, k): each query row's top-k rows of Z by inner product through the "
          "inverted index, best first, (-1, 0) padded; n_candidates > 0 rescores that many nominees exactly.");
    m.def("cluster_vote", &bind_cluster_vote, "nbr_items"_a, "nbr_sims"_a, "item_cluster"_a, "fallback"_a, "m"_a,
          "(n, m) int64: each row's distinct neighbour clusters by similarity-weighted vote, best first, -1 padded; "
          "ties to the nearer neighbour's cluster; rows with no neighbour take fallback[i].");
    m.def("mix_sparse", &bind_mix_sparse, "src_item"_a, "src_coef"_a, "w_ptr"_a, "w_idx"_a, "w_val"_a, "self_ptr"_a,
          "self_idx"_a, "self_val"_a, "self_coef"_a, "n_features"_a, "threshold"_a, "max_nnz"_a,
          "CSR (ptr, idx, val): out_i = sum_a src_coef[i,a] W[src_item[i,a]] + self_coef[i] S_i, kept where "
          "|w| >= threshold and non-zero, then the max_nnz[i] largest |w| (ties: first touched); sorted indices.");
    m.def("item_tokens", &bind_item_tokens, "s_ptr"_a, "s_idx"_a, "s_val"_a, "nbrs"_a, "sims"_a, "z_ptr"_a, "z_idx"_a,
          "z_val"_a, "stats"_a, "feature_block"_a, "n_blocks"_a, "n_features"_a, "n_threads"_a,
          "(tokens (n, K+1, n_features) float32, valid (n, K+1) bool): the learned generator's input tokens.");
    m.def("meta_forward", &bind_meta_forward,
          "meta_forward(tokens, valid, *params, n_heads, n_threads) -> (neighbour coefficients (n, T-1), self "
          "outputs (n, S)): the learned generator's forward pass; params in `coldstart.learned.PARAM_ORDER`.");
}
