// The learned generator's forward pass, a port of `xrmeta/kernels/meta.py` `meta_forward` (the numba oracle of
// the parity tests; `coldstart.network.make_net` is the torch network it mirrors). No fast-math: a log replay
// must give the same bits on every run, and the same float types and accumulation order as numba keep the two
// equal to rounding.
#pragma once

#include <cstdint>

#include "xrmeta/layout.hpp"

namespace xrmeta {

// The network's float32 parameters (`coldstart.learned.PARAM_ORDER`), row-major, and its sizes. Per layer arrays
// stack the layers first.
struct MetaNet {
    int64_t n_features = 0;  // F, per token
    int64_t n_tokens = 0;    // T = 1 + neighbours
    int64_t d_model = 0;     // d
    int64_t n_layers = 0;    // L
    int64_t d_ff = 0;
    int64_t n_heads = 1;
    int64_t n_self = 0;      // outputs of the item token (block scales, then the bias)
    Span<float> mu, sd;      // (2, F): token 0, then the neighbour tokens
    Span<float> w_in;        // (2, F, d)
    Span<float> b_in;        // (2, d)
    Span<float> pos;         // (T, d)
    Span<float> ln1_g, ln1_b;  // (L, d)
    Span<float> wq, bq, wk, bk, wv, bv, wo, bo;  // (L, d, d), (L, d)
    Span<float> ln2_g, ln2_b;  // (L, d)
    Span<float> w1, b1;        // (L, d, d_ff), (L, d_ff)
    Span<float> w2, b2;        // (L, d_ff, d), (L, d)
    Span<float> lnf_g, lnf_b;  // (d,)
    Span<float> w_nbr, b_nbr;  // (d, 1), (1,)
    Span<float> w_self, b_self;  // (d, n_self), (n_self,)
};

// tokens (n, T, F), valid (n, T) (absent neighbours are masked out of attention) -> nbr_out (n, T-1), zero where
// absent, and self_out (n, n_self), both written in full. Items run in one chunk per thread.
void meta_forward(Span<float> tokens, Span<bool> valid, int64_t n, const MetaNet& net, int64_t n_threads,
                  MutSpan<float> nbr_out, MutSpan<float> self_out);

}  // namespace xrmeta
