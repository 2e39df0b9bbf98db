"""Inserted items, laid out for the search: per part of a leaf cluster (`xrmeta.parts`), a feature-major chunk plus
a short item-major tail.

An inserted item has one *entry* per cluster it joined (`Catalog.add`). Scoring an entry item by item costs one
gather per weight (an inserted classifier has up to `max_nnz` of them), while a feature-major chunk costs one
lookup per query feature for the whole cluster, as the observed items' chunks do: on Home Depot, with the novel
items in 3 clusters each, item-major entries took more time than the 49,200 observed items together.

So each part keeps its entries in a chunk (rows: the features its entries use, sorted; postings: (position
in the chunk's slot list, weight)) and the entries added since the chunk was built in a tail, a linked list
scored item by item. A part's chunk is rebuilt from its live entries when its tail reaches TAIL_MIN entries
and half the chunk: each entry is rebuilt O(log) times, and at most a third of a part's entries are in its
tail. Chunks and tails are derived state, rebuilt from the entries (`Catalog`'s persistent arrays) at load;
a rebuild appends to the growable buffers and publishes new per-part ranges, so queries that already hold the
previous layout go on reading it (the old chunk's space is not reused). Both sum an item's weights in increasing
feature order in float32, so an entry scores bit for bit the same in its chunk as in the tail.
"""

from __future__ import annotations

import numpy as np

from . import _core

TAIL_MIN = 4  # entries a part's tail may hold before its chunk is rebuilt (and at most half the chunk)


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
    """The chunks and tails of every part (`xrmeta.parts`: a cluster's entries, or a share of them once it split).
    Not thread-safe: the catalogue's writer lock serialises calls; `fields()` is what queries read."""

    def __init__(self, n_parts: int):
        zeros = np.zeros(n_parts, dtype=np.int64)
        self.row_lo, self.row_hi, self.slot_lo, self.slot_hi = zeros, zeros.copy(), zeros.copy(), zeros.copy()
        self.feats = Growable(np.zeros(0, dtype=np.int32))
        self.row_ptr = Growable(np.zeros(1, dtype=np.int64))  # the last element ends the last row
        self.local = Growable(np.zeros(0, dtype=np.int32))
        self.val = Growable(np.zeros(0, dtype=np.float32))
        self.slots = Growable(np.zeros(0, dtype=np.int32))
        self.entries = Growable(np.zeros(0, dtype=np.int32))  # the entry of each chunk slot (for rebuilds, splits)
        self.head = np.full(n_parts, -1, dtype=np.int32)
        self.entry_next = Growable(np.zeros(0, dtype=np.int32))
        self.tail_count = np.zeros(n_parts, dtype=np.int64)
        self.widest = 0  # most slots in any chunk: the search's score buffer must hold them

    def fields(self, entry_slot: np.ndarray) -> tuple:
        """The first fields of `layout.InsertedLayout`."""
        return (self.row_lo, self.row_hi, self.slot_lo, self.slot_hi, self.feats.buf, self.row_ptr.buf,
                self.local.buf, self.val.buf, self.slots.buf, self.head, entry_slot, self.entry_next.buf)

    def _grown(self) -> tuple:
        return self.feats, self.row_ptr, self.local, self.val, self.slots, self.entries, self.entry_next

    def marks(self) -> tuple:
        """Everything `add`, `add_parts` and `build` may change, to put back on failure."""
        return ([g.n for g in self._grown()], self.row_lo, self.row_hi, self.slot_lo, self.slot_hi, self.head,
                self.tail_count, self.widest)

    def restore(self, marks: tuple) -> None:
        ns, self.row_lo, self.row_hi, self.slot_lo, self.slot_hi, self.head, self.tail_count, self.widest = marks
        for g, n in zip(self._grown(), ns):
            g.n = n

    def live_postings(self) -> int:
        """Postings in the parts' current chunks."""
        row_ptr = self.row_ptr.view
        return int((row_ptr[self.row_hi] - row_ptr[self.row_lo]).sum())

    def dead_postings(self) -> int:
        """Postings of chunks since rebuilt or split: appended space that no part reads any more."""
        return self.local.n - self.live_postings()

    def add_parts(self, n: int) -> None:
        """n more parts, empty (new arrays: published layouts keep theirs)."""
        zeros = np.zeros(n, dtype=np.int64)
        self.row_lo, self.row_hi, self.slot_lo, self.slot_hi, self.tail_count = (
            np.concatenate([a, zeros]) for a in (self.row_lo, self.row_hi, self.slot_lo, self.slot_hi,
                                                 self.tail_count))
        self.head = np.concatenate([self.head, np.full(n, -1, dtype=np.int32)])

    def add(self, first_entry: int, entry_slot: np.ndarray, entry_part: np.ndarray, weights, alive) -> None:
        """Take entries first_entry.. (their slots and parts: the catalogue's entry arrays, already extended)
        into the tails, then rebuild the chunks of the parts whose tails grew too long. weights: the
        catalogue's item-major (w_ptr, w_idx, w_val) views; alive: its alive flags. Per-part arrays are
        replaced, never written in place: published layouts stay as they were."""
        head, tail_count = self.head.copy(), self.tail_count.copy()
        next_ = _core.link(head, tail_count, np.asarray(entry_part[first_entry:], dtype=np.int64), first_entry)
        self.entry_next.extend(next_)
        self.head, self.tail_count = head, tail_count
        touched = np.unique(entry_part[first_entry:])
        chunk = self.slot_hi[touched] - self.slot_lo[touched]
        full = touched[self.tail_count[touched] >= np.maximum(TAIL_MIN, chunk // 2)]
        if len(full):
            self.build(full, *self.live_entries(full, entry_slot, alive), entry_slot, weights)

    def live_entries(self, parts: np.ndarray, entry_slot: np.ndarray, alive: np.ndarray):
        """(entries, owner part) of the live entries of the given parts: each part's chunk, then its tail oldest
        first (entry order)."""
        return _core.live_entries(np.asarray(parts, dtype=np.int64), self.slot_lo, self.slot_hi, self.entries.buf,
                             self.head, self.entry_next.buf, np.asarray(entry_slot), np.asarray(alive))

    def build(self, parts: np.ndarray, entries: np.ndarray, owner: np.ndarray, entry_slot: np.ndarray,
              weights) -> None:
        """Chunks for `parts` holding `entries` (grouped by their part `owner`, in the order given); their tails
        become empty. One vectorised pass over all their weights."""
        w_ptr, w_idx, w_val = weights
        parts = np.asarray(parts, dtype=np.int64)
        order = np.argsort(owner, kind="stable")
        entries, owner = np.asarray(entries, dtype=np.int64)[order], np.asarray(owner)[order]
        slots = np.asarray(entry_slot)[entries].astype(np.int64)
        start = np.searchsorted(owner, parts)
        count = np.searchsorted(owner, parts, side="right") - start
        feats, row_ends, local, val, rows_of = _core.feature_major_chunks(slots, start, count, w_ptr, w_idx, w_val)
        base_row, base_post, base_slot = self.row_ptr.n - 1, self.local.n, self.slots.n
        # row r ends where row r + 1 starts; the array's last element ends the last row (row_ptr has one more
        # element than feats)
        self.feats.extend(feats)
        self.row_ptr.extend(base_post + row_ends)
        self.local.extend(local)
        self.val.extend(val)
        self.slots.extend(slots.astype(np.int32))
        self.entries.extend(entries.astype(np.int32))
        row_lo, row_hi, slot_lo, slot_hi = (a.copy() for a in (self.row_lo, self.row_hi, self.slot_lo, self.slot_hi))
        first_row = np.concatenate([[0], np.cumsum(rows_of)[:-1]]).astype(np.int64)
        row_lo[parts] = base_row + first_row
        row_hi[parts] = base_row + first_row + rows_of
        slot_lo[parts] = base_slot + start
        slot_hi[parts] = base_slot + start + count
        self.row_lo, self.row_hi, self.slot_lo, self.slot_hi = row_lo, row_hi, slot_lo, slot_hi
        head, tail_count = self.head.copy(), self.tail_count.copy()
        head[parts] = -1
        tail_count[parts] = 0
        self.head, self.tail_count = head, tail_count
        self.widest = max(self.widest, int(count.max(initial=0)))
