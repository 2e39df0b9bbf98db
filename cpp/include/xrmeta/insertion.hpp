// The insertion kernels: the tails and chunks of `xrmeta/inserted.py` and the leaf split of `xrmeta/parts.py`.
// Each gives the same outputs, value for value, as its numba reference in `xrmeta/kernels/insertion.py` (the
// parity tests in tests/test_core_insertion.py hold them to it). Indices are trusted: they are the catalogue's
// own invariants, checked where they are made, as the numba kernels trust them.
#pragma once

#include <cstdint>
#include <vector>

#include "xrmeta/layout.hpp"

namespace xrmeta {

// Item-major weights of every slot (`Catalog`'s w_ptr, w_idx, w_val): slot s holds [ptr[s], ptr[s + 1]).
struct Weights {
    Span<int64_t> ptr;
    Span<int32_t> idx;
    Span<float> val;
};

// `inserted._link`: pushes entries first_entry, first_entry + 1, ... (part[i] the part of entry first_entry + i)
// at the heads of their parts' tails; head and tail_count are updated, next[i] gets entry i's next pointer.
void link(MutSpan<int32_t> head, MutSpan<int64_t> tail_count, Span<int64_t> part, int64_t first_entry,
          MutSpan<int32_t> next);

// The inputs of `inserted._live_entries`: the parts' chunks (their slot ranges into chunk_entries) and tails.
struct PartEntries {
    Span<int64_t> slot_lo;
    Span<int64_t> slot_hi;
    Span<int32_t> chunk_entries;
    Span<int32_t> head;
    Span<int32_t> entry_next;
    Span<int32_t> entry_slot;
    Span<bool> alive;
};

// `inserted._live_entries`: the live entries of `parts` and their owner part, each part's chunk first, then its
// tail oldest first (entry order).
void live_entries(Span<int64_t> parts, const PartEntries& in, std::vector<int64_t>& entries,
                  std::vector<int64_t>& owner);

// `inserted._feature_major`'s outputs: rows (feats, row_ends into the postings) and postings (local, val) of
// every cluster in turn, and each cluster's number of rows.
struct FeatureMajorChunks {
    std::vector<int32_t> feats;
    std::vector<int64_t> row_ends;
    std::vector<int32_t> local;
    std::vector<float> val;
    std::vector<int64_t> rows_of;
};

// `inserted._feature_major`: per cluster i (its slots slots[start[i] : start[i] + count[i]]), the feature-major
// chunk of their weights: rows by feature, postings (position in the cluster's slots, weight) by position.
FeatureMajorChunks feature_major_chunks(Span<int64_t> slots, Span<int64_t> start, Span<int64_t> count,
                                        const Weights& w);

// CSR rows over local columns 0..n_cols-1 in float64 (the rows `parts._two_means` splits).
struct LocalRows {
    Span<int64_t> ptr;
    Span<int64_t> idx;
    Span<double> val;
    int64_t n_cols = 0;
    int64_t n_rows() const { return ptr.size - 1; }
};

// `parts._two_means`: spherical 2-means of the rows, first centre row `first`; side[i] true for the second half,
// centres (2, n_cols) row-major the halves' normalised means. A half smaller than max(n / min_share, 1) rows
// is replaced by a split at the median of the difference of similarities.
void two_means(const LocalRows& rows, int64_t first, int64_t iterations, int64_t min_share, MutSpan<bool> side,
               MutSpan<double> centres);

// The routers of the parts (`layout.InsertedLayout`'s last fields).
struct Routers {
    Span<int64_t> cluster_part_ptr;
    Span<int32_t> cluster_parts;
    Span<int64_t> lo;
    Span<int64_t> hi;
    Span<int32_t> idx;
    Span<float> val;
};

// `parts._best_parts`: for each entry (slots[i], clusters[i]) the part of its cluster whose router has the
// largest dot product with the slot's classifier (ties: the first), -1 if none scores above -inf. dense: zeroed
// scratch as wide as the features, left zeroed.
void best_parts(Span<int64_t> slots, Span<int64_t> clusters, const Weights& w, const Routers& routers,
                MutSpan<float> dense, MutSpan<int32_t> out);

}  // namespace xrmeta
