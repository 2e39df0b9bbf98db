"""Title grounding: normalised text, titles as training instances, observed items carrying their titles, new
items in several clusters, and models saved before any of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as smat

from xrmeta import persist
from xrmeta import ColdStartConfig, XRMetaModel
from xrmeta.tree import TreeConfig, training_instances

from .conftest import MAX_LEAF, clone

BRANDS = ["DeWALT", "Makita", "Ryobi", "Bosch", "Milwaukee", "Café Rouge", "Crème & Co.", "Ｈｏｍｅ Ｐｒｏ"]
PRODUCTS = ["Cordless Drill/Driver Kit", "18-Volt Impact Wrench", "Circular Saw (Tool-Only)", "Wet/Dry Vac, 6 Gal.",
            "LED Work Light", "Orbital Sander 5 in.", "Brûlée Torch, Butane", "Stainless Kettle 1.7 L",
            "Espresso Machine — 15 Bar", "Garden Hose 50 ft."]


@pytest.fixture(scope="module")
def real_text():
    """A small catalogue written like real product data: mixed case, accents, punctuation, full-width letters;
    queries lower case (as typed), each clicking one product; a third of the products never clicked."""
    rng = np.random.default_rng(0)
    titles = [f"{b} {p}" for b in BRANDS for p in PRODUCTS]
    queries, rows, cols = [], [], []
    for j, t in enumerate(titles):
        if j % 3 == 2:
            continue  # never clicked: only its title can place and rank it
        words = [w.strip(",.()") for w in t.lower().split() if w.strip(",.()")]
        for _ in range(2):
            q = " ".join(rng.choice(words, size=min(3, len(words)), replace=False))
            if q not in queries:
                rows.append(len(queries))
                cols.append(j)
                queries.append(q)
    Y = smat.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(queries), len(titles)))
    return queries, Y, titles, [f"sku-{j}" for j in range(len(titles))]


@pytest.fixture(scope="module")
def real_model(real_text):
    queries, Y, titles, ids = real_text
    return XRMetaModel.train(queries, Y, titles, ids, tree_config=TreeConfig(max_leaf_size=10), verbose=False,
                             coldstart_config=ColdStartConfig(generator="self"))


def test_queries_of_any_case_width_and_spacing_give_the_same_results(real_text, real_model):
    titles = dict(zip(real_text[3], real_text[2]))
    a = real_model.predict(["cordless drill"], k=5)
    for variant in ["CORDLESS DRILL", "  Cordless\tDrill!! ", "Ｃｏｒｄｌｅｓｓ ＤＲＩＬＬ", "cordless-drill"]:
        b = real_model.predict([variant], k=5)
        np.testing.assert_array_equal(b[0], a[0], err_msg=variant)
        np.testing.assert_array_equal(b[1], a[1], err_msg=variant)
    assert "Drill" in titles[a[0][0, 0]]


def test_a_never_clicked_product_is_found_by_its_title(real_model):
    """sku-2 (DeWALT Circular Saw) has no query; its title is a training instance and part of its classifier."""
    ids, _ = real_model.predict(["dewalt circular saw"], k=3)
    assert ids[0, 0] == "sku-2"
    never = BRANDS.index("Café Rouge") * len(PRODUCTS) + PRODUCTS.index("Brûlée Torch, Butane")
    assert never % 3 == 2  # not clicked
    ids, _ = real_model.predict(["CAFÉ ROUGE brûlée torch"], k=3)
    assert f"sku-{never}" in ids[0]


def test_empty_and_unknown_queries_return_no_items(real_model):
    ids, scores = real_model.predict(["", "   ", "!!! ???", "qjqj wqwq"], k=4)
    assert (ids == "").all() and (scores == -np.inf).all()


def test_new_item_joins_its_best_clusters_and_is_returned_once(real_model):
    model = clone(real_model, clusters_per_item=3, assign="route")
    model.add_items(["Bosch Café Espresso Machine, 19 Bar"], ["new-1"])
    slot = model.catalog.slot_of["new-1"]
    clusters = model.catalog.item_clusters([slot])[0]
    assert (clusters >= 0).sum() == 3 and len(set(clusters.tolist())) == 3
    ids, _ = model.predict(["bosch espresso machine"], k=10, beam_size=model.catalog.n_clusters)
    assert list(ids[0]).count("new-1") == 1 and "new-1" in ids[0]


def test_titles_join_the_training_instances_with_their_weight():
    X = smat.random(4, 6, density=0.5, format="csr", random_state=0, dtype=np.float32)
    Y = smat.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=np.float32))
    Z = smat.random(3, 6, density=0.5, format="csr", random_state=1, dtype=np.float32)
    Xa, Ya, R = training_instances(X, Y, Z, 2.5)
    assert Xa.shape == (7, 6) and Ya.shape == (7, 3)
    np.testing.assert_array_equal(Xa[4:].toarray(), Z.toarray())
    np.testing.assert_array_equal(Ya[4:].toarray(), np.eye(3))
    assert R.shape == Ya.shape and (R[:4].data == 1).all() and (R[4:].data == 2.5).all()
    assert (R != 0).toarray().tolist() == (Ya != 0).toarray().tolist()
    _, _, R1 = training_instances(X, Y, Z, 1.0)
    X0, Y0, R0 = training_instances(X, Y, Z, 0.0)
    assert R1 is None and R0 is None and X0.shape == (4, 6) and Y0.shape == (4, 3)


# ---------------------------------------------------------------- models saved before title grounding
def as_saved_before_grounding(folder: Path) -> None:
    """Rewrite a model directory as xrmeta wrote it before normalisation, title trust and multi-cluster items:
    no "normalization" setting, no "title_trust", and inserted items linked slot to slot (slot_next)."""
    config = json.loads((folder / "config.json").read_text())
    del config["featurizer"]["normalization"]
    del config["title_trust"]
    meta = json.loads((folder / "featurizer" / "featurizer.json").read_text())
    del meta["config"]["normalization"]
    (folder / "featurizer" / "featurizer.json").write_text(json.dumps(meta))
    with np.load(folder / "catalog.npz") as z:
        a = dict(z)
    n_base = int(a["base_slot_ptr"][-1])
    assert (a["entry_slot"] == np.arange(n_base, len(a["slot_alive"]))).all(), "one entry per inserted slot"
    # then: each cluster's inserted slots in a list, newest first (cluster_head), each to the next older one
    nxt = np.full(len(a["slot_alive"]), -1, dtype=np.int32)
    head = np.full(len(a["base_slot_ptr"]) - 1, -1, dtype=np.int32)
    for s, c in zip(a["entry_slot"], a["entry_cluster"]):
        nxt[s], head[c] = head[c], s
    a["slot_next"], a["cluster_head"] = nxt, head
    for key in ("entry_slot", "entry_cluster"):
        del a[key]
    np.savez(folder / "catalog.npz", **a)
    config["files"] = persist.manifest(folder)
    (folder / "config.json").write_text(json.dumps(config))


def test_a_model_saved_before_grounding_loads_and_answers_as_it_did(data, split, novel, test_queries, tmp_path):
    queries = [data.query_texts[i] for i in split.train_queries]
    model = XRMetaModel.train(
        queries, split.Y_train, [data.item_texts[j] for j in split.observed],
        [data.item_ids[j] for j in split.observed], verbose=False,
        tree_config=TreeConfig(max_leaf_size=MAX_LEAF, observed_titles=False, title_weight=0),
        coldstart_config=ColdStartConfig(generator="mean_self", assign="vote", clusters_per_item=1))
    model.add_items(*novel)
    model.save(tmp_path / "m")
    want = model.predict(test_queries, k=10)
    as_saved_before_grounding(tmp_path / "m")
    old = XRMetaModel.load(tmp_path / "m")
    assert old.featurizer.config.normalization == "none" and old.title_trust.is_pecos
    got = old.predict(test_queries, k=10)  # synthetic queries are already lower case: same features
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)  # the loaded idf has 6 decimals (PECOS's file)
    q = test_queries[0]
    assert old.featurizer.transform([q.upper()]).nnz < old.featurizer.transform([q]).nnz  # texts as given
