// The insertion kernels (cpp/include/xrmeta/insertion.hpp) with the arguments and return values of their numba
// references in `xrmeta/kernels/insertion.py`. Arrays are checked with the GIL held, the kernel runs without it.
#include <stdexcept>
#include <string>

#include "convert.hpp"
#include "xrmeta/insertion.hpp"

namespace py = pybind11;
using namespace xrmeta;
using py_convert::mut_span;
using py_convert::new_array;
using py_convert::span;

namespace {

// A 1-d numpy array owning the vector's buffer (no copy): outputs whose size the kernel finds out.
template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
    auto* owned = new std::vector<T>(std::move(v));
    py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>({static_cast<py::ssize_t>(owned->size())}, owned->data(), free_when_done);
}

void require(bool ok, const std::string& what) {
    if (!ok) throw py::value_error(what);
}

Weights weights(py::handle ptr, py::handle idx, py::handle val) {
    Weights w{span<int64_t>(ptr, "w_ptr"), span<int32_t>(idx, "w_idx"), span<float>(val, "w_val")};
    require(w.idx.size == w.val.size, "w_idx and w_val differ in length");
    return w;
}

py::array link_entries(py::handle head_, py::handle tail_count_, py::handle part_, int64_t first_entry) {
    auto head = mut_span<int32_t>(head_, "head");
    auto tail_count = mut_span<int64_t>(tail_count_, "tail_count");
    auto part = span<int64_t>(part_, "part");
    require(head.size == tail_count.size, "head and tail_count differ in length");
    auto [next, next_view] = new_array<int32_t>({part.size});
    {
        py::gil_scoped_release release;
        link(head, tail_count, part, first_entry, next_view);
    }
    return next;
}

py::tuple live_entries_of(py::handle parts_, py::handle slot_lo, py::handle slot_hi, py::handle chunk_entries,
                          py::handle head, py::handle entry_next, py::handle entry_slot, py::handle alive) {
    auto parts = span<int64_t>(parts_, "parts");
    PartEntries in{span<int64_t>(slot_lo, "slot_lo"),       span<int64_t>(slot_hi, "slot_hi"),
                   span<int32_t>(chunk_entries, "chunk_entries"), span<int32_t>(head, "head"),
                   span<int32_t>(entry_next, "entry_next"), span<int32_t>(entry_slot, "entry_slot"),
                   span<bool>(alive, "alive")};
    require(in.slot_lo.size == in.slot_hi.size && in.slot_lo.size == in.head.size,
            "slot_lo, slot_hi and head differ in length");
    std::vector<int64_t> entries, owner;
    {
        py::gil_scoped_release release;
        live_entries(parts, in, entries, owner);
    }
    return py::make_tuple(to_numpy(std::move(entries)), to_numpy(std::move(owner)));
}

py::tuple feature_major(py::handle slots_, py::handle start_, py::handle count_, py::handle w_ptr, py::handle w_idx,
                        py::handle w_val) {
    auto slots = span<int64_t>(slots_, "slots");
    auto start = span<int64_t>(start_, "start");
    auto count = span<int64_t>(count_, "count");
    require(start.size == count.size, "start and count differ in length");
    Weights w = weights(w_ptr, w_idx, w_val);
    FeatureMajorChunks out;
    {
        py::gil_scoped_release release;
        out = feature_major_chunks(slots, start, count, w);
    }
    return py::make_tuple(to_numpy(std::move(out.feats)), to_numpy(std::move(out.row_ends)),
                          to_numpy(std::move(out.local)), to_numpy(std::move(out.val)),
                          to_numpy(std::move(out.rows_of)));
}

py::tuple two_means_of(py::handle ptr, py::handle idx, py::handle val, int64_t n_cols, int64_t first,
                       int64_t iterations, int64_t min_share) {
    LocalRows rows{span<int64_t>(ptr, "ptr"), span<int64_t>(idx, "idx"), span<double>(val, "val"), n_cols};
    require(rows.ptr.size >= 2, "two_means: no rows");
    require(rows.idx.size == rows.val.size, "idx and val differ in length");
    require(0 <= first && first < rows.n_rows(), "two_means: first is not a row");
    require(n_cols >= 0 && min_share >= 1, "two_means: n_cols < 0 or min_share < 1");
    auto [side, side_view] = new_array<bool>({rows.n_rows()});
    auto [centres, centres_view] = new_array<double>({2, n_cols});
    {
        py::gil_scoped_release release;
        two_means(rows, first, iterations, min_share, side_view, centres_view);
    }
    return py::make_tuple(side, centres);
}

py::array best_parts_of(py::handle slots_, py::handle clusters_, py::handle w_ptr, py::handle w_idx,
                        py::handle w_val, py::handle cluster_part_ptr, py::handle cluster_parts, py::handle router_lo,
                        py::handle router_hi, py::handle router_idx, py::handle router_val, py::handle dense_) {
    auto slots = span<int64_t>(slots_, "slots");
    auto clusters = span<int64_t>(clusters_, "clusters");
    require(slots.size == clusters.size, "slots and clusters differ in length");
    Weights w = weights(w_ptr, w_idx, w_val);
    Routers routers{span<int64_t>(cluster_part_ptr, "cluster_part_ptr"), span<int32_t>(cluster_parts, "cluster_parts"),
                    span<int64_t>(router_lo, "router_lo"),               span<int64_t>(router_hi, "router_hi"),
                    span<int32_t>(router_idx, "router_idx"),             span<float>(router_val, "router_val")};
    auto dense = mut_span<float>(dense_, "dense");
    auto [out, out_view] = new_array<int32_t>({slots.size});
    {
        py::gil_scoped_release release;
        best_parts(slots, clusters, w, routers, dense, out_view);
    }
    return out;
}

}  // namespace

void bind_insertion(py::module_& m) {
    m.def("link", &link_entries, py::arg("head"), py::arg("tail_count"), py::arg("part"), py::arg("first_entry"),
          "Push entries first_entry.. (their parts given) at the heads of their parts' tails (head, tail_count "
          "updated in place); returns their next pointers (int32).");
    m.def("live_entries", &live_entries_of, py::arg("parts"), py::arg("slot_lo"), py::arg("slot_hi"),
          py::arg("chunk_entries"), py::arg("head"), py::arg("entry_next"), py::arg("entry_slot"), py::arg("alive"),
          "(entries, owner part) int64 of the live entries of the given parts: each part's chunk, then its tail "
          "oldest first.");
    m.def("feature_major_chunks", &feature_major, py::arg("slots"), py::arg("start"), py::arg("count"),
          py::arg("w_ptr"), py::arg("w_idx"), py::arg("w_val"),
          "Per cluster (slots[start[i] : start[i] + count[i]]), the feature-major chunk of their weights: "
          "(feats, row_ends, local, val, rows per cluster).");
    m.def("two_means", &two_means_of, py::arg("ptr"), py::arg("idx"), py::arg("val"), py::arg("n_cols"),
          py::arg("first"), py::arg("iterations"), py::arg("min_share"),
          "Spherical 2-means of CSR rows over local columns: (side bool, the halves' normalised means (2, n_cols)).");
    m.def("best_parts", &best_parts_of, py::arg("slots"), py::arg("clusters"), py::arg("w_ptr"), py::arg("w_idx"),
          py::arg("w_val"), py::arg("cluster_part_ptr"), py::arg("cluster_parts"), py::arg("router_lo"),
          py::arg("router_hi"), py::arg("router_idx"), py::arg("router_val"), py::arg("dense"),
          "For each entry (slot, cluster), the part of the cluster whose router best matches the slot's classifier "
          "(ties: the first); dense: zeroed float32 scratch of the features, left zeroed.");
}
