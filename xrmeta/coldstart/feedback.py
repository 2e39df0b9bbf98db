"""One-shot refinement: a revealed click (query, item) moves the item's classifier toward the query, at once.

The step is passive-aggressive (Crammer et al., 2006): the smallest move along the query's TF-IDF vector x that
lifts the item's raw score w . x + b to that of the best other live item of its leaf cluster (an inserted item's
best one), the items an XR-Linear leaf classifier is trained against. (All of an inserted item's clusters gave the
same quality on the seed-0 splits and cost Home Depot 30% of its events/s.) An item that already wins its query does not move, so a repeated
click costs nothing; a step is capped at `ColdStartConfig.feedback_step` times the classifier's norm, so one click
on a generic query ("cordless drill") does not turn a product into the answer to every query near it. Weights
scale each click's step. Clicks on one item in one batch are all measured against its classifier before the
batch, and summed. The bias does not move.

Tried once on the seed-0 splits (a throw-away script, not in benchmarks/) and left out: re-selecting the
neighbours by the title and the revealed query (IRENE's max-vote) and generating again changed zero-shot P@1 by
+0.3 (Home Depot) and 0 (PriceRunner), as the default generator mixes in no neighbour classifier and generating
costs about 70 us per item; adding the query vector with a fixed step cost Home Depot 3 to 16 points of zero-shot
P@1; a step that also moves the bias, or competitors among new items only, or a cap scaled by the query's cosine
to the classifier, traded the two settings no better. `benchmarks/feedback.py` measures the default and the cap.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as smat

from .. import _core
from ..layout import rows

MARGIN = 1e-3  # the raw score the item must gain over its best competitor (a tie goes to the older slot)


def refine(catalog, X: smat.csr_matrix, slots: np.ndarray, weights: np.ndarray, max_step: float, threshold: float,
           max_nnz: int) -> tuple[np.ndarray, smat.csr_matrix, np.ndarray]:
    """New classifiers of the clicked items that move: (their current slots, unique in first-click order; weights
    CSR float32 (u, F); biases (u,)). X: (n, F) the clicks' query rows (each with a known feature); slots (n,) the
    clicked items' slots in `catalog`; weights (n,) > 0; max_step: a click's step at most, as a share of the
    classifier's norm (`ColdStartConfig.feedback_step`). Pruned like synthesized ones: |w| >= threshold, at most
    max(max_nnz, the item's current non-zeros)."""
    X = smat.csr_matrix(X, dtype=np.float32)
    items, first, event_item = np.unique(slots, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # items in first-click order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    items, event_item = items[order], rank[event_item]
    W = catalog.weights(items)
    bias = catalog.slot_bias.view[items].astype(np.float32)
    n = len(slots)  # the competitors: its best (a trained item's only) leaf cluster's other items
    beams = smat.csr_matrix((np.ones(n, np.float32), catalog.slot_cluster.view[slots], np.arange(n + 1)),
                            shape=(n, catalog.n_clusters))
    found, _ = catalog.search_clusters(X, beams, 2)
    rival = np.where(found[:, 0] == slots, found[:, 1], found[:, 0])
    own = _raw(W[event_item], bias[event_item], X)
    has = rival >= 0
    other = np.full(len(slots), -np.inf, dtype=np.float32)
    if has.any():
        other[has] = _raw(catalog.weights(rival[has]), catalog.slot_bias.view[rival[has]], X[has])
    norm = np.sqrt(np.asarray(W.multiply(W).sum(axis=1)).ravel())[event_item]
    x2 = np.asarray(X.multiply(X).sum(axis=1)).ravel()
    step = np.where(has, np.clip((other - own + MARGIN) / np.maximum(x2, 1e-12), 0.0, max_step * norm), 0.0)
    step = (step * weights).astype(np.float32)
    per_item = smat.csr_matrix((step, (event_item, np.arange(len(slots)))), shape=(len(items), len(slots)))
    moved = np.flatnonzero(np.bincount(event_item, step, len(items)) > 0)  # the others keep their classifier
    D = (per_item[moved] @ X).tocsr()  # each moved item's summed steps
    w = catalog.w_ptr.view, catalog.w_idx.view, catalog.w_val.view
    ptr, idx, val = _core.mix_sparse(items[moved, None].astype(np.int64), np.ones((len(moved), 1), np.float32), *w,
                                     *rows(D), np.ones(len(moved), np.float32), X.shape[1], np.float32(threshold),
                                     np.maximum(np.diff(W.indptr)[moved], max_nnz).astype(np.int64))
    return items[moved], smat.csr_matrix((val, idx, ptr), shape=(len(moved), X.shape[1])), bias[moved]


def _raw(W: smat.csr_matrix, bias: np.ndarray, X: smat.csr_matrix) -> np.ndarray:
    """Row-wise raw scores w_i . x_i + b_i."""
    return (np.asarray(W.multiply(X).sum(axis=1)).ravel() + bias).astype(np.float32)
