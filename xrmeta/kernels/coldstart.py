"""Cold-start kernels in numba: the reference implementations of the compiled ones in `xrmeta._core`
(cpp/src/coldstart.cpp) that serving runs -- the inverted index and neighbour search (`inverted_index`,
`knn_topk`), cluster vote, sparse mixing of weight vectors (`mix_sparse`) and the learned generator's input tokens
(`item_tokens`). No production path calls them: tests/test_core_coldstart.py checks the C++ against them.
`block_dots` is a training helper (`coldstart.training.pair_dots`) and stays here.

Kernels with a parallel loop are built parallel and serial (`xrmeta.threads`): call them with
`threads.run(kernel, threads, ..., n_threads)`, n_threads = `threads.resolve(threads)` (the chunks' count).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import threads
from .search import _heap_drain, _heap_push


@njit(cache=True, inline="always")
def _scatter(idx, val, lo, hi, coef, dense, seen, stamp, touched, n_touched):
    """dense[idx[p]] += coef * val[p] for p in [lo, hi); indices first touched under this stamp are listed in
    touched (a stamp, not dense == 0, marks them: sums may cancel to 0). Returns the new touched count."""
    for p in range(lo, hi):
        f = idx[p]
        if seen[f] != stamp:
            seen[f] = stamp
            touched[n_touched] = f
            n_touched += 1
        dense[f] += coef * val[p]
    return n_touched


# ---------------------------------------------------------------- neighbour search (exact, inverted index)
@njit(cache=True, nogil=True)
def inverted_index(z_ptr, z_idx, z_val, n_features, keep):
    """The feature -> rows index of CSR rows Z (n x F): (ptr, rows int64, vals float32), each feature's rows in
    increasing order; keep > 0 keeps only each feature's `keep` largest values (ties: the smaller row). Compiled
    and GIL-free: scipy's transpose holds the GIL, and a model loaded while queries run (`reload`) must not."""
    count = np.zeros(n_features + 1, dtype=np.int64)
    for p in range(z_idx.shape[0]):
        count[z_idx[p] + 1] += 1
    full_ptr = np.cumsum(count)
    rows = np.empty(z_idx.shape[0], dtype=np.int64)
    vals = np.empty(z_idx.shape[0], dtype=np.float32)
    fill = full_ptr[:-1].copy()
    for r in range(z_ptr.shape[0] - 1):  # rows in order: each feature's rows come out sorted
        for p in range(z_ptr[r], z_ptr[r + 1]):
            f = z_idx[p]
            rows[fill[f]] = r
            vals[fill[f]] = z_val[p]
            fill[f] += 1
    if keep <= 0:
        return full_ptr, rows, vals
    ptr = np.zeros(n_features + 1, dtype=np.int64)
    for f in range(n_features):
        ptr[f + 1] = ptr[f] + min(full_ptr[f + 1] - full_ptr[f], keep)
    out_rows = np.empty(ptr[n_features], dtype=np.int64)
    out_vals = np.empty(ptr[n_features], dtype=np.float32)
    for f in range(n_features):
        lo, hi = full_ptr[f], full_ptr[f + 1]
        if hi - lo <= keep:
            out_rows[ptr[f] : ptr[f + 1]] = rows[lo:hi]
            out_vals[ptr[f] : ptr[f + 1]] = vals[lo:hi]
        else:
            best = np.sort(np.argsort(-vals[lo:hi], kind="mergesort")[:keep])  # largest first, stable; row order
            out_rows[ptr[f] : ptr[f + 1]] = rows[lo:hi][best]
            out_vals[ptr[f] : ptr[f + 1]] = vals[lo:hi][best]
    return ptr, out_rows, out_vals


@threads.parallel_and_serial(cache=True, nogil=True)
def knn_topk(q_ptr, q_idx, q_val, inv_ptr, inv_item, inv_val, z_ptr, z_idx, z_val, n_items, n_features, k,
             n_candidates, n_threads):
    """Top-k items by inner product for each query row, through an inverted index (feature -> items).

    Cost per query is the length of its features' posting lists, not the catalogue size. With a full index and
    n_candidates = 0 the result is exact. With impact-truncated posting lists (each keeps its largest weights),
    the partial sums only nominate the n_candidates best items, which are then rescored exactly from their rows
    (z_*), so every returned similarity is exact and only the candidate set is approximate.
    Returns (items, sims), (n, k); missing entries have item -1.
    """
    n = q_ptr.shape[0] - 1
    out_item = np.full((n, k), -1, dtype=np.int64)
    out_sim = np.zeros((n, k), dtype=np.float32)
    n_chunks = min(n, n_threads)  # n_threads: the caller's resolved `threads` (one scratch set per chunk)
    n_cand = n_candidates if n_candidates > 0 else k
    for t in prange(n_chunks):
        acc = np.zeros(n_items, dtype=np.float32)
        seen = np.full(n_items, -1, dtype=np.int64)  # query row that last touched an item (sums may cancel)
        touched = np.empty(n_items, dtype=np.int64)
        dense_q = np.zeros(n_features, dtype=np.float32)
        c_score = np.empty(n_cand, dtype=np.float32)
        c_item = np.empty(n_cand, dtype=np.int64)
        h_score = np.empty(k, dtype=np.float32)
        h_item = np.empty(k, dtype=np.int64)
        for i in range(t * n // n_chunks, (t + 1) * n // n_chunks):
            n_touched = 0
            for a in range(q_ptr[i], q_ptr[i + 1]):
                f = q_idx[a]
                n_touched = _scatter(inv_item, inv_val, inv_ptr[f], inv_ptr[f + 1], q_val[a], acc, seen, i,
                                     touched, n_touched)
            size = 0
            for a in range(n_touched):
                j = touched[a]
                size = _heap_push(c_score, c_item, size, n_cand, acc[j], j)
                acc[j] = 0.0
            if n_candidates > 0:
                for a in range(q_ptr[i], q_ptr[i + 1]):
                    dense_q[q_idx[a]] = q_val[a]
                n_best = 0
                for a in range(size):
                    j = c_item[a]
                    sim = 0.0
                    for p in range(z_ptr[j], z_ptr[j + 1]):
                        sim += z_val[p] * dense_q[z_idx[p]]
                    n_best = _heap_push(h_score, h_item, n_best, k, sim, j)
                for a in range(q_ptr[i], q_ptr[i + 1]):
                    dense_q[q_idx[a]] = 0.0
                _heap_drain(h_score, h_item, n_best, out_sim[i], out_item[i])
            else:
                _heap_drain(c_score, c_item, size, out_sim[i], out_item[i])
    return out_item, out_sim


@njit(cache=True, nogil=True)
def cluster_vote(nbr_items, nbr_sims, item_cluster, fallback, m):
    """(n, m) leaf clusters per row: the distinct clusters of its neighbours by similarity-weighted vote, best
    first, -1 padded. Ties go to the cluster of the nearer neighbour; rows with no neighbour take fallback[i]."""
    n, k = nbr_items.shape
    out = np.full((n, m), -1, dtype=np.int64)
    cl = np.empty(k, dtype=np.int64)
    vote = np.empty(k, dtype=np.float64)
    for i in range(n):
        n_cl = 0
        for a in range(k):  # distinct clusters in order of their nearest neighbour, with their votes
            j = nbr_items[i, a]
            if j < 0:
                continue
            c = item_cluster[j]
            seen = False
            for b in range(n_cl):
                if cl[b] == c:
                    vote[b] += max(nbr_sims[i, a], 0.0)
                    seen = True
                    break
            if not seen:
                cl[n_cl] = c
                vote[n_cl] = max(nbr_sims[i, a], 0.0)
                n_cl += 1
        if n_cl == 0:
            out[i, 0] = fallback[i]
            continue
        for r in range(min(m, n_cl)):  # selection: the largest remaining vote, earlier (nearer) on ties
            best = -1
            for b in range(n_cl):
                if vote[b] >= 0 and (best < 0 or vote[b] > vote[best]):
                    best = b
            out[i, r] = cl[best]
            vote[best] = -1.0
    return out


# ---------------------------------------------------------------- sparse mixing of weight vectors
@njit(cache=True, nogil=True)
def mix_sparse(
    src_item, src_coef,  # (n, m): for each output row, m source rows (-1 = none) and their coefficients
    w_ptr, w_idx, w_val,  # source rows (item-major CSR)
    self_ptr, self_idx, self_val, self_coef,  # each output row's own vector, times self_coef[i]
    n_features, threshold, max_nnz,  # max_nnz (n,): non-zeros kept in each output row
):
    """out_i = sum_a src_coef[i,a] * W[src_item[i,a]] + self_coef[i] * S_i, pruned to |w| >= threshold
    and to the max_nnz[i] largest |w| (sorted indices). Returns a CSR triple."""
    n, m = src_item.shape
    dense = np.zeros(n_features, dtype=np.float32)
    seen = np.full(n_features, -1, dtype=np.int64)  # row that last touched a feature (sums may cancel to 0)
    touched = np.empty(n_features, dtype=np.int64)
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    cap = max(1, max_nnz.sum())
    out_idx = np.empty(cap, dtype=np.int32)
    out_val = np.empty(cap, dtype=np.float32)
    nnz = 0
    for i in range(n):
        n_touched = 0
        for a in range(m):
            j = src_item[i, a]
            if j < 0 or src_coef[i, a] == 0.0:  # a zero coefficient adds nothing (and its zeros are not stored)
                continue
            n_touched = _scatter(w_idx, w_val, w_ptr[j], w_ptr[j + 1], src_coef[i, a], dense, seen, i, touched,
                                 n_touched)
        n_touched = _scatter(self_idx, self_val, self_ptr[i], self_ptr[i + 1], self_coef[i], dense, seen, i, touched,
                             n_touched)
        # keep |w| >= threshold, then the max_nnz largest by magnitude
        kept = 0
        for a in range(n_touched):
            f = touched[a]
            if abs(dense[f]) >= threshold and dense[f] != 0.0:  # a zero sum is never stored
                touched[kept] = f
                kept += 1
            else:
                dense[f] = 0.0
        sel = touched[:kept]
        if kept > max_nnz[i]:
            mags = np.empty(kept, dtype=np.float32)
            for a in range(kept):
                mags[a] = -abs(dense[sel[a]])
            order = np.argsort(mags, kind="mergesort")
            for a in range(max_nnz[i], kept):
                dense[sel[order[a]]] = 0.0
            sel = sel[order[: max_nnz[i]]]
        sel = np.sort(sel)
        for a in range(sel.shape[0]):
            out_idx[nnz] = sel[a]
            out_val[nnz] = dense[sel[a]]
            dense[sel[a]] = 0.0
            nnz += 1
        out_ptr[i + 1] = nnz
    return out_ptr, out_idx[:nnz].copy(), out_val[:nnz].copy()


# ---------------------------------------------------------------- learned generator: input features
@njit(cache=True, inline="always")
def _dot_into(w_idx, w_val, w0, w1, s_idx, s_val, s0, s1, feature_block, out):
    """Add the sparse dot product of row w (walked) and row s (binary-searched, sorted) into out[block]."""
    for a in range(w0, w1):
        f = w_idx[a]
        lo, hi = s0, s1
        while lo < hi:
            mid = (lo + hi) >> 1
            if s_idx[mid] < f:
                lo = mid + 1
            else:
                hi = mid
        if lo < s1 and s_idx[lo] == f:
            out[feature_block[f] if feature_block.shape[0] else 0] += w_val[a] * s_val[lo]


@threads.parallel_and_serial(cache=True, nogil=True)
def block_dots(a_ptr, a_idx, a_val, a_rows, b_ptr, b_idx, b_val, b_rows, feature_block, n_blocks):
    """out[p, j, blk] = sum over features f of block blk of A[a_rows[p], f] * B[b_rows[p, j], f].

    Both matrices are CSR with sorted indices; b_rows -1 means none (0). feature_block maps a feature to its
    block (empty: one block). The shorter row of each pair is walked and the longer binary-searched, so a pair
    costs O(min nnz * log max nnz) and needs no dense scratch (pairs run in parallel)."""
    n_pairs, m = b_rows.shape
    out = np.zeros((n_pairs, m, n_blocks), dtype=np.float32)
    for p in prange(n_pairs):
        a = a_rows[p]
        a0, a1 = a_ptr[a], a_ptr[a + 1]
        for j in range(m):
            b = b_rows[p, j]
            if b < 0:
                continue
            b0, b1 = b_ptr[b], b_ptr[b + 1]
            if a1 - a0 <= b1 - b0:
                _dot_into(a_idx, a_val, a0, a1, b_idx, b_val, b0, b1, feature_block, out[p, j])
            else:
                _dot_into(b_idx, b_val, b0, b1, a_idx, a_val, a0, a1, feature_block, out[p, j])
    return out


@threads.parallel_and_serial(cache=True, nogil=True)
def item_tokens(s_ptr, s_idx, s_val, nbrs, sims, z_ptr, z_idx, z_val, stats, feature_block, n_blocks, n_features,
                n_threads):
    """The learned generator's input tokens (see `coldstart.learned.token_features`) for new items with TF-IDF
    rows S (L2-normalized here) and their neighbours (rows of Z, -1 = none) with similarities sims.

    Token 0 (the item): per n-gram block its mass and log(1 + non-zeros), then the best and the mean neighbour
    similarity. Token 1 + k (neighbour k): its similarity, its gap to the best, its cosine to the item per block,
    then its row of stats. Returns (tokens (n, K+1, n_features) float32, valid (n, K+1))."""
    n, K = nbrs.shape
    tokens = np.zeros((n, K + 1, n_features), dtype=np.float32)
    valid = np.zeros((n, K + 1), dtype=np.bool_)
    n_chunks = max(1, min(n, n_threads))
    for t in prange(n_chunks):
        per = np.empty(n_blocks, dtype=np.float64)
        for i in range(t * n // n_chunks, (t + 1) * n // n_chunks):
            a0, a1 = s_ptr[i], s_ptr[i + 1]
            norm = 0.0
            for p in range(a0, a1):
                norm += s_val[p] * s_val[p]
            inv = 1.0 / np.sqrt(norm) if norm > 0 else 0.0
            item = tokens[i, 0]
            for p in range(a0, a1):
                b = feature_block[s_idx[p]]
                item[b] += (s_val[p] * inv) ** 2
                item[n_blocks + b] += 1.0
            for b in range(n_blocks):
                item[n_blocks + b] = np.log1p(item[n_blocks + b])
            valid[i, 0] = True
            best = sims[i, 0] if nbrs[i, 0] >= 0 else 0.0
            total, n_valid = 0.0, 0
            for k in range(K):
                j = nbrs[i, k]
                if j < 0:
                    continue
                valid[i, 1 + k] = True
                total += sims[i, k]
                n_valid += 1
                tok = tokens[i, 1 + k]
                tok[0] = sims[i, k]
                tok[1] = sims[i, k] - best
                per[:] = 0.0
                # two titles of similar length: one merge pass beats a binary search per feature
                p, r, b1 = a0, z_ptr[j], z_ptr[j + 1]
                while p < a1 and r < b1:
                    if s_idx[p] < z_idx[r]:
                        p += 1
                    elif s_idx[p] > z_idx[r]:
                        r += 1
                    else:
                        per[feature_block[s_idx[p]]] += s_val[p] * z_val[r]
                        p += 1
                        r += 1
                for b in range(n_blocks):
                    tok[2 + b] = per[b] * inv
                for c in range(stats.shape[1]):
                    tok[2 + n_blocks + c] = stats[j, c]
            item[2 * n_blocks] = best
            item[2 * n_blocks + 1] = total / max(n_valid, 1)
    return tokens, valid
