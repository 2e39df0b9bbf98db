"""XRMetaModel: agreement with PECOS, cold start, removal, persistence, and rejection of bad input."""

from __future__ import annotations

import shutil
from dataclasses import asdict

import numpy as np
import pytest
import scipy.sparse as smat

from xrmeta import ColdStartConfig, FeaturizerConfig, LearnedConfig, ModelError, Results, TreeConfig, XRMetaModel
from xrmeta.catalog import CatalogError
from xrmeta.coldstart import ASSIGNERS, leaf_centroids
from xrmeta.coldstart.assign import assign_centroid_left_out

from .conftest import MAX_LEAF, assert_topk_match, assert_unchanged, clone, dir_digest, own_rank, snapshot


@pytest.fixture(scope="module")
def X_test(trained, test_queries):
    return trained.featurizer.transform(test_queries)


# ---------------------------------------------------------------- correctness against PECOS
@pytest.mark.parametrize("beam", [1, 5, 10])
def test_predict_equals_pecos_without_inserts(pecos_trained, X_test, beam):
    """The pure-PECOS path (observed_titles off, nothing inserted) is PECOS's own predict on the same model."""
    slots, scores, _ = pecos_trained._search(X_test, k=20, beam_size=beam)
    ref = pecos_trained._pecos_search(X_test, k=20, beam_size=beam)
    assert (slots[:, 0] >= 0).all()
    assert_topk_match(slots, scores, *ref, atol=1e-5)


def test_observed_subset_equals_pecos_after_inserts(pecos_trained, novel, X_test):
    model = clone(pecos_trained)
    model.add_items(*novel)
    slots, scores, _ = model._search(X_test, k=20, beam_size=5, subset="observed")
    assert_topk_match(slots, scores, *model._pecos_search(X_test, k=20, beam_size=5), atol=1e-5)
    ids, scores = model.pecos_predict_features(X_test[:50], k=20, beam_size=5)  # the same, by id
    want = model.predict_features(X_test[:50], k=20, beam_size=5, subset="observed")
    np.testing.assert_array_equal(ids[:, 0], want.ids[:, 0])
    np.testing.assert_allclose(scores, want.scores, atol=1e-5)


def test_observed_items_carry_their_titles_by_default(trained, pecos_trained, data, split):
    """Title-grounded serving: an observed item's classifier mixes in its own title, trusted more the fewer
    clicks it has; the PECOS-served model keeps PECOS's weights. Both come from the same tree training."""
    trust = trained.title_trust
    assert not trust.is_pecos and pecos_trained.title_trust.is_pecos
    assert trust.post_processor == "sigmoid" and trained.catalog.path_exponent == trust.path_exponent
    assert trust.beta[0] > 0 and all(b >= 0 for b in trust.beta)
    n = trained.catalog.n_base
    nnz = lambda m: np.diff(m.catalog.w_ptr.view[: n + 1]).mean()  # noqa: E731
    assert nnz(trained) > 1.1 * nnz(pecos_trained)  # the titles' n-grams joined the classifiers
    # and the weights are the trust applied to PECOS's own (those the PECOS-served model serves)
    W, bias = pecos_trained._pecos_leaf()
    np.testing.assert_array_equal(pecos_trained.label_slot, trained.label_slot)
    clicks = np.diff(smat.csc_matrix(split.Y_train).indptr)[np.argsort(trained.label_slot)]
    Wt, bt = trust.apply_rows(W, bias, trained.selector.Z, clicks, trained.configs.tree.threshold)
    np.testing.assert_allclose(trained.catalog.weights(np.arange(n)).toarray(), Wt.toarray(), atol=1e-6)
    np.testing.assert_allclose(trained.catalog.slot_bias.view[:n], bt, atol=1e-6)


def test_predict_returns_ids_and_scores_padded_with_empty_ids_and_minus_inf(with_novel, test_queries):
    found = with_novel.predict(test_queries[:5] + ["qjqj wqwq", ""], k=3)
    assert isinstance(found, Results) and found._fields == ("ids", "scores")
    ids, scores = found
    assert ids.shape == scores.shape == (7, 3) and ids.dtype.kind == "U" and scores.dtype == np.float32
    assert all(i in with_novel for i in ids[:5].ravel())
    assert np.isfinite(scores[:5]).all() and (np.diff(scores[:5], axis=1) <= 0).all()
    # a query with no known n-gram, and an empty one, find nothing
    assert (ids[5:] == "").all() and (scores[5:] == -np.inf).all()
    # a row with fewer than k items: found ones first, then the padding
    model = clone(with_novel)
    model.remove_items([i for i in model.catalog.ids if i not in set(ids[0])])
    assert len(model) == 3
    ids, scores = model.predict(test_queries[:1], k=5, beam_size=model.catalog.n_clusters)
    assert sorted(ids[0, :3]) == sorted(set(model.catalog.slot_of)) and (ids[0, 3:] == "").all()
    assert np.isfinite(scores[0, :3]).all() and (scores[0, 3:] == -np.inf).all()


def test_predict_features_is_predict_from_tf_idf_rows(with_novel, test_queries):
    for subset in ("all", "inserted"):
        a = with_novel.predict(test_queries[:40], k=5, subset=subset, threads=2)
        b = with_novel.predict_features(with_novel.featurizer.transform(test_queries[:40]), k=5, subset=subset)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("beam_size", [0, -1, 2.5, True, "3", np.float32(4)])
def test_beam_size_must_be_none_or_a_positive_integer(trained, beam_size):
    with pytest.raises(ValueError, match="beam_size must be None"):
        trained.predict(["kettle"], beam_size=beam_size)
    with pytest.raises(ValueError, match="beam_size must be None"):
        trained.predict_features(trained.featurizer.transform(["kettle"]), beam_size=beam_size)


def test_beam_size_none_is_the_models(trained, test_queries):
    a = trained.predict(test_queries[:30], k=5)
    b = trained.predict(test_queries[:30], k=5, beam_size=np.int64(trained.configs.tree.beam_size))
    np.testing.assert_array_equal(a.ids, b.ids)
    assert not np.array_equal(trained.predict(test_queries[:30], k=5, beam_size=1).ids, a.ids)


def test_len_and_membership_count_live_items(with_novel, novel, data, split):
    model = clone(with_novel)
    assert len(model) == len(split.observed) + len(novel[1])
    assert novel[1][0] in model and data.item_ids[split.observed[0]] in model and "no-such-id" not in model
    model.remove_items([novel[1][0], data.item_ids[split.observed[0]]])
    assert len(model) == len(split.observed) + len(novel[1]) - 2
    assert novel[1][0] not in model and data.item_ids[split.observed[0]] not in model
    assert model.add_items(["vubo kettle steel b123"], ["n1"]) is None and "n1" in model


def test_train_copies_its_configs(data, split):
    """The caller's config objects are never changed, though the model resolves its own (assign "auto")."""
    configs = [FeaturizerConfig(), TreeConfig(max_leaf_size=MAX_LEAF, observed_titles=False),
               ColdStartConfig(assign="auto", generator="mean"), LearnedConfig(steps=2)]
    before = [asdict(c) for c in configs]
    model = XRMetaModel.train([data.query_texts[i] for i in split.train_queries], split.Y_train,
                              [data.item_texts[j] for j in split.observed], [data.item_ids[j] for j in split.observed],
                              featurizer_config=configs[0], tree_config=configs[1], coldstart_config=configs[2],
                              generator_config=configs[3], verbose=False)
    assert [asdict(c) for c in configs] == before
    assert model.configs.coldstart is not configs[2] and model.configs.coldstart.assign in ASSIGNERS
    reach = model.info["assign_reach"]
    assert model.configs.coldstart.assign == max(ASSIGNERS, key=reach.get)
    model.use_generator("self")  # a model's own config follows the model; the caller's still does not
    assert model.configs.coldstart.generator == "self" and configs[2].generator == "mean"
    # no PECOS copy unless asked for
    with pytest.raises(ModelError, match="keep_pecos=True"):
        model.pecos_model()


# ---------------------------------------------------------------- cold start
@pytest.mark.parametrize("generator,assign,subset,floors", [
    ("mean_self", "centroid", "all", {1: 0.5, 5: 0.7}),  # own title vector in the classifier: found directly
    ("mean", "vote", "inserted", {10: 0.35}),  # neighbours only: found among new items (chance: 10/200)
    ("mean_self", "route", "all", {1: 0.85}),  # joins the leaf its title is routed to
])
def test_inserted_item_found_by_its_title(trained, novel, generator, assign, subset, floors):
    titles, ids = novel
    model = clone(trained, generator=generator, assign=assign)
    model.add_items(titles, ids)
    slots = np.array([model.catalog.slot_of[i] for i in ids])
    found, _, _ = model._search(model.featurizer.transform(titles), k=max(floors), subset=subset)
    rank = own_rank(found, slots)
    rates = {k: float((rank < k).mean()) for k in floors}
    assert all(rates[k] >= floor for k, floor in floors.items()), rates


def test_add_items_gives_the_same_items_whatever_the_threads(trained, novel):
    """threads reaches every stage of an insertion (featurize, select, assign, generate): any count, one result."""
    models = [clone(trained, assign=assign) for assign in ("route", "vote") for _ in range(2)]
    for model, threads in zip(models, [1, -1, 2, 1]):
        model.add_items(novel[0][:50], novel[1][:50], threads=threads)
    for a, b in (models[:2], models[2:]):
        for key, value in a.catalog.arrays().items():
            np.testing.assert_array_equal(b.catalog.arrays()[key], value, err_msg=key)


def test_removed_items_never_come_back(with_novel, data, split, novel, test_queries):
    model = clone(with_novel)
    rng = np.random.default_rng(5)
    gone_trained = [data.item_ids[j] for j in rng.choice(split.observed, 100, replace=False)]
    gone_new = [str(i) for i in rng.choice(novel[1], 50, replace=False)]
    gone_slots = {model.catalog.slot_of[i] for i in gone_trained + gone_new}
    before, _, _ = model._search(model.featurizer.transform(novel[0]), k=10)
    model.remove_items(gone_trained + gone_new)
    assert len(model.catalog) == len(with_novel.catalog) - 150
    # their own titles, the test queries and the queries that hit them before
    titles = [data.item_texts[data.item_ids.index(i)] for i in gone_trained] + novel[0]
    X = model.featurizer.transform(titles + test_queries)
    for subset in ("all", "observed", "inserted"):
        slots, _, _ = model._search(X, k=100, beam_size=20, subset=subset)
        assert not gone_slots & set(slots.ravel().tolist()), subset
    assert gone_slots & set(before.ravel().tolist())  # they were found before removal
    ids, _ = model.predict(titles[:20], k=50)
    assert not set(gone_trained + gone_new) & set(ids.ravel())
    with pytest.raises(CatalogError, match="unknown item ids"):
        model.remove_items(gone_new[:1])


def test_save_load_after_inserts_predicts_identically(saved_dir, novel, test_queries, tmp_path):
    model = XRMetaModel.load(saved_dir)
    model.add_items(*novel)
    model.remove_items(novel[1][:5] + [model.catalog.ids[0]])
    model.save(tmp_path)
    loaded = XRMetaModel.load(tmp_path)
    assert_unchanged(loaded.catalog, snapshot(model.catalog))
    queries = novel[0] + test_queries[:300]
    for subset in ("all", "inserted"):
        a_ids, a_scores = model.predict(queries, k=10, subset=subset)
        b_ids, b_scores = loaded.predict(queries, k=10, subset=subset)
        np.testing.assert_array_equal(a_ids, b_ids)
        np.testing.assert_array_equal(a_scores, b_scores)
    # and the loaded model inserts exactly as the original does
    extra = model.featurizer.transform(["brand new zuvo kettle b123"])
    for a, b in zip(model.coldstart.synthesize(extra, threads=1), loaded.coldstart.synthesize(extra, threads=2)):
        np.testing.assert_array_equal(smat.csr_matrix(a).toarray(), smat.csr_matrix(b).toarray())


def test_freshly_trained_model_agrees_with_its_saved_copy(with_novel, novel, test_queries, tmp_path):
    """PECOS stores idf values with 6 decimals, so a model straight from training and its saved copy featurize
    queries up to float32 rounding: same results up to ties, scores within 1e-5."""
    with_novel.save(tmp_path)
    loaded = XRMetaModel.load(tmp_path)
    assert_unchanged(loaded.catalog, snapshot(with_novel.catalog))
    queries = novel[0] + test_queries[:300]
    a = with_novel._search(with_novel.featurizer.transform(queries), k=10)
    b = loaded._search(loaded.featurizer.transform(queries), k=10)
    assert_topk_match(*a[:2], *b[:2])


def test_add_then_save_in_place(saved_dir, novel, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(saved_dir, folder)
    before = dir_digest(folder)
    model = XRMetaModel.load(folder)
    model.add_items(*novel)
    model.save(folder)
    after = dir_digest(folder)
    assert after.keys() == before.keys()
    changed = {p for p in before if before[p] != after[p]}
    assert {"catalog.npz", "catalog_ids.txt", "config.json"} <= changed
    assert changed <= {"catalog.npz", "catalog_ids.txt", "config.json", "selector.npz", "titles.json",
                       "layouts.npz"}  # PECOS parts untouched
    reloaded = XRMetaModel.load(folder)
    assert len(reloaded.catalog) == 1800 + 200 and reloaded.info["n_inserted"] == 200
    a = model.predict(novel[0], k=5, subset="inserted")
    b = reloaded.predict(novel[0], k=5, subset="inserted")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("assign", ASSIGNERS)
@pytest.mark.parametrize("generator", ["mean", "weighted", "self", "mean_self"])
def test_every_generator_and_assigner_inserts_sparse_vectors(trained, novel, generator, assign):
    model = clone(trained, generator=generator, assign=assign, max_nnz=24)
    model.add_items(novel[0][:40], novel[1][:40])
    c = model.catalog
    slots = np.array([c.slot_of[i] for i in novel[1][:40]])
    # new slots follow the trained ones (stored grouped by cluster); slot i holds the i-th given id
    assert sorted(slots.tolist()) == list(range(c.n_base, c.n_base + 40))
    assert [c.ids[s] for s in slots] == novel[1][:40]
    W = c.weights(slots)
    nnz = np.diff(W.indptr)
    assert (nnz <= 24).all() and (nnz > 0).mean() > 0.9
    assert (np.abs(W.data) >= model.configs.tree.threshold).all() and np.isfinite(W.data).all()
    assert np.isfinite(c.slot_bias.view[slots]).all()
    m = model.configs.coldstart.clusters_per_item
    clusters = c.item_clusters(slots)  # its best cluster first, then the others in increasing order
    assert clusters.shape == (40, m) and ((clusters >= -1) & (clusters < c.n_clusters)).all()
    assert (clusters[:, 0] >= 0).all() and all(len(set(r[r >= 0])) == (r >= 0).sum() for r in clusters)
    S = model.featurizer.transform(novel[0][:40])
    expect = None
    if assign == "centroid":  # the nearest leaf centroids
        sims = (S @ model.coldstart.centroids.T).toarray()
        np.testing.assert_allclose(sims[np.arange(40), clusters[:, 0]], sims.max(axis=1), rtol=1e-6)
        expect = np.argsort(-sims, axis=1, kind="stable")[:, :m]
    elif assign == "route":  # the leaf clusters the tree sends the title to, best first
        B = model.upper.beams(S, m).tocsr()  # the same beam search, as a matrix: best path score first
        expect = np.full((40, m), -1)
        for i in range(40):
            row = B.indices[B.indptr[i] : B.indptr[i + 1]][np.argsort(-B.data[B.indptr[i] : B.indptr[i + 1]])]
            expect[i, : len(row)] = row
    if expect is not None:
        np.testing.assert_array_equal(clusters[:, 0], expect[:, 0])
        assert [sorted(r[r >= 0]) for r in clusters] == [sorted(r[r >= 0]) for r in expect]


def test_left_out_centroid_matches_recomputed_centroids(trained):
    """Each item's cluster as if it were new: the nearest centroid once its own title is taken out."""
    Z, c = trained.selector.Z, trained.catalog
    cluster = c.slot_cluster.view[: c.n_base]
    items = np.random.default_rng(0).choice(c.n_base, size=25, replace=False)
    got = assign_centroid_left_out(Z, cluster, c.n_clusters, items)
    for item, g in zip(items, got):
        keep = np.arange(c.n_base) != item
        centroids = leaf_centroids(Z[keep], cluster[keep], c.n_clusters)
        sims = (Z[item] @ centroids.T).toarray().ravel()
        assert sims[g] == pytest.approx(sims.max(), rel=1e-5)


def test_choose_assigner_picks_the_best_measured_reach(trained, data, split):
    model = clone(trained, assign="vote")
    X = model.featurizer.transform([data.query_texts[i] for i in split.train_queries])
    Ys = smat.csr_matrix(split.Y_train)[:, np.argsort(model.label_slot)]  # columns in slot order
    reach = model.coldstart.choose_assigner(X, Ys, seed=0, beam_size=10, max_items=300)
    assert set(reach) == set(ASSIGNERS) and all(0 <= r <= 100 for r in reach.values())
    assert model.configs.coldstart.assign == max(ASSIGNERS, key=reach.get)
    again = clone(trained, assign="vote")
    assert again.coldstart.choose_assigner(X, Ys, seed=0, beam_size=10, max_items=300, threads=1) == reach


# ---------------------------------------------------------------- bad input changes nothing
TITLE = "vubo kettle steel b123"  # a valid title in the synthetic vocabulary


@pytest.mark.parametrize("call,error,match", [
    (lambda m: m.add_items([TITLE, ""], ["n1", "n2"]), ModelError, "empty or non-string title"),
    (lambda m: m.add_items([TITLE, " \t "], ["n1", "n2"]), ModelError, "empty or non-string title"),
    (lambda m: m.add_items([TITLE, TITLE], ["n1", "n1"]), CatalogError, "duplicate ids"),
    (lambda m: m.add_items([TITLE, TITLE], ["n1", m.catalog.ids[3]]), CatalogError, "already in the catalogue"),
    (lambda m: m.add_items([TITLE, TITLE], ["n1", m.catalog.ids[-1]]), CatalogError, "already in the catalogue"),
    (lambda m: m.add_items([TITLE, TITLE], ["n1"]), ModelError, "2 titles for 1 ids"),
    (lambda m: m.add_items([TITLE, "qjqj wqwq"], ["n1", "n2"]), ModelError, "share no n-gram"),
    (lambda m: m.remove_items([m.catalog.ids[0], "no-such-id"]), CatalogError, "unknown item ids"),
    (lambda m: m.remove_items([m.catalog.ids[0]] * 2), CatalogError, "duplicate ids"),
    (lambda m: m.predict_features(smat.csr_matrix((1, m.featurizer.n_features + 1), dtype=np.float32)),
     ModelError, "features"),
    (lambda m: m.add_items([TITLE], ["n1"], threads=0), ValueError, "threads must be"),
    (lambda m: m.predict([TITLE], threads=-2), ValueError, "threads must be"),
    (lambda m: m.catalog.add(["n1", "n2"], [0, 1], smat.csr_matrix(np.array(
        [[np.nan] + [0.0] * (m.catalog.n_features - 1), [1.0] * m.catalog.n_features], np.float32)), [0.0, 0.0]),
     CatalogError, "NaN"),
    (lambda m: m.catalog.add(["n1"], [0], smat.csr_matrix((1, m.catalog.n_features), dtype=np.float32), [np.inf]),
     CatalogError, "NaN or inf"),
    (lambda m: m.catalog.add(["n1", "n2"], [0, m.catalog.n_clusters],
                             smat.csr_matrix((2, m.catalog.n_features), dtype=np.float32), [0.0, 0.0]),
     CatalogError, "cluster ids must be in"),
    (lambda m: m.catalog.add(["n1"], [-1], smat.csr_matrix((1, m.catalog.n_features), dtype=np.float32), [0.0]),
     CatalogError, "cluster ids must be in"),
    (lambda m: m.catalog.add(["n1"], [0], smat.csr_matrix((1, 3), dtype=np.float32), [0.0]),
     CatalogError, "expected"),
], ids=["empty-title", "blank-title", "dup-id-in-batch", "id-trained", "id-inserted", "lengths", "unknown-ngrams",
        "remove-unknown", "remove-dup", "query-dim", "add-threads", "predict-threads", "nan-weight", "inf-bias",
        "cluster-high", "cluster-negative", "weight-shape"])
def test_bad_input_raises_and_changes_nothing(with_novel, call, error, match):
    model = clone(with_novel)
    snap = snapshot(model.catalog)
    with pytest.raises(error, match=match):
        call(model)
    assert_unchanged(model.catalog, snap)
    model.add_items([TITLE], ["n1"])  # the model still works, and "n1" was not taken


# ---------------------------------------------------------------- the PECOS copy, the package's names
def test_the_pecos_copy_is_kept_only_when_asked(pecos_trained, saved_dir, X_test, tmp_path):
    assert not (saved_dir / "xlinear").exists()  # `trained` was trained without keep_pecos
    with pytest.raises(ModelError, match="keep_pecos=True"):
        XRMetaModel.load(saved_dir).pecos_model()
    # kept: saved, loaded and saved again (a directory saved before the copy became opt-in has it too)
    pecos_trained.save(tmp_path / "a")
    XRMetaModel.load(tmp_path / "a").save(tmp_path / "b")
    assert (tmp_path / "b" / "xlinear").is_dir()
    again = XRMetaModel.load(tmp_path / "b")
    for a, b in zip(again._pecos_search(X_test, k=5), pecos_trained._pecos_search(X_test, k=5)):
        np.testing.assert_array_equal(a, b)


def test_public_names_are_exported_and_documented():
    import xrmeta
    from xrmeta import coldstart, errors, model

    assert xrmeta.__doc__ and all(hasattr(xrmeta, name) for name in xrmeta.__all__)
    assert xrmeta.ModelError is errors.ModelError is model.ModelError
    ours = [getattr(xrmeta, n) for n in xrmeta.__all__]
    ours += [getattr(coldstart, n) for n in ("ColdStart", "Generator", "LearnedGenerator", "Selector")]
    assert {o.__name__ for o in ours} >= {"XRMetaModel", "Results", "ColdStartConfig", "LearnedConfig", "ModelError"}
    for obj in ours:
        assert obj.__doc__ and not obj.__doc__.startswith(obj.__name__ + "("), obj.__name__  # not dataclass's
        for name, member in vars(obj).items():
            member = getattr(member, "__func__", member)
            if not name.startswith("_") and (callable(member) or isinstance(member, property)):
                assert member.__doc__, f"{obj.__name__}.{name}"


def test_copy_is_independent_and_overrides_are_checked(with_novel, novel):
    twin = with_novel.copy(split_size=0)
    assert twin.configs.coldstart.split_size == 0 and with_novel.configs.coldstart.split_size != 0
    before = snapshot(with_novel.catalog)
    twin.remove_items([novel[1][0]])
    twin.add_items(["Perceuse à percussion 18 V, Sans Fil"], ["copy-1"])
    assert_unchanged(with_novel.catalog, before)
    assert "copy-1" in twin and novel[1][0] not in twin and novel[1][0] in with_novel
    with pytest.raises(ValueError, match="split_probe"):
        with_novel.copy(split_probe=0)


def test_a_reloaded_model_inserts_bit_for_bit_as_the_saved_one(saved_dir, novel, tmp_path):
    """The selector's rows are saved normalised and read back as they are (normalising them again moved some by
    an ulp, and new items' biases with them): a model saved and loaded again inserts exactly as before."""
    once = XRMetaModel.load(saved_dir)
    once.save(tmp_path / "m")
    twice = XRMetaModel.load(tmp_path / "m")
    assert (twice.selector.Z != once.selector.Z).nnz == 0
    for m in (once, twice):
        m.add_items(*novel)
    slots = [[m.catalog.slot_of[i] for i in novel[1]] for m in (once, twice)]
    assert (once.catalog.weights(slots[0]) != twice.catalog.weights(slots[1])).nnz == 0
    np.testing.assert_array_equal(once.catalog.slot_bias.view[slots[0]], twice.catalog.slot_bias.view[slots[1]])
