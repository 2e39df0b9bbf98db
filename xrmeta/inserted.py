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

from typing import NamedTuple

import numpy as np

TAIL_MIN = 4  # entries a cluster's tail may hold before its chunk is rebuilt (and at most half the chunk)


class Layout(NamedTuple):
    """What the search kernel reads of the inserted items (one published snapshot)."""

    row_lo: np.ndarray  # (clusters,) chunk rows of cluster c: row_lo[c] .. row_hi[c]
    row_hi: np.ndarray
    slot_lo: np.ndarray  # (clusters,) its slots: slots[slot_lo[c] .. slot_hi[c]]
    slot_hi: np.ndarray
    feats: np.ndarray  # per row: its feature
    row_ptr: np.ndarray  # per row r: postings row_ptr[r] .. row_ptr[r + 1]
    local: np.ndarray  # per posting: position in the cluster's slot list
    val: np.ndarray  # per posting: weight
    slots: np.ndarray
    head: np.ndarray  # (clusters,) first tail entry, -1: none
    entry_slot: np.ndarray  # per entry: its slot
    entry_next: np.ndarray  # per entry: the next (older) tail entry of its cluster, -1: none


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

    def layout(self, entry_slot: np.ndarray) -> Layout:
        return Layout(self.row_lo, self.row_hi, self.slot_lo, self.slot_hi, self.feats.buf, self.row_ptr.buf,
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
        new = np.arange(first_entry, len(entry_slot))
        next_ = np.empty(len(new), dtype=np.int32)
        for i, e in enumerate(new):
            c = entry_cluster[e]
            next_[i] = head[c]
            head[c] = e
            tail_count[c] += 1
        self.entry_next.extend(next_)
        self.head, self.tail_count = head, tail_count
        touched = np.unique(entry_cluster[new])
        chunk = self.slot_hi[touched] - self.slot_lo[touched]
        full = touched[self.tail_count[touched] >= np.maximum(TAIL_MIN, chunk // 2)]
        if len(full):
            self.rebuild(full, entry_slot, weights, alive)

    def rebuild(self, clusters: np.ndarray, entry_slot: np.ndarray, weights, alive) -> None:
        """New chunks for the given clusters from their live entries (chunk, then tail, in entry order); their
        tails become empty. One vectorised pass over all their weights."""
        slots, owner = [], []
        for c in clusters:
            tail = []
            e = self.head[c]
            while e >= 0:
                tail.append(entry_slot[e])
                e = self.entry_next.buf[e]
            old = self.slots.view[self.slot_lo[c] : self.slot_hi[c]]
            both = np.concatenate([old, np.array(tail[::-1], dtype=np.int32)])
            both = both[alive[both]]
            slots.append(both)
            owner.append(np.full(len(both), c, dtype=np.int64))
        self.build(np.asarray(clusters, dtype=np.int64), np.concatenate(slots) if slots else np.zeros(0, np.int32),
                   np.concatenate(owner) if owner else np.zeros(0, np.int64), weights)

    def build(self, clusters: np.ndarray, slots: np.ndarray, owner: np.ndarray, weights) -> None:
        """Chunks for `clusters` holding `slots` (grouped by their cluster `owner`, in the order given)."""
        w_ptr, w_idx, w_val = weights
        slots = np.asarray(slots, dtype=np.int64)
        order = np.argsort(owner, kind="stable")
        slots, owner = slots[order], owner[order]
        start = np.searchsorted(owner, clusters)
        count = np.searchsorted(owner, clusters, side="right") - start
        local = np.arange(len(slots)) - np.repeat(start, count)  # position in its cluster's slot list
        nnz = (w_ptr[slots + 1] - w_ptr[slots]).astype(np.int64)
        item = np.repeat(np.arange(len(slots)), nnz)
        pos = w_ptr[slots][item] + (np.arange(nnz.sum()) - np.repeat(np.cumsum(nnz) - nnz, nnz))
        feat, val, cl = w_idx[pos].astype(np.int64), w_val[pos], owner[item]
        o = np.lexsort((local[item], feat, cl))  # postings by (cluster, feature, position)
        feat, val, cl, post_local = feat[o], val[o], cl[o], local[item][o]
        new_row = np.ones(len(o), dtype=bool)
        new_row[1:] = (feat[1:] != feat[:-1]) | (cl[1:] != cl[:-1])
        row_start = np.flatnonzero(new_row)
        row_cluster = cl[row_start]
        base_row, base_post, base_slot = self.row_ptr.n - 1, self.local.n, self.slots.n
        self.feats.extend(feat[row_start].astype(np.int32))
        # row r ends where row r + 1 starts; the array's last element ends the last row (row_ptr has one more
        # element than feats, and no rows add no pointer)
        ends = np.append(row_start[1:], len(o)) if len(row_start) else np.zeros(0, dtype=np.int64)
        self.row_ptr.extend(base_post + ends.astype(np.int64))
        self.local.extend(post_local.astype(np.int32))
        self.val.extend(val.astype(np.float32))
        self.slots.extend(slots.astype(np.int32))
        row_lo, row_hi, slot_lo, slot_hi = (a.copy() for a in (self.row_lo, self.row_hi, self.slot_lo, self.slot_hi))
        first_row = np.searchsorted(row_cluster, clusters)
        row_lo[clusters] = base_row + first_row
        row_hi[clusters] = base_row + np.searchsorted(row_cluster, clusters, side="right")
        slot_lo[clusters] = base_slot + start
        slot_hi[clusters] = base_slot + start + count
        self.row_lo, self.row_hi, self.slot_lo, self.slot_hi = row_lo, row_hi, slot_lo, slot_hi
        head, tail_count = self.head.copy(), self.tail_count.copy()
        head[clusters] = -1
        tail_count[clusters] = 0
        self.head, self.tail_count = head, tail_count
        self.widest = max(self.widest, int(count.max(initial=0)))
