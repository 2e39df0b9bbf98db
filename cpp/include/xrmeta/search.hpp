// The search kernels (port of xrmeta/kernels/search.py, which stays as their test oracle): the beam search over
// the upper layers, leaf scoring, and `search_topk`, the whole search (beam search, then leaf scoring) in one call.
//
// Results equal the numba kernels': the same float32 accumulation order (scores agree to float rounding, top-k
// up to exact ties), the same tie rule (equal scores: the smaller slot first) and the same padding (slot -1,
// score 0). A batch is split into one contiguous chunk of queries per thread (`parallel_chunks`); each chunk
// allocates its scratch once, so no per-query allocation is proportional to the catalogue size.
#pragma once

#include <cstdint>

#include "xrmeta/layout.hpp"

namespace xrmeta {

// Which items a search scores.
enum Subset : int { ALL_ITEMS = 0, OBSERVED_ITEMS = 1, INSERTED_ITEMS = 2 };

// The search's input check: 0 fine, 1 a feature index outside [0, n_features), 2 a NaN or inf value.
int query_problem(Span<int32_t> x_idx, Span<float> x_val, int64_t n_features);

// Top `last_beam` leaf clusters and their path scores per query row, best first, into out_* (n x last_beam,
// row-major; cluster -1 and score 0 where there are fewer). Every layer keeps `beam` nodes, the last `last_beam`
// >= beam: its first `beam` are PECOS's leaf clusters. max_group_size: the most children of any tree node.
void upper_beams(const Rows& queries, const UpperLayout& upper, int64_t beam, int64_t last_beam,
                 int64_t max_group_size, int64_t n_threads, MutSpan<int64_t> out_cluster, MutSpan<float> out_score);

// Leaf scoring alone for given beams (each query row's leaf clusters with their path scores), one thread: top-k
// (slots, scores) per query into out_* (n x k). Inserted items are scored in all of a row's clusters, observed
// items in its first n_observed[i] (empty n_observed: all), as `search_topk` scores its beam and inserted beam.
// heap: k, or k * m for items inserted into up to m clusters. dense_q: (n_features,) zeroed scratch, left zeroed.
// probe: parts scored per cluster whose inserted items split (the best by their routers past that).
void leaf_topk(const Rows& queries, const Rows& beams, const LeafLayout& leaf, const InsertedLayout& ins,
               int subset, int64_t k, int64_t heap, int64_t max_group_size, MutSpan<float> dense_q, int64_t probe,
               Span<int64_t> n_observed, MutSpan<int64_t> out_slot, MutSpan<float> out_score);

// The whole search: beam search, then leaf scoring of the items under the chosen clusters; top-k (slots,
// scores) per query into out_* (n x k). Observed items are scored in the top `beam` leaf clusters (PECOS's),
// inserted items in the top `inserted_beam` >= beam. dense_q: (rows >= 1, n_features) row-major zeroed scratch
// owned by the caller, one row per thread, left zeroed (allocating and zeroing it per call would cost more than
// scoring one query at small beams); at most its rows threads run. Other arguments as `leaf_topk`'s.
void search_topk(const Rows& queries, const UpperLayout& upper, const LeafLayout& leaf, const InsertedLayout& ins,
                 int64_t beam, int64_t inserted_beam, int subset, int64_t k, int64_t heap, int64_t max_group_size,
                 int64_t n_threads, MutSpan<float> dense_q, int64_t n_features, int64_t probe,
                 MutSpan<int64_t> out_slot, MutSpan<float> out_score);

}  // namespace xrmeta
