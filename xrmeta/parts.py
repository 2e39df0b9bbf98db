"""Leaf split: the inserted entries of a leaf cluster in parts, each with a router, so a query scores only the
parts of a cluster that match it best.

Inserted items pile into the trained leaf clusters (a tree trained on 9k items and grown to 10^6 answered
queries 160x slower). Once a part holds more than `split_size` live entries it splits in two by spherical
2-means on its entries' classifiers (L2-normalised rows); each half's router is the normalised mean of its
classifiers, pruned to its ROUTER_NNZ largest weights. Part c < clusters is cluster c's first part; a split
keeps the part's number for one half and appends a new part for the other. A new entry of a split cluster goes
to the part whose router has the largest dot product with its classifier. A query scores every part of a cluster
that has at most `probe` parts, else the `probe` parts whose routers score highest against it (x . router), so
an item's score is unchanged: the router only decides which parts get scored.

The split depends only on the part's live entries (sorted by entry number) and its place in its cluster (the
seed), never on thread counts or batch timing inside the lock, so replaying the item log reproduces the same parts
(and a shard holding the cluster makes the same ones). Entries, parts and routers persist (`arrays`); per-part
chunks are derived (`inserted.Chunks`).

Not thread-safe: the catalogue's writer lock serialises calls; per-part arrays that queries read are replaced,
never written in place, except entry_part (queries never read it).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as smat

from . import _core
from .inserted import Growable

# weights kept per router: a query scores every router of a reached split cluster, one gather per weight. On the
# synthetic lifecycle check (9k trained, 10^5 inserted, split_size 256) 512 instead of 64 returned 3-4 points
# more of the unsplit top-10 at a latency equal within noise; 64 is what the 10^6 measurement ran with
ROUTER_NNZ = 64
ITERATIONS = 10  # 2-means rounds (stops earlier once the halves stop changing)
MIN_SHARE = 4  # a 2-means half smaller than 1/MIN_SHARE of the part is replaced by a split at the median


class Parts:
    """Which part each inserted entry is in, each part's cluster and router, and live entries per part."""

    def __init__(self, a: dict, n_clusters: int, live_entry: np.ndarray):
        self.n_clusters = n_clusters
        self.entry_part = Growable(a["entry_part"])
        self.part_cluster = Growable(a["part_cluster"])
        ptr = a["router_ptr"]
        self.router_lo, self.router_hi = ptr[:-1].astype(np.int64), ptr[1:].astype(np.int64)
        self.router_idx = Growable(a["router_idx"])
        self.router_val = Growable(a["router_val"])
        self.live = np.bincount(a["entry_part"][live_entry], minlength=self.n_parts).astype(np.int64)
        self._moved = []
        self._index()

    @staticmethod
    def one_per_cluster(n_clusters: int, entry_cluster: np.ndarray) -> dict:
        """The arrays of a catalogue saved before the split existed: every cluster is one part."""
        return {"entry_part": np.asarray(entry_cluster, dtype=np.int32),
                "part_cluster": np.arange(n_clusters, dtype=np.int32),
                "router_ptr": np.zeros(n_clusters + 1, dtype=np.int64),
                "router_idx": np.zeros(0, dtype=np.int32), "router_val": np.zeros(0, dtype=np.float32)}

    @property
    def n_parts(self) -> int:
        return self.part_cluster.n

    def _seed(self, part: int) -> int | list[int]:
        """A part's 2-means seed: its number for a cluster's first part, else (cluster, its rank among the cluster's
        parts). Part numbers past the clusters count every split in the catalogue, the rank only the cluster's own,
        so a shard holding the cluster (`xrmeta.distributed`) splits it exactly as the whole catalogue does."""
        cluster = int(self.part_cluster.view[part])
        if part == cluster:
            return part
        p0, p1 = self.cluster_part_ptr[cluster], self.cluster_part_ptr[cluster + 1]
        return [cluster, int(np.searchsorted(self.cluster_parts[p0:p1], part))]

    def _index(self) -> None:
        order = np.argsort(self.part_cluster.view, kind="stable")  # parts by cluster, increasing within one
        self.cluster_parts = order.astype(np.int32)
        self.cluster_part_ptr = np.searchsorted(self.part_cluster.view[order],
                                                np.arange(self.n_clusters + 1)).astype(np.int64)

    def fields(self) -> tuple:
        """The last fields of `layout.InsertedLayout`."""
        return (self.cluster_part_ptr, self.cluster_parts, self.router_lo, self.router_hi, self.router_idx.buf,
                self.router_val.buf)

    def arrays(self) -> dict:
        """The persisted arrays, routers as CSR rows."""
        lengths = self.router_hi - self.router_lo
        take = np.concatenate([np.arange(lo, hi) for lo, hi in zip(self.router_lo, self.router_hi)] + [[]])
        take = take.astype(np.int64)
        return {"entry_part": self.entry_part.view, "part_cluster": self.part_cluster.view,
                "router_ptr": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                "router_idx": self.router_idx.view[take], "router_val": self.router_val.view[take]}

    def marks(self) -> tuple:
        """Everything `take`, `drop` and `split` may change, to put back on failure (`restore`); the last element
        is the undo list of entries moved by splits since."""
        self._moved = []
        return ([g.n for g in (self.entry_part, self.part_cluster, self.router_idx, self.router_val)],
                self.router_lo, self.router_hi, self.live, self.cluster_part_ptr, self.cluster_parts, self._moved)

    def restore(self, marks: tuple) -> None:
        ns, self.router_lo, self.router_hi, self.live, self.cluster_part_ptr, self.cluster_parts, moved = marks
        for entries, part in reversed(moved):  # entries a split moved to a new part: back to where they were
            self.entry_part.buf[entries] = part
        for g, n in zip((self.entry_part, self.part_cluster, self.router_idx, self.router_val), ns):
            g.n = n

    # ------------------------------------------------------------ new entries
    def route(self, entry_slot: np.ndarray, entry_cluster: np.ndarray, weights, n_features: int) -> np.ndarray:
        """The part of each new entry (slots and clusters given): its cluster's only part, or the part whose
        router has the largest dot product with the entry's classifier (ties: the smaller part)."""
        entry_cluster = np.asarray(entry_cluster, dtype=np.int64)
        split = np.diff(self.cluster_part_ptr)[entry_cluster] > 1
        out = entry_cluster.astype(np.int32)  # part c is cluster c's first part
        if split.any():
            out[split] = _core.best_parts(np.asarray(entry_slot, dtype=np.int64)[split], entry_cluster[split],
                                          *weights, *self.fields(), np.zeros(n_features, dtype=np.float32))
        return out

    def take(self, parts: np.ndarray) -> None:
        """Append the parts of new (live) entries."""
        self.entry_part.extend(parts)
        self.live = self.live + np.bincount(parts, minlength=self.n_parts)

    def drop(self, entries: np.ndarray) -> None:
        """The given entries' items were removed: they no longer count towards their parts' sizes."""
        live = self.live.copy()
        np.subtract.at(live, self.entry_part.view[entries], 1)
        self.live = live

    def full(self, split_size: int) -> np.ndarray:
        """Parts holding more than split_size live entries, increasing (0: never split)."""
        return np.flatnonzero(self.live > split_size) if split_size > 0 else np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------ split
    def split(self, parts: np.ndarray, entries: list[np.ndarray], entry_slot: np.ndarray, weights) -> tuple:
        """Split each of `parts` (increasing), whose live entries are entries[i] (increasing), in two; weights:
        the catalogue's item-major (w_ptr, w_idx, w_val). Part parts[i] keeps one half, new part new[i] (numbered
        from n_parts on, in order) takes the other. Returns (kept, moved: lists of entry arrays, new parts)."""
        new = self.n_parts + np.arange(len(parts))
        kept, moved = [], []
        lo, hi = self.router_lo.copy(), self.router_hi.copy()
        new_lo, new_hi = np.zeros(len(parts), dtype=np.int64), np.zeros(len(parts), dtype=np.int64)
        live = np.append(self.live, np.zeros(len(parts), dtype=np.int64))
        for i, (part, ent) in enumerate(zip(parts, entries)):
            side, routers = two_means(_rows(weights, entry_slot[ent]), seed=self._seed(int(part)))
            kept.append(ent[~side])
            moved.append(ent[side])
            self._moved.append((moved[-1], part))
            self.entry_part.buf[moved[-1]] = new[i]
            for (idx, val), (los, his, j) in zip(routers, ((lo, hi, part), (new_lo, new_hi, i))):
                los[j], his[j] = self.router_idx.n, self.router_idx.n + len(idx)
                self.router_idx.extend(idx)
                self.router_val.extend(val)
            live[part], live[new[i]] = len(kept[-1]), len(moved[-1])
        self.part_cluster.extend(self.part_cluster.view[parts])
        self.router_lo, self.router_hi = np.concatenate([lo, new_lo]), np.concatenate([hi, new_hi])
        self.live = live
        self._index()
        return kept, moved, new


def two_means(W: smat.csr_matrix, seed: int | list[int]) -> tuple[np.ndarray, list]:
    """Spherical 2-means of the rows of W: (side (n,) bool, True for the second half; the halves' routers
    [(idx int32, val float32)] * 2). Deterministic: the first centre is the row drawn with `seed`, the second the
    row least like it; a lopsided result is replaced by a split at the median of the difference of similarities."""
    n = W.shape[0]
    cols, local = np.unique(W.indices, return_inverse=True)  # the features these rows use, as local columns
    first = int(np.random.default_rng(seed).integers(n))
    side, means = _core.two_means(W.indptr.astype(np.int64), local.ravel().astype(np.int64),
                                  W.data.astype(np.float64), len(cols), first, ITERATIONS, MIN_SHARE)
    routers = []
    for mean in means:
        keep = np.sort(np.argsort(-np.abs(mean), kind="stable")[:ROUTER_NNZ])
        keep = keep[mean[keep] != 0]
        routers.append((cols[keep].astype(np.int32), _unit(mean[keep]).astype(np.float32)))
    return side, routers


def _rows(weights, slots: np.ndarray) -> smat.csr_matrix:
    """The given rows of item-major CSR weights, copied (only theirs: the catalogue's arrays may be large)."""
    w_ptr, w_idx, w_val = weights
    starts, ends = w_ptr[slots], w_ptr[np.asarray(slots) + 1]
    lengths = ends - starts
    ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    take = np.repeat(starts - ptr[:-1], lengths) + np.arange(ptr[-1])
    idx = w_idx[take]
    return smat.csr_matrix((w_val[take], idx, ptr), shape=(len(slots), int(idx.max(initial=0)) + 1))


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.sqrt((v * v).sum())
    return v / norm if norm > 0 else v
