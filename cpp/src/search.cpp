// Port of xrmeta/kernels/search.py. The float types follow numba's: raw scores accumulate in float32, the
// transform and the path product are computed in double and stored as float32.
#include "xrmeta/search.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "xrmeta/threads.hpp"
#include "xrmeta/topk.hpp"

// No fused multiply-add may contract a * b + c (numba does not, and its roundings are the oracle's): compilers
// contract by default where the target has FMA (aarch64, x86-64 built with -march=haswell or native).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace xrmeta {

namespace {

// An inserted item's weights are gathered against the dense query. Most of its features are not the query's,
// and each lookup in a features-wide array misses the cache; a 4 KiB filter on the low bits of the feature (in
// L1) answers "not in the query" first. A false positive only costs the lookup, which then reads a zero.
constexpr int32_t SEEN_MASK = 4095;

struct Query {
    const int32_t* idx;
    const float* val;
    int64_t n;
};

Query query(const Rows& rows, int64_t i) {
    int64_t lo = rows.ptr[i];
    return {rows.idx.data + lo, rows.val.data + lo, rows.ptr[i + 1] - lo};
}

// h ** e for an integer e >= 0 as numba computes it (square and multiply), not as std::pow (rounded once).
double int_power(double h, int64_t e) {
    double r = 1.0;
    while (e != 0) {
        if (e & 1) r *= h;
        e >>= 1;
        h *= h;
    }
    return r;
}

// The post-processor (code `layout.POST_PROCESSORS[name]`) applied to a raw score.
double transform(float v, int post) {
    if (post == SIGMOID) return 1.0 / (1.0 + double(std::exp(-v)));
    double h = std::max(1.0 - double(v), 0.0);
    return std::exp(-int_power(h, post));
}

// ---------------------------------------------------------------- top-k heap (`TopK`) with a score floor
using Heap = TopK<int64_t>;

// A raw score below which an item cannot enter the full heap: transform(raw) * parent stays below the
// heap's worst score. Conservative (a 1e-5 relative margin, far above rounding), so skipping such items
// changes no result; it spares most items their transform (exp, pow), which is most of a cluster's cost.
double raw_floor(const Heap& h, float parent, int post) {
    if (!h.full() || parent <= 0.0f || h.worst_score() <= 0.0f) return -std::numeric_limits<double>::infinity();
    double t = double(h.worst_score() / parent) * (1.0 - 1e-5);  // the quotient in float32, as numba
    if (t >= 1.0) return std::numeric_limits<double>::infinity();  // every score is at most parent < worst
    if (post == SIGMOID) return std::log(t / (1.0 - t)) - 1e-6;
    return 1.0 - std::pow(-std::log(t), 1.0 / post) - 1e-6;
}

// Push slot s with raw score v under a path score `parent` unless v is below `floor`; updates the floor.
void offer(Heap& h, float v, int64_t s, float parent, int post, double& floor) {
    if (!(v >= floor)) return;  // (a NaN never enters, as in numba)
    // compared as stored: a double a hair above its float copy is no better
    h.push(float(transform(v, post) * double(parent)), s);
    floor = raw_floor(h, parent, post);
}

// ---------------------------------------------------------------- leaf scoring
// acc[post_pos[p]] += x_f * post_val[p] over the postings of chunk rows lo..hi (features feats[lo:hi], sorted)
// that the query (sorted features) has. A dense feature -> row map (row_of, -1 where absent; null for most
// groups) costs one read per query feature, the others one binary search.
void accumulate(Query q, int64_t lo, int64_t hi, const int32_t* row_of, const int32_t* feats,
                const int64_t* row_ptr, const int32_t* post_pos, const float* post_val, float* acc) {
    auto add_row = [&](int64_t r, float v) {
        for (int64_t p = row_ptr[r]; p < row_ptr[r + 1]; ++p) acc[post_pos[p]] += v * post_val[p];
    };
    if (row_of) {
        for (int64_t a = 0; a < q.n; ++a)
            if (int32_t r = row_of[q.idx[a]]; r >= 0) add_row(r, q.val[a]);
        return;
    }
    for (int64_t a = 0; a < q.n && lo < hi; ++a) {
        int32_t f = q.idx[a];
        // the chunk's features are sorted and so are the query's: search only to the right of the last hit
        int64_t r = std::lower_bound(feats + lo, feats + hi, f) - feats;
        if (r < hi && feats[r] == f) {
            add_row(r, q.val[a]);
            lo = r + 1;
        } else {
            lo = r;
        }
    }
}

// acc[s - s0] = bias_s + w_s . x for the slots s0..s1 of group g of lay, an upper or leaf layout (the children
// of one tree node, or the observed items of a leaf cluster: both begin with `FeatureMajor`'s fields).
template <class Layout>
void group_scores(Query q, const Layout& lay, int64_t g, const int32_t* row_of, int64_t s0, int64_t s1,
                  float* acc) {
    for (int64_t s = s0; s < s1; ++s) acc[s - s0] = lay.slot_bias[s];
    accumulate(q, lay.feat_ptr[g], lay.feat_ptr[g + 1], row_of, lay.feats.data, lay.row_ptr.data, lay.slot.data,
               lay.val.data, acc);
}

// One thread's buffers for `score_query`, allocated once per call: group scores, heap, drain buffers, the
// repeat set (a power of two above twice the heap), the query filter and the best parts of a split cluster.
struct LeafScratch {
    std::vector<float> acc;
    Heap heap;
    std::vector<float> tmp_score;
    std::vector<int64_t> tmp_slot;
    std::vector<int64_t> table;
    std::vector<uint8_t> seen_q;
    std::vector<float> probe_score;
    std::vector<int32_t> probe_part;

    LeafScratch(int64_t heap_size, int64_t max_group_size, int64_t probe)
        : acc(max_group_size, 0.0f), heap(heap_size), tmp_score(heap_size), tmp_slot(heap_size),
          table(table_size(heap_size), -1), seen_q(SEEN_MASK + 1, 0), probe_score(probe), probe_part(probe) {}

    static int64_t table_size(int64_t heap_size) {
        int64_t size = 1;
        while (size < 2 * heap_size) size *= 2;
        return size;
    }
};

int64_t repeat_hash(int64_t s, int64_t mask) { return int64_t(uint64_t(s) * 2654435761u) & mask; }

// Write the heap best-first into out_* (length k, padded with slot -1). When the heap holds more than k
// entries (items inserted into several clusters: an inserted slot can be in it once per cluster), only each
// slot's first, best, occurrence is kept: a small open-addressing set (table, all -1, left all -1) spots the
// repeats. Observed slots are in one cluster each and never repeat.
void drain(LeafScratch& s, int64_t n_base, float* out_score, int64_t* out_slot, int64_t k) {
    Heap& h = s.heap;
    if (h.capacity() == k) {
        h.drain(out_score, out_slot, k);
        return;
    }
    int64_t size = h.size();
    h.drain(s.tmp_score.data(), s.tmp_slot.data(), h.capacity());
    int64_t* table = s.table.data();
    int64_t mask = int64_t(s.table.size()) - 1;
    int64_t n_out = 0;
    for (int64_t a = 0; a < size && n_out < k; ++a) {
        int64_t slot = s.tmp_slot[a];
        if (slot >= n_base) {
            int64_t c = repeat_hash(slot, mask);
            while (table[c] != -1 && table[c] != slot) c = (c + 1) & mask;
            if (table[c] == slot) continue;
            table[c] = slot;
        }
        out_score[n_out] = s.tmp_score[a];
        out_slot[n_out] = slot;
        ++n_out;
    }
    std::fill(out_score + n_out, out_score + k, 0.0f);
    std::fill(out_slot + n_out, out_slot + k, int64_t(-1));
    for (int64_t a = 0; a < n_out; ++a) {  // empty the set again: find each inserted slot written, clear its cell
        int64_t slot = out_slot[a];
        if (slot < n_base) continue;
        int64_t c = repeat_hash(slot, mask);
        while (table[c] != slot) c = (c + 1) & mask;
        table[c] = -1;
    }
}

// The query as a dense vector (this thread's row of dense_q) and its feature filter, set for one query's
// leaf scoring and cleared after it.
void set_dense(Query q, float* dense_q, uint8_t* seen_q, bool on) {
    for (int64_t a = 0; a < q.n; ++a) {
        dense_q[q.idx[a]] = on ? q.val[a] : 0.0f;
        seen_q[q.idx[a] & SEEN_MASK] = on;
    }
}

// Push the live inserted entries of one part (its chunk, then its tail item by item; see `xrmeta.inserted`)
// into the heap.
void score_part(int32_t part, Query q, const float* dense_q, float parent, const LeafLayout& leaf,
                const InsertedLayout& ins, LeafScratch& s) {
    Heap& h = s.heap;
    int64_t j0 = ins.slot_lo[part], j1 = ins.slot_hi[part];
    if (j1 > j0) {
        for (int64_t j = j0; j < j1; ++j) s.acc[j - j0] = leaf.slot_bias[ins.slots[j]];
        accumulate(q, ins.row_lo[part], ins.row_hi[part], nullptr, ins.feats.data, ins.row_ptr.data,
                   ins.local.data, ins.val.data, s.acc.data());
        double floor = raw_floor(h, parent, leaf.post);
        for (int64_t j = j0; j < j1; ++j) {
            int32_t slot = ins.slots[j];
            if (leaf.slot_alive[slot]) offer(h, s.acc[j - j0], slot, parent, leaf.post, floor);
        }
    }
    double floor = raw_floor(h, parent, leaf.post);
    for (int32_t e = ins.head[part]; e >= 0; e = ins.entry_next[e]) {  // the tail: gathered against dense_q
        int32_t slot = ins.entry_slot[e];
        if (!leaf.slot_alive[slot]) continue;
        float v = leaf.slot_bias[slot];
        for (int64_t p = leaf.w_ptr[slot]; p < leaf.w_ptr[slot + 1]; ++p)
            if (s.seen_q[leaf.w_idx[p] & SEEN_MASK]) v += leaf.w_val[p] * dense_q[leaf.w_idx[p]];
        offer(h, v, slot, parent, leaf.post, floor);
    }
}

// The probe_part.size() parts among cluster_parts[p0:p1] whose routers score highest against the dense query
// (ties: the smaller part), best first, into probe_*; returns how many.
int64_t best_routers(const InsertedLayout& ins, int64_t p0, int64_t p1, const float* dense_q, LeafScratch& s) {
    const int64_t m = int64_t(s.probe_part.size());
    float* score = s.probe_score.data();
    int32_t* parts = s.probe_part.data();
    int64_t n = 0;
    for (int64_t j = p0; j < p1; ++j) {
        int32_t part = ins.cluster_parts[j];
        float v = 0.0f;
        for (int64_t a = ins.router_lo[part]; a < ins.router_hi[part]; ++a) {
            int32_t f = ins.router_idx[a];
            if (s.seen_q[f & SEEN_MASK]) v += ins.router_val[a] * dense_q[f];
        }
        if (n == m && v <= score[m - 1]) continue;  // parts come in increasing order: an equal score loses
        int64_t i = std::min(n, m - 1);
        for (; i > 0 && score[i - 1] < v; --i) {  // insertion into the sorted list
            score[i] = score[i - 1];
            parts[i] = parts[i - 1];
        }
        score[i] = v;
        parts[i] = part;
        n = std::min(n + 1, m);
    }
    return n;
}

// The top-k items of one query's beam clusters (best first, with their path scores ** path_exponent) into
// out_*. Observed items are scored in the first n_observed clusters, inserted items in all. The heap holds k
// entries, or k * m when items are inserted into up to m clusters (then `drain` drops the repeats).
void score_query(Query q, const int64_t* clusters, const float* path, int64_t n_clusters, int64_t n_observed,
                 const LeafLayout& leaf, const InsertedLayout& ins, int subset, float* dense_q, LeafScratch& s,
                 float* out_score, int64_t* out_slot, int64_t k) {
    Heap& h = s.heap;
    set_dense(q, dense_q, s.seen_q.data(), true);
    for (int64_t b = 0; b < n_clusters; ++b) {
        int64_t c = clusters[b];
        float parent = path[b];
        if (subset != INSERTED_ITEMS && b < n_observed) {  // observed items: feature-major chunk of the cluster
            int64_t s0 = leaf.base_slot_ptr[c], s1 = leaf.base_slot_ptr[c + 1];
            group_scores(q, leaf, c, nullptr, s0, s1, s.acc.data());
            double floor = raw_floor(h, parent, leaf.post);
            for (int64_t slot = s0; slot < s1; ++slot)
                if (leaf.slot_alive[slot]) offer(h, s.acc[slot - s0], slot, parent, leaf.post, floor);
        }
        if (subset != OBSERVED_ITEMS) {  // inserted items: the cluster's parts, all or the best `probe`
            int64_t p0 = ins.cluster_part_ptr[c], p1 = ins.cluster_part_ptr[c + 1];
            if (p1 - p0 <= int64_t(s.probe_part.size())) {
                for (int64_t j = p0; j < p1; ++j) score_part(ins.cluster_parts[j], q, dense_q, parent, leaf, ins, s);
            } else {
                int64_t n_probe = best_routers(ins, p0, p1, dense_q, s);
                for (int64_t j = 0; j < n_probe; ++j) score_part(s.probe_part[j], q, dense_q, parent, leaf, ins, s);
            }
        }
    }
    set_dense(q, dense_q, s.seen_q.data(), false);
    drain(s, leaf.base_slot_ptr[leaf.base_slot_ptr.size - 1], out_score, out_slot, k);
}

// scores[:n] ** exponent: how much the cluster's path score counts in an item's score (1: as in PECOS).
void exponentiate(float* scores, int64_t n, double exponent) {
    if (exponent == 1.0) return;
    for (int64_t a = 0; a < n; ++a) scores[a] = float(std::pow(double(scores[a]), exponent));
}

// ---------------------------------------------------------------- beam search over the upper layers
// One thread's buffers for `beam_search`: group scores and a heap of last_beam nodes.
struct BeamScratch {
    std::vector<float> acc;
    Heap heap;
    BeamScratch(int64_t max_group_size, int64_t last_beam) : acc(max_group_size, 0.0f), heap(last_beam) {}
};

// The query's top-`last_beam` leaf clusters, best first, into cur_node[:n] and cur_score[:n] (padded to
// last_beam by the caller); returns n. Each layer keeps the `beam` best nodes by transform(w . [x, bias]) *
// parent's score and breaks exact ties by the smaller node number, as PECOS does; the last layer keeps
// `last_beam` >= beam, whose first `beam` are PECOS's leaf clusters (the order is total, so a longer list only
// appends).
int64_t beam_search(Query q, const UpperLayout& upper, int64_t beam, int64_t last_beam, BeamScratch& s,
                    float* cur_score, int64_t* cur_node) {
    const int64_t n_layers = upper.layer_slot_ptr.size - 1;
    cur_score[0] = 1.0f;
    if (n_layers == 0) {  // a single leaf cluster under the root
        cur_node[0] = 0;
        return 1;
    }
    Heap& h = s.heap;
    int64_t n_cur = 1;
    for (int64_t d = 0; d < n_layers; ++d) {
        h.set_capacity(d == n_layers - 1 ? last_beam : beam);
        for (int64_t b = 0; b < n_cur; ++b) {
            int64_t g = d == 0 ? 0 : 1 + upper.node_slot[upper.layer_slot_ptr[d - 1] + cur_node[b]];
            int64_t s0 = upper.group_slot_ptr[g], s1 = upper.group_slot_ptr[g + 1];
            int32_t dense = upper.dense_of_group[g];
            const int32_t* row_of = dense >= 0 ? upper.dense_rows.data + dense * upper.dense_width : nullptr;
            group_scores(q, upper, g, row_of, s0, s1, s.acc.data());
            float parent = cur_score[b];
            double floor = raw_floor(h, parent, upper.post);
            for (int64_t slot = s0; slot < s1; ++slot)
                offer(h, s.acc[slot - s0], upper.slot_node[slot], parent, upper.post, floor);
        }
        n_cur = h.size();
        h.drain(cur_score, cur_node, h.capacity());
    }
    return n_cur;
}

void fill_padding(MutSpan<int64_t> slots, MutSpan<float> scores) {
    std::fill(slots.data, slots.data + slots.size, int64_t(-1));
    std::fill(scores.data, scores.data + scores.size, 0.0f);
}

}  // namespace

int query_problem(Span<int32_t> x_idx, Span<float> x_val, int64_t n_features) {
    for (int64_t a = 0; a < x_idx.size; ++a)
        if (x_idx[a] < 0 || x_idx[a] >= n_features) return 1;
    for (int64_t a = 0; a < x_val.size; ++a)
        if (!std::isfinite(x_val[a])) return 2;
    return 0;
}

void upper_beams(const Rows& queries, const UpperLayout& upper, int64_t beam, int64_t last_beam,
                 int64_t max_group_size, int64_t n_threads, MutSpan<int64_t> out_cluster, MutSpan<float> out_score) {
    fill_padding(out_cluster, out_score);
    parallel_chunks(queries.n_rows(), n_threads, [&](int64_t, int64_t lo, int64_t hi) {
        BeamScratch scratch(max_group_size, last_beam);
        for (int64_t i = lo; i < hi; ++i)
            beam_search(query(queries, i), upper, beam, last_beam, scratch, out_score.data + i * last_beam,
                        out_cluster.data + i * last_beam);
    });
}

void leaf_topk(const Rows& queries, const Rows& beams, const LeafLayout& leaf, const InsertedLayout& ins,
               int subset, int64_t k, int64_t heap, int64_t max_group_size, MutSpan<float> dense_q, int64_t probe,
               Span<int64_t> n_observed, MutSpan<int64_t> out_slot, MutSpan<float> out_score) {
    LeafScratch scratch(heap, max_group_size, probe);
    std::vector<int64_t> clusters;
    std::vector<float> path;
    for (int64_t i = 0; i < queries.n_rows(); ++i) {
        int64_t b0 = beams.ptr[i], nb = beams.ptr[i + 1] - b0;
        clusters.assign(beams.idx.data + b0, beams.idx.data + b0 + nb);
        path.assign(beams.val.data + b0, beams.val.data + b0 + nb);
        exponentiate(path.data(), nb, leaf.path_exponent);
        int64_t observed = n_observed.size ? std::min(n_observed[i], nb) : nb;
        score_query(query(queries, i), clusters.data(), path.data(), nb, observed, leaf, ins, subset, dense_q.data,
                    scratch, out_score.data + i * k, out_slot.data + i * k, k);
    }
}

// A batch is searched in two passes: every query's beam first, then the leaf scoring in the order of the
// queries' best clusters, so that queries reading the same clusters follow each other and find them in cache
// (as PECOS sorts its work by chunk); that halved the time of a batch of Home Depot queries.
void search_topk(const Rows& queries, const UpperLayout& upper, const LeafLayout& leaf, const InsertedLayout& ins,
                 int64_t beam, int64_t inserted_beam, int subset, int64_t k, int64_t heap, int64_t max_group_size,
                 int64_t n_threads, MutSpan<float> dense_q, int64_t n_features, int64_t probe,
                 MutSpan<int64_t> out_slot, MutSpan<float> out_score) {
    fill_padding(out_slot, out_score);
    const int64_t n = queries.n_rows();
    n_threads = std::min(n_threads, dense_q.size / std::max<int64_t>(n_features, 1));
    // the last layer's wider list costs a larger heap, and inserted items are few
    const int64_t wide = subset != OBSERVED_ITEMS ? inserted_beam : beam;
    std::vector<int64_t> beam_cluster(n * wide, -1), n_beam(n, 0);
    std::vector<float> beam_score(n * wide, 0.0f);
    parallel_chunks(n, n_threads, [&](int64_t, int64_t lo, int64_t hi) {
        BeamScratch scratch(max_group_size, wide);
        for (int64_t i = lo; i < hi; ++i) {
            Query q = query(queries, i);
            if (q.n == 0) continue;  // no known term: no evidence for any item (left padded: slot -1)
            n_beam[i] = beam_search(q, upper, beam, wide, scratch, &beam_score[i * wide], &beam_cluster[i * wide]);
            exponentiate(&beam_score[i * wide], n_beam[i], leaf.path_exponent);
        }
    });
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), int64_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return beam_cluster[a * wide] < beam_cluster[b * wide]; });
    parallel_chunks(n, n_threads, [&](int64_t chunk, int64_t lo, int64_t hi) {
        LeafScratch scratch(heap, max_group_size, probe);
        float* dense = dense_q.data + chunk * n_features;
        for (int64_t j = lo; j < hi; ++j) {
            int64_t i = order[j];
            if (n_beam[i] == 0) continue;
            score_query(query(queries, i), &beam_cluster[i * wide], &beam_score[i * wide], n_beam[i], beam, leaf,
                        ins, subset, dense, scratch, out_score.data + i * k, out_slot.data + i * k, k);
        }
    });
}

}  // namespace xrmeta
