#include "xrmeta/meta.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "xrmeta/threads.hpp"

namespace xrmeta {

namespace {

// The float types below are numba's (checked with `inspect_types`): float32 arrays and products, float64 sums
// where numba starts one from a Python float, float32 sums where it starts one from an array element.

// out = layer_norm(x) * gain + shift for each of the rows of x (rows x d).
void layer_norm(const float* x, int64_t rows, int64_t d, const float* gain, const float* shift, float* out) {
    for (int64_t t = 0; t < rows; ++t) {
        const float* xt = x + t * d;
        double mean = 0.0;
        for (int64_t c = 0; c < d; ++c) mean += xt[c];
        mean /= static_cast<double>(d);
        double var = 0.0;
        for (int64_t c = 0; c < d; ++c) var += (xt[c] - mean) * (xt[c] - mean);
        const double inv = 1.0 / std::sqrt(var / static_cast<double>(d) + 1e-5);
        for (int64_t c = 0; c < d; ++c)
            out[t * d + c] = static_cast<float>((xt[c] - mean) * inv * gain[c] + shift[c]);
    }
}

// out = x @ w + b (rows x d_in times d_in x d_out), optionally ReLU: plain loops for the tiny per-item matrices,
// the inner one along a row of w.
void affine(const float* x, int64_t rows, int64_t d_in, const float* w, const float* b, int64_t d_out, bool relu,
            float* out) {
    for (int64_t t = 0; t < rows; ++t) {
        float* ot = out + t * d_out;
        for (int64_t o = 0; o < d_out; ++o) ot[o] = b[o];
        for (int64_t c = 0; c < d_in; ++c) {
            const float xc = x[t * d_in + c];
            const float* wc = w + c * d_out;
            for (int64_t o = 0; o < d_out; ++o) ot[o] += xc * wc[o];
        }
        if (relu)
            for (int64_t o = 0; o < d_out; ++o) ot[o] = std::max(ot[o], 0.0f);
    }
}

// numba's softplus of a float32: exp and log1p in float32, the sum in float64.
float softplus(float x) {
    return static_cast<float>(std::max(static_cast<double>(x), 0.0) + std::log1p(std::exp(-std::fabs(x))));
}

}  // namespace

void meta_forward(Span<float> tokens, Span<bool> valid, int64_t n, const MetaNet& net, int64_t n_threads,
                  MutSpan<float> nbr_out, MutSpan<float> self_out) {
    const int64_t T = net.n_tokens, F = net.n_features, d = net.d_model, dff = net.d_ff, S = net.n_self;
    const int64_t dh = d / net.n_heads;
    const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
    parallel_chunks(n, n_threads, [&](int64_t, int64_t lo, int64_t hi) {
        std::vector<float> x(T * d), h(T * d), q(T * d), k(T * d), v(T * d), mixed(T * d), delta(T * d),
            ff(T * dff), att(T);
        for (int64_t i = lo; i < hi; ++i) {
            const bool* ok = valid.data + i * T;
            std::fill(nbr_out.data + i * (T - 1), nbr_out.data + (i + 1) * (T - 1), 0.0f);  // absent: 0
            for (int64_t t = 0; t < T; ++t) {  // input embedding: token kind 0 (the item) or 1 (a neighbour)
                const int64_t kind = t == 0 ? 0 : 1;
                float* xt = x.data() + t * d;
                for (int64_t c = 0; c < d; ++c) xt[c] = net.b_in[kind * d + c] + net.pos[t * d + c];
                for (int64_t f = 0; f < F; ++f) {
                    const float z = (tokens[(i * T + t) * F + f] - net.mu[kind * F + f]) / net.sd[kind * F + f];
                    const float* w = net.w_in.data + (kind * F + f) * d;
                    for (int64_t c = 0; c < d; ++c) xt[c] += z * w[c];
                }
            }
            for (int64_t layer = 0; layer < net.n_layers; ++layer) {
                const int64_t vec = layer * d, mat = layer * d * d;
                layer_norm(x.data(), T, d, net.ln1_g.data + vec, net.ln1_b.data + vec, h.data());
                affine(h.data(), T, d, net.wq.data + mat, net.bq.data + vec, d, false, q.data());
                affine(h.data(), T, d, net.wk.data + mat, net.bk.data + vec, d, false, k.data());
                affine(h.data(), T, d, net.wv.data + mat, net.bv.data + vec, d, false, v.data());
                std::fill(mixed.begin(), mixed.end(), 0.0f);
                for (int64_t head = 0; head < net.n_heads; ++head) {
                    const int64_t c0 = head * dh;
                    for (int64_t t = 0; t < T; ++t) {
                        double top = -std::numeric_limits<double>::infinity();
                        for (int64_t u = 0; u < T; ++u) {
                            if (!ok[u]) continue;
                            double s = 0.0;
                            for (int64_t c = c0; c < c0 + dh; ++c) s += q[t * d + c] * k[u * d + c];
                            att[u] = static_cast<float>(s * scale);
                            top = std::max(top, static_cast<double>(att[u]));
                        }
                        double total = 0.0;
                        for (int64_t u = 0; u < T; ++u) {
                            if (!ok[u]) continue;
                            att[u] = static_cast<float>(std::exp(att[u] - top));
                            total += att[u];
                        }
                        for (int64_t u = 0; u < T; ++u) {
                            if (!ok[u]) continue;
                            for (int64_t c = c0; c < c0 + dh; ++c)
                                mixed[t * d + c] = static_cast<float>(mixed[t * d + c] + att[u] / total * v[u * d + c]);
                        }
                    }
                }
                affine(mixed.data(), T, d, net.wo.data + mat, net.bo.data + vec, d, false, delta.data());
                for (int64_t a = 0; a < T * d; ++a) x[a] += delta[a];
                layer_norm(x.data(), T, d, net.ln2_g.data + vec, net.ln2_b.data + vec, h.data());
                affine(h.data(), T, d, net.w1.data + layer * d * dff, net.b1.data + layer * dff, dff, true, ff.data());
                affine(ff.data(), T, dff, net.w2.data + layer * dff * d, net.b2.data + vec, d, false, delta.data());
                for (int64_t a = 0; a < T * d; ++a) x[a] += delta[a];
            }
            layer_norm(x.data(), T, d, net.lnf_g.data, net.lnf_b.data, h.data());
            for (int64_t t = 1; t < T; ++t) {  // a neighbour's head: its coefficient
                if (!ok[t]) continue;
                float s = net.b_nbr[0];
                for (int64_t c = 0; c < d; ++c) s += h[t * d + c] * net.w_nbr[c];
                nbr_out[i * (T - 1) + t - 1] = softplus(s);
            }
            for (int64_t o = 0; o < S; ++o) {  // the item's head: block scales (softplus), then the bias (raw)
                float s = net.b_self[o];
                for (int64_t c = 0; c < d; ++c) s += h[c] * net.w_self[c * S + o];
                self_out[i * S + o] = o < S - 1 ? softplus(s) : s;
            }
        }
    });
}

}  // namespace xrmeta
