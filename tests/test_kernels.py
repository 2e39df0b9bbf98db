"""The kernels serving runs (numba search, compiled `_core` cold start) against brute-force numpy/scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as smat
from sklearn.preprocessing import normalize

from xrmeta import _core
from xrmeta.catalog import Catalog
from xrmeta.coldstart import Selector, assign_vote, make_generator
from xrmeta.coldstart.generate import synthesize
from xrmeta.kernels.search import _raw_floor, transform
from xrmeta.layout import POST_PROCESSORS

from .conftest import assert_topk_match, best_path, clone, csr, dense_topk, search_scores
from .reference import leaf_topk

# ---------------------------------------------------------------- leaf scoring (reference.leaf_topk)
@pytest.fixture(scope="module")
def mutated(with_novel):
    """Trained + inserted items, with some of each removed."""
    model = clone(with_novel)
    rng = np.random.default_rng(1)
    c = model.catalog
    base = rng.choice(c.n_base, size=150, replace=False)
    ins = rng.choice(np.arange(c.n_base, c.n_slots), size=40, replace=False)
    model.remove_items([c.ids[s] for s in np.concatenate([base, ins])])
    assert len(c) == c.n_slots - 190
    return model


@pytest.fixture(scope="module")
def queries_and_beams(mutated, test_queries, novel):
    """Test queries and novel titles, each with 1-5 random beam clusters and random path scores."""
    X = mutated.featurizer.transform(test_queries[:60] + novel[0][:40])
    rng = np.random.default_rng(2)
    n, n_clusters = X.shape[0], mutated.catalog.n_clusters
    sizes = rng.integers(1, 6, size=n)
    clusters = np.concatenate([rng.choice(n_clusters, size=b, replace=False) for b in sizes]).astype(np.int32)
    beams = smat.csr_matrix((rng.uniform(0.05, 1.0, sizes.sum()).astype(np.float32), clusters,
                             np.concatenate([[0], np.cumsum(sizes)])), shape=(n, n_clusters))
    beams.sort_indices()
    return X, beams


def leaf_reference(catalog: Catalog, X, beams, subset: str) -> np.ndarray:
    """Dense (queries x slots) scores: every alive item of each beam cluster, scored from its item-major
    weights; -inf for items not in a beam cluster, removed, or outside the subset."""
    inserted = np.arange(catalog.n_slots) >= catalog.n_base
    in_subset = {"all": np.ones_like(inserted), "observed": ~inserted, "inserted": inserted}[subset]
    candidate = in_subset & catalog.slot_alive.view
    return np.where(candidate & (best_path(catalog, beams) > 0), search_scores(catalog, X, beams), -np.inf)


@pytest.mark.parametrize("post,path_exponent", [("l3-hinge", 1.0), ("sigmoid", 1.0), ("sigmoid", 0.3)])
@pytest.mark.parametrize("subset", ["all", "observed", "inserted"])
@pytest.mark.parametrize("k", [10, 400])  # 400 > items under 5 leaf clusters of <= 50 items + inserted: padding
def test_leaf_topk_matches_brute_force(mutated, queries_and_beams, post, path_exponent, subset, k):
    c = mutated.catalog
    assert c.item_clusters(np.arange(c.n_base, c.n_slots)).shape[1] > 1  # items inserted into several clusters
    catalog = Catalog(c.arrays(), c.ids, c.n_features, post, path_exponent)
    X, beams = queries_and_beams
    slots, scores = leaf_topk(catalog, X, beams, k, subset)
    R = leaf_reference(catalog, X, beams, subset)
    assert_topk_match(slots, scores, *dense_topk(R, k), dense=R)
    assert np.isfinite(R).sum() > 0
    if k == 400:
        assert (slots == -1).any(axis=1).all(), "k above the candidate count must pad with -1"
        assert (scores[slots == -1] == 0).all()


def test_leaf_topk_never_returns_removed_or_out_of_subset(mutated, queries_and_beams):
    c = mutated.catalog
    X, beams = queries_and_beams
    dead = set(np.flatnonzero(~c.slot_alive.view).tolist())
    for subset, allowed in (("observed", lambda s: s < c.n_base), ("inserted", lambda s: s >= c.n_base)):
        slots, _ = leaf_topk(c, X, beams, 400, subset)
        got = slots[slots >= 0]
        assert allowed(got).all()
        assert not dead & set(got.tolist())


# ---------------------------------------------------------------- knn_topk (Selector.search)
def knn_reference(selector: Selector, Q) -> np.ndarray:
    """Dense cosine of each query with each item; -inf where they share no feature."""
    Qn = normalize(smat.csr_matrix(Q, dtype=np.float64))
    Z = selector.Z.astype(np.float64)
    shares = (abs(Qn).sign() @ abs(Z).sign().T).toarray() > 0
    return np.where(shares, (Qn @ Z.T).toarray(), -np.inf)


@pytest.fixture(scope="module")
def knn_queries(trained, novel, test_queries):
    return trained.featurizer.transform(novel[0][:50] + test_queries[:30])


@pytest.mark.parametrize("k", [1, 5, 2500])  # 2500 > 1800 observed items: padding
def test_knn_topk_exact_matches_brute_force(trained, knn_queries, k):
    exact = Selector(trained.selector.Z)
    items, sims = exact.search(knn_queries, k)
    R = knn_reference(exact, knn_queries)
    assert_topk_match(items, sims, *dense_topk(R, k), dense=R)


def test_knn_topk_pruned_with_full_postings_is_exact(trained, knn_queries):
    longest = int(np.diff(trained.selector.Z.tocsc().indptr).max())
    pruned = Selector(trained.selector.Z, max_postings=longest, n_candidates=5)
    R = knn_reference(pruned, knn_queries)
    assert_topk_match(*pruned.search(knn_queries, 5), *dense_topk(R, 5), dense=R)


def test_knn_topk_pruned_returns_exact_similarities(trained, knn_queries):
    """Truncated posting lists may miss neighbours, but every returned similarity is the exact cosine,
    best first, and no item is returned twice."""
    pruned = Selector(trained.selector.Z, max_postings=4, n_candidates=8)
    items, sims = pruned.search(knn_queries, 5)
    R = knn_reference(pruned, knn_queries)
    found = items >= 0
    assert found[:, 0].all()
    np.testing.assert_allclose(np.take_along_axis(R, np.maximum(items, 0), 1)[found], sims[found], rtol=1e-5)
    assert (np.diff(np.where(found, sims, -np.inf), axis=1) <= 0).all()
    assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in items)


def test_knn_topk_rejects_wrong_dimension(trained):
    with pytest.raises(ValueError, match="query dimension"):
        trained.selector.search(smat.csr_matrix((1, trained.selector.Z.shape[1] + 1), dtype=np.float32), 3)


def test_knn_topk_signed_features_cancelling_to_zero():
    # item 0's partial sum goes +0.5, back to exactly 0, then +0.5 again
    sel = Selector(csr([[0.5, 0.5, 0.5, 0.5], [1, 0, 0, 0]], 4))
    Q = csr([[1, -1, 1, 0]], 4)
    items, sims = sel.search(Q, 3)
    R = knn_reference(sel, Q)
    assert_topk_match(items, sims, *dense_topk(R, 3), dense=R)


# ---------------------------------------------------------------- mix_sparse (generate.synthesize)
@pytest.mark.parametrize("generator", ["mean", "weighted", "self", "mean_self", "per_block"])
@pytest.mark.parametrize("threshold,max_nnz", [(0.0, 100_000), (0.05, 100_000), (0.05, 8), (0.0, 3)])
def test_mix_sparse_matches_dense(trained, novel, generator, threshold, max_nnz):
    S = trained.featurizer.transform(novel[0][:50])
    nbrs, sims = trained.selector.search(S, 4)
    nbrs[::7, 2:] = -1  # some rows with fewer neighbours
    plan = make_generator("mean_self" if generator == "per_block" else generator, trained.calibration).plan(
        S, nbrs, sims)
    block = np.searchsorted(np.cumsum([0] + trained.featurizer.block_sizes), np.arange(S.shape[1]), side="right") - 1
    if generator == "per_block":  # one coefficient per n-gram block (the learned generator's plans)
        plan.self_coef = np.outer(plan.self_coef, [0.5, 2.0, 1.0]).astype(np.float32)
        self_scale = smat.csr_matrix(S.multiply(plan.self_coef[:, block]), dtype=np.float64)
    else:
        self_scale = smat.diags(plan.self_coef.astype(np.float64)) @ S
    c = trained.catalog
    W, biases = synthesize(plan, nbrs, c.slot_bias.view, c.w_ptr.view, c.w_idx.view, c.w_val.view, S,
                           threshold, max_nnz, trained.featurizer.feature_block)

    n = S.shape[0]
    valid = nbrs >= 0
    M = smat.csr_matrix((plan.nbr_coef[valid].astype(np.float64), (np.nonzero(valid)[0], nbrs[valid])),
                        shape=(n, c.n_slots))
    full = (M @ c.weights(np.arange(c.n_slots)) + self_scale).toarray()
    keep = (np.abs(full) >= threshold) & (full != 0)
    mags = np.where(keep, np.abs(full), -np.inf)

    assert W.shape == S.shape and W.has_sorted_indices
    assert (np.diff(W.indptr) <= max_nnz).all()
    got_cols = np.full((n, max(np.diff(W.indptr).max(), 1)), -1)
    got_mags = np.zeros(got_cols.shape)
    for i in range(n):
        row = W[i]
        assert (np.diff(row.indices) > 0).all()
        np.testing.assert_allclose(row.data, full[i, row.indices], rtol=1e-5, atol=1e-6)
        order = np.argsort(-np.abs(row.data), kind="stable")
        got_cols[i, : row.nnz], got_mags[i, : row.nnz] = row.indices[order], np.abs(row.data[order])
    k = min(max_nnz, got_cols.shape[1])
    assert (np.isfinite(mags).sum(axis=1).clip(max=max_nnz) == np.diff(W.indptr)).all()
    assert_topk_match(got_cols[:, :k], got_mags[:, :k], *dense_topk(mags, k), dense=mags)

    ref_bias = (plan.nbr_coef * np.where(valid, c.slot_bias.view[np.maximum(nbrs, 0)], 0)).sum(axis=1) + plan.bias
    np.testing.assert_allclose(biases, ref_bias, rtol=1e-5, atol=1e-6)


def test_mix_sparse_drops_sums_that_cancel():
    # W rows: item 0 = {0: 0.5, 2: 0.25}, item 1 = {0: 0.5}
    # out row 0 = W0 - W1: feature 0 cancels to exactly 0 and is not stored; out row 1 = 2 * its own {3: 0.75}
    ptr, idx, val = _core.mix_sparse(
        np.array([[0, 1], [-1, -1]]), np.array([[1, -1], [0, 0]], dtype=np.float32),
        np.array([0, 2, 3]), np.array([0, 2, 0], dtype=np.int32), np.array([0.5, 0.25, 0.5], dtype=np.float32),
        np.array([0, 0, 1]), np.array([3], dtype=np.int32), np.array([0.75], dtype=np.float32),
        np.array([0, 2], dtype=np.float32), 4, np.float32(0.0), np.array([10, 10]),
    )
    assert ptr.tolist() == [0, 1, 2]
    assert idx.tolist() == [2, 3]
    np.testing.assert_allclose(val, [0.25, 1.5])


# ---------------------------------------------------------------- cluster_vote (assign_vote)
@pytest.mark.parametrize("nbrs,sims,expected", [
    ([[0, 1, 2]], [[0.9, 0.5, 0.5]], [1]),  # two weaker neighbours outvote the nearest
    ([[0, 1, 2]], [[0.6, 0.35, 0.2]], [0]),  # 0.6 > 0.55
    ([[0, 1]], [[0.5, 0.5]], [0]),  # tie: the nearer neighbour's cluster
    ([[1, 0]], [[0.5, 0.5]], [1]),
    ([[3, 1, 2]], [[0.5, 0.25, 0.25]], [2]),  # exact tie of votes 0.5 (cluster 2) and 0.25 + 0.25 (cluster 1)
    ([[1, 2, 3]], [[0.25, 0.25, 0.5]], [1]),  # ... goes to the cluster of the nearer neighbour
    ([[-1, 1, -1]], [[0.0, 0.2, 0.0]], [1]),  # -1 neighbours are ignored
    ([[-1, -1, -1]], [[0.0, 0.0, 0.0]], [7]),  # no neighbour: fallback
    ([[0, 1]], [[-0.2, -0.1]], [0]),  # negative similarities vote 0: first neighbour wins
    ([[0, 1, 2], [-1, -1, -1]], [[0.2, 0.3, 0.3], [0, 0, 0]], [1, 8]),
])
def test_cluster_vote(nbrs, sims, expected):
    item_cluster = np.array([0, 1, 1, 2])
    fallback = np.array([7, 8])[: len(nbrs)]
    got = assign_vote(np.array(nbrs, dtype=np.int64), np.array(sims, dtype=np.float32), item_cluster, fallback)
    assert got[:, 0].tolist() == expected


def test_cluster_vote_ranks_distinct_clusters():
    item_cluster = np.array([0, 1, 1, 2])
    nbrs = np.array([[0, 1, 2, 3], [1, 2, -1, -1]], dtype=np.int64)
    sims = np.array([[0.9, 0.5, 0.5, 0.1], [0.4, 0.3, 0, 0]], dtype=np.float32)
    got = assign_vote(nbrs, sims, item_cluster, np.array([7, 8]), m=3)
    assert got.tolist() == [[1, 0, 2], [1, -1, -1]]  # votes 1.0 (cluster 1), 0.9, 0.1; one cluster only


# ---------------------------------------------------------------- _raw_floor (skipping items that cannot enter)
@pytest.mark.parametrize("post", ["l1-hinge", "l3-hinge", "sigmoid"])
def test_raw_floor_never_skips_an_item_that_could_enter(post):
    """Below the floor, transform(v) * parent rounds to a float32 strictly below the heap's worst score, so a
    skipped item could not have entered (not even on a tie); just above it, items do reach that score."""
    code = POST_PROCESSORS[post]
    rng = np.random.default_rng(code)
    heap = np.zeros(1, dtype=np.float32)
    tight = 0
    for _ in range(2000):
        parent = np.float32(rng.choice([1.0, rng.uniform(1e-6, 1.0)]))
        heap[0] = np.float32(parent * rng.uniform(1e-7, 1.0))
        floor = _raw_floor(heap, 1, 1, parent, code)
        assert np.isfinite(floor)
        for v in floor - np.array([1e-9, 1e-6, 1e-3, 0.1, 1.0, 10.0]):
            assert np.float32(transform(np.float32(v), code) * parent) < heap[0]
        tight += np.float32(transform(np.float32(floor + 1e-3), code) * parent) >= heap[0] * 0.999
    assert tight > 1500  # the floor is not so low that it skips nothing
    heap[0] = 0.5
    assert _raw_floor(heap, 0, 1, 1.0, code) == -np.inf  # heap not full: nothing is skipped
    assert _raw_floor(heap, 1, 1, 0.4, code) == np.inf  # every score <= parent < the worst kept


@pytest.mark.parametrize("keep", [0, 1, 3, 1000])
def test_inverted_index_keeps_each_features_largest_rows(keep):
    """The selector's feature -> rows index equals scipy's transpose, truncated per feature to its `keep` largest
    values with ties to the smaller row, rows in increasing order."""
    Z = smat.random(300, 50, density=0.3, format="csr", dtype=np.float32, random_state=keep)
    Z.data = np.round(Z.data * 4) / 4  # many ties
    Z.sort_indices()
    ptr, rows, vals = _core.inverted_index(Z.indptr.astype(np.int64), Z.indices, Z.data, Z.shape[1], keep)
    inv = Z.tocsc()
    inv.sort_indices()
    for f in range(Z.shape[1]):
        r, v = inv.indices[inv.indptr[f] : inv.indptr[f + 1]], inv.data[inv.indptr[f] : inv.indptr[f + 1]]
        if keep:
            chosen = np.sort(np.lexsort((r, -v))[:keep])
            r, v = r[chosen], v[chosen]
        np.testing.assert_array_equal(rows[ptr[f] : ptr[f + 1]], r)
        np.testing.assert_array_equal(vals[ptr[f] : ptr[f + 1]], v)
