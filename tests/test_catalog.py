"""Catalog: layout built from PECOS's leaf layer, mutation, persistence, validation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as smat

from xrmeta.catalog import Catalog, CatalogError

from .conftest import assert_unchanged, csr, snapshot

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
    slots, scores = small.topk(x, one_beam(1, 0, 0.5), k=3)
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
    assert small.is_inserted(inserted).all() and not small.is_inserted(np.arange(5)).any()
    np.testing.assert_array_equal(small.weights(inserted).toarray(), np.vstack(rows))
    np.testing.assert_array_equal(small.slot_bias.view[inserted], np.concatenate(biases))
    assert len(small) == 5 + 120 and small.slot_of["n7-1"] == inserted[3 * 7 + 1]
    # cluster 2's linked list reaches every item added to it (and nothing else)
    slots, _ = small.topk(csr([[1, 1, 1, 1, 1]], N_FEATURES), one_beam(1, 2), k=200, subset="inserted")
    got = set(slots[slots >= 0].tolist())
    assert got == set(np.flatnonzero(small.slot_cluster.view == 2).tolist()) - {4}


def test_remove_then_readd_gets_a_new_slot(small):
    small.remove(["b", "e"])
    assert "b" not in small.slot_of and len(small) == 3
    assert not small.slot_alive.view[[0, 4]].any()
    slots, _ = small.topk(csr([[1, 1, 1, 1, 1]], N_FEATURES), one_beam(1, 0), k=5)
    assert small.ids[slots[0, 0]] == "d" and (slots[0, 1:] == -1).all()
    (new,) = small.add(["b"], [0], csr([[0, 0, 0, 0, 3.0]], N_FEATURES), [5.0])
    assert new == 5 and small.slot_of["b"] == 5 and not small.slot_alive.view[0]
    slots, _ = small.topk(csr([[0, 0, 0, 0, 1]], N_FEATURES), one_beam(1, 0), k=5)
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
    for a, b in zip(small.topk(X, beams, 8), loaded.topk(X, beams, 8)):
        np.testing.assert_array_equal(a, b)


def test_load_rejects_id_count_mismatch(small, tmp_path):
    small.save(tmp_path)
    (tmp_path / "catalog_ids.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="2 ids for 5 slots"):
        Catalog.load(tmp_path, N_FEATURES, "l3-hinge")


def test_topk_rejects_bad_arguments(small):
    x = csr([[1, 0, 0, 0, 0]], N_FEATURES)
    with pytest.raises(ValueError, match="subset must be one of"):
        small.topk(x, one_beam(1, 0), 3, subset="novel")
    with pytest.raises(ValueError, match="k must be >= 1"):
        small.topk(x, one_beam(1, 0), 0)


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
    want = small.topk(X, beams, 5)
    for i in range(2):  # same rows, indices stored in reverse order
        a, b = X.indptr[i], X.indptr[i + 1]
        X.indices[a:b], X.data[a:b] = X.indices[a:b][::-1].copy(), X.data[a:b][::-1].copy()
    X.has_sorted_indices = False
    got = small.topk(X, beams, 5)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
