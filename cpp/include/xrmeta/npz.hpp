// Reading the .npz files of a model directory (`np.savez`: a zip of .npy files, stored, not deflated) without
// Python or any other library.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "xrmeta/layout.hpp"

namespace xrmeta {

struct NpzError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// One array: its numpy dtype string ("<i8", "<f4", "|b1", ...), shape and bytes (C order).
struct NpyArray {
    std::string dtype;
    std::vector<int64_t> shape;
    std::vector<char> bytes;

    int64_t size() const;
    // A view of the array as T; throws NpzError unless the dtype is T's (little-endian) and it is C order.
    template <class T>
    Span<T> span(const std::string& name) const;
    // A 0-d or 1-element array's value, converted.
    double scalar(const std::string& name) const;
};

// Every array of an .npz file, by name (without ".npy"). Throws NpzError naming the file on anything it cannot
// read: a deflated entry (`np.savez_compressed`), a truncated file, a header it does not understand.
std::map<std::string, NpyArray> read_npz(const std::string& path);

}  // namespace xrmeta
