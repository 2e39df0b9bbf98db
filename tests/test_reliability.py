"""Reliability: queries concurrent with inserts and removals, crash-safe saves, the item log."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

from xrmeta import persist
from xrmeta.catalog import Catalog
from xrmeta.model import XRMetaModel

from .conftest import assert_unchanged, search_scores, snapshot

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_dir(saved_dir, tmp_path):
    """A private copy of the saved session model."""
    folder = tmp_path / "model"
    shutil.copytree(saved_dir, folder)
    return folder


def made_up_titles(novel_titles: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """Titles of 3-6 words drawn from the novel titles (so they share n-grams with the vocabulary)."""
    words = [w for t in novel_titles for w in t.split()]
    return [" ".join(rng.choice(words, size=rng.integers(3, 7))) for _ in range(n)]


def answers(model: XRMetaModel, queries: list[str]):
    return model.predict(queries, k=10, beam_size=5)


def assert_same_answers(a, b) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# ---------------------------------------------------------------- concurrency
def exact_scores(model: XRMetaModel, x, slots: np.ndarray, beam: int) -> np.ndarray:
    """Scores of the given slots for one query row, recomputed from the final catalogue with scipy
    (`conftest.search_scores`), independent of the search kernel."""
    return search_scores(model.catalog, x, model.upper.beams(x, beam, 1))[0, slots]


def test_queries_in_four_threads_while_a_thread_inserts_and_removes(model_dir, novel, test_queries):
    """>= 10 s: 4 query threads, 1 writer (inserting batches, removing trained and inserted items) on a logging
    model. Every answer must hold only items fully present (scores equal to the final weights' scores) and never
    an item removed before the query started; every acknowledged insert must be there at the end, and the log
    must rebuild exactly the same catalogue."""
    model = XRMetaModel.load(model_dir, log=True)
    model.configs.coldstart.compact_at = None  # the checks below map early answers' slots with the final catalogue
    queries = test_queries[:300] + novel[0]
    X = model.featurizer.transform(queries)
    trained_ids = list(model.catalog.slot_of)
    to_delist = list(np.random.default_rng(2).permutation(trained_ids))
    first_buffer = model.catalog.w_val.buf
    stop = threading.Event()
    errors, acked, removed = [], [], []
    samples, counts = [[] for _ in range(4)], [0] * 4

    def guarded(name, fn):
        def run():
            try:
                fn()
            except BaseException:
                errors.append(f"{name}: {traceback.format_exc()}")
                stop.set()
        return threading.Thread(target=run, name=name)

    def writer():
        rng = np.random.default_rng(1)
        batch = 0
        while not stop.is_set():
            n = int(rng.integers(1, 40))
            ids = [f"c{batch}-{i}" for i in range(n)]
            model.add_items(made_up_titles(novel[0], n, rng), ids, threads=1)
            acked.extend(ids)  # acknowledged: add_items returned
            if batch % 3 == 2 and to_delist:
                gone = set(removed)
                alive = [i for i in acked[-200:] if i not in gone]
                victims = [str(i) for i in rng.choice(alive, size=2, replace=False)] + [to_delist.pop()]
                model.remove_items(victims)
                removed.extend(victims)
            batch += 1

    def reader(t):
        rng = np.random.default_rng(100 + t)
        while not stop.is_set():
            gone = set(removed)  # removals acknowledged before this query starts
            rows = np.sort(rng.choice(X.shape[0], size=8, replace=False))
            subset = ("all", "inserted", "observed")[int(rng.integers(3))]
            if t == 3:  # from the texts: the featurizer is shared with the writer as well
                ids, scores = model.predict([queries[r] for r in rows], k=10, beam_size=5, subset=subset)
                found = set(ids.ravel()) - {""}
            else:
                slots, scores, slot_ids = model._search(X[rows], k=10, beam_size=5, subset=subset)
                found = {slot_ids[s] for s in slots.ravel() if s >= 0}
                samples[t].append((rows, slots, scores))
            assert not found & gone, f"removed items returned: {found & gone}"
            assert all((np.diff(row[row > -np.inf]) <= 0).all() for row in scores)  # -inf pads
            counts[t] += 1

    threads = [guarded("writer", writer)] + [guarded(f"reader{t}", lambda t=t: reader(t)) for t in range(4)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.1)
    stop.set()
    for th in threads:
        th.join(timeout=60)
    assert not errors, "\n".join(errors)
    assert all(not th.is_alive() for th in threads)

    assert len(acked) >= 500 and min(counts) >= 20, (len(acked), counts)
    assert model.catalog.w_val.buf is not first_buffer  # buffers were reallocated while queries ran
    assert set(model.catalog.slot_of) == (set(trained_ids) | set(acked)) - set(removed)
    checked = 0
    for rows, slots, scores in (s for per_thread in samples for s in per_thread[::5]):
        for i, row in enumerate(rows):
            hit = slots[i] >= 0
            want = exact_scores(model, X[row], slots[i][hit], beam=5)
            np.testing.assert_allclose(scores[i][hit], want, rtol=1e-4, atol=1e-7)
            checked += int(hit.sum())
    assert checked > 1000

    state = snapshot(model.catalog)
    model.log.close()
    assert_unchanged(XRMetaModel.load(model_dir).catalog, state)  # snapshot + log replay = what was served


# ---------------------------------------------------------------- crash during save
# a child script's lines that make each durable step (fsync, rename) announce itself and wait for the parent
PAUSE_AT_DURABLE_STEPS = r"""
def pausing(name, fn):  # announce each durable step, then wait for the parent: it answers or kills us here
    def step(*args):
        print(name, *args, flush=True)
        sys.stdin.readline()
        return fn(*args)
    return step

persist.fsync_path = pausing("fsync", persist.fsync_path)
os.rename = pausing("rename", os.rename)
"""

SAVE_CHILD = r"""
import os, sys
from xrmeta import persist
from xrmeta.catalog import Catalog
from xrmeta.model import XRMetaModel

folder, items = sys.argv[1], sys.argv[2]
titles = open(items, encoding="utf-8").read().split("\n")[:-1]
model = XRMetaModel.load(folder)
model.add_items(titles, [f"new{i}" for i in range(len(titles))])
""" + PAUSE_AT_DURABLE_STEPS + r"""
model.save(folder)
print("saved", flush=True)
"""


def child(script: str, *args, tmp_path: Path) -> subprocess.Popen:
    path = tmp_path / "child.py"
    path.write_text(script)
    path_ = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])  # this checkout's xrmeta
    env = dict(os.environ, NUMBA_NUM_THREADS="1", PYTHONPATH=path_)
    return subprocess.Popen([sys.executable, str(path), *map(str, args)], cwd=REPO, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def kill_at(proc: subprocess.Popen, at) -> list[str]:
    """Let the child go step by step; SIGKILL it when a step satisfies at(words). Returns the steps seen."""
    seen = []
    for line in proc.stdout:
        seen.append(line.split())
        if at(seen[-1]):
            proc.kill()
            proc.wait(timeout=30)
            return seen
        proc.stdin.write("\n")
        proc.stdin.flush()
    raise AssertionError(f"the child ended (rc {proc.wait()}) before the kill point; steps: {seen}")


KILL_POINTS = {  # (is this step, given the model's parent directory, the kill point; is the new model in place)
    # all files written, none fsync'd or renamed: the previous model is untouched
    "writing": (lambda step, parent: step[0] == "fsync", False),
    # the previous model already moved aside to .model.old, the new one not yet in place: load must roll back
    "between-renames": (lambda step, parent: step[0] == "rename" and ".model.tmp-" in step[1], False),
    # right after the commit rename (the parent directory's fsync): .model.old is still there
    "committed": (lambda step, parent: step == ["fsync", str(parent)], True),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_during_save_leaves_a_loadable_model(model_dir, novel, test_queries, tmp_path, point):
    at, committed = KILL_POINTS[point]
    queries = novel[0][:50] + test_queries[:100]
    original = XRMetaModel.load(model_dir)
    before, state = answers(original, queries), snapshot(original.catalog)
    items = tmp_path / "titles.txt"
    items.write_text("".join(f"{t}\n" for t in novel[0]), encoding="utf-8")

    seen = kill_at(child(SAVE_CHILD, model_dir, items, tmp_path=tmp_path), lambda step: at(step, tmp_path))
    assert [w[0] for w in seen].count("rename") == {"writing": 0, "between-renames": 2, "committed": 2}[point]

    reloaded = XRMetaModel.load(model_dir)
    if committed:  # the save went through: the new model, with every insert, exactly as the child built it
        original.add_items(novel[0], [f"new{i}" for i in range(len(novel[0]))])
        assert_unchanged(reloaded.catalog, snapshot(original.catalog))
    else:  # the previous model, answering exactly as before
        assert_unchanged(reloaded.catalog, state)
        assert_same_answers(answers(reloaded, queries), before)
    reloaded.save(model_dir)  # a later save clears what the crash left behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".model")) == []
    assert_unchanged(XRMetaModel.load(model_dir).catalog, snapshot(reloaded.catalog))


# ---------------------------------------------------------------- crash without save: the log
LOG_CHILD = r"""
import sys
from xrmeta.model import XRMetaModel

folder, items = sys.argv[1], sys.argv[2]
titles = open(items, encoding="utf-8").read().split("\n")[:-1]
model = XRMetaModel.load(folder, log=True)
batch = 0
while True:  # until killed
    model.add_items([titles[(5 * batch + i) % len(titles)] for i in range(5)], [f"b{batch}-{i}" for i in range(5)])
    print("added", batch, flush=True)
    if batch % 3 == 2:
        model.remove_items([f"b{batch - 1}-0"])
        print("removed", f"b{batch - 1}-0", flush=True)
    batch += 1
"""


def test_kill_without_save_keeps_every_logged_insert(model_dir, saved_dir, novel, tmp_path):
    items = tmp_path / "titles.txt"
    items.write_text("".join(f"{t}\n" for t in novel[0]), encoding="utf-8")
    proc = child(LOG_CHILD, model_dir, items, tmp_path=tmp_path)
    lines = []
    for line in proc.stdout:  # kill it while it keeps inserting, wherever it is
        lines.append(line.split())
        if len(lines) == 40:
            proc.kill()
            break
    proc.wait(timeout=30)
    lines += [line.split() for line in proc.stdout]  # printed before the kill: acknowledged too
    added = [int(w[1]) for w in lines if w[0] == "added"]
    removed = {w[1] for w in lines if w[0] == "removed"}
    assert added == list(range(len(added))) and len(added) >= 30

    model = XRMetaModel.load(model_dir)
    present = [b for b in range(added[-1] + 2) if f"b{b}-1" in model.catalog.slot_of]
    assert present[: len(added)] == added  # every acknowledged batch; at most the unacknowledged next one
    assert len(present) in (len(added), len(added) + 1)
    assert not removed & set(model.catalog.slot_of)
    # batches are all-or-nothing, and the replay rebuilt exactly what the child had built
    reference = XRMetaModel.load(saved_dir)
    for b in present:
        reference.add_items([novel[0][(5 * b + i) % len(novel[0])] for i in range(5)], [f"b{b}-{i}" for i in range(5)])
    gone = [f"b{b}-0" for b in present if f"b{b}-0" not in model.catalog.slot_of]
    assert set(gone) >= removed
    reference.remove_items(gone)
    assert_unchanged(model.catalog, snapshot(reference.catalog))


# ---------------------------------------------------------------- the log, in process
def logged_model(folder: Path, novel, batches: int) -> XRMetaModel:
    model = XRMetaModel.load(folder, log=True)
    for b in range(batches):
        model.add_items(novel[0][3 * b : 3 * b + 3], [f"L{b}-{i}" for i in range(3)])
    return model


def test_torn_last_record_is_ignored_and_cut(model_dir, novel):
    model = logged_model(model_dir, novel, 2)
    state = snapshot(model.catalog)
    model.log.close()
    log = model_dir / persist.LOG
    good = log.read_bytes()
    log.write_bytes(good + b'0badc0de {"op":"add","slot":1802,"ids":["torn"],"tit')  # a crash mid-append
    assert_unchanged(XRMetaModel.load(model_dir).catalog, state)
    assert log.read_bytes().endswith(b"tit")  # a plain load reads; it does not repair
    again = XRMetaModel.load(model_dir, log=True)  # the writer cuts the torn tail before appending
    assert log.read_bytes() == good
    again.add_items([novel[0][10]], ["after-torn"])
    again.log.close()
    assert "after-torn" in XRMetaModel.load(model_dir).catalog.slot_of


@pytest.mark.parametrize("damage,match", [
    (lambda b: b.replace(b'"L0-1"', b'"L0-X"', 1), "line 1: corrupted record"),
    (lambda b: b.split(b"\n", 1)[1], "record 1: cannot replay .*written at slot 1803, the snapshot has 1800"),
    (lambda b: b + b'00000000 {"op":"add"}\n', r"line 3: corrupted record"),
], ids=["bit-flip", "not-this-snapshot", "bad-checksum"])
def test_damaged_log_names_the_file_and_record(model_dir, novel, damage, match):
    logged_model(model_dir, novel, 2).log.close()
    log = model_dir / persist.LOG
    log.write_bytes(damage(log.read_bytes()))
    with pytest.raises(persist.PersistError, match=f"{re.escape(str(log))}.*{match}"):
        XRMetaModel.load(model_dir)


def test_save_in_place_starts_a_new_log_and_keeps_logging(model_dir, novel):
    model = logged_model(model_dir, novel, 2)
    model.save(model_dir)
    assert (model_dir / persist.LOG).read_bytes() == b""  # the snapshot holds both batches
    assert json.loads((model_dir / "config.json").read_text())["info"]["n_inserted"] == 6
    model.remove_items(["L0-0"])
    model.add_items([novel[0][20]], ["after-save"])
    state = snapshot(model.catalog)
    assert len(persist.read_log(model_dir)) == 2
    model.log.close()
    assert_unchanged(XRMetaModel.load(model_dir).catalog, state)


def test_one_writer_per_directory(model_dir, novel, tmp_path):
    model = XRMetaModel.load(model_dir, log=True)
    with pytest.raises(persist.PersistError, match="locked by another writer"):
        XRMetaModel.load(model_dir, log=True)
    reader = XRMetaModel.load(model_dir)  # reading is fine
    before = persist.manifest(model_dir)
    with pytest.raises(persist.PersistError, match="in use by a process that logs to it"):
        reader.save(model_dir)
    assert persist.manifest(model_dir) == before
    reader.save(tmp_path / "copy")  # elsewhere is fine
    model.log.close()
    reader.save(model_dir)  # and so is in place, once the writer is gone


# ---------------------------------------------------------------- manifest and versions
def test_every_saved_file_is_in_the_manifest(model_dir):
    files = json.loads((model_dir / "config.json").read_text())["files"]
    on_disk = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    assert set(files) == on_disk - {"config.json"}
    assert {"catalog.npz", "catalog_ids.txt", "selector.npz", "featurizer/featurizer.json"} <= set(files)
    assert any(f.startswith("upper/") for f in files)
    assert not any(f.startswith("xlinear/") for f in files)  # the PECOS copy is opt-in (train(keep_pecos=True))


def test_load_during_a_concurrent_save_is_refused(model_dir, novel, monkeypatch):
    """A save that swaps the directory while another model loads it must not yield a mix of the two snapshots."""
    writer = XRMetaModel.load(model_dir)
    writer.add_items(novel[0][:5], [f"w{i}" for i in range(5)])
    real_load = Catalog.load

    def load_then_save(*args):
        catalog = real_load(*args)
        writer.save(model_dir)  # lands after the reader has read the old catalogue, before it reads the rest
        return catalog

    monkeypatch.setattr(Catalog, "load", load_then_save)
    with pytest.raises(persist.PersistError, match="replaced by a concurrent save while loading"):
        XRMetaModel.load(model_dir)
    monkeypatch.undo()
    assert_unchanged(XRMetaModel.load(model_dir).catalog, snapshot(writer.catalog))


def test_interrupted_swap_is_rolled_back_on_load(model_dir, tmp_path):
    state = snapshot(XRMetaModel.load(model_dir).catalog)
    os.rename(model_dir, tmp_path / ".model.old")  # as if killed between the two renames of a save
    assert_unchanged(XRMetaModel.load(model_dir).catalog, state)
    assert model_dir.is_dir() and not (tmp_path / ".model.old").exists()


def test_legacy_version_1_directory_still_loads(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    config["format_version"] = 1
    del config["files"]
    (model_dir / "config.json").write_text(json.dumps(config))
    state = snapshot(XRMetaModel.load(model_dir).catalog)
    model = XRMetaModel.load(model_dir)
    model.save(model_dir)  # and is upgraded by the next save
    assert json.loads((model_dir / "config.json").read_text())["format_version"] == 2
    assert_unchanged(XRMetaModel.load(model_dir).catalog, state)
