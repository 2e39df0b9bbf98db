// Python -> C++ views for the bindings: numpy arrays checked for dtype and contiguity (never copied or cast: a
// wrong dtype is a bug in the caller, not something to paper over), and the layout NamedTuples of
// `xrmeta/layout.py` read field by field in their declared order.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "xrmeta/layout.hpp"

namespace xrmeta::py_convert {

namespace py = pybind11;

template <class T>
const char* dtype_name() {
    if constexpr (std::is_same_v<T, float>) return "float32";
    else if constexpr (std::is_same_v<T, double>) return "float64";
    else if constexpr (std::is_same_v<T, int32_t>) return "int32";
    else if constexpr (std::is_same_v<T, int64_t>) return "int64";
    else if constexpr (std::is_same_v<T, bool>) return "bool";
    else if constexpr (std::is_same_v<T, int8_t>) return "int8";
    else return "?";
}

// The array `obj` (any ndim, C-contiguous, dtype exactly T) as a flat view.
template <class T>
py::array checked(py::handle obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + ": expected a numpy array");
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!py::array_t<T>::check_(a))
        throw py::type_error(std::string(name) + ": expected dtype " + dtype_name<T>() + ", got " +
                             std::string(py::str(a.dtype())));
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + ": expected a C-contiguous array");
    return a;
}

template <class T>
Span<T> span(py::handle obj, const char* name) {
    auto a = checked<T>(obj, name);
    return {static_cast<const T*>(a.data()), static_cast<int64_t>(a.size())};
}

template <class T>
MutSpan<T> mut_span(py::handle obj, const char* name) {
    auto a = checked<T>(obj, name);
    if (!a.writeable()) throw py::value_error(std::string(name) + ": expected a writeable array");
    return {static_cast<T*>(a.mutable_data()), static_cast<int64_t>(a.size())};
}

// A new C-contiguous array of the given shape and its writable view.
template <class T>
std::pair<py::array_t<T>, MutSpan<T>> new_array(std::vector<py::ssize_t> shape) {
    py::array_t<T> a(shape);
    return {a, MutSpan<T>{a.mutable_data(), static_cast<int64_t>(a.size())}};
}

inline py::tuple fields(py::handle obj, size_t n, const char* what) {
    if (!py::isinstance<py::tuple>(obj)) throw py::type_error(std::string(what) + ": expected a tuple");
    auto t = py::reinterpret_borrow<py::tuple>(obj);
    if (t.size() != n)
        throw py::value_error(std::string(what) + ": expected " + std::to_string(n) + " fields, got " +
                              std::to_string(t.size()));
    return t;
}

inline Rows rows(py::handle obj, const char* what = "rows") {
    auto t = fields(obj, 3, what);
    return {span<int64_t>(t[0], "rows.ptr"), span<int32_t>(t[1], "rows.idx"), span<float>(t[2], "rows.val")};
}

inline UpperLayout upper(py::handle obj) {
    auto t = fields(obj, 13, "UpperLayout");
    UpperLayout u;
    u.feat_ptr = span<int64_t>(t[0], "upper.feat_ptr");
    u.feats = span<int32_t>(t[1], "upper.feats");
    u.row_ptr = span<int64_t>(t[2], "upper.row_ptr");
    u.slot = span<int32_t>(t[3], "upper.slot");
    u.val = span<float>(t[4], "upper.val");
    u.slot_bias = span<float>(t[5], "upper.slot_bias");
    u.slot_node = span<int64_t>(t[6], "upper.slot_node");
    u.node_slot = span<int64_t>(t[7], "upper.node_slot");
    u.dense_of_group = span<int32_t>(t[8], "upper.dense_of_group");
    auto dense = checked<int32_t>(t[9], "upper.dense_rows");
    if (dense.ndim() != 2) throw py::value_error("upper.dense_rows: expected a 2-d array");
    u.dense_rows = span<int32_t>(t[9], "upper.dense_rows");
    u.dense_width = dense.shape(1);
    u.layer_slot_ptr = span<int64_t>(t[10], "upper.layer_slot_ptr");
    u.group_slot_ptr = span<int64_t>(t[11], "upper.group_slot_ptr");
    u.post = t[12].cast<int>();
    return u;
}

inline LeafLayout leaf(py::handle obj) {
    auto t = fields(obj, 13, "LeafLayout");
    LeafLayout l;
    l.feat_ptr = span<int64_t>(t[0], "leaf.feat_ptr");
    l.feats = span<int32_t>(t[1], "leaf.feats");
    l.row_ptr = span<int64_t>(t[2], "leaf.row_ptr");
    l.slot = span<int32_t>(t[3], "leaf.slot");
    l.val = span<float>(t[4], "leaf.val");
    l.base_slot_ptr = span<int64_t>(t[5], "leaf.base_slot_ptr");
    l.w_ptr = span<int64_t>(t[6], "leaf.w_ptr");
    l.w_idx = span<int32_t>(t[7], "leaf.w_idx");
    l.w_val = span<float>(t[8], "leaf.w_val");
    l.slot_bias = span<float>(t[9], "leaf.slot_bias");
    l.slot_alive = span<bool>(t[10], "leaf.slot_alive");
    l.post = t[11].cast<int>();
    l.path_exponent = t[12].cast<double>();
    return l;
}

inline InsertedLayout inserted(py::handle obj) {
    auto t = fields(obj, 18, "InsertedLayout");
    InsertedLayout s;
    s.row_lo = span<int64_t>(t[0], "inserted.row_lo");
    s.row_hi = span<int64_t>(t[1], "inserted.row_hi");
    s.slot_lo = span<int64_t>(t[2], "inserted.slot_lo");
    s.slot_hi = span<int64_t>(t[3], "inserted.slot_hi");
    s.feats = span<int32_t>(t[4], "inserted.feats");
    s.row_ptr = span<int64_t>(t[5], "inserted.row_ptr");
    s.local = span<int32_t>(t[6], "inserted.local");
    s.val = span<float>(t[7], "inserted.val");
    s.slots = span<int32_t>(t[8], "inserted.slots");
    s.head = span<int32_t>(t[9], "inserted.head");
    s.entry_slot = span<int32_t>(t[10], "inserted.entry_slot");
    s.entry_next = span<int32_t>(t[11], "inserted.entry_next");
    s.cluster_part_ptr = span<int64_t>(t[12], "inserted.cluster_part_ptr");
    s.cluster_parts = span<int32_t>(t[13], "inserted.cluster_parts");
    s.router_lo = span<int64_t>(t[14], "inserted.router_lo");
    s.router_hi = span<int64_t>(t[15], "inserted.router_hi");
    s.router_idx = span<int32_t>(t[16], "inserted.router_idx");
    s.router_val = span<float>(t[17], "inserted.router_val");
    return s;
}

}  // namespace xrmeta::py_convert
