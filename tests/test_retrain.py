"""Retrain and swap without downtime: xrmeta-retrain, the staging snapshot, XRMetaModel.reload."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

from xrmeta import modeldir, persist, retraining, trainset
from xrmeta.cli import retrain as retrain_cli
from xrmeta.data import make_synthetic, make_zero_shot_split
from xrmeta.errors import ModelError
from xrmeta.model import ColdStartConfig, XRMetaModel
from xrmeta.tree import TreeConfig

from .conftest import dir_digest
from .test_reliability import PAUSE_AT_DURABLE_STEPS, child, kill_at

SUFFIXES = [" – Édition Spéciale (Ø 13 mm)", ", Noir/Rouge", " pour Façade & Toit", ""]


@pytest.fixture(scope="module")
def small():
    """(data, split, novel (titles, ids)): 540 observed items, 60 novel ones with accented, punctuated titles."""
    data = make_synthetic(n_items=600, n_queries=1500, seed=0)
    split = make_zero_shot_split(data, seed=0)
    titles = [data.item_texts[j] + SUFFIXES[n % 4] for n, j in enumerate(split.novel)]
    return data, split, (titles, [data.item_ids[j] for j in split.novel])


def train_small(small, **tree) -> XRMetaModel:
    """A tiny model, no torch (seconds): the retrain uses the same configs."""
    data, split, _ = small
    return XRMetaModel.train(
        [data.query_texts[i] for i in split.train_queries], split.Y_train,
        [data.item_texts[j] for j in split.observed], [data.item_ids[j] for j in split.observed],
        tree_config=TreeConfig(max_leaf_size=20, observed_titles=False, **tree),
        coldstart_config=ColdStartConfig(generator="mean_self"), verbose=False, threads=1)


@pytest.fixture(scope="module")
def base(small):
    model = train_small(small)
    model.add_items(*small[2])
    model.remove_items([small[2][1][0], model.catalog.ids[0]])  # one inserted, one trained item delisted
    return model


@pytest.fixture
def model_dir(base, tmp_path):
    folder = tmp_path / "model"
    base.save(folder)
    return folder


def write_clicks(path: Path, clicks) -> Path:
    path.write_text("".join(f"{q}\t{i}\n" for q, i in clicks), encoding="utf-8")
    return path


def new_clicks(small, n=8) -> list[tuple[str, str]]:
    """Clicks on inserted items: queries made of words of their titles (several queries each)."""
    titles, ids = small[2]
    return [(" ".join(titles[j].split()[r:r + 2]).title() + " ?", ids[j]) for j in range(1, n + 1) for r in (0, 1)]


def answers(model, queries):
    return model.predict(queries, k=10, beam_size=5)


# ---------------------------------------------------------------- retrain
def test_model_dir_keeps_what_a_retrain_needs(model_dir, base, small):
    ts = trainset.read(model_dir / trainset.DIR)
    data, split, (titles, ids) = small
    assert ts.item_ids == [data.item_ids[j] for j in split.observed]
    assert ts.item_titles == [data.item_texts[j] for j in split.observed]
    assert (ts.Y != split.Y_train).nnz == 0 and len(ts.query_texts) == split.Y_train.shape[0]
    kept = json.loads((model_dir / modeldir.TITLES).read_text(encoding="utf-8"))
    assert kept == dict(zip(ids[1:], titles[1:]))  # live inserted items only, accents intact


@pytest.mark.parametrize("title_weight", [1.0, 0.0])
def test_retrain_cli_makes_inserted_items_trained(small, tmp_path, capsys, title_weight):
    model = train_small(small, title_weight=title_weight)
    model.add_items(*small[2])
    removed = [small[2][1][0], model.catalog.ids[0]]
    model.remove_items(removed)
    folder = tmp_path / "model"
    model.save(folder)
    clicks = new_clicks(small)
    rc = retrain_cli.main(["--model-dir", str(folder), "--clicks", str(write_clicks(tmp_path / "c.tsv", clicks)),
                           "--threads", "1", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    new = XRMetaModel.load(folder)
    assert set(new.catalog.slot_of) == set(model.catalog.slot_of)  # every live item, nothing removed comes back
    slot = new.catalog.slot_of
    clicked = {i for _, i in clicks}
    assert all(slot[i] < new.catalog.n_base for i in clicked)  # clicked inserted items are trained now
    clickless = [i for i in small[2][1][1:] if i not in clicked]
    # with titles in training every live item is trained; with clicks only the clickless ones are cold-started
    assert all((slot[i] < new.catalog.n_base) == (title_weight > 0) for i in clickless)
    assert new.configs.tree == model.configs.tree and new.configs.featurizer == model.configs.featurizer
    ids, _ = answers(new, [q for q, _ in clicks])
    assert np.mean([i in row for (_, i), row in zip(clicks, ids)]) >= 0.8  # the new clicks are learnt
    ts = trainset.read(folder / trainset.DIR)
    assert {q for q, _ in clicks} <= set(ts.query_texts)  # a later retrain keeps these clicks
    assert not modeldir.staging_dir(folder).exists()


def test_retrain_trains_on_the_feedback_clicks(model_dir, small, tmp_path):
    served = XRMetaModel.load(model_dir, log=True)
    titles, ids = small[2]
    trained = served.catalog.ids[5]
    # clicks whose queries are other items' titles: the clicked items (inserted and one trained) must move
    fed = [(titles[j + 1], ids[j]) for j in range(1, 7)] + [(titles[1], trained)]
    n_slots = served.catalog.n_slots
    served.add_feedback([q for q, _ in fed], [i for _, i in fed])
    assert served.catalog.n_slots > n_slots + 3 and served.catalog.slot_of[trained] >= served.catalog.n_base
    served.log.close()
    new, _ = retraining.retrain(model_dir, new_clicks(small)[6:], threads=1, verbose=False)
    assert not new._state.clicks  # trained on: a later retrain finds them in the training set
    assert set(new.catalog.slot_of) == set(served.catalog.slot_of)
    clicks = fed + new_clicks(small)[6:]
    assert all(new.catalog.slot_of[i] < new.catalog.n_base for _, i in clicks)
    out = tmp_path / "retrained"
    new.save(out)
    kept = trainset.read(out / trainset.DIR)
    assert {q for q, _ in fed} <= set(kept.query_texts)


def test_old_model_dir_without_training_data(model_dir, small, tmp_path, capsys):
    shutil.rmtree(model_dir / trainset.DIR)
    config = json.loads((model_dir / "config.json").read_text())
    config["files"] = {k: v for k, v in config["files"].items() if not k.startswith("train/")}
    (model_dir / "config.json").write_text(json.dumps(config))  # as an xrmeta before retraining saved it
    before = dir_digest(model_dir)
    rc = retrain_cli.main(["--model-dir", str(model_dir), "--clicks",
                           str(write_clicks(tmp_path / "c.tsv", new_clicks(small))), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "train: missing" in err and "--dataset" in err
    assert dir_digest(model_dir) == before


@pytest.mark.parametrize("content, match", [
    ("Perceuse sans fil\n", "line 1: expected 'query<TAB>item_id', found 1 field"),
    ("ok query\t{live}\nPerceuse\t\n", "line 2: empty item id"),
    ("ok\t{live}\nq\ta\tb\n", "line 2: expected 'query<TAB>item_id', found 3 field"),
    ("  \t{live}\n", "line 1: empty or non-string query"),
    ("\n\n", "no clicks"),
    ("Vis à bois\tno-such-id\nok\t{removed}\n", "2 clicked ids are not live items .*'no-such-id'"),
])
def test_bad_click_files_write_nothing(model_dir, base, small, tmp_path, capsys, content, match):
    live, removed = small[2][1][1], small[2][1][0]
    clicks = tmp_path / "c.tsv"
    clicks.write_text(content.format(live=live, removed=removed), encoding="utf-8")
    before = dir_digest(model_dir)
    assert retrain_cli.main(["--model-dir", str(model_dir), "--clicks", str(clicks), "--quiet"]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert dir_digest(model_dir) == before and not modeldir.staging_dir(model_dir).exists()


def test_foreign_model_dir(tmp_path, small, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.jpg").write_bytes(b"\xff\xd8")
    rc = retrain_cli.main(["--model-dir", str(foreign), "--clicks",
                           str(write_clicks(tmp_path / "c.tsv", new_clicks(small))), "--quiet"])
    assert rc == 2 and "not an xrmeta model directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tsv", "photos"]


# ---------------------------------------------------------------- staging and reload
def test_changes_during_retrain_are_folded_and_replayed(model_dir, small, tmp_path, monkeypatch, capsys):
    """A serving process logs inserts and removals while the retrain trains and after it staged its model: the
    retrain folds in the first, reload replays the rest, and the installed directory holds all of them."""
    serving = XRMetaModel.load(model_dir, log=True)
    titles = [t + " (lot de 2)" for t in small[2][0][10:20]]
    real_train = XRMetaModel.train.__func__

    def train_while_serving(cls, *args, **kwargs):
        serving.add_items(titles[:5], [f"during-{i}" for i in range(5)])
        serving.remove_items([small[2][1][5]])
        return real_train(cls, *args, **kwargs)

    monkeypatch.setattr(XRMetaModel, "train", classmethod(train_while_serving))
    clicks = new_clicks(small)
    rc = retrain_cli.main(["--model-dir", str(model_dir), "--clicks",
                           str(write_clicks(tmp_path / "c.tsv", clicks)), "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "reload() installs it" in err
    staging = modeldir.staging_dir(model_dir)
    assert json.loads((staging / "config.json").read_text())["follows"]["log_records"] == 2
    serving.add_items(titles[5:], [f"after-{i}" for i in range(5)])  # after the staging was written
    serving.remove_items(["during-0", small[2][1][6]])
    want = set(serving.catalog.slot_of)
    old_base = serving.catalog.n_base

    assert serving.reload() is True
    assert set(serving.catalog.slot_of) == want and serving.catalog.n_base > old_base
    assert all(serving.catalog.slot_of[i] < serving.catalog.n_base for _, i in clicks if i in serving)
    assert small[2][1][6] not in serving  # clicked, trained by the retrain, then removed: the removal holds
    assert not staging.exists() and not any(p.name.startswith(".model") for p in tmp_path.iterdir())
    serving.add_items([titles[0] + " bis"], ["later"])  # logged to the new directory
    assert serving.reload() is False  # nothing new
    serving.log.close()
    again = XRMetaModel.load(model_dir)
    assert set(again.catalog.slot_of) == want | {"later"}
    np.testing.assert_array_equal(answers(again, titles)[0], answers(serving, titles)[0])


def test_reload_after_an_offline_retrain(model_dir, small, tmp_path):
    serving = XRMetaModel.load(model_dir)  # no log: the retrain replaces the directory itself
    assert serving.reload() is False
    assert retrain_cli.main(["--model-dir", str(model_dir), "--clicks",
                             str(write_clicks(tmp_path / "c.tsv", new_clicks(small))), "--quiet"]) == 0
    before = serving.catalog.n_base
    stop = retraining.watch(serving, 0.02)  # reloads from a thread
    try:
        for _ in range(500):
            if serving.catalog.n_base > before:
                break
            time.sleep(0.02)
    finally:
        stop.set()
    assert serving.catalog.n_base > before and serving.workdir == model_dir.resolve()
    assert serving.reload() is False


def test_broken_or_foreign_staging_keeps_the_old_model(model_dir, small, tmp_path):
    serving = XRMetaModel.load(model_dir, log=True)
    queries = [q for q, _ in new_clicks(small)]
    before, digest = answers(serving, queries), dir_digest(model_dir)
    model, follows = retraining.retrain(model_dir, new_clicks(small), threads=1, verbose=False)
    staging = retraining.write(model, model_dir, follows)
    with open(staging / "catalog.npz", "r+b") as f:  # truncated
        f.truncate(100)
    with pytest.raises(persist.PersistError, match="catalog.npz: 100 bytes"):
        serving.reload()
    shutil.rmtree(staging)
    modeldir.write(model, staging, follows=dict(follows, snapshot="0" * 32))  # follows another snapshot
    with pytest.raises(ModelError, match="does not follow the snapshot this model serves"):
        serving.reload()
    for got, want in zip(answers(serving, queries), before):
        np.testing.assert_array_equal(got, want)
    serving.add_items([small[2][0][3] + " neuf"], ["still-logging"])  # the old log still works
    serving.log.close()
    assert "still-logging" in XRMetaModel.load(model_dir)
    assert dir_digest(model_dir).keys() - {persist.LOG} == digest.keys() - {persist.LOG}


def test_queries_in_four_threads_while_reloading(model_dir, small, tmp_path):
    """4 threads keep querying while the main thread retrains and reloads 3 times: no error, and every answer
    is exactly the answer of one of the models (never a mix of two)."""
    serving = XRMetaModel.load(model_dir, log=True)
    data, split, _ = small
    queries = [data.query_texts[i] for i in split.generalized_set.queries[:40]] + [q for q, _ in new_clicks(small)]
    versions = [answers(serving, queries)]
    stop, errors, seen = threading.Event(), [], []

    def reader(t):
        rng = np.random.default_rng(t)
        try:
            while not stop.is_set():
                q = int(rng.integers(len(queries)))
                ids, scores = serving.predict([queries[q]], k=10, beam_size=5)
                seen.append((q, ids[0], scores[0]))
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    try:
        for r in range(3):
            clicks = new_clicks(small, n=3 + 4 * r)
            model, follows = retraining.retrain(model_dir, clicks, threads=1, verbose=False)
            staging = retraining.write(model, model_dir, follows)
            versions.append(answers(XRMetaModel.load(staging), queries))
            assert serving.reload() is True
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=60)
    assert not errors, errors[0]
    assert len(seen) >= 100
    assert len({v[0].tobytes() for v in versions}) == 4  # the models really differ
    served = set()
    for q, ids, scores in seen:
        match = [n for n, v in enumerate(versions) if (ids == v[0][q]).all() and (scores == v[1][q]).all()]
        assert match, f"an answer of no single model: {queries[q]!r}"
        served.add(match[0])
    assert len(served) >= 2  # the queries really ran across reloads
    serving.log.close()


# ---------------------------------------------------------------- crashes
RELOAD_CHILD = r"""
import os, sys
from xrmeta import persist
from xrmeta.model import XRMetaModel

folder = sys.argv[1]
model = XRMetaModel.load(folder, log=True)
model.add_items(["Lampe de poche LED – 300 lm (étanche)"], ["logged-after-cut"])
""" + PAUSE_AT_DURABLE_STEPS + r"""
model.reload()
print("reloaded", flush=True)
"""

KILL_POINTS = {  # which step of the install is the kill point; is the new model in place after it
    "staging-log": (lambda step, folder: step[0] == "fsync", False),  # writing the staging's log
    "between-renames": (lambda step, folder: step[0] == "rename" and step[1].endswith(".next"), False),
    "committed": (lambda step, folder: step == ["fsync", str(folder.parent)], True),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_during_reload_leaves_the_old_or_the_new_model(model_dir, small, tmp_path, point):
    at, committed = KILL_POINTS[point]
    folder = model_dir.resolve()
    model, follows = retraining.retrain(folder, new_clicks(small), threads=1, verbose=False)
    retraining.write(model, folder, follows, modeldir.staging_dir(folder))  # as if a process served folder
    old = XRMetaModel.load(folder)
    seen = kill_at(child(RELOAD_CHILD, folder, tmp_path=tmp_path), lambda step: at(step, folder))
    assert [s[0] for s in seen].count("rename") == {"staging-log": 0, "between-renames": 2, "committed": 2}[point]
    after = XRMetaModel.load(folder)
    want = (model if committed else old)
    assert "logged-after-cut" in after  # acknowledged before the crash: in either state
    assert after.catalog.n_base == want.catalog.n_base
    assert set(after.catalog.slot_of) == set(want.catalog.slot_of) | {"logged-after-cut"}
    assert after.catalog.ids[:after.catalog.n_base] == want.catalog.ids[:want.catalog.n_base]


def test_kill_while_writing_the_staging_leaves_the_model(model_dir, small, tmp_path):
    script = r"""
import sys
from xrmeta import persist, retraining
persist.fsync_tree = lambda root: (print("fsync", root, flush=True), sys.stdin.readline())
model, follows = retraining.retrain(sys.argv[1], [("Vis à bois", sys.argv[2])], threads=1, verbose=False)
retraining.write(model, sys.argv[1], follows, sys.argv[1] + ".next")
"""
    digest = dir_digest(model_dir)
    kill_at(child(script, model_dir, small[2][1][1], tmp_path=tmp_path), lambda step: step[0] == "fsync")
    assert dir_digest(model_dir) == digest and not modeldir.staging_dir(model_dir).exists()
    serving = XRMetaModel.load(model_dir, log=True)
    assert serving.reload() is False  # the half-written staging is not a staging snapshot
    serving.log.close()
