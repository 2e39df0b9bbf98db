"""The C++ search kernels (`xrmeta._core`) against their numba oracle (`xrmeta.kernels.search`): the same top-k
(slots equal wherever scores are not tied, scores to float rounding) on trained, grown, mutated and split
catalogues, every subset, post-processor, path exponent, beam, k, heap, probe and thread count; plus the tie
rule, the argument checks and the GIL release."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
import scipy.sparse as smat

from xrmeta import _core, threads
from xrmeta.kernels import search as oracle
from xrmeta.layout import POST_PROCESSORS, rows

from .conftest import assert_topk_match, clone

RTOL, ATOL = 1e-5, 1e-7


# ---------------------------------------------------------------- catalogues and queries
@pytest.fixture(scope="module")
def mutated(with_novel):
    """Trained + inserted items (each in several clusters), some of each removed."""
    model = clone(with_novel)
    c, rng = model.catalog, np.random.default_rng(11)
    base = rng.choice(c.n_base, size=150, replace=False)
    ins = rng.choice(np.arange(c.n_base, c.n_slots), size=40, replace=False)
    model.remove_items([c.ids[s] for s in np.concatenate([base, ins])])
    return model


@pytest.fixture(scope="module")
def split_parts(trained, novel):
    """The novel items inserted in batches with tiny parts: most clusters split, some several times."""
    model = clone(trained, split_size=4, split_probe=1)
    titles, ids = novel
    for b in np.array_split(np.arange(len(ids)), 3):
        model.add_items([titles[i] for i in b], [ids[i] for i in b], threads=1)
    assert len(model.catalog.arrays()["part_cluster"]) > model.catalog.n_clusters
    return model


@pytest.fixture(scope="module")
def models(trained, with_novel, mutated, split_parts, pecos_trained):
    return {"trained": trained, "with_novel": with_novel, "mutated": mutated, "split": split_parts,
            "pecos": pecos_trained}


@pytest.fixture(scope="module")
def texts(test_queries, novel):
    """Test queries and novel titles (they reach inserted items)."""
    return test_queries[:80] + novel[0][:30]


def featurized(model, texts) -> smat.csr_matrix:
    """texts as model's query rows, indices sorted, with empty rows first and in the middle."""
    X = model.featurizer.transform(texts, threads=1)
    empty = smat.csr_matrix((3, X.shape[1]), dtype=np.float32)
    X = smat.vstack([empty[:1], X[:50], empty[1:], X[50:]], format="csr", dtype=np.float32)
    X.sort_indices()
    return X


@pytest.fixture(scope="module")
def queries(with_novel, texts):
    return featurized(with_novel, texts)


# ---------------------------------------------------------------- calling both
def search_args(model, X, beam, wide, subset, k, memberships, probe, n_threads, post=None, path_exponent=None):
    """The arguments of `search_topk` for model's current state, with the post-processor and path exponent
    replaced when given."""
    c, upper = model.catalog, model.upper
    st = c._state
    leaf, layout = st.leaf, upper.layout
    if post is not None:
        leaf, layout = leaf._replace(post=POST_PROCESSORS[post]), layout._replace(post=POST_PROCESSORS[post])
    if path_exponent is not None:
        leaf = leaf._replace(path_exponent=path_exponent)
    beam = min(beam, c.n_clusters)
    wide = min(wide, c.n_clusters)
    dense_q = np.zeros((n_threads, c.n_features), dtype=np.float32)
    return (rows(X), layout, leaf, st.inserted, beam, wide, subset, k, k * memberships,
            max(c.max_cluster_size, upper.max_group_size, st.widest), n_threads, dense_q, probe)


def both_search(args):
    """(C++, numba) results of search_topk on the same arguments; each leaves its dense_q zeroed."""
    got = _core.search_topk(*args)
    assert not args[11].any()
    want = threads.run(oracle.search_topk, args[10], *args)
    return got, want


def assert_same(got, want):
    """Same shapes and dtypes, scores equal to float rounding, slots equal wherever a score is not tied (within
    the tolerance) with another in its row; the top-k equal up to those ties."""
    (slots, scores), (ref_slots, ref_scores) = got, want
    assert slots.dtype == ref_slots.dtype and scores.dtype == ref_scores.dtype
    assert slots.shape == ref_slots.shape
    np.testing.assert_allclose(scores, ref_scores, rtol=RTOL, atol=ATOL)
    tol = RTOL * np.abs(ref_scores) + ATOL
    gap = np.diff(ref_scores, axis=1)
    tied = np.zeros(ref_scores.shape, dtype=bool)
    tied[:, 1:] |= np.abs(gap) <= tol[:, 1:]
    tied[:, :-1] |= np.abs(gap) <= tol[:, :-1]
    np.testing.assert_array_equal(np.where(tied, 0, slots), np.where(tied, 0, ref_slots))
    assert_topk_match(slots, scores, ref_slots, ref_scores, rtol=RTOL, atol=ATOL)


def memberships(model) -> int:
    return model.catalog._state.memberships


# ---------------------------------------------------------------- search_topk
@pytest.mark.parametrize("name", ["trained", "with_novel", "mutated", "split", "pecos"])
def test_search_topk_equals_numba(models, texts, name):
    """Every subset, beam, k, probe and thread count; the inserted beam twice the beam, and heap k * m for a
    model's memberships m (and k * (m + 2): a heap larger than needed drains the same)."""
    model = models[name]
    queries = featurized(model, texts)
    m = memberships(model)
    for subset, beam, k, probe, n_threads, extra in itertools.product((0, 1, 2), (1, 3, 10), (1, 10), (1, 2),
                                                                      (1, 2), (0, 2)):
        if extra and (probe, n_threads) != (1, 1):
            continue
        args = search_args(model, queries, beam, 2 * beam, subset, k, m + extra, probe, n_threads)
        got, want = both_search(args)
        assert_same(got, want)
        assert (got[0][0] == -1).all() and (got[1][0] == 0).all()  # an empty query row: padding only


@pytest.mark.parametrize("post", sorted(POST_PROCESSORS))
@pytest.mark.parametrize("path_exponent", [1.0, 0.3, 2.0])
def test_search_topk_post_processors_and_path_exponents(models, texts, post, path_exponent):
    for name, subset, beam in itertools.product(("mutated", "split", "pecos"), (0, 2), (1, 10)):
        model = models[name]
        queries = featurized(model, texts)
        args = search_args(model, queries, beam, 3 * beam, subset, 10, memberships(model), 2, 2, post,
                           path_exponent)
        assert_same(*both_search(args))


def test_search_topk_more_threads_than_queries(models, queries):
    model = models["with_novel"]
    for n in (0, 1, 2, 3):
        args = search_args(model, queries[3 : 3 + n], 3, 6, 0, 10, memberships(model), 1, 4)
        got, want = both_search(args)
        assert got[0].shape == (n, 10)
        assert_same(got, want)


# ---------------------------------------------------------------- upper_beams and leaf_topk
@pytest.mark.parametrize("post", ["l1-hinge", "l3-hinge", "sigmoid"])
def test_upper_beams_equals_numba(models, texts, post):
    for name, beam, extra, n_threads in itertools.product(("trained", "pecos"), (1, 3, 10), (0, 5), (1, 2)):
        upper = models[name].upper
        queries = featurized(models[name], texts)
        layout = upper.layout._replace(post=POST_PROCESSORS[post])
        args = (rows(queries), layout, beam, beam + extra, upper.max_group_size, n_threads)
        got = _core.upper_beams(*args)
        want = threads.run(oracle.upper_beams, n_threads, *args)
        assert_same(got, want)
        assert (got[0][:, :beam] >= 0).all()  # empty rows too: their bias terms route them


def random_beams(rng, n, n_clusters, most):
    sizes = rng.integers(1, most + 1, size=n)
    clusters = np.concatenate([np.sort(rng.choice(n_clusters, size=b, replace=False)) for b in sizes])
    return smat.csr_matrix((rng.uniform(0.05, 1.0, sizes.sum()).astype(np.float32), clusters.astype(np.int32),
                            np.concatenate([[0], np.cumsum(sizes)])), shape=(n, n_clusters))


@pytest.mark.parametrize("name", ["with_novel", "mutated", "split"])
def test_leaf_topk_equals_numba(models, queries, name):
    model = models[name]
    c = model.catalog
    st = c._state
    beams = random_beams(np.random.default_rng(5), queries.shape[0], c.n_clusters, 6)
    for subset, k, probe, post, path_exponent in itertools.product((0, 1, 2), (1, 10), (1, 2),
                                                                   ("l3-hinge", "sigmoid"), (1.0, 0.5)):
        leaf = st.leaf._replace(post=POST_PROCESSORS[post], path_exponent=path_exponent)
        dense_q = np.zeros(c.n_features, dtype=np.float32)
        args = (rows(queries), rows(beams), leaf, st.inserted, subset, k, k * st.memberships,
                max(c.max_cluster_size, st.widest, 1), dense_q, probe)
        got = _core.leaf_topk(*args)
        assert not dense_q.any()
        assert_same(got, oracle.leaf_topk(*args))


# ---------------------------------------------------------------- ties, checks, GIL
def test_exact_ties_keep_the_smaller_slot_first(with_novel):
    """Every weight and bias zero: all items of the beam clusters tie; both kernels return the smallest slots,
    in increasing order (observed slots below inserted ones), each inserted item once."""
    c = with_novel.catalog
    st = c._state
    zero = lambda a: np.zeros_like(a)  # noqa: E731
    leaf = st.leaf._replace(val=zero(st.leaf.val), w_val=zero(st.leaf.w_val), slot_bias=zero(st.leaf.slot_bias))
    ins = st.inserted._replace(val=zero(st.inserted.val), router_val=zero(st.inserted.router_val))
    X = with_novel.featurizer.transform(["a query", "another one"], threads=1)
    X.sort_indices()
    clusters = np.array([5, 9, 20], dtype=np.int32)
    beams = smat.csr_matrix((np.ones(6, np.float32), np.tile(clusters, 2), [0, 3, 6]), shape=(2, c.n_clusters))
    observed = np.concatenate([np.arange(st.leaf.base_slot_ptr[g], st.leaf.base_slot_ptr[g + 1]) for g in clusters])
    observed = observed[c.slot_alive.view[observed]]
    k = len(observed) + 5
    for subset in (0, 1, 2):
        args = (rows(X), rows(beams), leaf, ins, subset, k, k * st.memberships, max(c.max_cluster_size, st.widest),
                np.zeros(c.n_features, np.float32), 1)
        slots, scores = _core.leaf_topk(*args)
        found = slots[slots >= 0].reshape(2, -1)
        assert (np.diff(found, axis=1) > 0).all()  # increasing: the smaller slot first, none twice
        assert (scores[slots >= 0] == scores[0, 0]).all()
        if subset == 1:
            np.testing.assert_array_equal(found[0], np.sort(observed))
        if subset == 0:
            np.testing.assert_array_equal(found[0][: len(observed)], np.sort(observed))
            assert (found[0][len(observed):] >= c.n_base).all()
        np.testing.assert_array_equal(slots, oracle.leaf_topk(*args)[0])


def test_bad_arguments_are_refused(with_novel, queries):
    model = with_novel
    good = search_args(model, queries, 3, 6, 0, 10, memberships(model), 1, 2)

    def call(**changes):
        names = ["queries", "upper", "leaf", "ins", "beam", "inserted_beam", "subset", "k", "heap",
                 "max_group_size", "n_threads", "dense_q", "probe"]
        args = dict(zip(names, good))
        args.update(changes)
        return _core.search_topk(*args.values())

    q = rows(queries)
    with pytest.raises(TypeError, match="float32"):
        call(queries=q._replace(val=q.val.astype(np.float64)))
    with pytest.raises(TypeError, match="int32"):
        call(queries=q._replace(idx=q.idx.astype(np.int64)))
    with pytest.raises(TypeError, match="float32"):
        call(dense_q=good[11].astype(np.float64))
    with pytest.raises(ValueError, match="dense_q"):
        call(dense_q=good[11][:1])  # two threads, one row
    with pytest.raises(ValueError, match="dense_q"):
        call(dense_q=good[11][0])  # 1-d
    with pytest.raises(ValueError, match="feature indices"):
        call(dense_q=good[11][:, :10].copy())  # narrower than the queries' features
    with pytest.raises(ValueError, match="k must be"):
        call(k=0)
    with pytest.raises(ValueError, match="heap must be"):
        call(heap=5)
    with pytest.raises(ValueError, match="inserted_beam"):
        call(inserted_beam=2)
    with pytest.raises(ValueError, match="n_threads"):
        call(n_threads=0)
    with pytest.raises(ValueError, match="C-contiguous"):
        call(dense_q=np.zeros((model.catalog.n_features, 2), np.float32).T)
    leaf_args = (q, rows(smat.csr_matrix((queries.shape[0], model.catalog.n_clusters), dtype=np.float32)),
                 good[2], good[3], 0, 10, 10, good[9])
    with pytest.raises(ValueError, match="dense_q"):
        _core.leaf_topk(*leaf_args, good[11], 1)  # 2-d
    with pytest.raises(ValueError, match="beams"):
        _core.leaf_topk(q, rows(smat.csr_matrix((2, 3), dtype=np.float32)), *leaf_args[2:], good[11][0], 1)
    with pytest.raises(ValueError, match="last_beam"):
        _core.upper_beams(q, good[1], 3, 2, model.upper.max_group_size, 1)


def test_query_problem():
    idx, val = np.array([0, 4, 2], np.int32), np.array([0.5, -1.0, 2.0], np.float32)
    assert _core.query_problem(idx, val, 5) == 0
    assert _core.query_problem(idx, val, 4) == 1
    assert _core.query_problem(np.array([-1], np.int32), val[:1], 5) == 1
    for bad in (np.nan, np.inf, -np.inf):
        assert _core.query_problem(idx, np.array([0.5, bad, 2.0], np.float32), 5) == 2
    assert _core.query_problem(np.zeros(0, np.int32), np.zeros(0, np.float32), 0) == 0
    rng = np.random.default_rng(3)
    for _ in range(20):  # against a numpy check
        idx = rng.integers(-2, 30, size=rng.integers(0, 8)).astype(np.int32)
        val = rng.choice(np.array([0.1, -3.0, np.nan, np.inf], np.float32), size=len(idx), p=[0.45, 0.45, 0.05, 0.05])
        want = 1 if ((idx < 0) | (idx >= 25)).any() else 2 if not np.isfinite(val).all() else 0
        assert _core.query_problem(idx, val, 25) == want


def test_search_releases_the_gil(with_novel, queries):
    """A Python thread keeps running while the kernel searches a large batch in another: it wakes up (each wake
    needs the GIL) throughout the kernel's run, not only before and after it."""
    model = with_novel

    def watched_search(copies):
        """(kernel start, kernel end, the watching thread's wake times) of one search of a batch of copies."""
        args = search_args(model, smat.vstack([queries] * copies, format="csr"), 10, 20, 0, 10, memberships(model),
                           2, 1)
        window, wakes = [], []

        def search():
            start = time.perf_counter()
            _core.search_topk(*args)
            window.extend([start, time.perf_counter()])

        worker = threading.Thread(target=search)
        worker.start()
        while worker.is_alive():
            wakes.append(time.perf_counter())
            time.sleep(0.002)
        worker.join()
        return window[0], window[1], wakes

    copies = 50
    for _ in range(6):  # a batch of at least 0.2 s, however loaded the machine
        start, end, wakes = watched_search(copies)
        if end - start >= 0.2:
            break
        copies *= 2
    middle = [t for t in wakes if start + 0.25 * (end - start) < t < end - 0.25 * (end - start)]
    assert len(middle) >= 5, (len(middle), end - start)


def test_core_reads_the_layouts_fields_in_their_order():
    """The C++ core's one list of layout fields (layout.hpp) names layout.py's NamedTuple fields, in order."""
    from xrmeta import layout

    fields = _core.layout_fields()
    assert set(fields) == {"Rows", "UpperLayout", "LeafLayout", "InsertedLayout"}
    for name, names in fields.items():
        assert names == list(getattr(layout, name)._fields), name
