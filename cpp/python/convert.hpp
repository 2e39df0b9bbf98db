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

// Reads the next tuple field into out.name, named "<what>.<name>" in errors.
#define XRMETA_READ_FIELD(T, name) out.name = span<T>(t[i++], (prefix + #name).c_str());

inline Rows rows(py::handle obj, const char* what = "rows") {
    auto t = fields(obj, 3, what);
    Rows out;
    size_t i = 0;
    std::string prefix = std::string(what) + ".";
    XRMETA_ROWS_FIELDS(XRMETA_READ_FIELD)
    return out;
}

inline UpperLayout upper(py::handle obj) {
    auto t = fields(obj, 13, "UpperLayout");
    UpperLayout out;
    size_t i = 0;
    std::string prefix = "upper.";
    XRMETA_UPPER_FIELDS(XRMETA_READ_FIELD)
    auto dense = checked<int32_t>(t[9], "upper.dense_rows");
    if (dense.ndim() != 2) throw py::value_error("upper.dense_rows: expected a 2-d array");
    out.dense_width = dense.shape(1);
    out.post = t[i++].cast<int>();
    return out;
}

inline LeafLayout leaf(py::handle obj) {
    auto t = fields(obj, 13, "LeafLayout");
    LeafLayout out;
    size_t i = 0;
    std::string prefix = "leaf.";
    XRMETA_FEATURE_MAJOR_FIELDS(XRMETA_READ_FIELD)
    XRMETA_LEAF_OWN_FIELDS(XRMETA_READ_FIELD)
    out.post = t[i++].cast<int>();
    out.path_exponent = t[i++].cast<double>();
    return out;
}

inline InsertedLayout inserted(py::handle obj) {
    auto t = fields(obj, 18, "InsertedLayout");
    InsertedLayout out;
    size_t i = 0;
    std::string prefix = "inserted.";
    XRMETA_INSERTED_FIELDS(XRMETA_READ_FIELD)
    return out;
}

#undef XRMETA_READ_FIELD

}  // namespace xrmeta::py_convert
