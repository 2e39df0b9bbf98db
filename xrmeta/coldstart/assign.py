"""Assign: the leaf cluster of the existing tree that a new item joins."""

from __future__ import annotations

import numpy as np
import scipy.sparse as smat
from sklearn.preprocessing import normalize

from .. import _core


def assign_vote(nbr_items: np.ndarray, nbr_sims: np.ndarray, item_cluster: np.ndarray, fallback: np.ndarray,
                m: int = 1) -> np.ndarray:
    """(n, m): the clusters with the largest similarity-weighted votes of the item's neighbours, best first, -1
    padded (fallback[i] when an item has no neighbour)."""
    return _core.cluster_vote(np.ascontiguousarray(nbr_items, dtype=np.int64),
                              np.ascontiguousarray(nbr_sims, dtype=np.float32),
                              np.ascontiguousarray(item_cluster, dtype=np.int32),  # the catalogue's: no copy
                              np.ascontiguousarray(fallback, dtype=np.int64), int(m))


def leaf_centroids(Z: smat.spmatrix, item_cluster: np.ndarray, n_clusters: int) -> smat.csr_matrix:
    """Normalised mean representation of each leaf cluster's items (clusters x features)."""
    n = Z.shape[0]
    C = smat.csr_matrix((np.ones(n, dtype=np.float32), (item_cluster, np.arange(n))), shape=(n_clusters, n))
    return normalize(C @ Z).tocsr()


def assign_centroid(Q: smat.csr_matrix, centroids: smat.csr_matrix, m: int = 1) -> np.ndarray:
    """Alternative: (n, m) the leaf clusters whose centroids are nearest to the item's representation."""
    Q = normalize(Q)
    m = min(m, centroids.shape[0])
    out = np.empty((Q.shape[0], m), dtype=np.int64)
    for start in range(0, Q.shape[0], 4096):  # bounded dense block: rows x clusters
        D = (Q[start : start + 4096] @ centroids.T).toarray()
        top = np.argsort(-D, axis=1, kind="stable")[:, :m]
        out[start : start + len(D)] = top
    return out


def assign_centroid_left_out(Z: smat.spmatrix, item_cluster: np.ndarray, n_clusters: int, items: np.ndarray,
                             block: int = 1024) -> np.ndarray:
    """`assign_centroid` for observed items treated as new: each item's own row is left out of its cluster's
    centroid, which would otherwise pull the item back to its own cluster."""
    Z = smat.csr_matrix(Z, dtype=np.float64)
    n = Z.shape[0]
    member = smat.csr_matrix((np.ones(n), (item_cluster, np.arange(n))), shape=(n_clusters, n))
    sums = (member @ Z).tocsr()  # unnormalised centroids
    sq = np.asarray(sums.multiply(sums).sum(axis=1)).ravel()
    out = np.empty(len(items), dtype=np.int64)
    for start in range(0, len(items), block):
        rows = np.asarray(items[start : start + block])
        S = Z[rows]
        dots = (S @ sums.T).toarray()  # rows x clusters
        own = item_cluster[rows]
        r = np.arange(len(rows))
        self_sq = np.asarray(S.multiply(S).sum(axis=1)).ravel()
        own_dot = dots[r, own]
        own_sq = np.maximum(sq[own] - 2 * own_dot + self_sq, 0.0)
        scores = dots / np.sqrt(np.maximum(sq, 1e-30))  # cosine up to the row's own norm (same for all clusters)
        scores[r, own] = np.where(own_sq > 1e-12, (own_dot - self_sq) / np.sqrt(np.maximum(own_sq, 1e-30)), -np.inf)
        out[start : start + len(rows)] = scores.argmax(axis=1)
    return out
