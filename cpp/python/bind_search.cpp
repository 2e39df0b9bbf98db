// Bindings of the search kernels (cpp/include/xrmeta/search.hpp), with the argument order and results of the
// numba kernels of xrmeta/kernels/search.py. Arrays are checked with the GIL held; the kernels run without it.
#include <algorithm>
#include <limits>
#include <string>

#include "convert.hpp"
#include "xrmeta/search.hpp"

namespace py = pybind11;
using namespace xrmeta;

namespace {

void require(bool ok, const std::string& what) {
    if (!ok) throw py::value_error(what);
}

Rows checked_rows(py::handle obj, const char* what) {
    Rows r = py_convert::rows(obj, what);
    require(r.ptr.size >= 1 && r.ptr[0] == 0 && r.ptr[r.ptr.size - 1] <= r.idx.size && r.idx.size == r.val.size,
            std::string(what) + ": malformed CSR rows");
    return r;
}

// Every feature index of the queries fits the dense query buffer (the kernels write it there unchecked).
void check_features(const Rows& queries, int64_t width) {
    for (int64_t a = 0; a < queries.idx.size; ++a)
        require(queries.idx[a] >= 0 && queries.idx[a] < width,
                "queries: feature indices must be in [0, " + std::to_string(width) + ") (dense_q's width)");
}

// The features a query may have for the upper layers' dense row maps (their width; any if there is none).
int64_t feature_bound(const UpperLayout& u) {
    for (int64_t g = 0; g < u.dense_of_group.size; ++g)
        if (u.dense_of_group[g] >= 0) return u.dense_width;
    return std::numeric_limits<int64_t>::max();
}

void check_topk(int subset, int64_t k, int64_t heap, int64_t max_group_size, int64_t probe) {
    require(subset >= 0 && subset <= 2, "subset must be 0 (all), 1 (observed) or 2 (inserted)");
    require(k >= 1, "k must be >= 1");
    require(heap >= k, "heap must be >= k");
    require(max_group_size >= 0, "max_group_size must be >= 0");
    require(probe >= 1, "probe must be >= 1");
}

template <class T>
std::pair<py::array_t<T>, MutSpan<T>> rows_by(int64_t n, int64_t width) {
    return py_convert::new_array<T>({py::ssize_t(n), py::ssize_t(width)});
}

py::tuple upper_beams_py(py::handle queries, py::handle upper, int64_t beam, int64_t last_beam,
                         int64_t max_group_size, int64_t n_threads) {
    Rows q = checked_rows(queries, "queries");
    UpperLayout u = py_convert::upper(upper);
    require(beam >= 1 && last_beam >= beam, "need 1 <= beam <= last_beam");
    require(n_threads >= 1, "n_threads must be >= 1");
    require(max_group_size >= 0, "max_group_size must be >= 0");
    check_features(q, feature_bound(u));
    auto [clusters, c] = rows_by<int64_t>(q.n_rows(), last_beam);
    auto [scores, s] = rows_by<float>(q.n_rows(), last_beam);
    {
        py::gil_scoped_release release;
        upper_beams(q, u, beam, last_beam, max_group_size, n_threads, c, s);
    }
    return py::make_tuple(clusters, scores);
}

py::tuple leaf_topk_py(py::handle queries, py::handle beams, py::handle leaf, py::handle ins, int subset, int64_t k,
                       int64_t heap, int64_t max_group_size, py::handle dense_q, int64_t probe,
                       py::handle n_observed) {
    Rows q = checked_rows(queries, "queries"), b = checked_rows(beams, "beams");
    Span<int64_t> observed;
    if (!n_observed.is_none()) {
        observed = py_convert::span<int64_t>(n_observed, "n_observed");
        require(observed.size == q.n_rows(), "n_observed: one count per query");
    }
    LeafLayout l = py_convert::leaf(leaf);
    InsertedLayout s = py_convert::inserted(ins);
    check_topk(subset, k, heap, max_group_size, probe);
    require(b.n_rows() == q.n_rows(), "beams: one row per query");
    int64_t n_clusters = l.base_slot_ptr.size - 1;
    for (int64_t a = 0; a < b.idx.size; ++a)
        require(b.idx[a] >= 0 && b.idx[a] < n_clusters, "beams: clusters must be in [0, n_clusters)");
    auto dense = py_convert::checked<float>(dense_q, "dense_q");
    require(dense.ndim() == 1, "dense_q: expected a (n_features,) array");
    check_features(q, dense.shape(0));
    MutSpan<float> d = py_convert::mut_span<float>(dense_q, "dense_q");
    auto [slots, out_slot] = rows_by<int64_t>(q.n_rows(), k);
    auto [scores, out_score] = rows_by<float>(q.n_rows(), k);
    {
        py::gil_scoped_release release;
        leaf_topk(q, b, l, s, subset, k, heap, max_group_size, d, probe, observed, out_slot, out_score);
    }
    return py::make_tuple(slots, scores);
}

py::tuple search_topk_py(py::handle queries, py::handle upper, py::handle leaf, py::handle ins, int64_t beam,
                         int64_t inserted_beam, int subset, int64_t k, int64_t heap, int64_t max_group_size,
                         int64_t n_threads, py::handle dense_q, int64_t probe) {
    Rows q = checked_rows(queries, "queries");
    UpperLayout u = py_convert::upper(upper);
    LeafLayout l = py_convert::leaf(leaf);
    InsertedLayout s = py_convert::inserted(ins);
    check_topk(subset, k, heap, max_group_size, probe);
    require(beam >= 1 && inserted_beam >= beam, "need 1 <= beam <= inserted_beam");
    require(n_threads >= 1, "n_threads must be >= 1");
    auto dense = py_convert::checked<float>(dense_q, "dense_q");
    require(dense.ndim() == 2 && dense.shape(0) >= n_threads,
            "dense_q: expected a (rows >= n_threads, n_features) array, one zeroed row per thread");
    int64_t n_features = dense.shape(1);
    check_features(q, std::min(n_features, feature_bound(u)));
    MutSpan<float> d = py_convert::mut_span<float>(dense_q, "dense_q");
    auto [slots, out_slot] = rows_by<int64_t>(q.n_rows(), k);
    auto [scores, out_score] = rows_by<float>(q.n_rows(), k);
    {
        py::gil_scoped_release release;
        search_topk(q, u, l, s, beam, inserted_beam, subset, k, heap, max_group_size, n_threads, d, n_features,
                    probe, out_slot, out_score);
    }
    return py::make_tuple(slots, scores);
}

int query_problem_py(py::handle x_idx, py::handle x_val, int64_t n_features) {
    auto idx = py_convert::span<int32_t>(x_idx, "x_idx");
    auto val = py_convert::span<float>(x_val, "x_val");
    py::gil_scoped_release release;
    return query_problem(idx, val, n_features);
}

}  // namespace

void bind_search(py::module_& m) {
    m.def("upper_beams", &upper_beams_py, py::arg("queries"), py::arg("upper"), py::arg("beam"),
          py::arg("last_beam"), py::arg("max_group_size"), py::arg("n_threads"),
          "Top last_beam leaf clusters per query row: (clusters int64, path scores float32), both (n, last_beam), "
          "best first, cluster -1 where there are fewer.");
    m.def("leaf_topk", &leaf_topk_py, py::arg("queries"), py::arg("beams"), py::arg("leaf"), py::arg("ins"),
          py::arg("subset"), py::arg("k"), py::arg("heap"), py::arg("max_group_size"), py::arg("dense_q"),
          py::arg("probe"), py::arg("n_observed") = py::none(),
          "Leaf scoring for given beams, one thread: (slots int64, scores float32), both (n, k), slot -1 padded. "
          "dense_q: (n_features,) float32 zeroed scratch, left zeroed. n_observed: None, or (n,) int64: observed "
          "items are scored in each row's first n_observed[i] clusters only (rows keep their clusters' order).");
    m.def("search_topk", &search_topk_py, py::arg("queries"), py::arg("upper"), py::arg("leaf"), py::arg("ins"),
          py::arg("beam"), py::arg("inserted_beam"), py::arg("subset"), py::arg("k"), py::arg("heap"),
          py::arg("max_group_size"), py::arg("n_threads"), py::arg("dense_q"), py::arg("probe"),
          "The whole search (beam search, then leaf scoring): (slots int64, scores float32), both (n, k), slot -1 "
          "padded. dense_q: (>= n_threads, n_features) float32 zeroed scratch, one row per thread, left zeroed.");
    m.def("query_problem", &query_problem_py, py::arg("x_idx"), py::arg("x_val"), py::arg("n_features"),
          "The search's input check: 0 fine, 1 a feature index out of [0, n_features), 2 a NaN or inf value.");
}
