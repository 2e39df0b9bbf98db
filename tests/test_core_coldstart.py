"""The compiled cold-start kernels (`xrmeta._core`: cpp/src/coldstart.cpp, meta.cpp) against their numba oracles
(`xrmeta.kernels.coldstart`, `kernels.meta`) on seeded random inputs and on the test model's own rows and
trained generator: the same results, tie rules and paddings, with 1 and 2 threads; and the checks of the
bindings."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as smat
from sklearn.preprocessing import normalize

from xrmeta import _core, threads
from xrmeta.coldstart import learned as L
from xrmeta.layout import rows
from xrmeta.kernels import coldstart as oracle
from xrmeta.kernels import meta as meta_oracle

THREADS = [1, 2]


def random_rows(rng, n: int, n_features: int, density: float, quantum: float = 0.0,
                signed: bool = False) -> smat.csr_matrix:
    """Random CSR rows, sorted indices; values rounded up to multiples of quantum (many ties, exact sums, never
    0), signed on request."""
    X = smat.random(n, n_features, density=density, format="csr", random_state=rng, dtype=np.float32)
    if quantum:
        X.data = (np.ceil(X.data / quantum) * quantum).astype(np.float32)
    if signed:
        X.data *= rng.choice(np.array([-1, 1], np.float32), size=X.nnz)
    X.sort_indices()
    return X


def emptied(X: smat.csr_matrix, row: int) -> smat.csr_matrix:
    """X with that row emptied."""
    X.data[X.indptr[row] : X.indptr[row + 1]] = 0
    X.eliminate_zeros()
    return X


def assert_same(got, want):
    """Equal tuples of arrays, dtypes and shapes included."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


# ---------------------------------------------------------------- neighbour search
@pytest.mark.parametrize("keep", [0, 1, 3, 1000])
def test_inverted_index(keep):
    Z = random_rows(np.random.default_rng(keep), 300, 50, 0.3, quantum=0.25)
    args = (*rows(Z), Z.shape[1], keep)
    assert_same(_core.inverted_index(*args), oracle.inverted_index(*args))


@pytest.fixture(scope="module")
def knn_case():
    """Items with duplicated rows (equal similarities: ties to the smaller id), queries with an empty row."""
    rng = np.random.default_rng(5)
    Z = random_rows(rng, 250, 80, 0.06, quantum=0.125)
    Z = normalize(smat.vstack([Z, Z[:40]]).tocsr()).astype(np.float32)
    Z.sort_indices()
    Q = emptied(random_rows(rng, 37, 80, 0.08, quantum=0.125), 3)
    return Z, normalize(Q).astype(np.float32)


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("k", [1, 7, 400])  # 400 > items touched: padded with (-1, 0)
@pytest.mark.parametrize("max_postings,n_candidates", [(0, 0), (6, 20), (6, 1)])
def test_knn_topk(knn_case, n_threads, k, max_postings, n_candidates):
    Z, Q = knn_case
    z = rows(Z)
    inv = _core.inverted_index(*z, Z.shape[1], max_postings)
    args = (*rows(Q), *inv, *z, Z.shape[0], Z.shape[1], k, n_candidates, n_threads)
    got = _core.knn_topk(*args)
    assert_same(got, threads.run(oracle.knn_topk, n_threads, *args))
    assert (got[0][3] == -1).all()  # the empty query


# ---------------------------------------------------------------- cluster vote
@pytest.mark.parametrize("m", [1, 3, 6])
def test_cluster_vote(m):
    rng = np.random.default_rng(m)
    n, k, n_items = 200, 6, 40
    nbrs = rng.integers(-1, n_items, size=(n, k))
    nbrs[:5] = -1  # rows with no neighbour: fallback
    sims = (rng.integers(-2, 5, size=(n, k)) * 0.25).astype(np.float32)  # ties and negative votes
    item_cluster = rng.integers(0, 5, size=n_items).astype(np.int32)
    fallback = rng.integers(0, 5, size=n)
    args = (nbrs, sims, item_cluster, fallback, m)
    got = _core.cluster_vote(*args)
    assert_same([got], [oracle.cluster_vote(*args)])
    assert (got[:5, 0] == fallback[:5]).all() and (got[:5, 1:] == -1).all()


# ---------------------------------------------------------------- sparse mixing
@pytest.mark.parametrize("threshold", [0.0, 0.3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mix_sparse(threshold, seed):
    rng = np.random.default_rng(seed)
    n, m, n_features = 60, 4, 40
    W = random_rows(rng, 30, n_features, 0.25, quantum=0.25, signed=True)  # exact sums: cancellations are exact
    S = emptied(random_rows(rng, n, n_features, 0.15, quantum=0.25, signed=True), 7)  # an empty own row
    src = rng.integers(-1, 30, size=(n, m))
    coef = rng.choice(np.array([-1, 0, 0.5, 1, 2], np.float32), size=(n, m))
    src[:10, 1], coef[:10, :2] = src[:10, 0], [1, -1]  # a source minus itself: its sums cancel to exactly 0
    src[10:12] = -1  # no source
    self_coef = rng.choice(np.array([0, 1, -0.5], np.float32), size=n)
    max_nnz = rng.integers(0, 12, size=n)
    max_nnz[:3] = 0
    args = (src, coef, *rows(W), *rows(S), self_coef, n_features, np.float32(threshold), max_nnz)
    ptr, idx, val = got = _core.mix_sparse(*args)
    assert_same(got, oracle.mix_sparse(*args))
    assert (np.diff(ptr) <= max_nnz).all() and (val != 0).all() and (np.abs(val) >= threshold).all()


# ---------------------------------------------------------------- learned generator: tokens and forward pass
@pytest.mark.parametrize("n_threads", THREADS)
def test_item_tokens_random(n_threads):
    rng = np.random.default_rng(11)
    S = random_rows(rng, 50, 30, 0.3) * 3  # not normalized
    Z = random_rows(rng, 20, 30, 0.3)
    block = (np.arange(30) // 10).astype(np.int8)
    nbrs = rng.integers(-1, 20, size=(50, 4))
    nbrs[2] = -1
    sims = np.sort(rng.random((50, 4)), axis=1)[:, ::-1].astype(np.float32)
    stats = rng.normal(size=(20, 4)).astype(np.float32)
    args = (*rows(S), nbrs, sims, *rows(Z), stats, block, 3, L.N_FEATURES, n_threads)
    assert_same(_core.item_tokens(*args), threads.run(oracle.item_tokens, n_threads, *args))


@pytest.fixture(scope="module")
def generator_inputs(trained, novel):
    """The trained model's generator and its novel items' rows and neighbours, as `add_items` finds them, with
    some neighbours dropped (every novel item has k)."""
    gen = trained.generator
    assert isinstance(gen, L.LearnedGenerator)
    S = trained.featurizer.transform(novel[0], threads=1)
    nbrs, sims = trained.selector.search(S, gen.k, threads=1)
    nbrs[::7, 1:], nbrs[::11] = -1, -1
    return gen, S, nbrs, np.where(nbrs >= 0, sims, 0).astype(np.float32)


@pytest.mark.parametrize("n_threads", THREADS)
def test_item_tokens_of_the_model(generator_inputs, n_threads):
    gen, S, nbrs, sims = generator_inputs
    args = (*rows(S), nbrs, sims, *rows(gen.Z), gen.stats, gen.feature_block, gen.n_blocks,
            L.N_FEATURES, n_threads)
    assert_same(_core.item_tokens(*args), threads.run(oracle.item_tokens, n_threads, *args))


def test_meta_forward_of_the_trained_generator(generator_inputs):
    """Numba's results to float rounding; the same bits on every run and for any thread count (log replay)."""
    gen, S, nbrs, sims = generator_inputs
    tokens, valid = L.token_features(S, nbrs, sims, gen.Z, gen.stats, gen.feature_block, gen.n_blocks, 1)
    assert (~valid[:, 1:]).any()  # some items lack a neighbour
    params = [gen.params[p] for p in L.PARAM_ORDER]
    one = _core.meta_forward(tokens, valid, *params, gen.n_heads, 1)
    want = threads.run(meta_oracle.meta_forward, 1, tokens, valid, *params, gen.n_heads, 1)
    for got, ref in zip(one, want):
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    assert_same(_core.meta_forward(tokens, valid, *params, gen.n_heads, 1), one)
    assert_same(_core.meta_forward(tokens, valid, *params, gen.n_heads, 2), one)
    assert_same(gen.forward(tokens, valid, threads=2), one)  # the serving path


# ---------------------------------------------------------------- the bindings' checks
def test_bad_dtype_raises():
    nbrs = np.zeros((2, 3), np.int64)
    sims = np.zeros((2, 3), np.float32)
    cluster, fallback = np.zeros(1, np.int32), np.zeros(2, np.int64)
    with pytest.raises(TypeError, match="nbr_sims: expected dtype float32"):
        _core.cluster_vote(nbrs, sims.astype(np.float64), cluster, fallback, 1)
    with pytest.raises(TypeError, match="item_cluster: expected dtype int32"):
        _core.cluster_vote(nbrs, sims, cluster.astype(np.int64), fallback, 1)
    Z = random_rows(np.random.default_rng(0), 5, 8, 0.5)
    ptr, idx, val = rows(Z)
    with pytest.raises(TypeError, match="z idx: expected dtype int32"):
        _core.inverted_index(ptr, idx.astype(np.int64), val, 8, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.cluster_vote(np.zeros((3, 2), np.int64).T, sims, cluster, fallback, 1)


def test_bad_shapes_and_ids_raise():
    nbrs = np.zeros((2, 3), np.int64)
    sims = np.zeros((2, 3), np.float32)
    cluster = np.zeros(1, np.int32)
    with pytest.raises(ValueError, match="fallback"):
        _core.cluster_vote(nbrs, sims, cluster, np.zeros(3, np.int64), 1)
    with pytest.raises(ValueError, match="nbr_sims"):
        _core.cluster_vote(nbrs, sims[:, :2].copy(), cluster, np.zeros(2, np.int64), 1)
    with pytest.raises(ValueError, match="nbr_items: id 1 out of range"):
        _core.cluster_vote(nbrs + 1, sims, cluster, np.zeros(2, np.int64), 1)
    Z = random_rows(np.random.default_rng(0), 5, 8, 0.5)
    with pytest.raises(IndexError, match="feature"):  # a feature past n_features must not write past the scratch
        _core.inverted_index(*rows(Z), 4, 0)
    tokens, valid = np.zeros((2, 3, L.N_FEATURES), np.float32), np.ones((2, 3), bool)
    rng = np.random.default_rng(0)
    params = [rng.normal(size=s).astype(np.float32) for s in _param_shapes(F=L.N_FEATURES, T=3, d=4, L=1, ff=6, S=2)]
    _core.meta_forward(tokens, valid, *params, 2, 1)  # the right shapes run
    params[4] = params[4][:2]  # pos: one row short of the tokens
    with pytest.raises(ValueError, match="pos: expected shape"):
        _core.meta_forward(tokens, valid, *params, 2, 1)
    with pytest.raises(ValueError, match="27 arrays"):
        _core.meta_forward(tokens, valid, *params[:-1], 2, 1)


def _param_shapes(F, T, d, L, ff, S):
    """The shapes of `learned.PARAM_ORDER`'s arrays."""
    return [(2, F), (2, F), (2, F, d), (2, d), (T, d), (L, d), (L, d), (L, d, d), (L, d), (L, d, d), (L, d),
            (L, d, d), (L, d), (L, d, d), (L, d), (L, d), (L, d), (L, d, ff), (L, ff), (L, ff, d), (L, d), (d,), (d,),
            (d, 1), (1,), (d, S), (S,)]


# ---------------------------------------------------------------- serving never calls the numba oracles
SERVE = '''
import json, sys
from xrmeta.kernels import coldstart, meta
from xrmeta.model import XRMetaModel
folder, titles, ids = json.loads(sys.argv[1])
model = XRMetaModel.load(folder)
model.add_items(titles[:30], ids[:30], threads=1)
model.add_items(titles[30:], ids[30:], threads=2)
model.add_feedback(titles[:20], ids[:20])
oracles = [coldstart.inverted_index, coldstart.cluster_vote, coldstart.mix_sparse, *coldstart.knn_topk,
           *coldstart.item_tokens, *meta.meta_forward]
print(sum(len(kernel.signatures) for kernel in oracles))
'''


def test_serving_never_compiles_a_numba_oracle(saved_dir, novel, tmp_path):
    """Load, insert (1 and 2 threads) and take feedback in a fresh process: no cold-start numba kernel runs."""
    import json
    import shutil
    import subprocess
    import sys

    shutil.copytree(saved_dir, tmp_path / "m")
    args = json.dumps([str(tmp_path / "m"), novel[0][:60], novel[1][:60]])
    run = subprocess.run([sys.executable, "-c", SERVE, args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "0"
