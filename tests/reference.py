"""Test-only search path: the leaf scoring of `Catalog.search` for given beams (each query's leaf clusters with
their path scores), so the leaf kernel can be checked against brute force with arbitrary beams. Production
reaches the same kernel (`kernels.search._score_query`) only through the beam search."""

from __future__ import annotations

import numpy as np
import scipy.sparse as smat
from numba import njit

from xrmeta.catalog import SUBSETS, Catalog
from xrmeta.kernels.search import _exponentiate, _leaf_scratch, _score_query
from xrmeta.layout import rows


def leaf_topk(catalog: Catalog, X: smat.csr_matrix, beams: smat.csr_matrix, k: int, subset: str = "all",
              split_probe: int = 1):
    """Top-k (slots, scores) per query row of X, scoring the items under each row's beam clusters (beams:
    queries x clusters, value = path score of the cluster), as `Catalog.search` scores them."""
    catalog._check_search(subset, k)
    if X.shape[1] != catalog.n_features or beams.shape[0] != X.shape[0]:
        raise ValueError(f"queries {X.shape} and beams {beams.shape} do not fit {catalog.n_features} features")
    beams = smat.csr_matrix(beams, dtype=np.float32)
    if beams.nnz and (beams.indices.min() < 0 or beams.indices.max() >= catalog.n_clusters):
        raise ValueError(f"beam clusters in [0, {catalog.n_clusters}) only")
    if not np.isfinite(beams.data).all():
        raise ValueError("beam scores must be finite (no NaN or inf)")
    X = catalog._checked_queries(X)
    st = catalog._state
    return _leaf_topk(rows(X), rows(beams), st.leaf, st.inserted, SUBSETS[subset], int(k), int(k) * st.memberships,
                      max(catalog.max_cluster_size, st.widest, 1), np.zeros(catalog.n_features, np.float32),
                      int(split_probe))


@njit(cache=True)
def _leaf_topk(queries, beams, leaf, ins, subset, k, heap, max_group_size, dense_q, probe):
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
