"""Select: the K observed items nearest to a new one, by cosine of their representations (title TF-IDF by
default; any L2-normalised sparse rows can be plugged in)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as smat
from sklearn.preprocessing import normalize

from .. import _core
from .. import threads as thread_rule
from ..layout import rows


class Selector:
    """K-nearest-neighbour search over observed items through an inverted index (feature -> items).

    A query row only visits items that share a feature with it. `max_postings=None` keeps every posting: exact
    search. Character trigrams make some posting lists span much of the catalogue, so for fast insertion each
    list can keep only its `max_postings` largest weights; the `n_candidates` best partial sums are then
    rescored exactly. Similarities are always exact; only the candidate set is approximate.
    """

    def __init__(self, Z: smat.spmatrix, max_postings: int | None = None, n_candidates: int = 64,
                 normalized: bool = False):
        """Z: (n_items, F) the observed items' representations, rows in slot order, L2-normalised here unless
        normalized (rows a selector normalised already, as saved: normalising them again moves some values by an
        ulp, and a reloaded model, or a sharded one's router, then scored some new items an ulp apart)."""
        Z = smat.csr_matrix(Z, dtype=np.float32, copy=True)
        Z = Z if normalized else normalize(Z)
        Z.sort_indices()
        self.Z = Z
        self.max_postings = max_postings
        self.n_candidates = n_candidates if max_postings else 0
        self.z_ptr, Z.indices, _ = rows(Z)  # int32 indices in Z itself: the generator reads its rows too
        self.inv_ptr, self.inv_item, self.inv_val = _core.inverted_index(self.z_ptr, Z.indices, Z.data, Z.shape[1],
                                                                         max_postings or 0)

    def without(self, items: np.ndarray) -> Selector:
        """A new selector over the same rows with those of `items` emptied (delisted observed items: never a
        neighbour again, their storage dropped), as a loaded model builds it from the saved rows."""
        drop = np.zeros(self.n_items, dtype=bool)
        drop[np.asarray(items, dtype=np.int64)] = True
        keep = ~np.repeat(drop, np.diff(self.Z.indptr))
        indptr = np.concatenate([[0], np.cumsum(np.where(drop, 0, np.diff(self.Z.indptr)))])
        Z = smat.csr_matrix((self.Z.data[keep], self.Z.indices[keep], indptr), shape=self.Z.shape)
        return Selector(Z, self.max_postings, self.n_candidates, normalized=True)

    @property
    def n_items(self) -> int:
        """Observed items searched (rows of Z)."""
        return self.Z.shape[0]

    def search(self, Q: smat.csr_matrix, k: int, threads: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(items int64, sims float32), both (n, k): the k rows of Z nearest to each row of Q (n x F), nearest
        first; item -1 (sim 0) where fewer than k share a feature. threads: -1 = all cores, n >= 1."""
        if Q.shape[1] != self.Z.shape[1]:
            raise ValueError(f"query dimension {Q.shape[1]} != item dimension {self.Z.shape[1]}")
        Q = normalize(smat.csr_matrix(Q, dtype=np.float32))
        return _core.knn_topk(
            *rows(Q), self.inv_ptr, self.inv_item, self.inv_val,
            self.z_ptr, self.Z.indices, self.Z.data, self.n_items, self.Z.shape[1], int(k), self.n_candidates,
            thread_rule.resolve(threads),
        )


def neighbours_excluding(selector, titles, proxies: np.ndarray, k: int, extra: int = 16, threads: int = -1):
    """Each proxy's (observed items treated as new) k nearest observed items that are not proxies (IRENE: a proxy
    never sees its own classifier; here it sees none of the held-out items either). -1 where fewer remain."""
    nbrs, sims = selector.search(titles, k + extra, threads)
    is_proxy = np.zeros(selector.n_items, dtype=bool)
    is_proxy[proxies] = True
    ok = (nbrs >= 0) & ~is_proxy[np.maximum(nbrs, 0)]
    order = np.argsort(~ok, axis=1, kind="stable")[:, :k]  # the first k allowed, nearest first
    out_n = np.take_along_axis(nbrs, order, axis=1)
    out_s = np.take_along_axis(sims, order, axis=1)
    allowed = np.take_along_axis(ok, order, axis=1)
    return np.where(allowed, out_n, -1), np.where(allowed, out_s, 0.0).astype(np.float32)
