"""Catalog: layout built from PECOS's leaf layer, mutation, persistence, validation."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as smat

from xrmeta.catalog import Catalog, CatalogError
from xrmeta.tree import UpperLayers

from .conftest import assert_unchanged, csr, snapshot
from .reference import leaf_topk

N_FEATURES = 5
LABEL_CLUSTER = [1, 0, 1, 0, 2]  # label j -> leaf cluster
IDS = ["a", "b", "c", "d", "e"]


def leaf_layer(seed=0):
    """(features + 1) x labels weights, the last row holding the bias weight; labels x clusters membership."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(N_FEATURES + 1, len(IDS))) * (rng.random((N_FEATURES + 1, len(IDS))) < 0.6)
    C = np.zeros((len(IDS), 3))
    C[np.arange(len(IDS)), LABEL_CLUSTER] = 1
    return W.astype(np.float32), C


@pytest.fixture
def small():
    W, C = leaf_layer()
    return Catalog.from_leaf_layer(smat.csc_matrix(W), smat.csc_matrix(C), 2.0, IDS, "l3-hinge")


def one_beam(n, cluster, score=1.0):
    return smat.csr_matrix((np.full(n, score, np.float32), np.full(n, cluster, np.int32), np.arange(n + 1)),
                           shape=(n, 3))


def test_from_leaf_layer_orders_slots_by_cluster(small):
    W, _ = leaf_layer()
    order = np.argsort(LABEL_CLUSTER, kind="stable")  # slot -> label
    assert small.ids == [IDS[j] for j in order]
    assert small.base_slot_ptr.tolist() == [0, 2, 4, 5]
    assert small.slot_cluster.view.tolist() == sorted(LABEL_CLUSTER)
    assert small.n_base == small.n_slots == len(small) == 5
    np.testing.assert_allclose(small.weights(np.arange(5)).toarray(), W[:N_FEATURES, order].T)
    np.testing.assert_allclose(small.slot_bias.view, 2.0 * W[N_FEATURES, order])


def test_topk_scores_cluster_items_by_hand(small):
    W, _ = leaf_layer()
    x = csr([[0.5, 0, 0.25, 0, 1.0]], N_FEATURES)
    slots, scores = leaf_topk(small, x, one_beam(1, 0, 0.5), k=3)
    raw = x.toarray() @ W[:N_FEATURES] + 2.0 * W[N_FEATURES]
    want = 0.5 * np.exp(-np.maximum(1 - raw[0, [1, 3]], 0) ** 3)  # labels b, d form cluster 0
    assert sorted(small.ids[s] for s in slots[0, :2]) == ["b", "d"]
    np.testing.assert_allclose(np.sort(scores[0, :2])[::-1], np.sort(want)[::-1], rtol=1e-6)
    assert slots[0, 2] == -1 and scores[0, 2] == 0


def test_add_appends_slots_and_grows_across_many_batches(small):
    rng = np.random.default_rng(3)
    rows, biases, given = [], [], []
    for b in range(40):  # well past the initial capacity: buffers are reallocated several times
        W = smat.random(3, N_FEATURES, density=0.5, format="csr", random_state=b, dtype=np.float32)
        bias = rng.normal(size=3).astype(np.float32)
        slots = small.add([f"n{b}-{i}" for i in range(3)], np.array([b % 3, 2, 0]), W, bias)
        # appended after every earlier slot (grouped by cluster); slot i holds the i-th given id
        assert sorted(slots.tolist()) == list(range(5 + 3 * b, 8 + 3 * b))
        assert [small.ids[s] for s in slots] == [f"n{b}-{i}" for i in range(3)]
        rows.append(W.toarray())
        biases.append(bias)
        given.append(slots)
    inserted = np.concatenate(given)  # slot of each given row, in the order given
    assert (inserted >= small.n_base).all() and small.n_base == 5
    np.testing.assert_array_equal(small.weights(inserted).toarray(), np.vstack(rows))
    np.testing.assert_array_equal(small.slot_bias.view[inserted], np.concatenate(biases))
    assert len(small) == 5 + 120 and small.slot_of["n7-1"] == inserted[3 * 7 + 1]
    # cluster 2's linked list reaches every item added to it (and nothing else)
    slots, _ = leaf_topk(small, csr([[1, 1, 1, 1, 1]], N_FEATURES), one_beam(1, 2), k=200, subset="inserted")
    got = set(slots[slots >= 0].tolist())
    assert got == set(np.flatnonzero(small.slot_cluster.view == 2).tolist()) - {4}


def test_remove_then_readd_gets_a_new_slot(small):
    small.remove(["b", "e"])
    assert "b" not in small.slot_of and len(small) == 3
    assert not small.slot_alive.view[[0, 4]].any()
    slots, _ = leaf_topk(small, csr([[1, 1, 1, 1, 1]], N_FEATURES), one_beam(1, 0), k=5)
    assert small.ids[slots[0, 0]] == "d" and (slots[0, 1:] == -1).all()
    (new,) = small.add(["b"], [0], csr([[0, 0, 0, 0, 3.0]], N_FEATURES), [5.0])
    assert new == 5 and small.slot_of["b"] == 5 and not small.slot_alive.view[0]
    slots, _ = leaf_topk(small, csr([[0, 0, 0, 0, 1]], N_FEATURES), one_beam(1, 0), k=5)
    assert slots[0, 0] == 5 and 0 not in slots


@pytest.mark.parametrize("ids,match", [(["a", "zz"], "unknown item ids"), (["a", "a"], "duplicate ids")])
def test_remove_rejects_whole_request(small, ids, match):
    snap = snapshot(small)
    with pytest.raises(CatalogError, match=match):
        small.remove(ids)
    assert_unchanged(small, snap)


def test_save_load_roundtrip(small, tmp_path):
    small.add(["x", "y"], [2, 0], csr([[0, 1, 0, 0, 0], [0.5, 0, 0, 0, 0]], N_FEATURES), [0.1, 0.2])
    small.remove(["a", "x"])
    small.save(tmp_path)
    loaded = Catalog.load(tmp_path, N_FEATURES, "l3-hinge")
    assert_unchanged(loaded, snapshot(small))
    X = csr(np.random.default_rng(0).random((4, N_FEATURES)), N_FEATURES)
    beams = smat.csr_matrix(np.tile([0.3, 0.5, 0.9], (4, 1)).astype(np.float32))
    for a, b in zip(leaf_topk(small, X, beams, 8), leaf_topk(loaded, X, beams, 8)):
        np.testing.assert_array_equal(a, b)


def test_load_rejects_id_count_mismatch(small, tmp_path):
    small.save(tmp_path)
    (tmp_path / "catalog_ids.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="2 ids for 5 slots"):
        Catalog.load(tmp_path, N_FEATURES, "l3-hinge")


def upper_layers(seed=0) -> UpperLayers:
    """One layer of 3 nodes (the small catalogue's clusters) under the root, with random weights."""
    rng = np.random.default_rng(seed)
    W = smat.csc_matrix(rng.normal(size=(N_FEATURES + 1, 3)).astype(np.float32))
    layer = SimpleNamespace(W=W, C=smat.csc_matrix(np.ones((3, 1), np.float32)), bias=1.0,
                            pred_params=SimpleNamespace(post_processor="l3-hinge"))
    return UpperLayers.from_chain([layer], 3, "l3-hinge")


def test_search_rejects_bad_arguments(small):
    x, upper = csr([[1, 0, 0, 0, 0]], N_FEATURES), upper_layers()
    with pytest.raises(ValueError, match="subset must be one of"):
        small.search(x, upper, 1, 3, subset="novel")
    with pytest.raises(ValueError, match="k must be >= 1"):
        small.search(x, upper, 1, 0)
    for bad in (0, -2, 1.5, None):
        with pytest.raises(ValueError, match="threads must be"):
            small.search(x, upper, 1, 3, threads=bad)
        with pytest.raises(ValueError, match="threads must be"):
            upper.top_clusters(x, 1, threads=bad)


def test_search_equals_leaf_scoring_of_its_beams(small):
    """Catalog.search = the upper layers' beams, then the leaf scoring of `reference.leaf_topk`."""
    small.add(["x", "y"], [[2, 0], [1, -1]], csr([[0, 1, 0, 0, 0], [0.5, 0, 0, 1, 0]], N_FEATURES), [0.1, 0.2])
    X, upper = csr(np.random.default_rng(1).random((6, N_FEATURES)), N_FEATURES), upper_layers()
    for beam in (1, 2, 3):
        want = leaf_topk(small, X, upper.beams(X, beam), 6)
        got = small.search(X, upper, beam, 6)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_search_is_the_same_whatever_the_threads(small):
    """The C++ search cuts a batch into one chunk per thread: no answer depends on it."""
    X, upper = csr(np.random.default_rng(2).random((7, N_FEATURES)), N_FEATURES), upper_layers()
    want = small.search(X, upper, 2, 4, threads=1), upper.top_clusters(X, 2, threads=1)
    for threads in (2, 3, -1):
        got = small.search(X, upper, 2, 4, threads=threads), upper.top_clusters(X, 2, threads=threads)
        for a, b in zip(want[0] + want[1], got[0] + got[1]):
            np.testing.assert_array_equal(a, b)


NO_PARALLEL_REGION = """
import numba, numpy as np, scipy.sparse as smat, sys
from tests.test_catalog import N_FEATURES, IDS, csr, leaf_layer, upper_layers
from xrmeta.catalog import Catalog
W, C = leaf_layer()
small = Catalog.from_leaf_layer(smat.csc_matrix(W), smat.csc_matrix(C), 2.0, IDS, "l3-hinge")
small.add(["x", "y"], [[2, 0], [1, -1]], csr([[0, 1, 0, 0, 0], [0.5, 0, 0, 1, 0]], N_FEATURES), [0.1, 0.2])
X, upper, threads = csr(np.random.default_rng(3).random((5, N_FEATURES)), N_FEATURES), upper_layers(), int(sys.argv[1])
small.search(X, upper, 2, 4, threads=threads), small.search(X[0], upper, 2, 4, threads=threads)
upper.top_clusters(X, 2, threads=threads)
try:
    print(numba.threading_layer())
except ValueError:  # "not initialized": no parallel region ever ran in this process
    print("none")
"""


def test_search_never_starts_numba_threads():
    """In a fresh process, searches never start numba's thread pool, whatever their threads: the search is the
    C++ core's (`xrmeta._core`), so concurrent queries need no thread-safe numba threading layer."""
    def run(threads):
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(NO_PARALLEL_REGION), str(threads)],
                             cwd=Path(__file__).parent.parent, capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1]

    assert run(1) == "none"
    assert run(-1) == "none"


@pytest.mark.parametrize("bad", ["", "  ", "a\tb", "a\nb", 7])
def test_add_rejects_bad_ids(small, bad):
    with pytest.raises(CatalogError, match="non-empty strings"):
        small.add(["ok", bad], [0, 0], smat.csr_matrix((2, N_FEATURES), dtype=np.float32), [0, 0])
    assert small.n_slots == 5 and "ok" not in small.slot_of


def test_id_with_carriage_return_is_rejected_and_save_load_round_trips(small, tmp_path):
    with pytest.raises(CatalogError, match="line breaks"):
        small.add(["x\ry"], [0], smat.csr_matrix((1, N_FEATURES), dtype=np.float32), [0.0])
    small.add(["x\u2028y"], [0], smat.csr_matrix((1, N_FEATURES), dtype=np.float32), [0.0])
    small.save(tmp_path)
    assert Catalog.load(tmp_path, N_FEATURES, "l3-hinge").ids == small.ids


def test_topk_with_unsorted_query_indices(small):
    X = csr([[0.5, 0.1, 0.25, 0.7, 1.0], [0.3, 0, 0.9, 0, 0.2]], N_FEATURES)
    beams = smat.csr_matrix(np.tile([1.0, 0.5, 0.25], (2, 1)).astype(np.float32))
    want = leaf_topk(small, X, beams, 5)
    for i in range(2):  # same rows, indices stored in reverse order
        a, b = X.indptr[i], X.indptr[i + 1]
        X.indices[a:b], X.data[a:b] = X.indices[a:b][::-1].copy(), X.data[a:b][::-1].copy()
    X.has_sorted_indices = False
    got = leaf_topk(small, X, beams, 5)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
