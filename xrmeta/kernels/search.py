"""Search kernels, numba: the reference implementation of the C++ core's search (`cpp/src/search.cpp`, bound as
`xrmeta._core`), kept for its parity tests (tests/test_core_search.py) and as the benchmark peer; production
(`catalog`, `tree`) no longer calls them. The top-k heap, leaf scoring, the beam search over the upper layers,
and `search_topk`, the whole search (beam search, then leaf scoring) in one call.

Kernels read the layouts of `xrmeta.layout` (one argument each). A batch is split into one contiguous chunk
of queries per thread: each chunk owns its scratch buffers, allocated once, so no per-query allocation is
proportional to the catalogue size. Kernels with a parallel loop are built parallel and serial
(`xrmeta.threads`): call them with `threads.run(kernel, threads, ...)`, passing `threads.resolve(threads)` as
their thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import threads

# An inserted item's weights are gathered against the dense query. Most of its features are not the query's, and
# each lookup in a features-wide array misses the cache; a 4 KiB filter on the low bits of the feature (in L1)
# answers "not in the query" first. A false positive only costs the lookup, which then reads a zero.
SEEN_MASK = 4095

NO_MAP = np.zeros(0, dtype=np.int32)  # a group without a dense feature -> row map (see `_group_scores`)


@njit(cache=True, inline="always")
def transform(v, post):
    """The post-processor (code `layout.POST_PROCESSORS[name]`) applied to a raw score."""
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
def _group_scores(q_idx, q_val, lay, g, row_of, s0, s1, acc):
    """acc[s - s0] = bias_s + w_s . x for the slots s0..s1 of group g of lay, an upper or leaf layout (the
    children of one tree node, or the observed items of a leaf cluster: both begin with `FeatureMajor`'s fields)."""
    for s in range(s0, s1):
        acc[s - s0] = lay.slot_bias[s]
    _accumulate(q_idx, q_val, lay.feat_ptr[g], lay.feat_ptr[g + 1], row_of, lay.feats, lay.row_ptr, lay.slot,
                lay.val, acc)


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



@njit(cache=True, inline="always")
def _score_part(part, q_idx, q_val, dense_q, seen_q, parent, leaf, ins, acc, h_score, h_slot, size, cap):
    """Push the live inserted entries of one part (its chunk, then its tail item by item; see `xrmeta.inserted`)
    into the heap; returns its new size."""
    post = leaf.post
    slot_bias, slot_alive = leaf.slot_bias, leaf.slot_alive
    j0 = ins.slot_lo[part]
    j1 = ins.slot_hi[part]
    if j1 > j0:
        for j in range(j0, j1):
            acc[j - j0] = slot_bias[ins.slots[j]]
        _accumulate(q_idx, q_val, ins.row_lo[part], ins.row_hi[part], NO_MAP, ins.feats, ins.row_ptr, ins.local,
                    ins.val, acc)
        floor = _raw_floor(h_score, size, cap, parent, post)
        for j in range(j0, j1):
            s = ins.slots[j]
            v = acc[j - j0]
            if slot_alive[s] and v >= floor:
                size = _heap_push(h_score, h_slot, size, cap, transform(v, post) * parent, s)
                floor = _raw_floor(h_score, size, cap, parent, post)
    floor = _raw_floor(h_score, size, cap, parent, post)
    e = ins.head[part]
    while e >= 0:  # the tail: gather against the dense query, through the small filter seen_q
        s = ins.entry_slot[e]
        if slot_alive[s]:
            v = slot_bias[s]
            for p in range(leaf.w_ptr[s], leaf.w_ptr[s + 1]):
                if seen_q[leaf.w_idx[p] & SEEN_MASK]:
                    v += leaf.w_val[p] * dense_q[leaf.w_idx[p]]
            if v >= floor:
                size = _heap_push(h_score, h_slot, size, cap, transform(v, post) * parent, s)
                floor = _raw_floor(h_score, size, cap, parent, post)
        e = ins.entry_next[e]
    return size


@njit(cache=True, inline="always")
def _best_routers(ins, p0, p1, dense_q, seen_q, probe_score, probe_part):
    """The len(probe_part) parts among cluster_parts[p0:p1] whose routers score highest against the dense query
    (ties: the smaller part), best first, into probe_*; returns how many (all of them)."""
    m = probe_part.shape[0]
    n = 0
    for j in range(p0, p1):
        part = ins.cluster_parts[j]
        v = np.float32(0.0)
        for a in range(ins.router_lo[part], ins.router_hi[part]):
            f = ins.router_idx[a]
            if seen_q[f & SEEN_MASK]:
                v += ins.router_val[a] * dense_q[f]
        if n == m and v <= probe_score[m - 1]:  # parts come in increasing order: an equal score loses
            continue
        i = min(n, m - 1)
        while i > 0 and probe_score[i - 1] < v:  # insertion into the sorted list
            probe_score[i] = probe_score[i - 1]
            probe_part[i] = probe_part[i - 1]
            i -= 1
        probe_score[i] = v
        probe_part[i] = part
        n = min(n + 1, m)
    return n


@njit(cache=True, nogil=True)
def _score_query(
    q_idx, q_val,  # one query, sorted feature indices
    beam_clusters, beam_scores,  # its leaf clusters from the upper layers, best first, path scores ** path_exponent
    n_observed,  # observed items are scored in the first n_observed of them, inserted items in all
    leaf, ins,  # a `layout.LeafLayout` and a `layout.InsertedLayout`
    subset, acc, dense_q, seen_q, h_score, h_slot, tmp_score, tmp_slot, table, out_score, out_slot,
    probe_score, probe_part,  # (probe,) scratch: a split cluster's best parts
):
    """The top-k (k = len(out_slot)) items of one query's beam clusters into out_*. The heap h_* holds k entries,
    or k * m when items are inserted into up to m clusters (then `_drain` drops the repeats).
    subset: 0 every item, 1 observed (trained) items only, 2 inserted items only."""
    size = 0
    cap = h_score.shape[0]
    post = leaf.post
    slot_bias, slot_alive = leaf.slot_bias, leaf.slot_alive
    nq = q_idx.shape[0]
    for a in range(nq):
        dense_q[q_idx[a]] = q_val[a]
        seen_q[q_idx[a] & SEEN_MASK] = True
    for b in range(beam_clusters.shape[0]):
        c = beam_clusters[b]
        parent = beam_scores[b]
        if subset != 2 and b < n_observed:  # observed items: feature-major chunk of the cluster
            s0 = leaf.base_slot_ptr[c]
            s1 = leaf.base_slot_ptr[c + 1]
            _group_scores(q_idx, q_val, leaf, c, NO_MAP, s0, s1, acc)
            floor = _raw_floor(h_score, size, cap, parent, post)
            for s in range(s0, s1):
                v = acc[s - s0]
                if slot_alive[s] and v >= floor:
                    size = _heap_push(h_score, h_slot, size, cap, transform(v, post) * parent, s)
                    floor = _raw_floor(h_score, size, cap, parent, post)
        if subset != 1:  # inserted items: the cluster's parts (`xrmeta.parts`), all or the best `probe`
            p0 = ins.cluster_part_ptr[c]
            p1 = ins.cluster_part_ptr[c + 1]
            if p1 - p0 <= probe_part.shape[0]:
                for j in range(p0, p1):
                    size = _score_part(ins.cluster_parts[j], q_idx, q_val, dense_q, seen_q, parent, leaf, ins, acc,
                                       h_score, h_slot, size, cap)
            else:
                n_probe = _best_routers(ins, p0, p1, dense_q, seen_q, probe_score, probe_part)
                for j in range(n_probe):
                    size = _score_part(probe_part[j], q_idx, q_val, dense_q, seen_q, parent, leaf, ins, acc,
                                       h_score, h_slot, size, cap)
    for a in range(nq):
        dense_q[q_idx[a]] = 0.0
        seen_q[q_idx[a] & SEEN_MASK] = False
    n_base = leaf.base_slot_ptr[leaf.base_slot_ptr.shape[0] - 1]
    _drain(h_score, h_slot, size, n_base, tmp_score, tmp_slot, table, out_score, out_slot)


@njit(cache=True, inline="always")
def _leaf_scratch(k, heap, max_group_size, probe):
    """One thread's buffers for `_score_query`: group scores, heap, drain buffers, the repeat set (a power of
    two above twice the heap), the query filter and the best parts of a split cluster."""
    size = 1
    while size < 2 * heap:
        size *= 2
    return (np.zeros(max_group_size, dtype=np.float32), np.empty(heap, dtype=np.float32),
            np.empty(heap, dtype=np.int64), np.empty(heap, dtype=np.float32), np.empty(heap, dtype=np.int64),
            np.full(size, -1, dtype=np.int64), np.zeros(SEEN_MASK + 1, dtype=np.bool_),
            np.empty(probe, dtype=np.float32), np.empty(probe, dtype=np.int32))


@njit(cache=True, inline="always")
def _exponentiate(scores, n, exponent):
    """scores[:n] ** exponent: how much the cluster's path score counts in an item's score (1: as in PECOS)."""
    if exponent != 1.0:
        for a in range(n):
            scores[a] = scores[a] ** exponent


# ---------------------------------------------------------------- beam search over the upper layers
@njit(cache=True, inline="always")
def _beam_search(q_idx, q_val, upper, beam, last_beam, acc, h_score, h_node, cur_score, cur_node):
    """The query's top-`last_beam` leaf clusters in a `layout.UpperLayout`, best first: into cur_node[:n] and
    cur_score[:n]; returns n. Each layer keeps the `beam` best nodes by transform(w . [x, bias]) * parent's
    score, as PECOS does, and breaks exact ties by the smaller node number, as PECOS does; the last layer keeps
    `last_beam` >= beam, whose first `beam` are PECOS's leaf clusters (the order is total, so a longer list only
    appends)."""
    layer_slot_ptr, group_slot_ptr, post = upper.layer_slot_ptr, upper.group_slot_ptr, upper.post
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
            g = 0 if d == 0 else 1 + upper.node_slot[layer_slot_ptr[d - 1] + cur_node[b]]
            s0 = group_slot_ptr[g]
            s1 = group_slot_ptr[g + 1]
            row_of = upper.dense_rows[upper.dense_of_group[g]] if upper.dense_of_group[g] >= 0 else NO_MAP
            _group_scores(q_idx, q_val, upper, g, row_of, s0, s1, acc)
            parent = cur_score[b]
            floor = _raw_floor(h_score, size, cap, parent, post)
            for s in range(s0, s1):
                if acc[s - s0] >= floor:
                    size = _heap_push(h_score, h_node, size, cap, transform(acc[s - s0], post) * parent,
                                      upper.slot_node[s])
                    floor = _raw_floor(h_score, size, cap, parent, post)
        _heap_drain(h_score[:cap], h_node[:cap], size, cur_score[:cap], cur_node[:cap])
        n_cur = size
    return n_cur


@threads.parallel_and_serial(cache=True, nogil=True)
def upper_beams(queries, upper, beam, last_beam, max_group_size, n_threads):
    """Top leaf clusters and their path scores for each query row of `queries` (a `layout.Rows`), by
    `_beam_search`: (clusters, scores), both (n, last_beam), best first; missing entries have cluster -1."""
    x_ptr, x_idx, x_val = queries
    n = x_ptr.shape[0] - 1
    out_cluster = np.full((n, last_beam), -1, dtype=np.int64)
    out_score = np.zeros((n, last_beam), dtype=np.float32)
    n_chunks = min(n, n_threads)
    for t in prange(n_chunks):
        acc = np.zeros(max_group_size, dtype=np.float32)
        h_score = np.empty(last_beam, dtype=np.float32)
        h_node = np.empty(last_beam, dtype=np.int64)
        for i in range(t * n // n_chunks, (t + 1) * n // n_chunks):
            _beam_search(x_idx[x_ptr[i] : x_ptr[i + 1]], x_val[x_ptr[i] : x_ptr[i + 1]], upper, beam, last_beam,
                         acc, h_score, h_node, out_score[i], out_cluster[i])
    return out_cluster, out_score


@njit(cache=True, nogil=True)
def leaf_topk(queries, beams, leaf, ins, subset, k, heap, max_group_size, dense_q, probe):
    """Leaf scoring alone (`_score_query`) for given beams: each query row's leaf clusters with their path scores
    (a `layout.Rows`), all of them scored for observed and inserted items alike. Returns (slots, scores), both
    (n, k), slot -1 padded. dense_q: (n_features,) zeroed scratch, left zeroed."""
    x_ptr, x_idx, x_val = queries
    b_ptr, b_idx, b_val = beams
    n = x_ptr.shape[0] - 1
    out_slot = np.full((n, k), -1, dtype=np.int64)
    out_score = np.zeros((n, k), dtype=np.float32)
    acc, h_score, h_slot, tmp_score, tmp_slot, table, seen_q, probe_score, probe_part = _leaf_scratch(
        k, heap, max_group_size, probe)
    for i in range(n):
        nb = b_ptr[i + 1] - b_ptr[i]
        b_score = b_val[b_ptr[i] : b_ptr[i + 1]].copy()
        _exponentiate(b_score, nb, leaf.path_exponent)
        _score_query(x_idx[x_ptr[i] : x_ptr[i + 1]], x_val[x_ptr[i] : x_ptr[i + 1]], b_idx[b_ptr[i] : b_ptr[i + 1]],
                     b_score, nb, leaf, ins, subset, acc, dense_q, seen_q, h_score, h_slot, tmp_score, tmp_slot,
                     table, out_score[i], out_slot[i], probe_score, probe_part)
    return out_slot, out_score


@threads.parallel_and_serial(cache=True, nogil=True)
def search_topk(queries, upper, leaf, ins, beam, inserted_beam, subset, k, heap, max_group_size, n_threads,
                dense_q, probe):
    """The whole search in one call: beam search down the upper layers, then leaf scoring (`_score_query`) of the
    items under the chosen clusters. Returns (slots, scores), both (n, k); missing entries have slot -1.

    queries: a `layout.Rows` (sorted features); upper, leaf, ins: the `layout` structures. Observed items are
    scored in each query's top-`beam` leaf clusters (PECOS's), inserted items in its top `inserted_beam` >= beam:
    the last layer's wider list costs a larger heap, and inserted items are few. subset: 0 every item,
    1 observed items only, 2 inserted items only. heap: k, or k * m for items inserted into up to m clusters.
    max_group_size: the most slots in any group the search scores (tree node's children, leaf cluster,
    inserted chunk). dense_q: (threads, n_features) zeroed scratch owned by the caller, one row per thread, left
    zeroed: allocating and zeroing it per call would cost more than scoring one query at small beams. probe:
    parts scored per cluster whose inserted items split (`xrmeta.parts`): all of them up to probe, else the
    probe whose routers score best.

    A batch is searched in two passes: every query's beam first, then the leaf scoring in the order of the
    queries' best clusters, so that queries reading the same clusters follow each other and find them in cache
    (as PECOS sorts its work by chunk); that halved the time of a batch of Home Depot queries."""
    x_ptr, x_idx, x_val = queries
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
            n_beam[i] = _beam_search(q_idx, x_val[x_ptr[i] : x_ptr[i + 1]], upper, beam, wide, acc, hb_score,
                                     hb_node, beam_score[i], beam_cluster[i])
            _exponentiate(beam_score[i], n_beam[i], leaf.path_exponent)
    order = np.argsort(beam_cluster[:, 0], kind="mergesort") if n > 1 else np.zeros(n, dtype=np.int64)
    for t in prange(n_chunks):
        acc, h_score, h_slot, tmp_score, tmp_slot, table, seen_q, probe_score, probe_part = _leaf_scratch(
            k, heap, max_group_size, probe)
        for j in range(t * n // n_chunks, (t + 1) * n // n_chunks):
            i = order[j]
            nb = n_beam[i]
            if nb == 0:
                continue
            _score_query(x_idx[x_ptr[i] : x_ptr[i + 1]], x_val[x_ptr[i] : x_ptr[i + 1]], beam_cluster[i, :nb],
                         beam_score[i, :nb], beam, leaf, ins, subset, acc, dense_q[t], seen_q, h_score, h_slot,
                         tmp_score, tmp_slot, table, out_score[i], out_slot[i], probe_score, probe_part)
    return out_slot, out_score
