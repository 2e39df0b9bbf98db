"""Select: the K observed items nearest to a new one, by cosine of their representations (title TF-IDF by
default; any L2-normalised sparse rows can be plugged in)."""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as smat
from sklearn.preprocessing import normalize

from .. import kernels


class Selector:
    """Exact K-nearest-neighbour search over observed items through an inverted index.

    The index is the CSC form of the item matrix: a query row only visits items that share a feature with it,
    so the cost per new item is the length of its features' posting lists, not the catalogue size.
    """

    def __init__(self, Z: smat.spmatrix):
        Z = normalize(smat.csr_matrix(Z, dtype=np.float32))
        self.Z = Z
        inv = Z.tocsc()
        inv.sort_indices()
        self.inv_ptr = inv.indptr.astype(np.int64)
        self.inv_item = inv.indices.astype(np.int64)
        self.inv_val = inv.data.astype(np.float32)

    @property
    def n_items(self) -> int:
        return self.Z.shape[0]

    def search(self, Q: smat.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(items, sims), both (n, k), nearest first; -1 where fewer than k items share a feature."""
        if Q.shape[1] != self.Z.shape[1]:
            raise ValueError(f"query dimension {Q.shape[1]} != item dimension {self.Z.shape[1]}")
        Q = normalize(smat.csr_matrix(Q, dtype=np.float32))
        return kernels.knn_topk(
            Q.indptr.astype(np.int64), Q.indices, Q.data, self.inv_ptr, self.inv_item, self.inv_val,
            self.n_items, int(k), numba.get_num_threads(),
        )
