"""Test-only search path: the leaf scoring of `Catalog.search` for given beams (each query's leaf clusters with
their path scores), so the leaf kernel can be checked against brute force with arbitrary beams. Production uses
the same kernel for the feedback's competitors (`Catalog.search_clusters`)."""

from __future__ import annotations

import scipy.sparse as smat

from xrmeta.catalog import Catalog


def leaf_topk(catalog: Catalog, X: smat.csr_matrix, beams: smat.csr_matrix, k: int, subset: str = "all",
              split_probe: int = 1):
    """Top-k (slots, scores) per query row of X, scoring the items under each row's beam clusters (beams:
    queries x clusters, value = path score of the cluster), as `Catalog.search` scores them."""
    return catalog.search_clusters(X, beams, k, subset, split_probe)
