// The arrays the kernels read: views (no ownership) of the layouts of `xrmeta/layout.py`, field for field and
// in the same order, so that the Python bindings fill them from the NamedTuples without a copy.
#pragma once

#include <cstdint>

namespace xrmeta {

// A read-only view of a contiguous array.
template <class T>
struct Span {
    const T* data = nullptr;
    int64_t size = 0;
    const T& operator[](int64_t i) const { return data[i]; }
};

// A writable view (outputs and caller-owned scratch).
template <class T>
struct MutSpan {
    T* data = nullptr;
    int64_t size = 0;
    T& operator[](int64_t i) const { return data[i]; }
};

// `layout.POST_PROCESSORS`: the hinge's exponent, or 0 for the sigmoid.
enum Post : int { SIGMOID = 0 };

// `layout.Rows`: CSR rows (queries, beams, weights), sorted columns.
struct Rows {
    Span<int64_t> ptr;
    Span<int32_t> idx;
    Span<float> val;
    int64_t n_rows() const { return ptr.size - 1; }
};

// `layout.UpperLayout`: the layers above the leaves (its first five fields are `layout.FeatureMajor`'s).
struct UpperLayout {
    Span<int64_t> feat_ptr;
    Span<int32_t> feats;
    Span<int64_t> row_ptr;
    Span<int32_t> slot;
    Span<float> val;
    Span<float> slot_bias;
    Span<int64_t> slot_node;
    Span<int64_t> node_slot;
    Span<int32_t> dense_of_group;
    Span<int32_t> dense_rows;  // (maps, dense_width) row-major
    int64_t dense_width = 0;   // columns of dense_rows (the features, or 1 when no group has a map)
    Span<int64_t> layer_slot_ptr;
    Span<int64_t> group_slot_ptr;
    int post = 0;
};

// `layout.LeafLayout`: observed items feature-major per cluster, every slot item-major.
struct LeafLayout {
    Span<int64_t> feat_ptr;
    Span<int32_t> feats;
    Span<int64_t> row_ptr;
    Span<int32_t> slot;
    Span<float> val;
    Span<int64_t> base_slot_ptr;
    Span<int64_t> w_ptr;
    Span<int32_t> w_idx;
    Span<float> w_val;
    Span<float> slot_bias;
    Span<bool> slot_alive;
    int post = 0;
    double path_exponent = 1.0;
};

// `layout.InsertedLayout`: inserted items per part of a cluster (chunk and tail), and the parts' routers.
struct InsertedLayout {
    Span<int64_t> row_lo;
    Span<int64_t> row_hi;
    Span<int64_t> slot_lo;
    Span<int64_t> slot_hi;
    Span<int32_t> feats;
    Span<int64_t> row_ptr;
    Span<int32_t> local;
    Span<float> val;
    Span<int32_t> slots;
    Span<int32_t> head;
    Span<int32_t> entry_slot;
    Span<int32_t> entry_next;
    Span<int64_t> cluster_part_ptr;
    Span<int32_t> cluster_parts;
    Span<int64_t> router_lo;
    Span<int64_t> router_hi;
    Span<int32_t> router_idx;
    Span<float> router_val;
};

}  // namespace xrmeta
