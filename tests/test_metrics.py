import math

import numpy as np
import pytest
import scipy.sparse as sp

from xrmeta import metrics
from xrmeta.metrics import (
    evaluate_scores,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    topk_indices,
)

APPROX = dict(abs=1e-3)


def _csr(rows, shape):
    """Build a CSR matrix from {row: {col: value}}."""
    r, c, v = [], [], []
    for i, entries in rows.items():
        for j, x in entries.items():
            r.append(i)
            c.append(j)
            v.append(x)
    return sp.csr_matrix((np.array(v, dtype=float), (r, c)), shape=shape)


# Shared hand-worked example, shape (3, 6).
#   row 0: scores {0: .9, 2: .5, 3: .5, 5: .1}   relevant {2, 5}
#          ranking 0, 2, 3, 5  (2 beats 3 on the tie: smaller column)
#   row 1: scores {4: 2.0}                        relevant {}   (one prediction, no relevant)
#          ranking 4
#   row 2: scores {1: .3, 0: -1.0, 5: 0.0}        relevant {0, 1, 3}
#          ranking 1, 5, 0  (stored 0.0 and -1.0 still count as predictions)
SCORES = _csr(
    {0: {0: 0.9, 2: 0.5, 3: 0.5, 5: 0.1}, 1: {4: 2.0}, 2: {1: 0.3, 0: -1.0, 5: 0.0}}, (3, 6)
)
TRUTH = _csr({0: {2: 1, 5: 1}, 2: {0: 1, 1: 1, 3: 1}}, (3, 6))


def test_topk_indices_hand_example():
    assert topk_indices(SCORES, 3).tolist() == [[0, 2, 3], [4, -1, -1], [1, 5, 0]]
    assert topk_indices(SCORES, 1).tolist() == [[0], [4], [1]]
    out = topk_indices(SCORES, 3)
    assert out.dtype == np.int64 and out.shape == (3, 3)


def test_topk_k_larger_than_columns():
    out = topk_indices(SCORES, 10)
    assert out.shape == (3, 10)
    assert out.tolist() == [
        [0, 2, 3, 5] + [-1] * 6,
        [4] + [-1] * 9,
        [1, 5, 0] + [-1] * 7,
    ]


def test_topk_ties_go_to_smaller_column_any_input_order():
    # All four scores equal -> columns ascending, regardless of insertion order.
    # Row 1: 3 and 8 tie at 0.7 above 1 and 6 tied at 0.2.
    coo = sp.coo_matrix(
        (
            [1.0, 1.0, 1.0, 1.0, 0.2, 0.7, 0.2, 0.7],
            ([0, 0, 0, 0, 1, 1, 1, 1], [7, 2, 9, 4, 6, 8, 1, 3]),
        ),
        shape=(2, 10),
    )
    assert topk_indices(coo, 4).tolist() == [[2, 4, 7, 9], [3, 8, 1, 6]]
    assert topk_indices(coo, 2).tolist() == [[2, 4], [3, 8]]


def test_topk_explicit_zero_negative_nan_and_empty_rows():
    # row 0: {0: nan, 1: -inf, 2: 1.0, 3: 0.0 (explicit)} -> 2, 3, 1, 0 (NaN ranks last)
    # row 1: nothing stored -> all padding
    s = sp.csr_matrix(
        (np.array([np.nan, -np.inf, 1.0, 0.0]), np.array([0, 1, 2, 3]), np.array([0, 4, 4])),
        shape=(2, 5),
    )
    assert s.nnz == 4  # the explicit zero is really stored
    assert topk_indices(s, 5).tolist() == [[2, 3, 1, 0, -1], [-1] * 5]


def test_topk_integer_and_unsigned_scores():
    # Unsigned data must not wrap when ranked: 200 > 5 > 0.
    s = sp.csr_matrix((np.array([5, 200, 0], dtype=np.uint8), ([0, 0, 0], [0, 1, 2])), shape=(1, 3))
    assert topk_indices(s, 3).tolist() == [[1, 0, 2]]


def test_topk_duplicates_are_summed_and_input_untouched():
    # (0, 1) stored twice: 0.3 + 0.3 = 0.6 beats (0, 0) = 0.5.
    s = sp.csr_matrix(
        (np.array([0.5, 0.3, 0.3]), np.array([0, 1, 1]), np.array([0, 3])), shape=(1, 2)
    )
    before = (s.data.copy(), s.indices.copy())
    assert topk_indices(s, 2).tolist() == [[1, 0]]
    assert np.array_equal(s.data, before[0]) and np.array_equal(s.indices, before[1])


def test_topk_no_rows_and_no_columns():
    assert topk_indices(sp.csr_matrix((0, 5)), 3).shape == (0, 3)
    assert topk_indices(sp.csr_matrix((2, 0)), 2).tolist() == [[-1, -1], [-1, -1]]


def test_precision_hand_example():
    # k=1: hits 0, 0, 1 -> (0 + 0 + 1) / 3 = 33.333%
    assert precision_at_k(TRUTH, SCORES, 1) == pytest.approx(33.3333, **APPROX)
    # k=3: hits 1 (col 2), 0, 2 (cols 1, 0) -> (1/3 + 0 + 2/3) / 3 = 33.333%
    # Row 1 (no relevant, one prediction) is counted and still divides by k=3.
    assert precision_at_k(TRUTH, SCORES, 3) == pytest.approx(33.3333, **APPROX)
    # k=10 > 6 columns: hits 2, 0, 2 -> (0.2 + 0 + 0.2) / 3 = 13.333%
    assert precision_at_k(TRUTH, SCORES, 10) == pytest.approx(13.3333, **APPROX)


def test_precision_divides_by_k_not_by_predictions():
    # One prediction, and it is right: 1/5 = 20%, not 100%.
    s = _csr({0: {3: 1.0}}, (1, 8))
    t = _csr({0: {3: 1}}, (1, 8))
    assert precision_at_k(t, s, 5) == pytest.approx(20.0, **APPROX)


def test_recall_hand_example():
    # Row 1 has no relevant item and is skipped: means are over rows 0 and 2.
    # k=1: 0/2, 1/3 -> (0 + 0.3333) / 2 = 16.667%
    assert recall_at_k(TRUTH, SCORES, 1) == pytest.approx(16.6667, **APPROX)
    # k=3: 1/2, 2/3 -> (0.5 + 0.6667) / 2 = 58.333%
    assert recall_at_k(TRUTH, SCORES, 3) == pytest.approx(58.3333, **APPROX)
    # k=10: 2/2, 2/3 -> (1 + 0.6667) / 2 = 83.333%
    assert recall_at_k(TRUTH, SCORES, 10) == pytest.approx(83.3333, **APPROX)


def test_ndcg_hand_example():
    # 1/log2(2) = 1, 1/log2(3) = 0.63093, 1/log2(4) = 0.5, 1/log2(5) = 0.43068
    # k=1: row 0 miss -> 0; row 2 hit at rank 1, IDCG 1 -> 1. Mean 0.5 -> 50%
    assert ndcg_at_k(TRUTH, SCORES, 1) == pytest.approx(50.0, **APPROX)
    # k=3: row 0 hit at rank 2: 0.63093 / (1 + 0.63093) = 0.38685
    #      row 2 hits at ranks 1, 3: 1.5 / (1 + 0.63093 + 0.5) = 1.5 / 2.13093 = 0.70392
    #      mean (0.38685 + 0.70392) / 2 = 0.54539 -> 54.539%
    assert ndcg_at_k(TRUTH, SCORES, 3) == pytest.approx(54.539, **APPROX)
    # k=10: row 0 hits at ranks 2, 4: (0.63093 + 0.43068) / 1.63093 = 0.65092
    #       row 2 unchanged 0.70392; mean 0.67742 -> 67.742%
    assert ndcg_at_k(TRUTH, SCORES, 10) == pytest.approx(67.742, **APPROX)


def test_ndcg_ideal_uses_min_k_relevant():
    # 5 relevant, k=2, both top-2 are hits -> DCG = IDCG = 1 + 0.63093 -> 100%.
    s = _csr({0: {0: 2.0, 1: 1.0}}, (1, 10))
    t = _csr({0: {c: 1 for c in range(5)}}, (1, 10))
    assert ndcg_at_k(t, s, 2) == pytest.approx(100.0, **APPROX)
    # k=6: still only 2 hits (ranks 1, 2) but IDCG covers 5 items:
    # 1.63093 / (1 + 0.63093 + 0.5 + 0.43068 + 0.38685) = 1.63093 / 2.94846 = 55.315%
    assert ndcg_at_k(t, s, 6) == pytest.approx(55.315, **APPROX)


def test_rows_without_relevant_items():
    # row 0: relevant {1}, predicted 1 -> P@1 1, R@1 1, nDCG@1 1
    # row 1: no relevant, predicted 2 -> P@1 0, skipped by R and nDCG
    s = _csr({0: {1: 1.0}, 1: {2: 1.0}}, (2, 4))
    t = _csr({0: {1: 1}}, (2, 4))
    assert precision_at_k(t, s, 1) == pytest.approx(50.0, **APPROX)  # (1 + 0) / 2
    assert recall_at_k(t, s, 1) == pytest.approx(100.0, **APPROX)
    assert ndcg_at_k(t, s, 1) == pytest.approx(100.0, **APPROX)


def test_no_relevant_anywhere_gives_nan_for_recall_and_ndcg():
    s = _csr({0: {1: 1.0}}, (2, 4))
    t = sp.csr_matrix((2, 4))
    assert precision_at_k(t, s, 1) == 0.0
    assert math.isnan(recall_at_k(t, s, 1))
    assert math.isnan(ndcg_at_k(t, s, 1))


def test_explicit_zero_in_truth_is_not_relevant():
    # Truth stores (0, 0) = 0 and (0, 1) = 1: only column 1 is relevant.
    t = sp.csr_matrix((np.array([0.0, 1.0]), np.array([0, 1]), np.array([0, 2])), shape=(1, 3))
    s = _csr({0: {0: 2.0, 1: 1.0}}, (1, 3))
    assert precision_at_k(t, s, 1) == 0.0  # top-1 is column 0, not relevant
    assert recall_at_k(t, s, 2) == pytest.approx(100.0, **APPROX)  # 1 of 1 relevant
    # hit at rank 2 only: 0.63093 / 1 = 63.093%
    assert ndcg_at_k(t, s, 2) == pytest.approx(63.093, **APPROX)


def test_any_sparse_format_accepted():
    expected = precision_at_k(TRUTH, SCORES, 3)
    for fmt in ("csc", "coo", "lil", "dok"):
        assert precision_at_k(TRUTH.asformat(fmt), SCORES.asformat(fmt), 3) == expected
    assert precision_at_k(sp.csr_array(TRUTH), sp.csr_array(SCORES), 3) == expected


def test_evaluate_scores_default_keys():
    out = evaluate_scores(TRUTH, SCORES)
    assert list(out) == ["P@1", "P@5", "R@10", "R@100", "nDCG@10"]
    # P@5: hits 2, 0, 2 -> (0.4 + 0 + 0.4) / 3 = 26.667%
    assert out["P@1"] == pytest.approx(33.3333, **APPROX)
    assert out["P@5"] == pytest.approx(26.6667, **APPROX)
    assert out["R@10"] == pytest.approx(83.3333, **APPROX)
    assert out["R@100"] == pytest.approx(83.3333, **APPROX)
    assert out["nDCG@10"] == pytest.approx(67.742, **APPROX)


def test_evaluate_scores_custom_keys_match_single_metrics():
    out = evaluate_scores(TRUTH, SCORES, p_ks=(3,), r_ks=(1, 3), ndcg_ks=(1, 3))
    assert list(out) == ["P@3", "R@1", "R@3", "nDCG@1", "nDCG@3"]
    assert out["P@3"] == pytest.approx(33.3333, **APPROX)
    assert out["R@1"] == pytest.approx(16.6667, **APPROX)
    assert out["R@3"] == pytest.approx(58.3333, **APPROX)
    assert out["nDCG@1"] == pytest.approx(50.0, **APPROX)
    assert out["nDCG@3"] == pytest.approx(54.539, **APPROX)
    assert evaluate_scores(TRUTH, SCORES, p_ks=(), r_ks=(), ndcg_ks=()) == {}


def test_shape_mismatch_raises_with_both_shapes():
    other = sp.csr_matrix((3, 7))
    for fn in (precision_at_k, recall_at_k, ndcg_at_k):
        with pytest.raises(ValueError, match=r"\(3, 6\).*\(3, 7\)"):
            fn(TRUTH, other, 1)
    with pytest.raises(ValueError, match=r"\(3, 6\).*\(3, 7\)"):
        evaluate_scores(TRUTH, other)
    with pytest.raises(ValueError, match=r"\(3, 6\).*\(3, 7\)"):
        evaluate_scores(TRUTH, other, p_ks=(), r_ks=(), ndcg_ks=())


@pytest.mark.parametrize("k", [0, -1])
def test_bad_k_raises(k):
    for fn in (precision_at_k, recall_at_k, ndcg_at_k):
        with pytest.raises(ValueError, match="k must be >= 1"):
            fn(TRUTH, SCORES, k)
    with pytest.raises(ValueError, match="k must be >= 1"):
        topk_indices(SCORES, k)
    with pytest.raises(ValueError, match="k must be >= 1"):
        evaluate_scores(TRUTH, SCORES, p_ks=(1, k))


def test_non_sparse_input_rejected():
    with pytest.raises(TypeError):
        topk_indices(SCORES.toarray(), 1)
    with pytest.raises(TypeError):
        precision_at_k(TRUTH.toarray(), SCORES, 1)


# ---------------------------------------------------------------- random cross-check


def _reference(truth, scores, k):
    """Slow pure-Python metrics, straight from the definitions."""
    pred, rel = {}, {}
    s = scores.tocoo()
    for i, j, v in zip(s.row.tolist(), s.col.tolist(), s.data.tolist()):
        pred.setdefault(i, {})
        pred[i][j] = pred[i].get(j, 0.0) + v  # duplicates sum
    t = truth.tocoo()
    tsum = {}
    for i, j, v in zip(t.row.tolist(), t.col.tolist(), t.data.tolist()):
        tsum[(i, j)] = tsum.get((i, j), 0.0) + v
    for (i, j), v in tsum.items():
        if v != 0:
            rel.setdefault(i, set()).add(j)

    top, p, r, nd = [], [], [], []
    for i in range(scores.shape[0]):
        ranked = sorted(pred.get(i, {}).items(), key=lambda cv: (-cv[1], cv[0]))
        cols = [c for c, _ in ranked[:k]]
        top.append(cols + [-1] * (k - len(cols)))
        relevant = rel.get(i, set())
        hit_ranks = [rank for rank, c in enumerate(cols, start=1) if c in relevant]
        p.append(len(hit_ranks) / k)
        if relevant:
            r.append(len(hit_ranks) / len(relevant))
            dcg = sum(1 / math.log2(rank + 1) for rank in hit_ranks)
            idcg = sum(1 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant)) + 1))
            nd.append(dcg / idcg)

    def mean(xs):
        return 100 * sum(xs) / len(xs) if xs else float("nan")

    return top, mean(p), mean(r), mean(nd)


def _random_pair(rng, n, m):
    # Row lengths vary from empty to dense so several length buckets are used;
    # scores come from a tiny set (incl. 0 and negatives) to force many ties.
    rows, cols = [], []
    for i in range(n):
        nnz = int(rng.integers(0, m + 1)) if rng.random() < 0.5 else int(rng.integers(0, 4))
        c = rng.choice(m, size=nnz, replace=False)
        rows += [i] * nnz
        cols += c.tolist()
    vals = rng.choice([-1.0, 0.0, 0.25, 0.5, 1.0], size=len(rows))
    scores = sp.csr_matrix((vals, (rows, cols)), shape=(n, m))
    truth = sp.random(n, m, density=0.1, format="csr", random_state=rng)
    truth.data[:] = 1.0
    truth.data[rng.random(truth.nnz) < 0.1] = 0.0  # explicit zeros: not relevant
    return truth, scores


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(30, 12), (20, 300)])
def test_random_against_reference(seed, shape, monkeypatch):
    rng = np.random.default_rng(seed)
    truth, scores = _random_pair(rng, *shape)
    # Small blocks exercise the chunked ranking path as well.
    monkeypatch.setattr(metrics, "_BLOCK_CELLS", 64 if seed % 2 else 1 << 20)
    for k in (1, 3, 10, shape[1] + 5):
        top, p, r, nd = _reference(truth, scores, k)
        assert topk_indices(scores, k).tolist() == top
        assert precision_at_k(truth, scores, k) == pytest.approx(p, rel=1e-9, nan_ok=True)
        assert recall_at_k(truth, scores, k) == pytest.approx(r, rel=1e-9, nan_ok=True)
        assert ndcg_at_k(truth, scores, k) == pytest.approx(nd, rel=1e-9, nan_ok=True)
    out = evaluate_scores(truth, scores, p_ks=(1, 3), r_ks=(10,), ndcg_ks=(3, 10))
    assert out["P@3"] == pytest.approx(_reference(truth, scores, 3)[1], rel=1e-9)
    assert out["nDCG@10"] == pytest.approx(_reference(truth, scores, 10)[3], rel=1e-9)
