// The arrays the kernels read: views (no ownership) of the layouts of `xrmeta/layout.py`, field for field and
// in the same order, so that the Python bindings fill them from the NamedTuples without a copy.
#pragma once

#include <cstdint>

namespace xrmeta {

// A read-only view of a contiguous array.
template <class T>
struct Span {
    using value_type = T;
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

// The layouts' array fields, (type, name) in `xrmeta/layout.py`'s order: one list, read by the structs below,
// the Python bindings (`python/convert.hpp`, from the NamedTuples) and `SavedModel` (from the .npz files), so
// that the three cannot disagree. `_core.layout_fields()` gives them to a test against layout.py.
#define XRMETA_ROWS_FIELDS(F) F(int64_t, ptr) F(int32_t, idx) F(float, val)
#define XRMETA_FEATURE_MAJOR_FIELDS(F) \
    F(int64_t, feat_ptr) F(int32_t, feats) F(int64_t, row_ptr) F(int32_t, slot) F(float, val)
// UpperLayout: then the scalar `post`. dense_rows is (maps, dense_width) row-major.
#define XRMETA_UPPER_FIELDS(F)                                                                            \
    XRMETA_FEATURE_MAJOR_FIELDS(F)                                                                        \
    F(float, slot_bias) F(int64_t, slot_node) F(int64_t, node_slot) F(int32_t, dense_of_group)            \
    F(int32_t, dense_rows) F(int64_t, layer_slot_ptr) F(int64_t, group_slot_ptr)
// LeafLayout: the observed items' chunks (FeatureMajor), then these, then the scalars `post`, `path_exponent`.
#define XRMETA_LEAF_OWN_FIELDS(F)                                                                         \
    F(int64_t, base_slot_ptr) F(int64_t, w_ptr) F(int32_t, w_idx) F(float, w_val) F(float, slot_bias)     \
    F(bool, slot_alive)
#define XRMETA_INSERTED_FIELDS(F)                                                                         \
    F(int64_t, row_lo) F(int64_t, row_hi) F(int64_t, slot_lo) F(int64_t, slot_hi) F(int32_t, feats)       \
    F(int64_t, row_ptr) F(int32_t, local) F(float, val) F(int32_t, slots) F(int32_t, head)                \
    F(int32_t, entry_slot) F(int32_t, entry_next) F(int64_t, cluster_part_ptr) F(int32_t, cluster_parts)  \
    F(int64_t, router_lo) F(int64_t, router_hi) F(int32_t, router_idx) F(float, router_val)
#define XRMETA_SPAN_FIELD(T, name) Span<T> name;

// `layout.Rows`: CSR rows (queries, beams, weights), sorted columns.
struct Rows {
    XRMETA_ROWS_FIELDS(XRMETA_SPAN_FIELD)
    int64_t n_rows() const { return ptr.size - 1; }
};

// `layout.UpperLayout`: the layers above the leaves.
struct UpperLayout {
    XRMETA_UPPER_FIELDS(XRMETA_SPAN_FIELD)
    int64_t dense_width = 0;  // columns of dense_rows (the features, or 1 when no group has a map)
    int post = 0;
};

// `layout.LeafLayout`: observed items feature-major per cluster, every slot item-major.
struct LeafLayout {
    XRMETA_FEATURE_MAJOR_FIELDS(XRMETA_SPAN_FIELD)
    XRMETA_LEAF_OWN_FIELDS(XRMETA_SPAN_FIELD)
    int post = 0;
    double path_exponent = 1.0;
};

// `layout.InsertedLayout`: inserted items per part of a cluster (chunk and tail), and the parts' routers.
struct InsertedLayout {
    XRMETA_INSERTED_FIELDS(XRMETA_SPAN_FIELD)
};

}  // namespace xrmeta
