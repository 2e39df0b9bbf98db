"""The learned generator's forward pass (`meta_forward`) in numba: the reference implementation of the compiled
`xrmeta._core.meta_forward` (cpp/src/meta.cpp) that serving runs; tests/test_core_coldstart.py checks the two
agree. No production path calls it.

Built parallel and serial (`xrmeta.threads`): call `threads.run(meta_forward, threads, ..., n_threads)`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import threads


@njit(cache=True, inline="always")
def _layer_norm(x, gain, shift, out):
    for t in range(x.shape[0]):
        mean = 0.0
        for c in range(x.shape[1]):
            mean += x[t, c]
        mean /= x.shape[1]
        var = 0.0
        for c in range(x.shape[1]):
            var += (x[t, c] - mean) ** 2
        inv = 1.0 / np.sqrt(var / x.shape[1] + 1e-5)
        for c in range(x.shape[1]):
            out[t, c] = (x[t, c] - mean) * inv * gain[c] + shift[c]


@njit(cache=True, inline="always")
def _softplus(x):
    return max(x, 0.0) + np.log1p(np.exp(-abs(x)))


@njit(cache=True, inline="always")
def _affine(x, w, b, relu, out):
    """out = x @ w + b (optionally ReLU), for the tiny per-item matrices: plain loops, no BLAS call overhead."""
    for t in range(x.shape[0]):
        for o in range(w.shape[1]):
            out[t, o] = b[o]
        for c in range(x.shape[1]):  # the inner loop runs along a row of w: contiguous, so it vectorizes
            xc = x[t, c]
            for o in range(w.shape[1]):
                out[t, o] += xc * w[c, o]
        if relu:
            for o in range(w.shape[1]):
                out[t, o] = max(out[t, o], 0.0)


# no fastmath: results must not depend on alignment (log replay is bit-exact)
@threads.parallel_and_serial(cache=True, nogil=True)
def meta_forward(tokens, valid, mu, sd, w_in, b_in, pos, ln1_g, ln1_b, wq, bq, wk, bk, wv, bv, wo, bo, ln2_g, ln2_b,
                 w1, b1, w2, b2, lnf_g, lnf_b, w_nbr, b_nbr, w_self, b_self, n_heads, n_threads):
    """The learned generator's forward pass (mirrors `coldstart.learned.make_net`, a pre-LN transformer).

    tokens (n, T, F): token 0 describes the new item, tokens 1..T-1 its neighbours; valid (n, T) masks absent
    neighbours out of attention. Returns (neighbour coefficients (n, T-1), zero where absent;
    self outputs (n, S)): the head of token t>0 gives its neighbour's weight, the head of token 0 the rest;
    every output but the last (the bias) passes through a softplus. Items run in one chunk per thread, each
    with its scratch allocated once."""
    n, T, F = tokens.shape
    d = w_in.shape[2]
    n_layers = wq.shape[0]
    dh = d // n_heads
    scale = 1.0 / np.sqrt(dh)
    nbr_out = np.zeros((n, T - 1), dtype=np.float32)
    self_out = np.zeros((n, w_self.shape[1]), dtype=np.float32)
    n_chunks = max(1, min(n, n_threads))
    for chunk in prange(n_chunks):
        x = np.empty((T, d), dtype=np.float32)
        h = np.empty((T, d), dtype=np.float32)
        q = np.empty((T, d), dtype=np.float32)
        k = np.empty((T, d), dtype=np.float32)
        v = np.empty((T, d), dtype=np.float32)
        mixed = np.empty((T, d), dtype=np.float32)
        delta = np.empty((T, d), dtype=np.float32)
        ff = np.empty((T, w1.shape[2]), dtype=np.float32)
        att = np.empty(T, dtype=np.float32)
        for i in range(chunk * n // n_chunks, (chunk + 1) * n // n_chunks):
            for t in range(T):
                kind = 0 if t == 0 else 1
                for c in range(d):
                    x[t, c] = b_in[kind, c] + pos[t, c]
                for f in range(F):
                    z = (tokens[i, t, f] - mu[kind, f]) / sd[kind, f]
                    for c in range(d):
                        x[t, c] += z * w_in[kind, f, c]
            for layer in range(n_layers):
                _layer_norm(x, ln1_g[layer], ln1_b[layer], h)
                _affine(h, wq[layer], bq[layer], False, q)
                _affine(h, wk[layer], bk[layer], False, k)
                _affine(h, wv[layer], bv[layer], False, v)
                mixed[:] = 0.0
                for head in range(n_heads):
                    c0 = head * dh
                    for t in range(T):
                        top = -np.inf
                        for u in range(T):
                            if valid[i, u]:
                                s = 0.0
                                for c in range(c0, c0 + dh):
                                    s += q[t, c] * k[u, c]
                                att[u] = s * scale
                                top = max(top, att[u])
                        total = 0.0
                        for u in range(T):
                            if valid[i, u]:
                                att[u] = np.exp(att[u] - top)
                                total += att[u]
                        for u in range(T):
                            if valid[i, u]:
                                for c in range(c0, c0 + dh):
                                    mixed[t, c] += att[u] / total * v[u, c]
                _affine(mixed, wo[layer], bo[layer], False, delta)
                x += delta
                _layer_norm(x, ln2_g[layer], ln2_b[layer], h)
                _affine(h, w1[layer], b1[layer], True, ff)
                _affine(ff, w2[layer], b2[layer], False, delta)
                x += delta
            _layer_norm(x, lnf_g, lnf_b, h)
            for t in range(1, T):
                if valid[i, t]:
                    s = b_nbr[0]
                    for c in range(d):
                        s += h[t, c] * w_nbr[c, 0]
                    nbr_out[i, t - 1] = _softplus(s)
            for o in range(w_self.shape[1]):
                s = b_self[o]
                for c in range(d):
                    s += h[0, c] * w_self[c, o]
                self_out[i, o] = _softplus(s) if o < w_self.shape[1] - 1 else s
    return nbr_out, self_out
