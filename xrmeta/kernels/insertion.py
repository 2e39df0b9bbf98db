"""Numba reference implementations of the insertion kernels, for the C++ core's parity tests
(tests/test_core_insertion.py); not used in production, which calls `xrmeta._core` (cpp/src/insertion.cpp).
Moved verbatim from `xrmeta.inserted` (`_link`, `_live_entries`, `_feature_major`) and `xrmeta.parts`
(`_two_means` with `_similarities` and `_means`, `_best_parts`)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _link(head, tail_count, part, first_entry):
    """Push entries first_entry, first_entry + 1, ... (their parts given) at the heads of their parts' tails
    (head and tail_count updated in place); returns their next pointers."""
    next_ = np.empty(part.shape[0], dtype=np.int32)
    for i in range(part.shape[0]):
        c = part[i]
        next_[i] = head[c]
        head[c] = first_entry + i
        tail_count[c] += 1
    return next_


@njit(cache=True, nogil=True)
def _live_entries(parts, slot_lo, slot_hi, chunk_entries, head, entry_next, entry_slot, alive):
    """(entries, owner part) of the live entries of the given parts: each part's chunk, then its tail oldest
    first (entry order)."""
    n = 0
    for c in parts:
        n += slot_hi[c] - slot_lo[c]
        e = head[c]
        while e >= 0:
            n += 1
            e = entry_next[e]
    out = np.empty(n, dtype=np.int64)
    owner = np.empty(n, dtype=np.int64)
    m = 0
    for c in parts:
        for j in range(slot_lo[c], slot_hi[c]):
            if alive[entry_slot[chunk_entries[j]]]:
                out[m] = chunk_entries[j]
                owner[m] = c
                m += 1
        e = head[c]
        tail_start = m
        while e >= 0:  # newest first: written backwards below
            if alive[entry_slot[e]]:
                m += 1
            e = entry_next[e]
        pos = m - 1
        e = head[c]
        while e >= 0:
            if alive[entry_slot[e]]:
                out[pos] = e
                owner[pos] = c
                pos -= 1
            e = entry_next[e]
        assert pos == tail_start - 1
    return out[:m], owner[:m]


@njit(cache=True, nogil=True)
def _feature_major(slots, start, count, w_ptr, w_idx, w_val):
    """Per cluster (its slots: slots[start[i] : start[i] + count[i]]), the feature-major chunk of their item-major
    weights: rows (features, sorted) and postings (position in the cluster's slots, weight) in position order.
    Returns (feats, row_ends, local, val, rows per cluster); row_ends are offsets into the postings returned."""
    total = 0
    for j in range(slots.shape[0]):
        total += w_ptr[slots[j] + 1] - w_ptr[slots[j]]
    feats = np.empty(total, dtype=np.int32)
    row_ends = np.empty(total, dtype=np.int64)
    local = np.empty(total, dtype=np.int32)
    val = np.empty(total, dtype=np.float32)
    rows_of = np.zeros(count.shape[0], dtype=np.int64)
    n_rows = 0
    p = 0
    for i in range(count.shape[0]):
        m = 0
        for j in range(start[i], start[i] + count[i]):
            m += w_ptr[slots[j] + 1] - w_ptr[slots[j]]
        key = np.empty(m, dtype=np.int64)
        pv = np.empty(m, dtype=np.float32)
        q = 0
        for j in range(start[i], start[i] + count[i]):
            for a in range(w_ptr[slots[j]], w_ptr[slots[j] + 1]):
                key[q] = np.int64(w_idx[a]) * count[i] + (j - start[i])  # by feature, then position
                pv[q] = w_val[a]
                q += 1
        order = np.argsort(key)  # keys are distinct: an item has each feature once
        last = -1
        for o in order:
            f = key[o] // count[i]
            if f != last:
                if last >= 0:
                    row_ends[n_rows - 1] = p
                feats[n_rows] = f
                n_rows += 1
                rows_of[i] += 1
                last = f
            local[p] = key[o] - f * count[i]
            val[p] = pv[o]
            p += 1
        if last >= 0:
            row_ends[n_rows - 1] = p
    return feats[:n_rows], row_ends[:n_rows], local, val, rows_of


@njit(cache=True, nogil=True)
def _two_means(ptr, idx, val, n_cols, first, iterations, min_share):
    """`two_means` on CSR rows (local columns 0..n_cols-1): (side, the two halves' normalised means (2, n_cols))."""
    n = ptr.shape[0] - 1
    x = val.copy()
    for i in range(n):  # rows to unit length
        norm = 0.0
        for a in range(ptr[i], ptr[i + 1]):
            norm += x[a] * x[a]
        norm = max(np.sqrt(norm), 1e-30)
        for a in range(ptr[i], ptr[i + 1]):
            x[a] /= norm
    centres = np.zeros((2, n_cols))
    for a in range(ptr[first], ptr[first + 1]):
        centres[0, idx[a]] = x[a]
    sims = np.zeros((n, 2))
    _similarities(ptr, idx, x, centres, sims)
    far = np.argmin(sims[:, 0])
    for a in range(ptr[far], ptr[far + 1]):
        centres[1, idx[a]] = x[a]
    side = np.zeros(n, dtype=np.bool_)
    for it in range(iterations):
        _similarities(ptr, idx, x, centres, sims)
        changed = it == 0
        for i in range(n):
            s = sims[i, 1] > sims[i, 0]
            changed |= s != side[i]
            side[i] = s
        if not changed:
            break
        _means(ptr, idx, x, side, centres)
    n_second = side.sum()
    if min(n_second, n - n_second) < max(n // min_share, 1):  # lopsided: halves at the median
        _similarities(ptr, idx, x, centres, sims)
        order = np.argsort(sims[:, 1] - sims[:, 0], kind="mergesort")
        side[:] = False
        side[order[n // 2 :]] = True
    _means(ptr, idx, x, side, centres)
    return side, centres


@njit(cache=True, nogil=True)
def _similarities(ptr, idx, x, centres, sims):
    for i in range(ptr.shape[0] - 1):
        for h in range(2):
            v = 0.0
            for a in range(ptr[i], ptr[i + 1]):
                v += x[a] * centres[h, idx[a]]
            sims[i, h] = v


@njit(cache=True, nogil=True)
def _means(ptr, idx, x, side, centres):
    """centres[h] = the normalised mean of the rows on side h (left as they were for an empty side)."""
    sums = np.zeros_like(centres)
    count = np.zeros(2, dtype=np.int64)
    for i in range(ptr.shape[0] - 1):
        h = 1 if side[i] else 0
        count[h] += 1
        for a in range(ptr[i], ptr[i + 1]):
            sums[h, idx[a]] += x[a]
    for h in range(2):
        if count[h] > 0:
            norm = np.sqrt((sums[h] * sums[h]).sum())
            if norm > 0:
                centres[h] = sums[h] / norm


@njit(cache=True, nogil=True)
def _best_parts(slots, clusters, w_ptr, w_idx, w_val, cluster_part_ptr, cluster_parts, router_lo, router_hi,
                router_idx, router_val, dense):
    """For each entry (slot, cluster), the part of the cluster whose router best matches the slot's classifier
    (ties: the first, smallest, part). dense: zeroed scratch of the features, left zeroed."""
    out = np.empty(slots.shape[0], dtype=np.int32)
    for i in range(slots.shape[0]):
        s = slots[i]
        for a in range(w_ptr[s], w_ptr[s + 1]):
            dense[w_idx[a]] = w_val[a]
        best, best_score = -1, -np.inf
        c = clusters[i]
        for j in range(cluster_part_ptr[c], cluster_part_ptr[c + 1]):
            p = cluster_parts[j]
            v = 0.0
            for a in range(router_lo[p], router_hi[p]):
                v += router_val[a] * dense[router_idx[a]]
            if v > best_score:
                best, best_score = p, v
        out[i] = best
        for a in range(w_ptr[s], w_ptr[s + 1]):
            dense[w_idx[a]] = 0.0
    return out
