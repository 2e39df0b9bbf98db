"""Stage 4: the mutable leaf layer ("catalog") of the tree, and leaf scoring.

The trained tree's upper layers (`tree.UpperLayers`) pick the top-b leaf clusters; the catalog scores the items
under those clusters (`search` does both in one kernel call). Every item owns a *slot*:

- observed (trained) items take slots 0..n_base-1, ordered by cluster, and are also stored feature-major per
  cluster ("chunks", as PECOS does), so scoring a cluster costs one binary search per query feature;
- inserted items are appended after them: item-major weights, and for each of the (one or more) clusters an
  item joins an *entry* of that cluster, laid out for the search by `inserted.Chunks` (a feature-major chunk
  per cluster, rebuilt now and then, and a short item-major tail), so inserting costs O(nnz of the item)
  amortised whatever the catalogue size. Once a cluster's inserted entries outgrow `split_size` they are split
  into parts with routers (`xrmeta.parts`), each laid out the same way, and a query scores only the parts of a
  crowded cluster whose routers match it best; observed items are never split.

Removal clears a slot's alive flag; slots are never reused, so an id's history is unambiguous. The removed items'
storage (weights, chunk postings, entries) stays until `compact` reclaims it: observed items keep their slots (an
empty row and no postings when removed), inserted items are renumbered n_base.. in their order, so a slot names
an item only within one published state: a query maps its slots with that state's id list (`search` returns it).

Thread safety: any number of threads may call `search` while others call `add` and `remove`. Writers are serialised
by `lock`. A query reads one published `_State` (taken with a single attribute read, so no lock on the query
path): `add` writes a batch past the published slots (into the same buffers, or new ones when they grow; a query
keeps the old buffers alive through its own references), then publishes a new state whose copied cluster heads
link the batch in. So a query sees a batch entirely or not at all, never a half-written item. `remove` clears one
alive byte per item in the published buffer: each item is present or absent, and a query that starts after
`remove` returns never sees it. `compact` builds new buffers beside the published ones and publishes them as one
new state: queries holding the previous state go on reading it, and its memory returns when they finish.
The search kernels are the C++ core's (`xrmeta._core`): they run without the GIL, on their own threads (threads=1
runs in the caller's thread and starts none), so concurrent queries need no numba threading layer.
"""

from __future__ import annotations

import sys
import threading
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import scipy.sparse as smat

from . import _core
from .data.xmc import new_ids_problem, preview
from .inserted import Chunks, Growable
from .layout import (LEAF_ARRAYS, POST_PROCESSORS, FeatureMajor, InsertedLayout, LeafLayout, check_beams, feature_major,
                     leaf_arrays_problem, rows)
from .parts import Parts
from .threads import resolve

SUBSETS = {"all": 0, "observed": 1, "inserted": 2}
RECHUNK_MIN = 1 << 20  # dead chunk postings tolerated whatever the live ones (small catalogues never rebuild)
MAX_K = 10_000  # results per query: bounds the (queries x k) result arrays a caller can make us allocate


class CatalogError(ValueError):
    pass


class _State(NamedTuple):
    """What a query reads, published as one object. Every slot the inserted layout reaches is < n_slots and
    fully written in the leaf layout's buffers; add replaces the state, never mutates one (except alive flags:
    remove)."""

    n_slots: int
    leaf: LeafLayout
    inserted: InsertedLayout
    widest: int  # most slots in any inserted chunk
    memberships: int  # most clusters any inserted item is in (the search keeps k * memberships candidates)
    ids: list  # slot -> id of this state (appended to by add; compaction makes a new list)


class Catalog:
    """The leaf layer. post_processor transforms an item's raw score w . [x, 1]; path_exponent says how much the
    path score of its cluster multiplies in: score = transform(raw) * path ** path_exponent (PECOS: 1)."""

    def __init__(self, arrays: dict, ids: list[str], n_features: int, post_processor: str,
                 path_exponent: float = 1.0):
        self.n_features = int(n_features)
        self.post_processor = post_processor
        self.post = POST_PROCESSORS[post_processor]
        if not (0.0 <= path_exponent <= 1.0):
            raise CatalogError(f"path_exponent must lie in [0, 1], got {path_exponent}")
        self.path_exponent = float(path_exponent)
        a = arrays
        # immutable: observed items, feature-major per cluster
        self.observed = FeatureMajor(*(a["chunk_" + f] for f in FeatureMajor._fields))
        self.base_slot_ptr = a["base_slot_ptr"]
        self.n_base = int(a["base_slot_ptr"][-1])
        self.n_clusters = len(self.base_slot_ptr) - 1
        sizes = np.diff(self.base_slot_ptr)
        self.max_cluster_size = int(sizes.max()) if len(sizes) else 0
        # growable: one entry per slot
        self.w_ptr = Growable(a["w_ptr"])
        self.w_idx = Growable(a["w_idx"])
        self.w_val = Growable(a["w_val"])
        self.slot_bias = Growable(a["slot_bias"])
        self.slot_alive = Growable(a["slot_alive"])
        self.slot_cluster = Growable(a["slot_cluster"])  # an inserted item's first (best) cluster
        # an inserted item's entries: one per cluster it is in (the search's layout of them is derived)
        self.entry_slot = Growable(a["entry_slot"])
        self.entry_cluster = Growable(a["entry_cluster"])
        counts = np.bincount(a["entry_slot"]) if len(a["entry_slot"]) else np.zeros(0, np.int64)
        self._memberships = max(int(counts.max(initial=1)), 1)
        live = self.slot_alive.view[self.entry_slot.view]
        # the entries' parts (`xrmeta.parts`): a catalogue saved before the split had one part per cluster
        parts = a if "entry_part" in a else Parts.one_per_cluster(self.n_clusters, a["entry_cluster"])
        self._parts = Parts(parts, self.n_clusters, live)
        self._chunks = self._fresh_chunks()
        self._local = threading.local()  # per-thread scratch: concurrent queries must not share it
        self.lock = threading.RLock()  # serialises writers (add, remove, compact, the model's save); queries never wait
        self.ids = list(ids)
        self.slot_of = {item_id: s for s, item_id in enumerate(self.ids) if self.slot_alive.buf[s]}
        # dead slots whose storage `compact` would reclaim (the model compacts past a share of the slots)
        self.tombstones = int(_holds_storage(self.slot_alive.view, self.w_ptr.view, self.n_base).sum())
        self._publish()

    def _fresh_chunks(self) -> Chunks:
        """Every part's chunk built afresh from its live entries into new buffers, tails empty."""
        held = np.flatnonzero(self.slot_alive.view[self.entry_slot.view])
        owner = self._parts.entry_part.view[held].astype(np.int64)
        chunks = Chunks(self._parts.n_parts)
        chunks.build(np.unique(owner), held, owner, self.entry_slot.view, self._weights())
        chunks.entry_next.extend(np.full(self.entry_slot.n, -1, dtype=np.int32))
        return chunks

    def _weights(self) -> tuple:
        return self.w_ptr.view, self.w_idx.view, self.w_val.view

    def _publish(self) -> None:
        """Make every slot written so far visible to queries that start from now on (one atomic assignment)."""
        leaf = LeafLayout(*self.observed, self.base_slot_ptr, self.w_ptr.buf, self.w_idx.buf, self.w_val.buf,
                          self.slot_bias.buf, self.slot_alive.buf, self.post, self.path_exponent)
        inserted = InsertedLayout(*self._chunks.fields(self.entry_slot.buf), *self._parts.fields())
        self._state = _State(self.slot_alive.n, leaf, inserted, self._chunks.widest, self._memberships, self.ids)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_leaf_layer(cls, W: smat.spmatrix, C: smat.spmatrix, bias: float, ids: list[str], post_processor: str,
                        path_exponent: float = 1.0):
        """Build from PECOS's last layer: W is (features+1) x labels with the bias weight in the last row,
        C is labels x clusters."""
        W = smat.csc_matrix(W, dtype=np.float32)
        C = smat.csc_matrix(C)
        n_features = W.shape[0] - 1
        n_labels, n_clusters = C.shape
        if len(ids) != n_labels or W.shape[1] != n_labels:
            raise CatalogError(f"{len(ids)} ids, W has {W.shape[1]} labels, C has {n_labels}")
        label_cluster = np.asarray(C.tocsr().indices, dtype=np.int64)  # each label has exactly one cluster
        order = np.argsort(label_cluster, kind="stable")  # slot -> label
        slot_cluster = label_cluster[order]
        base_slot_ptr = np.searchsorted(slot_cluster, np.arange(n_clusters + 1)).astype(np.int64)

        W = W[:, order]
        slot_bias = (W[n_features, :].toarray().ravel() * bias).astype(np.float32)
        Wf = W[:n_features, :].tocsc()
        Wf.sort_indices()
        arrays = {
            **{"chunk_" + f: v for f, v in feature_major(Wf, slot_cluster, base_slot_ptr)._asdict().items()},
            "base_slot_ptr": base_slot_ptr,
            "w_ptr": Wf.indptr.astype(np.int64),
            "w_idx": Wf.indices.astype(np.int32),
            "w_val": Wf.data.astype(np.float32),
            "slot_bias": slot_bias,
            "slot_alive": np.ones(n_labels, dtype=bool),
            "slot_cluster": slot_cluster.astype(np.int32),
            "entry_slot": np.zeros(0, dtype=np.int32),
            "entry_cluster": np.zeros(0, dtype=np.int32),
            **Parts.one_per_cluster(n_clusters, np.zeros(0, dtype=np.int32)),
        }
        return cls(arrays, [ids[j] for j in order], n_features, post_processor, path_exponent)

    # ------------------------------------------------------------ state
    @property
    def n_slots(self) -> int:
        return self._state.n_slots

    def __len__(self) -> int:
        return len(self.slot_of)

    def item_clusters(self, slots: np.ndarray) -> np.ndarray:
        """(n, m) leaf clusters of the given slots, -1 padded: an observed item's one cluster; an inserted item's
        first (best) cluster, then its others in increasing order (m: the most clusters of any inserted item)."""
        slots = np.asarray(slots, dtype=np.int64)
        with self.lock:
            primary = self.slot_cluster.view[slots].astype(np.int64)
            mine = np.flatnonzero(np.isin(self.entry_slot.view, slots))  # O(entries), then only the slots' own
            e_slot = self.entry_slot.view[mine].astype(np.int64)
            e_cluster = self.entry_cluster.view[mine].astype(np.int64)
            m = self._memberships
        out = np.full((len(slots), m), -1, dtype=np.int64)
        out[:, 0] = primary
        if m > 1:
            other = e_cluster != self.slot_cluster.view[e_slot]
            order = np.lexsort((e_cluster[other], e_slot[other]))
            o_slot, o_cluster = e_slot[other][order], e_cluster[other][order]
            first = np.searchsorted(o_slot, slots)
            count = np.searchsorted(o_slot, slots, side="right") - first
            for j in range(1, m):
                has = count >= j
                out[has, j] = o_cluster[first[has] + j - 1]
        return out

    def weights(self, slots: np.ndarray) -> smat.csr_matrix:
        """Item-major weight rows (without the bias) of the given slots."""
        with self.lock:
            W = smat.csr_matrix(
                (self.w_val.view, self.w_idx.view, self.w_ptr.view), shape=(self.n_slots, self.n_features)
            )
            return W[np.asarray(slots)]

    # ------------------------------------------------------------ mutation
    def add(self, ids: list[str], clusters: np.ndarray, W: smat.csr_matrix, biases: np.ndarray,
            before_change: Callable[[], None] | None = None, split_size: int = 0,
            order: np.ndarray | None = None) -> np.ndarray:
        """Append items, all visible to queries at once when this returns. Returns their slots.

        clusters: (n,) leaf clusters, or (n, m): up to m distinct clusters per item, best first, -1 padded after
        the first; an item in several clusters is scored in each of them that a query's beam reaches (its best
        score counts once). A bad batch, or a failure on the way (even out of memory), changes nothing.
        before_change runs once the batch is validated and stored out of sight, just before it is published (the
        model logs it there); if it raises, nothing changes. split_size: a part of a cluster's inserted entries
        holding more than this many splits in two (`xrmeta.parts`; 0: never), before the batch is published.
        order: the order the batch is stored in (slots, and entries within a cluster), a permutation of its items;
        None: by best cluster, stable (a shard passes the whole catalogue's order: `xrmeta.distributed`).
        """
        return self._append(ids, clusters, W, biases, before_change, split_size, order=order)

    def replace(self, ids: list[str], W: smat.csr_matrix, biases: np.ndarray,
                before_change: Callable[[], None] | None = None, split_size: int = 0,
                order: np.ndarray | None = None) -> np.ndarray:
        """Give live items new classifiers (weights W (n, F), biases (n,)): each gets a new inserted slot in the
        clusters it is in, and its old slot (trained or inserted) is removed, both in the one state published when
        this returns, so a query sees each item once, old or new. Returns the new slots. A trained item replaced
        is an inserted item from then on (`subset="observed"` no longer returns it). Unknown or repeated ids
        change nothing (CatalogError); before_change, split_size and order as in `add`."""
        with self.lock:
            problem = [i for i in ids if not isinstance(i, str) or i not in self.slot_of]
            if problem or len(set(ids)) != len(ids):
                raise CatalogError(f"replace: unknown or repeated item ids {preview(problem or ids)}")
            old = np.array([self.slot_of[i] for i in ids], dtype=np.int64)
            return self._append(ids, self.item_clusters(old), W, biases, before_change, split_size, old, order)

    def _append(self, ids, clusters, W, biases, before_change, split_size, replacing=None, order=None) -> np.ndarray:
        """`add`, or `replace` when replacing holds the items' old slots."""
        n = len(ids)
        clusters = np.asarray(clusters, dtype=np.int64)
        clusters = clusters.reshape(-1, 1) if clusters.ndim == 1 else clusters
        biases = np.asarray(biases, dtype=np.float32)
        W = smat.csr_matrix(W, dtype=np.float32)
        if W.shape != (n, self.n_features) or clusters.ndim != 2 or len(clusters) != n or biases.shape != (n,):
            raise CatalogError(
                f"add: {n} ids but weights {W.shape}, clusters {clusters.shape}, biases {biases.shape} "
                f"(expected ({n}, {self.n_features}), ({n},) or ({n}, m), ({n},))"
            )
        if n and (clusters[:, 0].min() < 0 or clusters.max() >= self.n_clusters or clusters.min() < -1):
            raise CatalogError(f"add: cluster ids must be in [0, {self.n_clusters}) (-1 pads after the first)")
        if n and clusters.shape[1] > 1 and _repeats_in_rows(clusters):
            raise CatalogError("add: an item's clusters must be distinct")
        if not (np.isfinite(W.data).all() and np.isfinite(biases).all()):
            raise CatalogError("add: weights contain NaN or inf")
        # store the batch grouped by cluster: a query then reads each cluster's new items from one memory run
        if order is None:
            order = np.argsort(clusters[:, 0], kind="stable")
        elif not np.array_equal(np.sort(np.asarray(order)), np.arange(n)):
            raise CatalogError(f"add: order must be a permutation of the batch's {n} items")
        W, clusters, biases = W[order], clusters[order], biases[order]
        W.sort_indices()
        with self.lock:
            if replacing is None:
                self._check_new_ids(ids)
            first = self.n_slots
            # one entry per (item, cluster), grouped by cluster
            item, col = np.nonzero(clusters >= 0)
            by_cluster = np.lexsort((item, clusters[item, col]))
            entry_item, entry_cluster = item[by_cluster], clusters[item, col][by_cluster]
            first_entry = self.entry_slot.n
            grown = (self.w_idx, self.w_val, self.w_ptr, self.slot_bias, self.slot_cluster, self.entry_slot,
                     self.entry_cluster, self.slot_alive)
            marks, chunk_marks, part_marks = [g.n for g in grown], self._chunks.marks(), self._parts.marks()
            chunks = self._chunks
            try:  # past the published slots and entries: no query reads these positions yet
                self.w_idx.extend(W.indices.astype(np.int32))
                self.w_val.extend(W.data)
                self.w_ptr.extend(self.w_ptr.view[-1] + W.indptr[1:].astype(np.int64))
                self.slot_bias.extend(biases)
                self.slot_cluster.extend(clusters[:, 0].astype(np.int32))
                self.entry_slot.extend((first + entry_item).astype(np.int32))
                self.entry_cluster.extend(entry_cluster.astype(np.int32))
                self.slot_alive.extend(np.ones(n, dtype=bool))
                self._parts.take(self._parts.route(self.entry_slot.view[first_entry:], entry_cluster,
                                                   self._weights(), self.n_features))
                self._chunks.add(first_entry, self.entry_slot.view, self._parts.entry_part.view, self._weights(),
                                 self.slot_alive.view)
                self._split(split_size)
                # a rebuilt chunk is appended (published layouts go on reading the old one), so dead chunk space
                # grows with every rebuild and split: once it outweighs the live chunks, build them all afresh
                # (amortised O(1) per posting appended; the old buffers go when the last query holding them ends)
                if self._chunks.dead_postings() > max(self._chunks.live_postings(), RECHUNK_MIN):
                    self._chunks = self._fresh_chunks()
                if before_change is not None:
                    before_change()
            except BaseException:
                for g, m in zip(grown, marks):
                    g.n = m
                self._chunks = chunks
                self._chunks.restore(chunk_marks)
                self._parts.restore(part_marks)
                raise
            if replacing is not None:  # a fresh alive buffer: published states keep the old one, unchanged
                alive = self.slot_alive.buf.copy()
                alive[replacing] = False
                self.slot_alive.buf = alive
                self._retire(replacing)
            stored_ids = [ids[i] for i in order]
            self.ids.extend(stored_ids)  # before publishing: a query maps every slot it returns to its id
            self.slot_of.update(zip(stored_ids, range(first, first + n)))
            self._memberships = max(self._memberships, int((clusters >= 0).sum(axis=1).max(initial=1)))
            self._publish()
        slots = np.empty(n, dtype=np.int64)
        slots[order] = np.arange(first, first + n)  # slot of the i-th given item
        return slots

    def remove(self, ids: list[str], before_change: Callable[[], None] | None = None) -> None:
        """Delist items; each disappears from queries atomically. The whole request is checked first: an unknown
        or repeated id removes nothing. before_change runs after the checks, before any change (as in add)."""
        with self.lock:
            unknown = [i for i in ids if not isinstance(i, str) or i not in self.slot_of]
            if unknown:
                raise CatalogError(f"remove: unknown item ids {preview(unknown)}")
            if len(set(ids)) != len(ids):
                raise CatalogError("remove: duplicate ids in the request")
            if before_change is not None:
                before_change()
            slots = np.array([self.slot_of.pop(i) for i in ids], dtype=np.int64)
            self._state.leaf.slot_alive[slots] = False
            self._retire(slots)

    def _retire(self, slots: np.ndarray) -> None:
        """Bookkeeping of slots just marked dead: their storage awaits `compact`, their entries leave their parts."""
        self.tombstones += int(_holds_storage(np.zeros(len(slots), bool), self.w_ptr.view, self.n_base, slots).sum())
        self._parts.drop(np.flatnonzero(np.isin(self.entry_slot.view, slots)))  # O(entries): removes are rare

    def compact(self, before_change: Callable[[], None] | None = None) -> bool:
        """Reclaim the storage of removed items (`compacted`) and publish it as one new state; returns whether
        anything was reclaimed (nothing removed since the last compaction: a no-op). Scores and ranks are
        unchanged: only inserted slots are renumbered, in their order, and ties go to the smaller slot.
        before_change runs once the new storage is built, before it is published (as in add); if it or the
        build fails, nothing changes. Writers wait meanwhile, queries do not."""
        with self.lock:
            if not self.tombstones:
                return False
            arrays, ids = compacted(self._arrays(), self.ids, self.n_base)
            # the constructor's build is the one rule for derived state (chunks, id map): take it whole
            fresh = type(self)(arrays, ids, self.n_features, self.post_processor, self.path_exponent)
            del arrays
            if before_change is not None:
                before_change()
            # writers hold the lock; queries read only _state, which fresh's attributes end with
            vars(self).update({k: v for k, v in vars(fresh).items() if k not in ("lock", "_local")})
            return True

    def _split(self, split_size: int) -> None:
        """Split every part holding more than split_size live entries, all at once, until none does (a half still
        too large splits in the next round); the halves get fresh chunks."""
        while len(full := self._parts.full(split_size)):
            entries, owner = self._chunks.live_entries(full, self.entry_slot.view, self.slot_alive.view)
            ends = np.cumsum(np.bincount(np.searchsorted(full, owner), minlength=len(full)))[:-1]
            # the split depends on the set of a part's entries, not on its chunk's history: sorted
            groups = [np.sort(g) for g in np.split(entries, ends)]
            kept, moved, new = self._parts.split(full, groups, self.entry_slot.view, self._weights())
            self._chunks.add_parts(len(new))
            halves = kept + moved
            owner = np.repeat(np.concatenate([full, new]), [len(h) for h in halves])
            self._chunks.build(np.concatenate([full, new]), np.concatenate(halves), owner, self.entry_slot.view,
                               self._weights())

    def _check_new_ids(self, ids: list[str]) -> None:
        if problem := new_ids_problem(ids, self.slot_of):
            raise CatalogError(f"add: {problem}")

    # ------------------------------------------------------------ search
    def search(self, X: smat.csr_matrix, upper, beam_size: int, k: int, subset: str = "all", threads: int = 1,
               inserted_beam: int | None = None, split_probe: int = 1):
        """Top-k (slots, scores, ids) per query row of X: beam search down `upper` (a `tree.UpperLayers`) to its
        top-`beam_size` leaf clusters, then the items under them; all in one kernel call. subset: "all",
        "observed" (trained items) or "inserted". threads: -1 all cores, n >= 1 that many (`xrmeta.threads`).
        inserted_beam (>= beam_size, default beam_size): inserted items are scored in the top inserted_beam leaf
        clusters (only the last layer keeps more), observed items in the top beam_size, as PECOS does.
        split_probe (>= 1): parts scored in a cluster whose inserted items split (`xrmeta.parts`), the best by
        their routers; a cluster with at most split_probe parts is scored whole. ids: the slot -> id list of the
        state searched (slot -1: none found); map the slots with it, not with `self.ids`, which a compaction may
        have replaced since."""
        args, ids = self._kernel_arguments(X, upper, beam_size, k, subset, threads, inserted_beam, split_probe)
        slots, scores = _core.search_topk(*args)
        return slots, scores, ids

    def _kernel_arguments(self, X, upper, beam_size, k, subset, threads, inserted_beam, split_probe) -> tuple:
        """(the checked arguments of `_core.search_topk` for the current state, that state's ids). Its numba oracle
        (`kernels.search.search_topk`, the benchmarks' peer) takes the same arguments."""
        check_search(subset, k)
        inserted_beam = check_beams(beam_size, inserted_beam, "inserted_beam")
        if not isinstance(split_probe, (int, np.integer)) or split_probe < 1:
            raise ValueError(f"split_probe must be an integer >= 1, got {split_probe!r}")
        n = resolve(threads)
        if X.shape[1] != self.n_features or upper.n_clusters != self.n_clusters:
            raise ValueError(f"queries {X.shape} or the upper layers' {upper.n_clusters} clusters do not fit "
                             f"{self.n_features} features and {self.n_clusters} clusters")
        X = checked_queries(X, self.n_features)
        st = self._state  # one read: a consistent view even if a writer publishes while we score
        beam = min(int(beam_size), self.n_clusters)
        wide = min(int(inserted_beam), self.n_clusters) if st.inserted.entry_slot.shape[0] else beam
        return (rows(X), upper.layout, st.leaf, st.inserted, beam, wide, SUBSETS[subset], int(k),
                int(k) * st.memberships, max(self.max_cluster_size, upper.max_group_size, st.widest), n,
                self._scratch(n), int(split_probe)), st.ids

    def search_clusters(self, X: smat.csr_matrix, beams: smat.csr_matrix, k: int, subset: str = "all",
                        split_probe: int = 1, n_observed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (slots, scores) per query row of X among the items of the given leaf clusters, no beam search:
        beams (n, clusters), each row's leaf clusters with the path score to use for them (1: the items' own
        scores). n_observed (n,) int64: observed items are scored in only the first n_observed[i] clusters of row
        i, in the row's stored order (None: all), as `search` scores its beam and inserted beam. One thread. The
        slots are the current state's (no compaction may run in between)."""
        check_search(subset, k)
        if X.shape[1] != self.n_features or beams.shape[0] != X.shape[0]:
            raise ValueError(f"queries {X.shape} and beams {beams.shape} do not fit {self.n_features} features")
        beams = smat.csr_matrix(beams, dtype=np.float32)
        if beams.nnz and (beams.indices.min() < 0 or beams.indices.max() >= self.n_clusters):
            raise ValueError(f"beam clusters in [0, {self.n_clusters}) only")
        if not np.isfinite(beams.data).all():
            raise ValueError("beam scores must be finite (no NaN or inf)")
        X = checked_queries(X, self.n_features)
        st = self._state
        return _core.leaf_topk(rows(X), rows(beams), st.leaf, st.inserted, SUBSETS[subset], int(k),
                               int(k) * st.memberships, max(self.max_cluster_size, st.widest, 1), self._scratch(1)[0],
                               int(split_probe), n_observed)

    def _scratch(self, threads: int) -> np.ndarray:
        """This Python thread's zeroed (threads x features) query buffer for the search kernel, threads resolved:
        kept at the most rows asked for, so calls with different thread counts do not reallocate it."""
        buf = getattr(self._local, "dense_q", None)
        if buf is None or buf.shape[0] < threads:
            buf = self._local.dense_q = np.zeros((threads, self.n_features), dtype=np.float32)
        return buf

    # ------------------------------------------------------------ persistence
    def arrays(self) -> dict:
        with self.lock:  # no add half-way through its buffers
            return self._arrays()

    def _arrays(self) -> dict:
        return {
            **{"chunk_" + f: v for f, v in self.observed._asdict().items()},
            "base_slot_ptr": self.base_slot_ptr, "w_ptr": self.w_ptr.view, "w_idx": self.w_idx.view,
            "w_val": self.w_val.view, "slot_bias": self.slot_bias.view, "slot_alive": self.slot_alive.view,
            "slot_cluster": self.slot_cluster.view, "entry_slot": self.entry_slot.view,
            "entry_cluster": self.entry_cluster.view, **self._parts.arrays(),
        }

    def save(self, folder: str | Path) -> None:
        """Write catalog.npz and catalog_ids.txt into folder (`XRMetaModel.save` makes the directory atomic)."""
        folder = Path(folder)
        with self.lock:
            np.savez(folder / "catalog.npz", **self._arrays())
            (folder / "catalog_ids.txt").write_text("".join(f"{i}\n" for i in self.ids), encoding="utf-8")

    def search_layouts(self, upper) -> dict:
        """The search as one state's kernels read it, beside what `save` writes, for a reader without Python (the
        C++ core's `SavedModel`, cpp/): the upper layers' and the inserted items' layouts (prefixed "upper_" and
        "inserted_"; the observed items are catalog.npz's "chunk_" arrays) and the kernel's scalars. Written by
        `XRMetaModel.save` as layouts.npz."""
        with self.lock:
            st = self._state
            return {
                **{"upper_" + f: np.asarray(v) for f, v in upper.layout._asdict().items()},
                **{"inserted_" + f: v for f, v in st.inserted._asdict().items()},
                "leaf_post": np.int64(st.leaf.post), "leaf_path_exponent": np.float64(st.leaf.path_exponent),
                "n_features": np.int64(self.n_features), "n_slots": np.int64(st.n_slots),
                "memberships": np.int64(st.memberships),
                "max_group_size": np.int64(max(self.max_cluster_size, upper.max_group_size, st.widest, 1)),
            }

    @classmethod
    def load(cls, folder: str | Path, n_features: int, post_processor: str, path_exponent: float = 1.0) -> Catalog:
        """Read what `save` wrote, checking the layout: the search kernel trusts every pointer in it."""
        path = Path(folder) / "catalog.npz"
        try:
            with np.load(path) as z:
                arrays = {key: z[key] for key in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise CatalogError(f"{path}: unreadable ({e})") from None
        if "slot_next" in arrays and "entry_slot" not in arrays:
            arrays = _entries_from_slot_lists(arrays)
        if "entry_part" not in arrays and "entry_cluster" in arrays and "base_slot_ptr" in arrays:
            arrays.update(Parts.one_per_cluster(len(arrays["base_slot_ptr"]) - 1, arrays["entry_cluster"]))
        missing = sorted(set(LEAF_ARRAYS) - set(arrays))
        if missing:
            raise CatalogError(f"{path}: missing arrays {missing}")
        problem = leaf_arrays_problem(arrays, n_features)
        if problem:
            raise CatalogError(f"{path}: inconsistent catalogue ({problem})")
        ids_path = Path(folder) / "catalog_ids.txt"
        try:
            ids = ids_path.read_bytes().decode("utf-8").split("\n")[:-1]
        except UnicodeDecodeError as e:
            raise CatalogError(f"{ids_path}: not UTF-8 at byte {e.start}") from None
        if len(ids) != len(arrays["slot_alive"]):
            raise CatalogError(f"{ids_path}: {len(ids)} ids for {len(arrays['slot_alive'])} slots")
        return cls(arrays, ids, n_features, post_processor, path_exponent)


def memory(catalog: Catalog) -> dict[str, int]:
    """Bytes a catalogue holds: {"live": its arrays' live part, "allocated": their capacity (growable buffers
    double), "ids": its id list, strings and id -> slot map}. The arrays are found by walking its attributes and
    layout objects (inserted items' chunks and parts included), so the count follows a new layout."""
    def walk(obj) -> tuple[int, int]:
        live = allocated = 0
        for v in vars(obj).values():
            if hasattr(v, "buf") and hasattr(v, "view"):  # a growable buffer
                live, allocated = live + v.view.nbytes, allocated + v.buf.nbytes
            elif isinstance(v, np.ndarray) or (isinstance(v, tuple) and v and
                                               all(isinstance(a, np.ndarray) for a in v)):
                n = v.nbytes if isinstance(v, np.ndarray) else sum(a.nbytes for a in v)
                live, allocated = live + n, allocated + n
            elif type(v).__module__.startswith("xrmeta") and hasattr(v, "__dict__"):
                a, b = walk(v)
                live, allocated = live + a, allocated + b
        return live, allocated

    live, allocated = walk(catalog)
    ids = sys.getsizeof(catalog.ids) + sum(map(sys.getsizeof, catalog.ids)) + sys.getsizeof(catalog.slot_of)
    return {"live": live, "allocated": allocated, "ids": ids}


def check_search(subset: str, k: int) -> None:
    """ValueError unless subset names one (`SUBSETS`) and 1 <= k <= MAX_K."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {sorted(SUBSETS)}, got {subset!r}")
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be >= 1 and <= {MAX_K}, got {k!r}")


def checked_queries(X: smat.csr_matrix, n_features: int) -> smat.csr_matrix:
    """X with sorted indices (the kernels binary-search each query's features), after checking every value the
    kernels use unchecked as an index: a bad one would read or write outside their arrays."""
    X = smat.csr_matrix(X, dtype=np.float32)  # the kernels read float32 values and int32 features (no copy
    if X.indices.dtype != np.int32:  # when they are already)
        X = smat.csr_matrix((X.data, X.indices.astype(np.int32), X.indptr), shape=X.shape)
    problem = _core.query_problem(X.indices, X.data, n_features)
    if problem == 1:
        raise ValueError(f"feature indices must be in [0, {n_features})")
    if problem == 2:
        raise ValueError("queries must be finite (no NaN or inf)")
    return X if X.has_sorted_indices else X.sorted_indices()


def compacted(a: dict, ids: list[str], n_base: int) -> tuple[dict, list[str]]:
    """A catalogue's arrays (`Catalog.arrays`) and ids without the storage of its removed items: a removed
    observed item keeps its slot (its id, bias and cluster: slots 0..n_base-1 are the trained labels) with an
    empty weight row and no chunk postings; removed inserted items are dropped and the others renumbered
    n_base.. in their order. Per-entry arrays ("entry_*") keep the live items' entries. Returns new arrays."""
    alive = a["slot_alive"]
    keep = alive.copy()
    keep[:n_base] = True
    new_slot = np.cumsum(keep) - 1  # old slot -> new slot, where kept
    row_len = np.diff(a["w_ptr"])
    keep_w = np.repeat(alive, row_len)
    out = {k: v for k, v in a.items() if not k.startswith(("chunk_", "entry_", "slot_", "w_"))}
    out.update({k: v[keep] for k, v in a.items() if k.startswith("slot_")})
    out.update(w_idx=a["w_idx"][keep_w], w_val=a["w_val"][keep_w],
               w_ptr=np.concatenate([[0], np.cumsum(np.where(alive, row_len, 0)[keep])]).astype(a["w_ptr"].dtype))
    live_entry = alive[a["entry_slot"]]
    out.update({k: v[live_entry] for k, v in a.items() if k.startswith("entry_")})
    out["entry_slot"] = new_slot[out["entry_slot"]].astype(a["entry_slot"].dtype)
    chunks = FeatureMajor(*(a["chunk_" + f] for f in FeatureMajor._fields))
    out.update({"chunk_" + f: v for f, v in _chunks_without(chunks, a["base_slot_ptr"], alive)._asdict().items()})
    return out, [ids[s] for s in np.flatnonzero(keep).tolist()]


def _chunks_without(fm: FeatureMajor, base_slot_ptr: np.ndarray, alive: np.ndarray) -> FeatureMajor:
    """The observed chunks without the postings of dead slots (rows left empty go too); the others keep their
    order, so every live item sums its weights in the same order as before."""
    row_cluster = np.repeat(np.arange(len(fm.feat_ptr) - 1), np.diff(fm.feat_ptr))
    post_row = np.repeat(np.arange(len(fm.feats)), np.diff(fm.row_ptr))
    keep = alive[base_slot_ptr[row_cluster[post_row]] + fm.slot]
    count = np.bincount(post_row[keep], minlength=len(fm.feats))
    rows_kept = count > 0
    per_cluster = np.bincount(row_cluster[rows_kept], minlength=len(fm.feat_ptr) - 1)
    return FeatureMajor(
        feat_ptr=np.concatenate([[0], np.cumsum(per_cluster)]).astype(fm.feat_ptr.dtype),
        feats=fm.feats[rows_kept],
        row_ptr=np.concatenate([[0], np.cumsum(count[rows_kept])]).astype(fm.row_ptr.dtype),
        slot=fm.slot[keep],
        val=fm.val[keep],
    )


def _holds_storage(alive: np.ndarray, w_ptr: np.ndarray, n_base: int, slots: np.ndarray | None = None) -> np.ndarray:
    """Which dead slots (of `slots`, default all; alive: their flags) still hold storage that `compacted` would
    reclaim: every dead inserted slot, and a dead observed one while its weight row is not emptied yet. The one
    rule for `Catalog.tombstones`, counted alike when loading and when removing."""
    slots = np.arange(len(alive)) if slots is None else slots
    return ~alive & ((slots >= n_base) | (w_ptr[slots + 1] > w_ptr[slots]))


def _entries_from_slot_lists(a: dict) -> dict:
    """A catalogue saved before items could join several clusters linked each inserted slot into its one cluster
    (slot_next, cluster_head): give each inserted slot its one entry."""
    a = dict(a)
    n_base = int(a["base_slot_ptr"][-1]) if len(a["base_slot_ptr"]) else 0
    del a["slot_next"], a["cluster_head"]
    a["entry_slot"] = np.arange(n_base, len(a["slot_alive"]), dtype=np.int32)
    a["entry_cluster"] = np.asarray(a["slot_cluster"][n_base:], dtype=np.int32)
    return a


def _repeats_in_rows(clusters: np.ndarray) -> bool:
    """Whether any row of (n, m) cluster ids holds a cluster twice (-1 padding aside)."""
    s = np.sort(clusters, axis=1)
    return bool(((s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)).any())
