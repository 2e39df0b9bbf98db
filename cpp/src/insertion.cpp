#include "xrmeta/insertion.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace xrmeta {

void link(MutSpan<int32_t> head, MutSpan<int64_t> tail_count, Span<int64_t> part, int64_t first_entry,
          MutSpan<int32_t> next) {
    for (int64_t i = 0; i < part.size; ++i) {
        int64_t c = part[i];
        next[i] = head[c];
        head[c] = static_cast<int32_t>(first_entry + i);
        tail_count[c] += 1;
    }
}

void live_entries(Span<int64_t> parts, const PartEntries& in, std::vector<int64_t>& entries,
                  std::vector<int64_t>& owner) {
    entries.clear();
    owner.clear();
    std::vector<int64_t> tail;  // a tail is linked newest first: collected, then taken backwards
    for (int64_t k = 0; k < parts.size; ++k) {
        int64_t c = parts[k];
        for (int64_t j = in.slot_lo[c]; j < in.slot_hi[c]; ++j) {
            int64_t e = in.chunk_entries[j];
            if (in.alive[in.entry_slot[e]]) {
                entries.push_back(e);
                owner.push_back(c);
            }
        }
        tail.clear();
        for (int64_t e = in.head[c]; e >= 0; e = in.entry_next[e])
            if (in.alive[in.entry_slot[e]]) tail.push_back(e);
        for (auto e = tail.rbegin(); e != tail.rend(); ++e) {
            entries.push_back(*e);
            owner.push_back(c);
        }
    }
}

namespace {

struct Posting {
    int32_t feat;
    int32_t pos;  // in the cluster's slots
    float val;
};

}  // namespace

FeatureMajorChunks feature_major_chunks(Span<int64_t> slots, Span<int64_t> start, Span<int64_t> count,
                                        const Weights& w) {
    int64_t total = 0;
    for (int64_t j = 0; j < slots.size; ++j) total += w.ptr[slots[j] + 1] - w.ptr[slots[j]];
    FeatureMajorChunks out;
    out.feats.reserve(total);
    out.row_ends.reserve(total);
    out.local.reserve(total);
    out.val.reserve(total);
    out.rows_of.assign(count.size, 0);
    std::vector<Posting> postings;
    for (int64_t i = 0; i < count.size; ++i) {
        postings.clear();
        for (int64_t j = start[i]; j < start[i] + count[i]; ++j)
            for (int64_t a = w.ptr[slots[j]]; a < w.ptr[slots[j] + 1]; ++a)
                postings.push_back({w.idx[a], static_cast<int32_t>(j - start[i]), w.val[a]});
        // (feature, position) pairs are distinct (an item has each feature once), so any sort gives numba's order
        std::sort(postings.begin(), postings.end(), [](const Posting& a, const Posting& b) {
            return a.feat != b.feat ? a.feat < b.feat : a.pos < b.pos;
        });
        int64_t last = -1;
        for (const Posting& p : postings) {
            if (p.feat != last) {
                out.feats.push_back(p.feat);
                out.row_ends.push_back(0);
                out.rows_of[i] += 1;
                last = p.feat;
            }
            out.local.push_back(p.pos);
            out.val.push_back(p.val);
            out.row_ends.back() = static_cast<int64_t>(out.local.size());
        }
    }
    return out;
}

namespace {

// sims (n, 2) row-major: each row's dot product with both centres, summed in the row's order.
void similarities(const LocalRows& r, const std::vector<double>& x, const MutSpan<double>& centres,
                  std::vector<double>& sims) {
    for (int64_t i = 0; i < r.n_rows(); ++i)
        for (int64_t h = 0; h < 2; ++h) {
            const double* centre = centres.data + h * r.n_cols;
            double v = 0.0;
            for (int64_t a = r.ptr[i]; a < r.ptr[i + 1]; ++a) v += x[a] * centre[r.idx[a]];
            sims[2 * i + h] = v;
        }
}

// centres[h] = the normalised mean of the rows on side h (left as it was for an empty side).
void means(const LocalRows& r, const std::vector<double>& x, const MutSpan<bool>& side, MutSpan<double>& centres) {
    std::vector<double> sums(2 * r.n_cols, 0.0);
    int64_t count[2] = {0, 0};
    for (int64_t i = 0; i < r.n_rows(); ++i) {
        int64_t h = side[i] ? 1 : 0;
        count[h] += 1;
        for (int64_t a = r.ptr[i]; a < r.ptr[i + 1]; ++a) sums[h * r.n_cols + r.idx[a]] += x[a];
    }
    for (int64_t h = 0; h < 2; ++h) {
        if (count[h] == 0) continue;
        const double* sum = sums.data() + h * r.n_cols;
        double squares = 0.0;  // in column order, as numba's array sum
        for (int64_t k = 0; k < r.n_cols; ++k) squares += sum[k] * sum[k];
        double norm = std::sqrt(squares);
        if (norm > 0)
            for (int64_t k = 0; k < r.n_cols; ++k) centres[h * r.n_cols + k] = sum[k] / norm;
    }
}

// np.argmin of sims[:, 0]: the first smallest, or the first NaN.
int64_t least_like_first(const std::vector<double>& sims, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 0; i < n; ++i) {
        double v = sims[2 * i];
        if (std::isnan(v)) return i;
        if (v < sims[2 * best]) best = i;
    }
    return best;
}

// np.argsort(v, kind="mergesort"): stable, NaN last.
std::vector<int64_t> stable_argsort(const std::vector<double>& v) {
    std::vector<int64_t> order(v.size());
    std::iota(order.begin(), order.end(), int64_t(0));
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return v[a] < v[b] || (std::isnan(v[b]) && !std::isnan(v[a]));
    });
    return order;
}

}  // namespace

void two_means(const LocalRows& r, int64_t first, int64_t iterations, int64_t min_share, MutSpan<bool> side,
               MutSpan<double> centres) {
    const int64_t n = r.n_rows();
    std::vector<double> x(r.val.data, r.val.data + r.val.size);
    for (int64_t i = 0; i < n; ++i) {  // rows to unit length
        double norm = 0.0;
        for (int64_t a = r.ptr[i]; a < r.ptr[i + 1]; ++a) norm += x[a] * x[a];
        norm = std::max(std::sqrt(norm), 1e-30);
        for (int64_t a = r.ptr[i]; a < r.ptr[i + 1]; ++a) x[a] /= norm;
    }
    auto set_centre = [&](int64_t h, int64_t row) {
        for (int64_t a = r.ptr[row]; a < r.ptr[row + 1]; ++a) centres[h * r.n_cols + r.idx[a]] = x[a];
    };
    std::fill(centres.data, centres.data + centres.size, 0.0);
    set_centre(0, first);
    std::vector<double> sims(2 * n, 0.0);
    similarities(r, x, centres, sims);
    set_centre(1, least_like_first(sims, n));
    std::fill(side.data, side.data + side.size, false);
    for (int64_t it = 0; it < iterations; ++it) {
        similarities(r, x, centres, sims);
        bool changed = it == 0;
        for (int64_t i = 0; i < n; ++i) {
            bool s = sims[2 * i + 1] > sims[2 * i];
            changed |= s != side[i];
            side[i] = s;
        }
        if (!changed) break;
        means(r, x, side, centres);
    }
    int64_t n_second = std::count(side.data, side.data + n, true);
    if (std::min(n_second, n - n_second) < std::max<int64_t>(n / min_share, 1)) {  // lopsided: halves at the median
        similarities(r, x, centres, sims);
        std::vector<double> margin(n);
        for (int64_t i = 0; i < n; ++i) margin[i] = sims[2 * i + 1] - sims[2 * i];
        std::vector<int64_t> order = stable_argsort(margin);
        std::fill(side.data, side.data + n, false);
        for (int64_t k = n / 2; k < n; ++k) side[order[k]] = true;
    }
    means(r, x, side, centres);
}

void best_parts(Span<int64_t> slots, Span<int64_t> clusters, const Weights& w, const Routers& routers,
                MutSpan<float> dense, MutSpan<int32_t> out) {
    for (int64_t i = 0; i < slots.size; ++i) {
        int64_t s = slots[i];
        for (int64_t a = w.ptr[s]; a < w.ptr[s + 1]; ++a) dense[w.idx[a]] = w.val[a];
        int32_t best = -1;
        double best_score = -std::numeric_limits<double>::infinity();
        int64_t c = clusters[i];
        for (int64_t j = routers.cluster_part_ptr[c]; j < routers.cluster_part_ptr[c + 1]; ++j) {
            int32_t p = routers.cluster_parts[j];
            double v = 0.0;
            // the product in float32, the sum in float64: numba's types for float32 * float32 added to a float
            for (int64_t a = routers.lo[p]; a < routers.hi[p]; ++a)
                v += static_cast<double>(routers.val[a] * dense[routers.idx[a]]);
            if (v > best_score) {
                best = p;
                best_score = v;
            }
        }
        out[i] = best;
        for (int64_t a = w.ptr[s]; a < w.ptr[s + 1]; ++a) dense[w.idx[a]] = 0.0f;
    }
}

}  // namespace xrmeta
