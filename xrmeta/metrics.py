"""Ranking metrics for extreme multi-label retrieval on sparse score matrices.

Rows are queries and columns are labels. ``scores`` holds the predicted scores
and ``truth`` the relevant labels, both as scipy sparse matrices of the same
shape. Metrics are returned in percent (0..100) and follow XMC conventions:

* Only explicitly stored score entries count as predictions, whatever their
  value (0, negative, -inf and NaN too; NaN ranks below every other score).
  Duplicate stored entries are summed, as scipy does.
* A label is relevant when it is stored in ``truth`` with a nonzero value.
* Rankings are by decreasing score; ties go to the smaller column index.
* P@k always divides by k, even for rows with fewer than k predictions.
* R@k and nDCG@k skip rows with no relevant label; if every row is skipped
  (or there are no rows) the result is NaN, since the mean is undefined.

Nothing is densified beyond n x min(k, longest row): rows are ranked in
batches of similar length, so one long row does not inflate the others.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp

_BLOCK_CELLS = 1 << 20

__all__ = [
    "topk_indices",
    "precision_at_k",
    "recall_at_k",
    "ndcg_at_k",
    "evaluate_scores",
]


def _check_k(k) -> int:
    if isinstance(k, (bool, np.bool_)):
        raise TypeError("k must be an integer, not a bool")
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


def _as_csr(matrix, name: str):
    if not sp.issparse(matrix):
        raise TypeError(f"{name} must be a scipy sparse matrix, got {type(matrix).__name__}")
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {matrix.shape}")
    csr = matrix.tocsr()
    if not csr.has_canonical_format:
        # Summing duplicates mutates in place; never touch the caller's matrix.
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def _ranked(scores, k: int) -> np.ndarray:
    """(n, min(k, longest row)) ranked column indices of canonical CSR ``scores``, -1 padded."""
    n = scores.shape[0]
    indptr = scores.indptr.astype(np.int64)
    lengths = np.diff(indptr)
    width = int(min(k, lengths.max(initial=0)))
    out = np.full((n, width), -1, dtype=np.int64)
    if width == 0:
        return out

    # Sort ascending on the negated score so the stable sort keeps equal scores in
    # column order (canonical CSR stores columns ascending) -> smaller column wins.
    # Integer/bool data is cast first because negating unsigned values wraps.
    data = scores.data
    neg = -(data if np.issubdtype(data.dtype, np.floating) else data.astype(np.float64))
    indices = scores.indices.astype(np.int64)

    # One global lexsort over all entries is several times slower than many short
    # row-wise sorts, so rows are padded into dense blocks and sorted along axis 1.
    # Grouping rows by the next power of two of their length bounds padding to 2x.
    nonempty = np.flatnonzero(lengths)
    bucket = np.frexp(lengths[nonempty] - 1)[1]  # ceil(log2(length)), 0 for length 1
    for b in np.unique(bucket):
        w = 1 << int(b)
        bucket_rows = nonempty[bucket == b]
        # Blocks of ~1M cells keep temporaries cache-sized and memory bounded.
        step = max(1, _BLOCK_CELLS // w)
        for start in range(0, bucket_rows.size, step):
            rows = bucket_rows[start : start + step]
            _rank_block(rows, w, width, lengths, indptr, indices, neg, out)
    return out


def _rank_block(rows, w, width, lengths, indptr, indices, neg, out) -> None:
    row_len = lengths[rows][:, None]
    offsets = np.arange(w)
    valid = offsets < row_len
    src = indptr[rows][:, None] + np.minimum(offsets, row_len - 1)
    # NaN padding: numpy sorts NaN last and stably, so padding lands after every
    # real entry, including real NaN scores.
    block = np.where(valid, neg[src], np.nan)
    keep = min(width, w)
    order = np.argsort(block, axis=1, kind="stable")[:, :keep]
    picked = np.take_along_axis(src, order, axis=1)
    picked_valid = np.take_along_axis(valid, order, axis=1)
    out[rows, :keep] = np.where(picked_valid, indices[picked], -1)


def topk_indices(scores, k: int) -> np.ndarray:
    """(n, k) int64 column indices of each row's k highest stored scores, best first.

    Ties go to the smaller column index; rows with fewer than k stored entries
    are padded with -1.
    """
    k = _check_k(k)
    scores = _as_csr(scores, "scores")
    ranked = _ranked(scores, k)
    if ranked.shape[1] == k:
        return ranked
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    out[:, : ranked.shape[1]] = ranked
    return out


def _validate(truth, scores):
    truth = _as_csr(truth, "truth")
    scores = _as_csr(scores, "scores")
    if truth.shape != scores.shape:
        raise ValueError(f"truth and scores shapes differ: {truth.shape} vs {scores.shape}")
    return truth, scores


def _hits(truth, scores, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hits of the ranked predictions, bool (n, min(k, longest row)), and |relevant| per row."""
    truth, scores = _validate(truth, scores)
    n, m = truth.shape
    if n * m >= 2**63:
        raise ValueError(f"shape {truth.shape} too large for int64 (row, column) keys")
    if np.any(truth.data == 0):
        # Explicit zeros in truth mean "not relevant"; drop them on a private copy.
        truth = truth.copy()
        truth.eliminate_zeros()
    nrel = np.diff(truth.indptr).astype(np.int64)

    ranked = _ranked(scores, k)
    # Canonical CSR is row-major with sorted columns, so row * m + col is a sorted
    # key array and membership is one vectorised searchsorted.
    truth_rows = np.repeat(np.arange(n, dtype=np.int64), nrel)
    truth_keys = truth_rows * m + truth.indices.astype(np.int64)
    keys = np.arange(n, dtype=np.int64)[:, None] * m + ranked
    if truth_keys.size == 0:
        return np.zeros(ranked.shape, dtype=bool), nrel
    pos = np.minimum(np.searchsorted(truth_keys, keys), truth_keys.size - 1)
    hits = (truth_keys[pos] == keys) & (ranked >= 0)
    return hits, nrel


def _mean(values: np.ndarray) -> float:
    return float(values.mean() * 100.0) if values.size else float("nan")


def _precision(hits: np.ndarray, k: int) -> float:
    return _mean(hits[:, :k].sum(axis=1) / k)


def _recall(hits: np.ndarray, nrel: np.ndarray, k: int) -> float:
    has_rel = nrel > 0
    return _mean(hits[has_rel, :k].sum(axis=1) / nrel[has_rel])


def _ndcg(hits: np.ndarray, nrel: np.ndarray, k: int) -> float:
    has_rel = nrel > 0
    if not has_rel.any():
        return float("nan")
    h = hits[has_rel, :k]
    discount = 1.0 / np.log2(np.arange(2, h.shape[1] + 2))
    rows, ranks = np.nonzero(h)
    dcg = np.bincount(rows, weights=discount[ranks], minlength=h.shape[0])
    ideal_len = np.minimum(nrel[has_rel], k)
    # Ideal DCG only needs discounts up to the largest min(k, |relevant|), which
    # may exceed the number of predictions made.
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, int(ideal_len.max()) + 2)))
    return _mean(dcg / ideal[ideal_len - 1])


def precision_at_k(truth, scores, k: int) -> float:
    """Mean over rows of |top-k ∩ relevant| / k, in percent."""
    k = _check_k(k)
    return _precision(_hits(truth, scores, k)[0], k)


def recall_at_k(truth, scores, k: int) -> float:
    """Mean of |top-k ∩ relevant| / |relevant| over rows with a relevant label, in percent."""
    k = _check_k(k)
    hits, nrel = _hits(truth, scores, k)
    return _recall(hits, nrel, k)


def ndcg_at_k(truth, scores, k: int) -> float:
    """Binary-relevance nDCG@k over rows with a relevant label, in percent.

    DCG sums 1/log2(rank + 1) over hits (rank 1-based); the ideal DCG assumes
    min(k, |relevant|) hits at the top ranks.
    """
    k = _check_k(k)
    hits, nrel = _hits(truth, scores, k)
    return _ndcg(hits, nrel, k)


def evaluate_scores(
    truth,
    scores,
    *,
    p_ks: Iterable[int] = (1, 5),
    r_ks: Iterable[int] = (10, 100),
    ndcg_ks: Iterable[int] = (10,),
) -> dict[str, float]:
    """Keys "P@k" for k in p_ks, "R@k" for k in r_ks, "nDCG@k" for k in ndcg_ks, in that order.

    Ranks once at the largest k; smaller cut-offs are prefixes of that ranking.
    """
    p_ks, r_ks, ndcg_ks = ([_check_k(k) for k in ks] for ks in (p_ks, r_ks, ndcg_ks))
    all_ks = p_ks + r_ks + ndcg_ks
    if not all_ks:
        _validate(truth, scores)
        return {}
    hits, nrel = _hits(truth, scores, max(all_ks))
    result = {f"P@{k}": _precision(hits, k) for k in p_ks}
    result.update({f"R@{k}": _recall(hits, nrel, k) for k in r_ks})
    result.update({f"nDCG@{k}": _ndcg(hits, nrel, k) for k in ndcg_ks})
    return result
