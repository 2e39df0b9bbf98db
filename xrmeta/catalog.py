"""Stage 4: the mutable leaf layer ("catalog") of the tree, and leaf scoring.

The trained tree's upper layers stay in PECOS (fast predict-only path) and pick the top-b leaf clusters; the
catalog scores the items under those clusters. Every item owns a *slot*:

- observed (trained) items take slots 0..n_base-1, ordered by cluster, and are also stored feature-major per
  cluster ("chunks", as PECOS does), so scoring a cluster costs one binary search per query feature;
- inserted items are appended after them: item-major weights plus a per-cluster linked list, so inserting
  costs O(nnz of the item) whatever the catalogue size, and scoring one costs O(its nnz).

Removal clears a slot's alive flag; slots are never reused, so an id's history is unambiguous.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as smat

from . import kernels

SUBSETS = {"all": 0, "observed": 1, "inserted": 2}


class CatalogError(ValueError):
    pass


class _Growable:
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


class Catalog:
    def __init__(self, arrays: dict, ids: list[str], n_features: int, post_processor: str):
        self.n_features = int(n_features)
        self.post_processor = post_processor
        self.post = kernels.POST_PROCESSORS[post_processor]
        a = arrays
        # immutable: observed items, feature-major per cluster
        self.chunk_feat_ptr = a["chunk_feat_ptr"]
        self.chunk_feats = a["chunk_feats"]
        self.chunk_row_ptr = a["chunk_row_ptr"]
        self.chunk_slot = a["chunk_slot"]
        self.chunk_val = a["chunk_val"]
        self.base_slot_ptr = a["base_slot_ptr"]
        self.n_base = int(a["base_slot_ptr"][-1])
        self.n_clusters = len(self.base_slot_ptr) - 1
        sizes = np.diff(self.base_slot_ptr)
        self.max_cluster_size = int(sizes.max()) if len(sizes) else 0
        # growable: one entry per slot
        self.w_ptr = _Growable(a["w_ptr"])
        self.w_idx = _Growable(a["w_idx"])
        self.w_val = _Growable(a["w_val"])
        self.slot_bias = _Growable(a["slot_bias"])
        self.slot_alive = _Growable(a["slot_alive"])
        self.slot_cluster = _Growable(a["slot_cluster"])
        self.slot_next = _Growable(a["slot_next"])
        self.cluster_head = np.array(a["cluster_head"], copy=True)
        self._local = threading.local()  # per-thread scratch: concurrent queries must not share it
        self.ids = list(ids)
        self.slot_of = {item_id: s for s, item_id in enumerate(self.ids) if self.slot_alive.buf[s]}

    # ------------------------------------------------------------ construction
    @classmethod
    def from_leaf_layer(cls, W: smat.spmatrix, C: smat.spmatrix, bias: float, ids: list[str], post_processor: str):
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
        # feature-major chunks: sort the non-zeros by (cluster, feature, slot)
        slots = np.repeat(np.arange(n_labels), np.diff(Wf.indptr))
        feats = Wf.indices.astype(np.int64)
        clusters = slot_cluster[slots]
        o = np.lexsort((slots, feats, clusters))
        slots, feats, clusters, vals = slots[o], feats[o], clusters[o], Wf.data[o]
        new_row = np.ones(len(o), dtype=bool)
        new_row[1:] = (feats[1:] != feats[:-1]) | (clusters[1:] != clusters[:-1])
        row_start = np.flatnonzero(new_row)
        row_cluster = clusters[row_start]
        arrays = {
            "chunk_feat_ptr": np.searchsorted(row_cluster, np.arange(n_clusters + 1)).astype(np.int64),
            "chunk_feats": feats[row_start].astype(np.int32),
            "chunk_row_ptr": np.append(row_start, len(o)).astype(np.int64),
            "chunk_slot": (slots - base_slot_ptr[clusters]).astype(np.int32),  # offset inside its cluster
            "chunk_val": vals.astype(np.float32),
            "base_slot_ptr": base_slot_ptr,
            "w_ptr": Wf.indptr.astype(np.int64),
            "w_idx": Wf.indices.astype(np.int32),
            "w_val": Wf.data.astype(np.float32),
            "slot_bias": slot_bias,
            "slot_alive": np.ones(n_labels, dtype=bool),
            "slot_cluster": slot_cluster.astype(np.int32),
            "slot_next": np.full(n_labels, -1, dtype=np.int32),
            "cluster_head": np.full(n_clusters, -1, dtype=np.int32),
        }
        return cls(arrays, [ids[j] for j in order], n_features, post_processor)

    # ------------------------------------------------------------ state
    @property
    def n_slots(self) -> int:
        return self.slot_alive.n

    def __len__(self) -> int:
        return len(self.slot_of)

    def is_inserted(self, slots: np.ndarray) -> np.ndarray:
        return np.asarray(slots) >= self.n_base

    def weights(self, slots: np.ndarray) -> smat.csr_matrix:
        """Item-major weight rows (without the bias) of the given slots."""
        W = smat.csr_matrix(
            (self.w_val.view, self.w_idx.view, self.w_ptr.view), shape=(self.n_slots, self.n_features)
        )
        return W[np.asarray(slots)]

    # ------------------------------------------------------------ mutation
    def add(self, ids: list[str], clusters: np.ndarray, W: smat.csr_matrix, biases: np.ndarray) -> np.ndarray:
        """Append items (validated first, so a bad batch changes nothing). Returns their slots."""
        n = len(ids)
        clusters = np.asarray(clusters, dtype=np.int64)
        biases = np.asarray(biases, dtype=np.float32)
        W = smat.csr_matrix(W, dtype=np.float32)
        if W.shape != (n, self.n_features) or clusters.shape != (n,) or biases.shape != (n,):
            raise CatalogError(
                f"add: {n} ids but weights {W.shape}, clusters {clusters.shape}, biases {biases.shape} "
                f"(expected ({n}, {self.n_features}), ({n},), ({n},))"
            )
        self._check_new_ids(ids)
        if n and (clusters.min() < 0 or clusters.max() >= self.n_clusters):
            raise CatalogError(f"add: cluster ids must be in [0, {self.n_clusters})")
        if not (np.isfinite(W.data).all() and np.isfinite(biases).all()):
            raise CatalogError("add: weights contain NaN or inf")
        # store the batch grouped by cluster: a query then reads each cluster's new items from one memory run
        order = np.argsort(clusters, kind="stable")
        W, clusters, biases = W[order], clusters[order], biases[order]
        W.sort_indices()
        first = self.n_slots
        self.w_idx.extend(W.indices.astype(np.int32))
        self.w_val.extend(W.data)
        self.w_ptr.extend(self.w_ptr.view[-1] + W.indptr[1:].astype(np.int64))
        self.slot_bias.extend(biases)
        self.slot_cluster.extend(clusters.astype(np.int32))
        # push each new slot at the head of its cluster's list
        next_ = np.empty(n, dtype=np.int32)
        for i, c in enumerate(clusters):
            next_[i] = self.cluster_head[c]
            self.cluster_head[c] = first + i
        self.slot_next.extend(next_)
        # alive last: a slot becomes visible only once everything it points to is written
        self.slot_alive.extend(np.ones(n, dtype=bool))
        slots = np.empty(n, dtype=np.int64)
        slots[order] = np.arange(first, first + n)  # slot of the i-th given item
        stored_ids = [ids[i] for i in order]
        self.ids.extend(stored_ids)
        self.slot_of.update(zip(stored_ids, range(first, first + n)))
        return slots

    def remove(self, ids: list[str]) -> None:
        unknown = [i for i in ids if i not in self.slot_of]
        if unknown:
            raise CatalogError(f"remove: unknown item ids {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        if len(set(ids)) != len(ids):
            raise CatalogError("remove: duplicate ids in the request")
        slots = [self.slot_of.pop(i) for i in ids]
        self.slot_alive.buf[slots] = False

    def _check_new_ids(self, ids: list[str]) -> None:
        bad = [i for i in ids if not isinstance(i, str) or not i.strip() or any(c in i for c in "\r\n\t")]
        if bad:
            raise CatalogError(f"add: item ids must be non-empty strings without tabs or line breaks, got {bad[:5]}")
        if len(set(ids)) != len(ids):
            raise CatalogError("add: duplicate ids in the request")
        taken = [i for i in ids if i in self.slot_of]
        if taken:
            raise CatalogError(f"add: ids already in the catalogue {taken[:5]}{' ...' if len(taken) > 5 else ''}")

    # ------------------------------------------------------------ search
    def topk(self, X: smat.csr_matrix, beams: smat.csr_matrix, k: int, subset: str = "all"):
        """Top-k (slots, scores) per query row of X, scoring the items under each row's beam clusters
        (beams: queries x clusters, value = path score of the cluster)."""
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {sorted(SUBSETS)}, got {subset!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if X.shape[1] != self.n_features or beams.shape[0] != X.shape[0]:
            raise ValueError(f"queries {X.shape} and beams {beams.shape} do not fit {self.n_features} features")
        if not X.has_sorted_indices:  # the kernel binary-searches each query's features
            X = X.sorted_indices()
        return kernels.leaf_topk(
            X.indptr.astype(np.int64), X.indices, X.data, beams.indptr.astype(np.int64), beams.indices, beams.data,
            self.chunk_feat_ptr, self.chunk_feats, self.chunk_row_ptr, self.chunk_slot, self.chunk_val,
            self.base_slot_ptr, self.cluster_head, self.slot_next.buf, self.w_ptr.buf, self.w_idx.buf,
            self.w_val.buf, self.slot_bias.buf, self.slot_alive.buf,
            self.n_base, max(self.max_cluster_size, 1), SUBSETS[subset], self.post, int(k), self._scratch(),
        )

    def _scratch(self) -> np.ndarray:
        """This Python thread's zeroed (numba threads x features) query buffer for the leaf kernel."""
        buf = getattr(self._local, "dense_q", None)
        threads = numba.get_num_threads()
        if buf is None or buf.shape[0] != threads:
            buf = self._local.dense_q = np.zeros((threads, self.n_features), dtype=np.float32)
        return buf

    # ------------------------------------------------------------ persistence
    def arrays(self) -> dict:
        return {
            "chunk_feat_ptr": self.chunk_feat_ptr, "chunk_feats": self.chunk_feats,
            "chunk_row_ptr": self.chunk_row_ptr, "chunk_slot": self.chunk_slot, "chunk_val": self.chunk_val,
            "base_slot_ptr": self.base_slot_ptr, "w_ptr": self.w_ptr.view, "w_idx": self.w_idx.view,
            "w_val": self.w_val.view, "slot_bias": self.slot_bias.view, "slot_alive": self.slot_alive.view,
            "slot_cluster": self.slot_cluster.view, "slot_next": self.slot_next.view,
            "cluster_head": self.cluster_head,
        }

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        np.savez(folder / "catalog.npz", **self.arrays())
        (folder / "catalog_ids.txt").write_text("".join(f"{i}\n" for i in self.ids), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, n_features: int, post_processor: str) -> Catalog:
        folder = Path(folder)
        with np.load(folder / "catalog.npz") as z:
            arrays = {key: z[key] for key in z.files}
        ids = (folder / "catalog_ids.txt").read_bytes().decode("utf-8").split("\n")[:-1]
        if len(ids) != len(arrays["slot_alive"]):
            raise CatalogError(f"{folder / 'catalog_ids.txt'}: {len(ids)} ids for {len(arrays['slot_alive'])} slots")
        return cls(arrays, ids, n_features, post_processor)
