#include "xrmeta/coldstart.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "xrmeta/threads.hpp"
#include "xrmeta/topk.hpp"

namespace xrmeta {

namespace {

// Out of line and cold: a check stays one compare in the kernels' inner loops.
[[noreturn, gnu::cold, gnu::noinline]] void throw_out_of_range(int64_t i, int64_t bound, const char* what) {
    throw std::out_of_range(std::string(what) + " " + std::to_string(i) + " out of range [0, " +
                            std::to_string(bound) + ")");
}

// Throws (IndexError in Python) unless 0 <= i < bound: a bad index in a caller's array must not write past
// the kernel's scratch.
inline void check_index(int64_t i, int64_t bound, const char* what) {
    if (static_cast<uint64_t>(i) >= static_cast<uint64_t>(bound)) throw_out_of_range(i, bound, what);
}

// dense[idx[p]] += coef * val[p] for p in [lo, hi); indices first touched under this stamp are appended to
// touched (a stamp, not dense == 0, marks them: sums may cancel to 0). Returns the new touched count.
template <class Index>
int64_t scatter(const Index* idx, const float* val, int64_t lo, int64_t hi, float coef, std::vector<float>& dense,
                std::vector<int64_t>& seen, int64_t stamp, std::vector<int64_t>& touched, int64_t n_touched,
                const char* what) {
    const int64_t bound = static_cast<int64_t>(dense.size());
    for (int64_t p = lo; p < hi; ++p) {
        const int64_t f = idx[p];
        check_index(f, bound, what);
        if (seen[f] != stamp) {
            seen[f] = stamp;
            touched[n_touched++] = f;
        }
        dense[f] += coef * val[p];
    }
    return n_touched;
}

}  // namespace

// ---------------------------------------------------------------- neighbour search (inverted index)
InvertedIndex inverted_index(const Rows& z, int64_t n_features, int64_t keep) {
    const int64_t nnz = z.idx.size;
    std::vector<int64_t> full_ptr(n_features + 1, 0);
    for (int64_t p = 0; p < nnz; ++p) {
        check_index(z.idx[p], n_features, "feature");
        ++full_ptr[z.idx[p] + 1];
    }
    std::partial_sum(full_ptr.begin(), full_ptr.end(), full_ptr.begin());
    std::vector<int64_t> rows(nnz);
    std::vector<float> vals(nnz);
    std::vector<int64_t> fill(full_ptr.begin(), full_ptr.end() - 1);
    for (int64_t r = 0; r < z.n_rows(); ++r)  // rows in order: each feature's rows come out sorted
        for (int64_t p = z.ptr[r]; p < z.ptr[r + 1]; ++p) {
            const int64_t at = fill[z.idx[p]]++;
            rows[at] = r;
            vals[at] = z.val[p];
        }
    if (keep <= 0) return {std::move(full_ptr), std::move(rows), std::move(vals)};

    InvertedIndex out;
    out.ptr.assign(n_features + 1, 0);
    for (int64_t f = 0; f < n_features; ++f)
        out.ptr[f + 1] = out.ptr[f] + std::min(full_ptr[f + 1] - full_ptr[f], keep);
    out.rows.resize(out.ptr[n_features]);
    out.vals.resize(out.ptr[n_features]);
    std::vector<int64_t> best;
    for (int64_t f = 0; f < n_features; ++f) {
        const int64_t lo = full_ptr[f], hi = full_ptr[f + 1];
        best.resize(hi - lo);
        std::iota(best.begin(), best.end(), lo);
        if (hi - lo > keep) {  // the keep largest values, ties to the smaller row (numba: a stable argsort)
            std::nth_element(best.begin(), best.begin() + keep, best.end(), [&](int64_t a, int64_t b) {
                return vals[a] > vals[b] || (vals[a] == vals[b] && a < b);
            });
            best.resize(keep);
            std::sort(best.begin(), best.end());  // back in row order
        }
        for (size_t a = 0; a < best.size(); ++a) {
            out.rows[out.ptr[f] + a] = rows[best[a]];
            out.vals[out.ptr[f] + a] = vals[best[a]];
        }
    }
    return out;
}

void knn_topk(const Rows& q, Span<int64_t> inv_ptr, Span<int64_t> inv_item, Span<float> inv_val, const Rows& z,
              int64_t n_items, int64_t n_features, int64_t k, int64_t n_candidates, int64_t n_threads,
              MutSpan<int64_t> out_item, MutSpan<float> out_sim) {
    const int64_t n = q.n_rows();
    const bool rescore = n_candidates > 0;
    parallel_chunks(n, n_threads, [&](int64_t, int64_t lo, int64_t hi) {
        std::vector<float> acc(n_items, 0.0f);
        std::vector<int64_t> seen(n_items, -1);  // query row that last touched an item (sums may cancel)
        std::vector<int64_t> touched(n_items);
        std::vector<float> dense_q(rescore ? n_features : 0, 0.0f);
        TopK<int64_t> candidates(rescore ? n_candidates : k), best(k);
        for (int64_t i = lo; i < hi; ++i) {
            int64_t n_touched = 0;
            for (int64_t a = q.ptr[i]; a < q.ptr[i + 1]; ++a) {
                const int64_t f = q.idx[a];
                check_index(f, n_features, "query feature");
                n_touched = scatter(inv_item.data, inv_val.data, inv_ptr[f], inv_ptr[f + 1], q.val[a], acc, seen, i,
                                    touched, n_touched, "item");
            }
            for (int64_t a = 0; a < n_touched; ++a) {
                const int64_t j = touched[a];
                candidates.push(acc[j], j);
                acc[j] = 0.0f;
            }
            float* row_sim = out_sim.data + i * k;
            int64_t* row_item = out_item.data + i * k;
            if (!rescore) {
                candidates.drain(row_sim, row_item, k);
                continue;
            }
            for (int64_t a = q.ptr[i]; a < q.ptr[i + 1]; ++a) dense_q[q.idx[a]] = q.val[a];
            for (int64_t a = 0; a < candidates.size(); ++a) {
                const int64_t j = candidates.id_at(a);
                double sim = 0.0;  // numba: float32 products summed in a float64
                for (int64_t p = z.ptr[j]; p < z.ptr[j + 1]; ++p) sim += z.val[p] * dense_q[z.idx[p]];
                best.push(static_cast<float>(sim), j);
            }
            for (int64_t a = q.ptr[i]; a < q.ptr[i + 1]; ++a) dense_q[q.idx[a]] = 0.0f;
            candidates.clear();
            best.drain(row_sim, row_item, k);
        }
    });
}

void cluster_vote(Span<int64_t> nbr_items, Span<float> nbr_sims, int64_t k, Span<int32_t> item_cluster,
                  Span<int64_t> fallback, int64_t m, MutSpan<int64_t> out) {
    const int64_t n = fallback.size;
    std::vector<int64_t> cluster(k);
    std::vector<double> vote(k);
    for (int64_t i = 0; i < n; ++i) {
        int64_t* row = out.data + i * m;
        std::fill(row, row + m, int64_t(-1));
        int64_t n_cl = 0;
        for (int64_t a = 0; a < k; ++a) {  // distinct clusters in order of their nearest neighbour, with votes
            const int64_t j = nbr_items[i * k + a];
            if (j < 0) continue;
            const int64_t c = item_cluster[j];
            const double v = std::max(static_cast<double>(nbr_sims[i * k + a]), 0.0);
            int64_t b = 0;
            while (b < n_cl && cluster[b] != c) ++b;
            if (b < n_cl) {
                vote[b] += v;
            } else {
                cluster[n_cl] = c;
                vote[n_cl++] = v;
            }
        }
        if (n_cl == 0) {
            if (m > 0) row[0] = fallback[i];
            continue;
        }
        for (int64_t r = 0; r < std::min(m, n_cl); ++r) {  // the largest remaining vote, earlier on ties
            int64_t best = -1;
            for (int64_t b = 0; b < n_cl; ++b)
                if (vote[b] >= 0 && (best < 0 || vote[b] > vote[best])) best = b;
            row[r] = cluster[best];
            vote[best] = -1.0;
        }
    }
}

// ---------------------------------------------------------------- sparse mixing of weight vectors
CsrOut mix_sparse(Span<int64_t> src_item, Span<float> src_coef, int64_t m, const Rows& w, const Rows& self,
                  Span<float> self_coef, int64_t n_features, float threshold, Span<int64_t> max_nnz) {
    const int64_t n = self_coef.size;
    std::vector<float> dense(n_features, 0.0f);
    std::vector<int64_t> seen(n_features, -1);  // row that last touched a feature (sums may cancel to 0)
    std::vector<int64_t> touched(n_features);
    std::vector<int64_t> order, sel;
    CsrOut out;
    out.ptr.assign(n + 1, 0);
    for (int64_t i = 0; i < n; ++i) {
        int64_t n_touched = 0;
        for (int64_t a = 0; a < m; ++a) {
            const int64_t j = src_item[i * m + a];
            const float coef = src_coef[i * m + a];
            if (j < 0 || coef == 0.0f) continue;  // a zero coefficient adds nothing (and its zeros are not stored)
            n_touched = scatter(w.idx.data, w.val.data, w.ptr[j], w.ptr[j + 1], coef, dense, seen, i, touched,
                                n_touched, "feature");
        }
        n_touched = scatter(self.idx.data, self.val.data, self.ptr[i], self.ptr[i + 1], self_coef[i], dense, seen, i,
                            touched, n_touched, "feature");
        int64_t kept = 0;  // |w| >= threshold and non-zero (a zero sum is never stored), in touched order
        for (int64_t a = 0; a < n_touched; ++a) {
            const int64_t f = touched[a];
            if (std::fabs(dense[f]) >= threshold && dense[f] != 0.0f)
                touched[kept++] = f;
            else
                dense[f] = 0.0f;
        }
        sel.assign(touched.begin(), touched.begin() + kept);
        if (kept > max_nnz[i]) {  // the max_nnz largest |w|, ties to the first touched (numba: a stable argsort)
            order.resize(kept);
            std::iota(order.begin(), order.end(), int64_t(0));
            std::nth_element(order.begin(), order.begin() + max_nnz[i], order.end(), [&](int64_t a, int64_t b) {
                const float ma = std::fabs(dense[sel[a]]), mb = std::fabs(dense[sel[b]]);
                return ma > mb || (ma == mb && a < b);
            });
            for (int64_t a = max_nnz[i]; a < kept; ++a) dense[sel[order[a]]] = 0.0f;
            for (int64_t a = 0; a < max_nnz[i]; ++a) order[a] = sel[order[a]];
            sel.assign(order.begin(), order.begin() + max_nnz[i]);
        }
        std::sort(sel.begin(), sel.end());
        for (int64_t f : sel) {
            out.idx.push_back(static_cast<int32_t>(f));
            out.val.push_back(dense[f]);
            dense[f] = 0.0f;
        }
        out.ptr[i + 1] = static_cast<int64_t>(out.idx.size());
    }
    return out;
}

// ---------------------------------------------------------------- learned generator: input features
void item_tokens(const Rows& s, Span<int64_t> nbrs, Span<float> sims, int64_t K, const Rows& z, Span<float> stats,
                 int64_t n_stats, Span<int8_t> feature_block, int64_t n_blocks, int64_t n_features,
                 int64_t n_threads, MutSpan<float> tokens, MutSpan<bool> valid) {
    const int64_t n = s.n_rows(), T = K + 1;
    auto block_of = [&](int64_t f) {
        check_index(f, feature_block.size, "feature");
        const int64_t b = feature_block[f];
        check_index(b, n_blocks, "n-gram block");
        return b;
    };
    // The types follow numba's: float32 products summed in float64, float32 stores.
    parallel_chunks(n, n_threads, [&](int64_t, int64_t lo, int64_t hi) {
        std::vector<double> per(n_blocks);
        for (int64_t i = lo; i < hi; ++i) {
            const int64_t a0 = s.ptr[i], a1 = s.ptr[i + 1];
            double norm = 0.0;
            for (int64_t p = a0; p < a1; ++p) norm += s.val[p] * s.val[p];
            const double inv = norm > 0 ? 1.0 / std::sqrt(norm) : 0.0;
            float* item = tokens.data + i * T * n_features;
            std::fill(item, item + T * n_features, 0.0f);
            std::fill(valid.data + i * T, valid.data + (i + 1) * T, false);
            for (int64_t p = a0; p < a1; ++p) {
                const int64_t b = block_of(s.idx[p]);
                const double x = s.val[p] * inv;
                item[b] = static_cast<float>(item[b] + x * x);
                item[n_blocks + b] = static_cast<float>(item[n_blocks + b] + 1.0);
            }
            for (int64_t b = 0; b < n_blocks; ++b) item[n_blocks + b] = std::log1p(item[n_blocks + b]);  // float
            valid[i * T] = true;
            const double best = K > 0 && nbrs[i * K] >= 0 ? static_cast<double>(sims[i * K]) : 0.0;
            double total = 0.0;
            int64_t n_valid = 0;
            for (int64_t k = 0; k < K; ++k) {
                const int64_t j = nbrs[i * K + k];
                if (j < 0) continue;
                valid[i * T + 1 + k] = true;
                const float sim = sims[i * K + k];
                total += sim;
                ++n_valid;
                float* tok = item + (1 + k) * n_features;
                tok[0] = sim;
                tok[1] = static_cast<float>(sim - best);
                std::fill(per.begin(), per.end(), 0.0);
                // two titles of similar length: one merge pass beats a binary search per feature
                int64_t p = a0, r = z.ptr[j];
                const int64_t r1 = z.ptr[j + 1];
                while (p < a1 && r < r1) {
                    if (s.idx[p] < z.idx[r]) {
                        ++p;
                    } else if (s.idx[p] > z.idx[r]) {
                        ++r;
                    } else {
                        per[block_of(s.idx[p])] += s.val[p] * z.val[r];
                        ++p;
                        ++r;
                    }
                }
                for (int64_t b = 0; b < n_blocks; ++b) tok[2 + b] = static_cast<float>(per[b] * inv);
                for (int64_t c = 0; c < n_stats; ++c) tok[2 + n_blocks + c] = stats[j * n_stats + c];
            }
            item[2 * n_blocks] = static_cast<float>(best);
            item[2 * n_blocks + 1] = static_cast<float>(total / static_cast<double>(std::max<int64_t>(n_valid, 1)));
        }
    });
}

}  // namespace xrmeta
