// Cold-start kernels, ports of `xrmeta/kernels/coldstart.py` (the numba oracle of the parity tests): the
// inverted index and neighbour search of `coldstart.select`, the cluster vote of `coldstart.assign`, the sparse
// mixing of `coldstart.generate` / `coldstart.feedback` and the learned generator's input tokens. Same results,
// tie rules and paddings as numba; float arithmetic in the same types and order, so results agree to rounding.
#pragma once

#include <cstdint>
#include <vector>

#include "xrmeta/layout.hpp"

namespace xrmeta {

// A feature -> rows index: each feature's rows in increasing order.
struct InvertedIndex {
    std::vector<int64_t> ptr;  // (n_features + 1,)
    std::vector<int64_t> rows;
    std::vector<float> vals;
};

// The feature -> rows index of CSR rows z; keep > 0 keeps only each feature's `keep` largest values (ties: the
// smaller row).
InvertedIndex inverted_index(const Rows& z, int64_t n_features, int64_t keep);

// Top-k rows of z by inner product for each query row of q, through inv (full or impact-truncated; see
// `kernels.coldstart.knn_topk`). n_candidates > 0: the partial sums nominate that many rows, rescored exactly
// from z. Writes out_item/out_sim (n, k) row-major, best first; missing entries are (-1, 0).
void knn_topk(const Rows& q, Span<int64_t> inv_ptr, Span<int64_t> inv_item, Span<float> inv_val, const Rows& z,
              int64_t n_items, int64_t n_features, int64_t k, int64_t n_candidates, int64_t n_threads,
              MutSpan<int64_t> out_item, MutSpan<float> out_sim);

// out (n, m): each row's distinct neighbour clusters by similarity-weighted vote, best first, -1 padded; ties go
// to the cluster of the nearer neighbour; a row with no neighbour (all -1) takes fallback[i].
void cluster_vote(Span<int64_t> nbr_items, Span<float> nbr_sims, int64_t k, Span<int32_t> item_cluster,
                  Span<int64_t> fallback, int64_t m, MutSpan<int64_t> out);

// CSR rows (ptr, idx, val) as the caller's numpy arrays take them.
struct CsrOut {
    std::vector<int64_t> ptr;
    std::vector<int32_t> idx;
    std::vector<float> val;
};

// out_i = sum_a src_coef[i,a] W[src_item[i,a]] + self_coef[i] S_i (n rows, m sources each, -1 = none), kept
// where |w| >= threshold and non-zero, then the max_nnz[i] largest |w| (ties: the first touched); sorted indices.
CsrOut mix_sparse(Span<int64_t> src_item, Span<float> src_coef, int64_t m, const Rows& w, const Rows& self,
                  Span<float> self_coef, int64_t n_features, float threshold, Span<int64_t> max_nnz);

// The learned generator's input tokens (`kernels.coldstart.item_tokens`): tokens (n, K+1, n_features) and valid
// (n, K+1), written in full, for rows s and their K neighbours (rows of z, -1 = none) with sims.
// stats (rows of z, n_stats) row-major; feature_block maps a feature to its n-gram block (< n_blocks).
void item_tokens(const Rows& s, Span<int64_t> nbrs, Span<float> sims, int64_t K, const Rows& z, Span<float> stats,
                 int64_t n_stats, Span<int8_t> feature_block, int64_t n_blocks, int64_t n_features,
                 int64_t n_threads, MutSpan<float> tokens, MutSpan<bool> valid);

}  // namespace xrmeta
