"""Numba kernels for the hot paths: leaf scoring with top-k, batch neighbour search, cluster vote, sparse mixing.

Every kernel takes plain arrays (CSR triples, slot tables) so that the Python side stays thin. Batch kernels
split the queries into one contiguous chunk per thread: each chunk owns its scratch buffers, allocated once,
so no per-query allocation is proportional to the catalogue size.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# An inserted item's weights are gathered against the dense query. Most of its features are not the query's, and
# each lookup in a features-wide array misses the cache; a 4 KiB filter on the low bits of the feature (in L1)
# answers "not in the query" first. A false positive only costs the lookup, which then reads a zero.
SEEN_MASK = 4095

NO_MAP = np.zeros(0, dtype=np.int32)  # a group without a dense feature -> row map (see `_group_scores`)

# Post-processors, as in PECOS: a transform of the raw score, multiplied along the tree path.
POST_PROCESSORS = {"l1-hinge": 1, "l2-hinge": 2, "l3-hinge": 3, "l4-hinge": 4, "sigmoid": 0}


@njit(cache=True, inline="always")
def transform(v, post):
    if post == 0:
        return 1.0 / (1.0 + np.exp(-v))
    h = max(1.0 - v, 0.0)
    return np.exp(-(h**post))


@njit(cache=True, inline="always")
def _raw_floor(h_score, size, k, parent, post):
    """A raw score below which an item cannot enter the full top-k heap: transform(raw) * parent stays below the
    heap's worst score. Conservative (a 1e-5 relative margin, far above rounding), so skipping such items changes
    no result; it spares most items their transform (exp, pow), which is most of a cluster's cost."""
    if size < k or parent <= 0.0 or h_score[0] <= 0.0:
        return -np.inf
    t = h_score[0] / parent * (1.0 - 1e-5)
    if t >= 1.0:  # every score of the cluster is at most parent < the heap's worst
        return np.inf
    if post == 0:
        return np.log(t / (1.0 - t)) - 1e-6
    return 1.0 - (-np.log(t)) ** (1.0 / post) - 1e-6


# ---------------------------------------------------------------- top-k heap (min-heap on score)
@njit(cache=True, inline="always")
def _heap_push(h_score, h_slot, size, k, score, slot):
    """Keep the k best (score, slot) pairs; returns the new size. Ties prefer the smaller slot."""
    score = np.float32(score)  # compare as stored: a float64 score a hair above its float32 copy is no better
    if size < k:
        i = size
        while i > 0:  # sift up
            parent = (i - 1) // 2
            if _worse(score, slot, h_score[parent], h_slot[parent]):
                h_score[i] = h_score[parent]
                h_slot[i] = h_slot[parent]
                i = parent
            else:
                break
        h_score[i] = score
        h_slot[i] = slot
        return size + 1
    if score > h_score[0] or (score == h_score[0] and slot < h_slot[0]):
        _sift_down(h_score, h_slot, size, score, slot)  # replaces the root
    return size


@njit(cache=True, inline="always")
def _sift_down(h_score, h_slot, size, score, slot):
    """Put (score, slot) at the root of the heap h[:size], then move it down to its place."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        child = left
        right = left + 1
        if right < size and _worse(h_score[right], h_slot[right], h_score[left], h_slot[left]):
            child = right
        if _worse(h_score[child], h_slot[child], score, slot):
            h_score[i] = h_score[child]
            h_slot[i] = h_slot[child]
            i = child
        else:
            break
    h_score[i] = score
    h_slot[i] = slot


@njit(cache=True, inline="always")
def _worse(s1, i1, s2, i2):
    return s1 < s2 or (s1 == s2 and i1 > i2)


@njit(cache=True)
def _heap_drain(h_score, h_slot, size, out_score, out_slot):
    """Write the heap best-first into out_* (length k, padded with slot -1), emptying it: the worst goes last,
    so equal scores come out smaller slot first (the heap's tie rule). In place: no allocation per query."""
    for a in range(size, out_slot.shape[0]):
        out_score[a] = 0.0
        out_slot[a] = -1
    for n in range(size - 1, -1, -1):
        out_score[n] = h_score[0]
        out_slot[n] = h_slot[0]
        _sift_down(h_score, h_slot, n, h_score[n], h_slot[n])


# ---------------------------------------------------------------- leaf scoring
@njit(cache=True, inline="always")
def _accumulate(q_idx, q_val, lo, hi, row_of, feats, row_ptr, post_pos, post_val, acc):
    """acc[post_pos[p]] += x_f * post_val[p] over the postings of chunk rows lo..hi (features feats[lo:hi],
    sorted) that the query (sorted features q_idx) has. A dense feature -> row map (row_of, -1 where absent;
    empty for most groups) costs one read per query feature, the others one binary search."""
    if row_of.shape[0] > 0:
        for a in range(q_idx.shape[0]):
            r = row_of[q_idx[a]]
            if r >= 0:
                v = q_val[a]
                for p in range(row_ptr[r], row_ptr[r + 1]):
                    acc[post_pos[p]] += v * post_val[p]
        return
    for a in range(q_idx.shape[0]):
        f = q_idx[a]
        # the chunk's features are sorted and so are the query's: search only to the right of the last hit
        r = lo + np.searchsorted(feats[lo:hi], f)
        if r < hi and feats[r] == f:
            v = q_val[a]
            for p in range(row_ptr[r], row_ptr[r + 1]):
                acc[post_pos[p]] += v * post_val[p]
            lo = r + 1
        else:
            lo = r
        if lo >= hi:
            break


@njit(cache=True, inline="always")
def _group_scores(q_idx, q_val, lo, hi, row_of, s0, s1, chunk_feats, chunk_row_ptr, chunk_slot, chunk_val,
                  slot_bias, acc):
    """acc[s - s0] = bias_s + w_s . x for the slots s0..s1 of one group (a leaf cluster, or the children of one
    tree node), stored feature-major as chunk rows lo..hi."""
    for s in range(s0, s1):
        acc[s - s0] = slot_bias[s]
    _accumulate(q_idx, q_val, lo, hi, row_of, chunk_feats, chunk_row_ptr, chunk_slot, chunk_val, acc)


@njit(cache=True, inline="always")
def _drain(h_score, h_slot, size, n_base, tmp_score, tmp_slot, table, out_score, out_slot):
    """Write the heap best-first into out_* (length k, padded with slot -1). When the heap holds more than k
    entries (items inserted into several clusters: an inserted slot can be in it once per cluster), only each
    slot's first, best, occurrence is kept: a small open-addressing set (table, all -1, left all -1) spots the
    repeats. Observed slots are in one cluster each and never repeat."""
    k = out_slot.shape[0]
    if h_score.shape[0] == k:
        _heap_drain(h_score, h_slot, size, out_score, out_slot)
        return
    _heap_drain(h_score, h_slot, size, tmp_score, tmp_slot)
    mask = table.shape[0] - 1
    n_out = 0
    for a in range(size):
        s = tmp_slot[a]
        if s >= n_base:
            h = (s * 2654435761) & mask
            while table[h] != -1 and table[h] != s:
                h = (h + 1) & mask
            if table[h] == s:
                continue
            table[h] = s
        out_score[n_out] = tmp_score[a]
        out_slot[n_out] = s
        n_out += 1
        if n_out == k:
            break
    for a in range(n_out, k):
        out_score[a] = 0.0
        out_slot[a] = -1
    for a in range(n_out):  # empty the set again: find each inserted slot written and clear its cell
        s = out_slot[a]
        if s >= n_base:
            h = (s * 2654435761) & mask
            while table[h] != s:
                h = (h + 1) & mask
            table[h] = -1


@njit(cache=True, nogil=True)
def _score_query(
    q_idx, q_val,  # one query, sorted feature indices
    beam_clusters, beam_scores,  # its leaf clusters from the upper layers, best first, path scores ** path_exponent
    n_observed,  # observed items are scored in the first n_observed of them, inserted items in all
    chunk_feat_ptr, chunk_feats, chunk_row_ptr, chunk_slot, chunk_val,  # observed items, feature-major per cluster
    base_slot_ptr,  # observed slots of cluster c: base_slot_ptr[c] .. base_slot_ptr[c+1]
    ins,  # inserted items per cluster: an `inserted.Layout`
    w_ptr, w_idx, w_val,  # item-major weights of every slot (used for the inserted items' tails)
    slot_bias, slot_alive, n_base, subset, post,
    acc, dense_q, seen_q, h_score, h_slot, tmp_score, tmp_slot, table, out_score, out_slot,
):
    """The top-k (k = len(out_slot)) items of one query's beam clusters into out_*. The heap h_* holds k entries,
    or k * m when items are inserted into up to m clusters (then `_drain` drops the repeats)."""
    size = 0
    cap = h_score.shape[0]
    nq = q_idx.shape[0]
    for a in range(nq):
        dense_q[q_idx[a]] = q_val[a]
        seen_q[q_idx[a] & SEEN_MASK] = True
    for b in range(beam_clusters.shape[0]):
        c = beam_clusters[b]
        parent = beam_scores[b]
        if subset != 2 and b < n_observed:  # observed items: feature-major chunk of the cluster
            s0 = base_slot_ptr[c]
            s1 = base_slot_ptr[c + 1]
            _group_scores(q_idx, q_val, chunk_feat_ptr[c], chunk_feat_ptr[c + 1], NO_MAP, s0, s1, chunk_feats,
                          chunk_row_ptr, chunk_slot, chunk_val, slot_bias, acc)
            floor = _raw_floor(h_score, size, cap, parent, post)
            for s in range(s0, s1):
                v = acc[s - s0]
                if slot_alive[s] and v >= floor:
                    size = _heap_push(h_score, h_slot, size, cap, transform(v, post) * parent, s)
                    floor = _raw_floor(h_score, size, cap, parent, post)
        if subset != 1:  # inserted items: the cluster's chunk, then its tail item by item (see `xrmeta.inserted`)
            j0 = ins.slot_lo[c]
            j1 = ins.slot_hi[c]
            if j1 > j0:
                for j in range(j0, j1):
                    acc[j - j0] = slot_bias[ins.slots[j]]
                _accumulate(q_idx, q_val, ins.row_lo[c], ins.row_hi[c], NO_MAP, ins.feats, ins.row_ptr, ins.local,
                            ins.val, acc)
                floor = _raw_floor(h_score, size, cap, parent, post)
                for j in range(j0, j1):
                    s = ins.slots[j]
                    v = acc[j - j0]
                    if slot_alive[s] and v >= floor:
                        size = _heap_push(h_score, h_slot, size, cap, transform(v, post) * parent, s)
                        floor = _raw_floor(h_score, size, cap, parent, post)
            floor = _raw_floor(h_score, size, cap, parent, post)
            e = ins.head[c]
            while e >= 0:  # the tail: gather against the dense query, through the small filter seen_q
                s = ins.entry_slot[e]
                if slot_alive[s]:
                    v = slot_bias[s]
                    for p in range(w_ptr[s], w_ptr[s + 1]):
                        if seen_q[w_idx[p] & SEEN_MASK]:
                            v += w_val[p] * dense_q[w_idx[p]]
                    if v >= floor:
                        size = _heap_push(h_score, h_slot, size, cap, transform(v, post) * parent, s)
                        floor = _raw_floor(h_score, size, cap, parent, post)
                e = ins.entry_next[e]
    for a in range(nq):
        dense_q[q_idx[a]] = 0.0
        seen_q[q_idx[a] & SEEN_MASK] = False
    _drain(h_score, h_slot, size, n_base, tmp_score, tmp_slot, table, out_score, out_slot)


@njit(cache=True, inline="always")
def _leaf_scratch(k, heap, max_group_size):
    """One thread's buffers for `_score_query`: group scores, heap, drain buffers and the repeat set (a power of
    two above twice the heap)."""
    size = 1
    while size < 2 * heap:
        size *= 2
    return (np.zeros(max_group_size, dtype=np.float32), np.empty(heap, dtype=np.float32),
            np.empty(heap, dtype=np.int64), np.empty(heap, dtype=np.float32), np.empty(heap, dtype=np.int64),
            np.full(size, -1, dtype=np.int64), np.zeros(SEEN_MASK + 1, dtype=np.bool_))


@njit(cache=True, inline="always")
def _exponentiate(scores, n, exponent):
    """scores[:n] ** exponent: how much the cluster's path score counts in an item's score (1: as in PECOS)."""
    if exponent != 1.0:
        for a in range(n):
            scores[a] = scores[a] ** exponent


@njit(cache=True, nogil=True, parallel=True)
def leaf_topk(
    x_ptr, x_idx, x_val, b_ptr, b_idx, b_val,
    chunk_feat_ptr, chunk_feats, chunk_row_ptr, chunk_slot, chunk_val, base_slot_ptr,
    ins, w_ptr, w_idx, w_val, slot_bias, slot_alive,
    n_base, max_cluster_size, subset, post, path_exponent, k, heap, dense_q,
):
    """Top-k slots and scores for each query row of X, given each row's beam clusters (CSR b_*).

    subset: 0 every item, 1 observed (trained) items only, 2 inserted items only. heap: k, or k * m for items
    inserted into up to m clusters.
    dense_q: (threads, n_features) zeroed scratch owned by the caller, one row per thread, left zeroed: allocating
    and zeroing it per call would cost more than scoring one query at small beams.
    Returns (slots, scores), both (n, k); missing entries have slot -1.
    """
    n = x_ptr.shape[0] - 1
    out_slot = np.full((n, k), -1, dtype=np.int64)
    out_score = np.zeros((n, k), dtype=np.float32)
    n_chunks = min(n, dense_q.shape[0])
    widest = 1
    for i in range(n):
        widest = max(widest, b_ptr[i + 1] - b_ptr[i])
    for t in prange(n_chunks):
        acc, h_score, h_slot, tmp_score, tmp_slot, table, seen_q = _leaf_scratch(k, heap, max_cluster_size)
        b_score = np.empty(widest, dtype=np.float32)
        for i in range(t * n // n_chunks, (t + 1) * n // n_chunks):
            nb = b_ptr[i + 1] - b_ptr[i]
            b_score[:nb] = b_val[b_ptr[i] : b_ptr[i + 1]]
            _exponentiate(b_score, nb, path_exponent)
            _score_query(
                x_idx[x_ptr[i] : x_ptr[i + 1]], x_val[x_ptr[i] : x_ptr[i + 1]],
                b_idx[b_ptr[i] : b_ptr[i + 1]], b_score[:nb], nb,
                chunk_feat_ptr, chunk_feats, chunk_row_ptr, chunk_slot, chunk_val, base_slot_ptr,
                ins, w_ptr, w_idx, w_val, slot_bias, slot_alive, n_base, subset,
                post, acc, dense_q[t], seen_q, h_score, h_slot, tmp_score, tmp_slot, table, out_score[i],
                out_slot[i],
            )
    return out_slot, out_score


# ---------------------------------------------------------------- beam search over the upper layers
# The layers above the leaves, stored like the catalogue's observed items: each tree node's children form a
# group, feature-major. Slots number the nodes of every layer, layer by layer, each layer ordered by group; group 0
# holds the root's children and group 1 + s the children of slot s. slot_node maps a slot to its node number in
# its layer (PECOS's), node_slot back (indexed by layer_slot_ptr[d] + node).
@njit(cache=True, inline="always")
def _beam_search(q_idx, q_val, layer_slot_ptr, group_slot_ptr, u_feat_ptr, u_feats, u_row_ptr, u_slot, u_val,
                 u_bias, slot_node, node_slot, dense_of_group, dense_rows, post, beam, last_beam, acc, h_score,
                 h_node, cur_score, cur_node):
    """The query's top-`last_beam` leaf clusters, best first: into cur_node[:n] and cur_score[:n]; returns n.
    Each layer keeps the `beam` best nodes by transform(w . [x, bias]) * parent's score, as PECOS does, and
    breaks exact ties by the smaller node number, as PECOS does; the last layer keeps `last_beam` >= beam, whose
    first `beam` are PECOS's leaf clusters (the order is total, so a longer list only appends)."""
    n_layers = layer_slot_ptr.shape[0] - 1
    if n_layers == 0:  # a single leaf cluster under the root
        cur_node[0] = 0
        cur_score[0] = 1.0
        return 1
    cur_score[0] = 1.0
    n_cur = 1
    for d in range(n_layers):
        cap = last_beam if d == n_layers - 1 else beam
        size = 0
        for b in range(n_cur):
            g = 0 if d == 0 else 1 + node_slot[layer_slot_ptr[d - 1] + cur_node[b]]
            s0 = group_slot_ptr[g]
            s1 = group_slot_ptr[g + 1]
            row_of = dense_rows[dense_of_group[g]] if dense_of_group[g] >= 0 else NO_MAP
            _group_scores(q_idx, q_val, u_feat_ptr[g], u_feat_ptr[g + 1], row_of, s0, s1, u_feats, u_row_ptr,
                          u_slot, u_val, u_bias, acc)
            parent = cur_score[b]
            floor = _raw_floor(h_score, size, cap, parent, post)
            for s in range(s0, s1):
                if acc[s - s0] >= floor:
                    size = _heap_push(h_score, h_node, size, cap, transform(acc[s - s0], post) * parent,
                                      slot_node[s])
                    floor = _raw_floor(h_score, size, cap, parent, post)
        _heap_drain(h_score[:cap], h_node[:cap], size, cur_score[:cap], cur_node[:cap])
        n_cur = size
    return n_cur


@njit(cache=True, nogil=True, parallel=True)
def upper_beams(x_ptr, x_idx, x_val, layer_slot_ptr, group_slot_ptr, u_feat_ptr, u_feats, u_row_ptr, u_slot, u_val,
                u_bias, slot_node, node_slot, dense_of_group, dense_rows, post, beam, last_beam, max_group_size,
                n_threads):
    """Top leaf clusters and their path scores for each query row (`_beam_search`): (clusters, scores), both
    (n, last_beam), best first; missing entries have cluster -1."""
    n = x_ptr.shape[0] - 1
    out_cluster = np.full((n, last_beam), -1, dtype=np.int64)
    out_score = np.zeros((n, last_beam), dtype=np.float32)
    n_chunks = min(n, n_threads)
    for t in prange(n_chunks):
        acc = np.zeros(max_group_size, dtype=np.float32)
        h_score = np.empty(last_beam, dtype=np.float32)
        h_node = np.empty(last_beam, dtype=np.int64)
        for i in range(t * n // n_chunks, (t + 1) * n // n_chunks):
            _beam_search(x_idx[x_ptr[i] : x_ptr[i + 1]], x_val[x_ptr[i] : x_ptr[i + 1]], layer_slot_ptr,
                         group_slot_ptr, u_feat_ptr, u_feats, u_row_ptr, u_slot, u_val, u_bias, slot_node, node_slot,
                         dense_of_group, dense_rows, post, beam, last_beam, acc, h_score, h_node, out_score[i],
                         out_cluster[i])
    return out_cluster, out_score


@njit(cache=True, nogil=True, parallel=True)
def search_topk(
    x_ptr, x_idx, x_val,
    layer_slot_ptr, group_slot_ptr, u_feat_ptr, u_feats, u_row_ptr, u_slot, u_val, u_bias, slot_node, node_slot,
    dense_of_group, dense_rows, u_post, beam, inserted_beam, chunk_feat_ptr, chunk_feats, chunk_row_ptr,
    chunk_slot, chunk_val, base_slot_ptr, ins, w_ptr, w_idx, w_val, slot_bias, slot_alive,
    n_base, max_group_size, subset, post, path_exponent, k, heap, n_threads, dense_q,
):
    """The whole search in one call: beam search down the upper layers, then leaf scoring (`leaf_topk`) of the
    items under the chosen clusters. Returns (slots, scores), both (n, k); missing entries have slot -1.
    Observed items are scored in each query's top-`beam` leaf clusters (PECOS's), inserted items in its top
    `inserted_beam` >= beam: the last layer's wider list costs a larger heap, and inserted items are few.

    A batch is searched in two passes: every query's beam first, then the leaf scoring in the order of the
    queries' best clusters, so that queries reading the same clusters follow each other and find them in cache
    (as PECOS sorts its work by chunk); that halved the time of a batch of Home Depot queries."""
    n = x_ptr.shape[0] - 1
    out_slot = np.full((n, k), -1, dtype=np.int64)
    out_score = np.zeros((n, k), dtype=np.float32)
    n_chunks = min(n, n_threads, dense_q.shape[0])
    wide = inserted_beam if subset != 1 else beam
    beam_cluster = np.full((n, wide), -1, dtype=np.int64)
    beam_score = np.zeros((n, wide), dtype=np.float32)
    n_beam = np.zeros(n, dtype=np.int64)
    for t in prange(n_chunks):
        acc = np.zeros(max_group_size, dtype=np.float32)
        hb_score = np.empty(wide, dtype=np.float32)
        hb_node = np.empty(wide, dtype=np.int64)
        for i in range(t * n // n_chunks, (t + 1) * n // n_chunks):
            q_idx = x_idx[x_ptr[i] : x_ptr[i + 1]]
            if q_idx.shape[0] == 0:  # no known term: no evidence for any item (left padded: slot -1)
                continue
            n_beam[i] = _beam_search(q_idx, x_val[x_ptr[i] : x_ptr[i + 1]], layer_slot_ptr, group_slot_ptr,
                                     u_feat_ptr, u_feats, u_row_ptr, u_slot, u_val, u_bias, slot_node, node_slot,
                                     dense_of_group, dense_rows, u_post, beam, wide, acc, hb_score, hb_node,
                                     beam_score[i], beam_cluster[i])
            _exponentiate(beam_score[i], n_beam[i], path_exponent)
    order = np.argsort(beam_cluster[:, 0], kind="mergesort") if n > 1 else np.zeros(n, dtype=np.int64)
    for t in prange(n_chunks):
        acc, h_score, h_slot, tmp_score, tmp_slot, table, seen_q = _leaf_scratch(k, heap, max_group_size)
        for j in range(t * n // n_chunks, (t + 1) * n // n_chunks):
            i = order[j]
            nb = n_beam[i]
            if nb == 0:
                continue
            _score_query(
                x_idx[x_ptr[i] : x_ptr[i + 1]], x_val[x_ptr[i] : x_ptr[i + 1]], beam_cluster[i, :nb],
                beam_score[i, :nb], beam, chunk_feat_ptr, chunk_feats, chunk_row_ptr, chunk_slot, chunk_val,
                base_slot_ptr, ins, w_ptr, w_idx, w_val, slot_bias, slot_alive,
                n_base, subset, post, acc, dense_q[t], seen_q, h_score, h_slot, tmp_score, tmp_slot, table,
                out_score[i], out_slot[i],
            )
    return out_slot, out_score


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
@njit(cache=True, nogil=True, parallel=True)
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
    n_chunks = min(n, n_threads)  # numba's thread count is read by the caller: a global here defeats caching
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
    n_features, threshold, max_nnz,
):
    """out_i = sum_a src_coef[i,a] * W[src_item[i,a]] + self_coef[i] * S_i, pruned to |w| >= threshold
    and to the max_nnz largest |w| (sorted indices). Returns a CSR triple."""
    n, m = src_item.shape
    dense = np.zeros(n_features, dtype=np.float32)
    seen = np.full(n_features, -1, dtype=np.int64)  # row that last touched a feature (sums may cancel to 0)
    touched = np.empty(n_features, dtype=np.int64)
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    cap = max(1, n * max_nnz)
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
        if kept > max_nnz:
            mags = np.empty(kept, dtype=np.float32)
            for a in range(kept):
                mags[a] = -abs(dense[sel[a]])
            order = np.argsort(mags, kind="mergesort")
            for a in range(max_nnz, kept):
                dense[sel[order[a]]] = 0.0
            sel = sel[order[:max_nnz]]
        sel = np.sort(sel)
        for a in range(sel.shape[0]):
            out_idx[nnz] = sel[a]
            out_val[nnz] = dense[sel[a]]
            dense[sel[a]] = 0.0
            nnz += 1
        out_ptr[i + 1] = nnz
    return out_ptr, out_idx[:nnz].copy(), out_val[:nnz].copy()


# ---------------------------------------------------------------- learned generator: features and forward pass
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


@njit(parallel=True, cache=True)
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


@njit(parallel=True, cache=True)
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


@njit(parallel=True, cache=True)  # no fastmath: results must not depend on alignment (log replay is bit-exact)
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
