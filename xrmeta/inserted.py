"""Inserted items, laid out for the search: per leaf cluster, a feature-major chunk plus a short item-major tail.

An inserted item has one *entry* per cluster it joined (`Catalog.add`). Scoring an entry item by item costs one
gather per weight (an inserted classifier has up to `max_nnz` of them), while a feature-major chunk costs one
lookup per query feature for the whole cluster, as the observed items' chunks do: on Home Depot, with the novel
items in 3 clusters each, item-major entries took more time than the 49,200 observed items together.

So each cluster keeps its entries in a chunk (rows: the features its entries use, sorted; postings: (position
in the chunk's slot list, weight)) and the entries added since the chunk was built in a tail, a linked list
scored item by item. A cluster's chunk is rebuilt from its live entries when its tail reaches TAIL_MIN entries
and half the chunk: each entry is rebuilt O(log) times, and at most a third of a cluster's entries are in its
tail. Chunks and tails are derived state, rebuilt from the entries (`Catalog`'s persistent arrays) at load;
a rebuild appends to the growable buffers and publishes new per-cluster ranges, so queries that already hold the
previous layout go on reading it (the old chunk's space is not reused). Both sum an item's weights in increasing
feature order in float32, so an entry scores bit for bit the same in its chunk as in the tail.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .layout import InsertedLayout

TAIL_MIN = 4  # entries a cluster's tail may hold before its chunk is rebuilt (and at most half the chunk)


class Growable:
    """A 1-d array with amortised O(1) append (capacity doubling)."""

    def __init__(self, data: np.ndarray):
        self.n = len(data)
        self.buf = np.array(data, copy=True)

    @property
    def view(self) -> np.ndarray:
        return self.buf[: self.n]

    def extend(self, values: np.ndarray) -> None:
        end = self.n + len(values)
        if end > len(self.buf):
            new = np.empty(max(end, 2 * len(self.buf), 16), dtype=self.buf.dtype)
            new[: self.n] = self.buf[: self.n]
            self.buf = new
        self.buf[self.n : end] = values
        self.n = end


class Chunks:
    """The chunks and tails of every cluster. Not thread-safe: the catalogue's writer lock serialises calls;
    `layout()` is what queries read."""

    def __init__(self, n_clusters: int):
        self.n_clusters = n_clusters
        zeros = np.zeros(n_clusters, dtype=np.int64)
        self.row_lo, self.row_hi, self.slot_lo, self.slot_hi = zeros, zeros.copy(), zeros.copy(), zeros.copy()
        self.feats = Growable(np.zeros(0, dtype=np.int32))
        self.row_ptr = Growable(np.zeros(1, dtype=np.int64))  # the last element ends the last row
        self.local = Growable(np.zeros(0, dtype=np.int32))
        self.val = Growable(np.zeros(0, dtype=np.float32))
        self.slots = Growable(np.zeros(0, dtype=np.int32))
        self.head = np.full(n_clusters, -1, dtype=np.int32)
        self.entry_next = Growable(np.zeros(0, dtype=np.int32))
        self.tail_count = np.zeros(n_clusters, dtype=np.int64)
        self.widest = 0  # most slots in any chunk: the search's score buffer must hold them

    def layout(self, entry_slot: np.ndarray) -> InsertedLayout:
        return InsertedLayout(self.row_lo, self.row_hi, self.slot_lo, self.slot_hi, self.feats.buf, self.row_ptr.buf,
                      self.local.buf, self.val.buf, self.slots.buf, self.head, entry_slot, self.entry_next.buf)

    def marks(self) -> tuple:
        """Everything `add` may change, to put back on failure."""
        grown = (self.feats, self.row_ptr, self.local, self.val, self.slots, self.entry_next)
        return ([g.n for g in grown], self.row_lo, self.row_hi, self.slot_lo, self.slot_hi, self.head,
                self.tail_count, self.widest)

    def restore(self, marks: tuple) -> None:
        ns, self.row_lo, self.row_hi, self.slot_lo, self.slot_hi, self.head, self.tail_count, self.widest = marks
        for g, n in zip((self.feats, self.row_ptr, self.local, self.val, self.slots, self.entry_next), ns):
            g.n = n

    def add(self, first_entry: int, entry_slot: np.ndarray, entry_cluster: np.ndarray, weights, alive) -> None:
        """Take entries first_entry.. (their slots and clusters: the catalogue's entry arrays, already extended)
        into the tails, then rebuild the chunks of the clusters whose tails grew too long. weights: the
        catalogue's item-major (w_ptr, w_idx, w_val) views; alive: its alive flags. Per-cluster arrays are
        replaced, never written in place: published layouts stay as they were."""
        head, tail_count = self.head.copy(), self.tail_count.copy()
        next_ = _link(head, tail_count, np.asarray(entry_cluster[first_entry:], dtype=np.int64), first_entry)
        self.entry_next.extend(next_)
        self.head, self.tail_count = head, tail_count
        touched = np.unique(entry_cluster[first_entry:])
        chunk = self.slot_hi[touched] - self.slot_lo[touched]
        full = touched[self.tail_count[touched] >= np.maximum(TAIL_MIN, chunk // 2)]
        if len(full):
            self.rebuild(full, entry_slot, weights, alive)

    def rebuild(self, clusters: np.ndarray, entry_slot: np.ndarray, weights, alive) -> None:
        """New chunks for the given clusters from their live entries (chunk, then tail, in entry order); their
        tails become empty. One vectorised pass over all their weights."""
        clusters = np.asarray(clusters, dtype=np.int64)
        slots, owner = _live_entries(clusters, self.slot_lo, self.slot_hi, self.slots.buf, self.head,
                                     self.entry_next.buf, np.asarray(entry_slot), np.asarray(alive))
        self.build(clusters, slots, owner, weights)

    def build(self, clusters: np.ndarray, slots: np.ndarray, owner: np.ndarray, weights) -> None:
        """Chunks for `clusters` holding `slots` (grouped by their cluster `owner`, in the order given)."""
        w_ptr, w_idx, w_val = weights
        slots = np.asarray(slots, dtype=np.int64)
        order = np.argsort(owner, kind="stable")
        slots, owner = slots[order], owner[order]
        start = np.searchsorted(owner, clusters)
        count = np.searchsorted(owner, clusters, side="right") - start
        feats, row_ends, local, val, rows_of = _feature_major(slots, start, count, w_ptr, w_idx, w_val)
        base_row, base_post, base_slot = self.row_ptr.n - 1, self.local.n, self.slots.n
        # row r ends where row r + 1 starts; the array's last element ends the last row (row_ptr has one more
        # element than feats)
        self.feats.extend(feats)
        self.row_ptr.extend(base_post + row_ends)
        self.local.extend(local)
        self.val.extend(val)
        self.slots.extend(slots.astype(np.int32))
        row_lo, row_hi, slot_lo, slot_hi = (a.copy() for a in (self.row_lo, self.row_hi, self.slot_lo, self.slot_hi))
        first_row = np.concatenate([[0], np.cumsum(rows_of)[:-1]]).astype(np.int64)
        row_lo[clusters] = base_row + first_row
        row_hi[clusters] = base_row + first_row + rows_of
        slot_lo[clusters] = base_slot + start
        slot_hi[clusters] = base_slot + start + count
        self.row_lo, self.row_hi, self.slot_lo, self.slot_hi = row_lo, row_hi, slot_lo, slot_hi
        head, tail_count = self.head.copy(), self.tail_count.copy()
        head[clusters] = -1
        tail_count[clusters] = 0
        self.head, self.tail_count = head, tail_count
        self.widest = max(self.widest, int(count.max(initial=0)))


@njit(cache=True)
def _link(head, tail_count, cluster, first_entry):
    """Push entries first_entry, first_entry + 1, ... (their clusters given) at the heads of their clusters'
    tails (head and tail_count updated in place); returns their next pointers."""
    next_ = np.empty(cluster.shape[0], dtype=np.int32)
    for i in range(cluster.shape[0]):
        c = cluster[i]
        next_[i] = head[c]
        head[c] = first_entry + i
        tail_count[c] += 1
    return next_


@njit(cache=True)
def _live_entries(clusters, slot_lo, slot_hi, slots, head, entry_next, entry_slot, alive):
    """(slots, owner cluster) of the live entries of the given clusters: each cluster's chunk, then its tail
    oldest first (entry order)."""
    n = 0
    for c in clusters:
        n += slot_hi[c] - slot_lo[c]
        e = head[c]
        while e >= 0:
            n += 1
            e = entry_next[e]
    out = np.empty(n, dtype=np.int32)
    owner = np.empty(n, dtype=np.int64)
    m = 0
    for c in clusters:
        for j in range(slot_lo[c], slot_hi[c]):
            if alive[slots[j]]:
                out[m] = slots[j]
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
                out[pos] = entry_slot[e]
                owner[pos] = c
                pos -= 1
            e = entry_next[e]
        assert pos == tail_start - 1
    return out[:m], owner[:m]


@njit(cache=True)
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
