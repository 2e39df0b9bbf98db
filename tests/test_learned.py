"""The learned generator: compiled forward pass = torch, the held-out retraining, training, serving, persistence,
and the two command lines that train it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as smat

from xrmeta import _core, threads
from xrmeta import train as train_cli
from xrmeta import train_generator as train_generator_cli
from xrmeta.coldstart import GENERATORS
from xrmeta.coldstart import learned as L
from xrmeta.coldstart import network as N
from xrmeta.coldstart import train_learned as TL
from xrmeta.coldstart import training as T
from xrmeta.coldstart.generate import Calibration
from xrmeta.kernels.coldstart import block_dots
from xrmeta.model import ColdStartConfig, ModelError, XRMetaModel
from xrmeta.tree import TreeConfig

from .conftest import MAX_LEAF, clone

torch = pytest.importorskip("torch")  # training needs it; serving does not (tested below)

SMALL = dict(steps=15, max_items=900, seed=3)


@pytest.fixture(scope="session")
def train_xy(trained, data, split):
    X = trained.featurizer.transform([data.query_texts[i] for i in split.train_queries], threads=1)
    return X, split.Y_train


@pytest.fixture(scope="session")
def learned(trained, train_xy):
    model = clone(trained)
    model.fit_generator(*train_xy, L.LearnedConfig(**SMALL), verbose=False)
    return model


@pytest.mark.parametrize("depth", [1, 2])
def test_compiled_forward_matches_torch(depth):
    rng = np.random.default_rng(depth)
    config = L.LearnedConfig(depth=depth, d_model=8, n_heads=2, d_ff=12, seed=depth)
    mu = rng.normal(size=(2, L.N_FEATURES)).astype(np.float32)
    sd = rng.uniform(0.5, 2, size=(2, L.N_FEATURES)).astype(np.float32)
    net = N.make_net(config, 4, 3, Calibration(3.0, -0.4), mu, sd)
    with torch.no_grad():  # move every parameter off its initial value (heads start at zero weights)
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(7)) * 0.3)
    tokens = rng.normal(size=(64, 5, L.N_FEATURES)).astype(np.float32)
    valid = rng.random((64, 5)) > 0.3
    valid[:, 0] = True
    valid[0, 1:] = False  # an item without neighbours
    with torch.no_grad():
        alpha, out = net(torch.as_tensor(tokens), torch.as_tensor(valid))
    params = net.export()
    n_alpha, n_out = _core.meta_forward(tokens, valid, *(params[p] for p in L.PARAM_ORDER), config.n_heads, 3)
    np.testing.assert_allclose(n_alpha, alpha.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(n_out, out.numpy(), rtol=1e-4, atol=1e-5)
    assert (n_alpha[~valid[:, 1:]] == 0).all() and (n_alpha[valid[:, 1:]] > 0).all()
    assert (n_out[:, :-1] > 0).all()  # softplus block scales


def test_item_tokens_match_a_dense_reference():
    rng = np.random.default_rng(1)
    S = smat.random(5, 30, density=0.3, format="csr", random_state=3, dtype=np.float32) * 3  # not normalized
    Z = smat.random(8, 30, density=0.3, format="csr", random_state=4, dtype=np.float32)
    block = (np.arange(30) // 10).astype(np.int8)
    nbrs = rng.integers(0, 8, size=(5, 3))
    nbrs[1, 1:] = -1
    nbrs[2, :] = -1
    sims = np.sort(rng.random((5, 3)), axis=1)[:, ::-1].astype(np.float32)
    stats = rng.normal(size=(8, 4)).astype(np.float32)
    tokens, valid = L.token_features(S, nbrs, sims, Z, stats, block, 3)
    Sd = S.toarray() / np.linalg.norm(S.toarray(), axis=1, keepdims=True)
    Zd = Z.toarray()
    for i in range(5):
        ok = nbrs[i] >= 0
        np.testing.assert_array_equal(valid[i], np.r_[True, ok])
        s = np.where(ok, sims[i], 0.0)
        want = [(Sd[i][block == b] ** 2).sum() for b in range(3)]
        want += [np.log1p((Sd[i][block == b] != 0).sum()) for b in range(3)]
        want += [s[0], s.sum() / max(ok.sum(), 1), 0, 0]
        np.testing.assert_allclose(tokens[i, 0], want, rtol=1e-5, atol=1e-6)
        for k in range(3):
            got = tokens[i, 1 + k]
            if not ok[k]:
                assert (got == 0).all()
                continue
            per = [(Sd[i] * Zd[nbrs[i, k]])[block == b].sum() for b in range(3)]
            np.testing.assert_allclose(got, [sims[i, k], sims[i, k] - s[0], *per, *stats[nbrs[i, k]], 0],
                                       rtol=1e-5, atol=1e-6)


def test_block_dots_match_dense():
    rng = np.random.default_rng(0)
    A = smat.random(6, 40, density=0.3, format="csr", random_state=1, dtype=np.float32)
    B = smat.random(9, 40, density=0.2, format="csr", random_state=2, dtype=np.float32)
    block = (np.arange(40) // 15).astype(np.int8)
    a_rows = rng.integers(0, 6, size=12)
    b_rows = rng.integers(-1, 9, size=(12, 3))
    out = threads.run(block_dots, -1, A.indptr.astype(np.int64), A.indices, A.data, a_rows, B.indptr.astype(np.int64),
                      B.indices, B.data, b_rows, block, 3)
    Ad, Bd = A.toarray(), B.toarray()
    for p in range(12):
        for j in range(3):
            for b in range(3):
                want = 0.0 if b_rows[p, j] < 0 else (Ad[a_rows[p]] * Bd[b_rows[p, j]])[block == b].sum()
                assert out[p, j, b] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("title_weight", [1.0, 2.5])
def test_held_out_retraining_reproduces_the_served_classifiers(data, split, train_xy, title_weight):
    """With nothing held out, retraining a sample's leaf classifiers (PECOS's solver, the tree's settings, the
    titles as instances with their weight) gives back the ones PECOS trained: the held-out path differs only by
    what it holds out."""
    model = XRMetaModel.train(
        [data.query_texts[i] for i in split.train_queries], split.Y_train,
        [data.item_texts[j] for j in split.observed], [data.item_ids[j] for j in split.observed],
        tree_config=TreeConfig(max_leaf_size=MAX_LEAF, observed_titles=False, title_weight=title_weight),
        coldstart_config=ColdStartConfig(generator="mean"), verbose=False)
    X = model.featurizer.transform([data.query_texts[i] for i in split.train_queries], threads=1)
    Ys = smat.csr_matrix(split.Y_train, dtype=np.float32)[:, np.argsort(model.label_slot)]
    cat = model.catalog
    rest = np.arange(cat.base_slot_ptr[3], cat.base_slot_ptr[6])
    none = np.zeros(0, dtype=np.int64)
    W0, b0 = model._pecos_leaf()
    W, bias = T._held_out_classifiers(X, Ys, model.selector.Z, W0, b0, cat.slot_cluster.view, none, rest, none,
                                      model.configs.tree, threads=1)
    np.testing.assert_allclose(W[rest].toarray(), W0[rest].toarray(), atol=1e-4)
    np.testing.assert_allclose(bias[rest], b0[rest], atol=1e-4)


def test_as_if_unseen_drops_ngrams_only_the_title_brought():
    Z = smat.csr_matrix(np.array([[0.6, 0.8, 0, 0], [0.6, 0, 0.8, 0], [0, 0, 1, 0]], dtype=np.float32))
    X = smat.csr_matrix(np.array([[1.0, 0, 0, 0]], dtype=np.float32))  # queries know feature 0 only
    block = np.array([0, 0, 1, 1], dtype=np.int8)
    T = TL._as_if_unseen(Z, X, np.array([0, 1]), block, 2, min_df=1).toarray()
    np.testing.assert_allclose(T[0], [1, 0, 0, 0], atol=1e-6)  # feature 1: only item 0's own title has it
    np.testing.assert_allclose(T[1], [np.sqrt(0.5), 0, np.sqrt(0.5), 0], atol=1e-6)  # item 2 has feature 2


def test_training_is_seeded_and_serving_follows_the_exported_parameters(trained, train_xy, learned):
    again = clone(trained)
    again.fit_generator(*train_xy, L.LearnedConfig(**SMALL), verbose=False)
    for name in L.PARAM_ORDER:
        np.testing.assert_array_equal(again.generator.params[name], learned.generator.params[name], err_msg=name)
    info = learned.generator.info
    assert info["n_proxies"] > 0 and info["n_pairs"] > info["n_positive_pairs"] > 0
    assert learned.configs.coldstart.generator == "learned" and learned.info["generator"] is info


@pytest.mark.parametrize("parts", ["both", "self"])
def test_plan_is_sparse_mix_of_neighbours_and_title(trained, train_xy, learned, novel, parts):
    """parts "both": the neighbours' classifiers and the title; "self" (the default): the title alone, one weight
    per n-gram block (the neighbours still shape the weights through attention)."""
    if parts == "self":
        model = learned
    else:
        model = clone(trained)
        model.fit_generator(*train_xy, L.LearnedConfig(**SMALL, parts=parts), verbose=False)
    titles, _ = novel
    S = model.featurizer.transform(titles[:40], threads=1)
    nbrs, sims = model.selector.search(S, model.configs.coldstart.k, threads=1)
    nbrs[0, 1:] = -1  # fewer neighbours than k
    plan = model.generator.plan(S, nbrs, sims, threads=1)
    for other in (model.generator.plan(S, nbrs, sims, threads=2), model.generator.plan(S, nbrs, sims)):
        for a, b in zip(vars(plan).values(), vars(other).values()):
            np.testing.assert_array_equal(a, b)  # whatever the threads
    assert plan.nbr_coef.shape == nbrs.shape and plan.self_coef.shape == (40, 3) and plan.bias.shape == (40,)
    assert np.isfinite(plan.nbr_coef).all() and np.isfinite(plan.self_coef).all() and np.isfinite(plan.bias).all()
    assert (plan.nbr_coef[nbrs < 0] == 0).all() and (plan.self_coef > 0).all()
    weights, biases = model.coldstart.generate(S, nbrs, sims, threads=1)
    assert weights.shape == S.shape and np.diff(weights.indptr).max() <= model.configs.coldstart.max_nnz
    if parts == "both":
        assert (plan.nbr_coef[nbrs >= 0] > 0).all()
    else:  # only the title's n-grams: the synthesized support lies inside the title's
        assert (plan.nbr_coef == 0).all()
        assert all(set(weights[i].indices) <= set(S[i].indices) for i in range(40))
    learned = model
    with pytest.raises(L.GeneratorError, match="trained for k=3"):
        learned.generator.plan(S, nbrs[:, :2], sims[:, :2])


def test_inserted_items_are_found_by_their_own_title(learned, novel):
    titles, ids = novel
    model = clone(learned)
    model.add_items(titles, ids)
    slots = np.array([model.catalog.slot_of[i] for i in ids])
    top, _, _ = model._search(model.featurizer.transform(titles, threads=1), k=10, subset="inserted")
    found = (top == slots[:, None]).any(axis=1).mean()
    assert found > 0.5, f"only {found:.0%} of the new items are in the top 10 of their own title"


def test_save_load_keeps_the_learned_generator(learned, novel, tmp_path):
    titles, ids = novel
    learned.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["coldstart"]["generator"] == "learned"
    loaded = XRMetaModel.load(tmp_path / "m")
    for name in L.PARAM_ORDER:
        np.testing.assert_array_equal(loaded.generator.params[name], learned.generator.params[name])
    # the saved TF-IDF carries 6-decimal idf values (PECOS), so compare loaded copies exactly, the original closely
    a, b, c = clone(learned), loaded, XRMetaModel.load(tmp_path / "m")
    for model in (a, b, c):
        model.add_items(titles[:30], ids[:30])
    for key, value in b.catalog.arrays().items():
        np.testing.assert_array_equal(c.catalog.arrays()[key], value, err_msg=key)
        np.testing.assert_allclose(a.catalog.arrays()[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_learned_generator_is_refused_where_there_is_none(trained, tmp_path):
    plain = clone(trained, generator="mean")  # a model whose generator was never learned
    with pytest.raises(ValueError, match="generator"):
        clone(plain, generator="learned")
    plain.save(tmp_path / "m")
    assert not (tmp_path / "m" / L.GENERATOR_FILE).exists()
    model = XRMetaModel.load(tmp_path / "m")
    with pytest.raises(ModelError, match="no learned generator"):
        model.use_generator("learned")
    assert model.configs.coldstart.generator == "mean"  # unchanged
    with pytest.raises(ModelError, match="expected"):
        clone(trained).fit_generator(smat.csr_matrix((3, trained.featurizer.n_features), dtype=np.float32),
                                     smat.csr_matrix((3, 5)), verbose=False)


def test_command_lines_train_the_generator(tmp_path, capsys):
    folder = tmp_path / "model"
    assert train_cli.main(["--dataset", "synthetic", "--model-dir", str(folder), "--max-leaf-size", str(MAX_LEAF),
                           "--generator", "learned", "--gen-steps", "5", "--gen-max-items", "600", "--quiet"]) == 0
    model = XRMetaModel.load(folder)
    assert model.configs.coldstart.generator == "learned" and model.generator.info["config"]["steps"] == 5
    before = (folder / L.GENERATOR_FILE).read_bytes()
    # retrain in place with other settings: the file changes, the model still loads and inserts
    assert train_generator_cli.main(["--model-dir", str(folder), "--gen-steps", "3", "--gen-seed", "1",
                                     "--quiet"]) == 0
    assert (folder / L.GENERATOR_FILE).read_bytes() != before
    model = XRMetaModel.load(folder)
    assert model.generator.info["config"]["seed"] == 1
    model.add_items(["blue cotton shirt large"], ["new-1"])
    assert train_generator_cli.main(["--model-dir", str(folder), "--gen-width", "7", "--quiet"]) == 2
    assert "divisible" in capsys.readouterr().err


# ---------------------------------------------------------------- serving without torch, the registry
NO_TORCH = '''
import sys
tried = []
class NoTorch:  # as if torch were not installed: every import of it fails, and is recorded
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoTorch())
'''

SERVE = NO_TORCH + '''
import json
import numpy as np
from xrmeta import XRMetaModel
folder, titles, ids, queries, out = json.loads(sys.argv[1])
model = XRMetaModel.load(folder)
assert model.generator.name == "learned"
model.add_items(titles, ids)
found = model.predict(queries, k=10, subset="all")
np.savez(out, ids=found.ids, scores=found.scores)
assert not tried and not any(m == "torch" or m.startswith("torch.") for m in sys.modules), tried
try:  # training says what to install
    model.fit_generator(model.featurizer.transform(queries), np.zeros((len(queries), 1800), np.float32))
except ImportError as e:
    print(e)
'''


def test_serving_a_learned_generator_never_imports_torch(learned, novel, test_queries, tmp_path):
    """load + add_items (learned generator) + predict in a process where torch cannot be imported: the same
    results as here, and not one attempt to import it; training there names the extra to install."""
    import subprocess
    import sys

    learned.save(tmp_path / "m")
    titles, ids = novel[0][:60], novel[1][:60]
    queries = titles[:20] + test_queries[:50]
    args = json.dumps([str(tmp_path / "m"), titles, ids, queries, str(tmp_path / "out.npz")])
    run = subprocess.run([sys.executable, "-c", SERVE, args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "pip install 'xrmeta[train]'" in run.stdout
    model = XRMetaModel.load(tmp_path / "m")
    model.add_items(titles, ids)
    want = model.predict(queries, k=10)
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_array_equal(got["ids"], want.ids)
        np.testing.assert_array_equal(got["scores"], want.scores)


def test_training_without_torch_says_what_to_install(tmp_path):
    import subprocess
    import sys

    train = NO_TORCH + '''
from xrmeta import ColdStartConfig, TreeConfig, XRMetaModel, make_synthetic
d = make_synthetic(n_items=200, n_queries=600, seed=0)
for tree, cold in ((TreeConfig(), ColdStartConfig(generator="mean")),
                   (TreeConfig(observed_titles=False), ColdStartConfig())):
    try:
        XRMetaModel.train(d.query_texts, d.Y, d.item_texts, d.item_ids, tree_config=tree, coldstart_config=cold,
                          verbose=False)
    except ImportError as e:
        print(e)
# without the title trust and with a hand-made generator, nothing needs torch
model = XRMetaModel.train(d.query_texts, d.Y, d.item_texts, d.item_ids, tree_config=TreeConfig(observed_titles=False),
                          coldstart_config=ColdStartConfig(generator="mean"), verbose=False)
model.add_items(["a brand new kettle"], ["new-1"])
print("trained", len(model))
'''
    run = subprocess.run([sys.executable, "-c", train], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 3 and all("pip install 'xrmeta[train]'" in line for line in lines[:2]), lines
    assert "title trust" in lines[0] and lines[2] == "trained 201"


def test_the_learned_generator_is_registered_like_the_hand_made_ones(learned, tmp_path):
    assert set(GENERATORS) == {"learned", "mean", "weighted", "self", "mean_self"}
    assert GENERATORS["learned"] is L.LearnedGenerator and GENERATORS["learned"].trained
    assert not any(GENERATORS[n].trained for n in ("mean", "weighted", "self", "mean_self"))
    assert isinstance(learned.generator, GENERATORS["learned"])
    with pytest.raises(ValueError, match="unknown generator"):
        ColdStartConfig(generator="best").validate()


def test_matched_bias_shift_centres_new_items_on_trained_ones():
    from xrmeta.coldstart.train_learned import _Pairs, _floor, _matched_shift

    rng = np.random.default_rng(0)
    n = 400
    item = np.where(np.arange(n) % 2 == 0, rng.integers(0, 50, n), -1)  # half proxies, half trained competitors
    label = (rng.random(n) < 0.5).astype(np.float32)
    scores = np.where(item >= 0, rng.normal(-3.0, 1.0, n), rng.normal(1.0, 1.0, n)).astype(np.float32)
    empty = np.zeros((n, 0), np.float32)
    pairs = _Pairs(np.arange(n) // 4, item, label, empty, empty, np.zeros(n, np.float32), np.zeros(n, np.float32))
    shift = _matched_shift(scores, pairs, 0)
    gen, rel = item >= 0, label > 0
    assert np.isclose(np.median(scores[gen & rel] + shift), np.median(scores[~gen & rel]))
    assert shift >= _floor(scores, pairs, 0)
    no_trained = _Pairs(pairs.query, np.abs(item), label, empty, empty, pairs.fixed, pairs.log_path)
    assert _matched_shift(scores, no_trained, 0) == max(_floor(scores, no_trained, 0), 0.0)


def test_bias_calibration_is_checked():
    with pytest.raises(L.GeneratorError, match="bias_calibration"):
        L.LearnedConfig(bias_calibration="median").validate()
