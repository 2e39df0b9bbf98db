"""One-shot feedback (`XRMetaModel.add_feedback`): a revealed click moves the clicked item's classifier at once;
bad input changes nothing; the log replays it after a kill; queries run during it."""

from __future__ import annotations

import re
import shutil
import threading

import numpy as np
import pytest
import scipy.sparse as smat

from xrmeta import persist
from xrmeta.cli import add_feedback as feedback_cli
from xrmeta.model import ColdStartConfig, ModelError, XRMetaModel

from .conftest import assert_unchanged, clone, dir_digest, snapshot
from .test_reliability import child


@pytest.fixture(scope="module")
def clicks(data, split):
    """(query texts, item ids): for each novel item with a test query, its first one (mixed case kept)."""
    Y = split.zero_shot_set.Y.tocsc()
    queries, ids = [], []
    for j in split.novel:
        rows = Y.indices[Y.indptr[j] : Y.indptr[j + 1]]
        if len(rows):
            queries.append(data.query_texts[split.zero_shot_set.queries[rows[0]]])
            ids.append(data.item_ids[j])
    return queries, ids


def ranks(model: XRMetaModel, queries, ids, k: int = 50) -> np.ndarray:
    """Rank of each clicked item for its query (k when absent from the top k)."""
    found = model.predict(queries, k=k).ids
    return np.array([list(row).index(i) if i in row else k for row, i in zip(found, ids)])


def test_a_click_lifts_the_item_for_its_query(with_novel, clicks):
    model = clone(with_novel)
    before = ranks(model, *clicks)
    n, n_slots = len(model), model.catalog.n_slots
    model.add_feedback(*clicks)
    after = ranks(model, *clicks)
    assert len(model) == n and all(i in model for i in clicks[1])
    assert (after <= before).mean() > 0.95  # a click never pushes its own item down (beyond rare ties)
    reached = before < 50
    assert (after == 0).sum() > (before == 0).sum() and after[reached].mean() < before[reached].mean()
    moved = model.catalog.n_slots - n_slots
    model.add_feedback(*clicks)  # items that now win their query do not move again (capped steps may)
    assert 0 < moved and model.catalog.n_slots - n_slots - moved < moved


def test_uncapped_the_clicked_item_wins_its_query_in_its_cluster(with_novel, clicks):
    model = clone(with_novel, feedback_step=1e6)  # the step never capped: exactly what beats the best rival
    queries, ids = clicks
    model.add_feedback(queries, ids)
    cat = model.catalog
    slots = np.array([cat.slot_of[i] for i in ids])
    X = model.featurizer.transform(queries, threads=1)
    beams = smat.csr_matrix((np.ones(len(ids), np.float32), cat.slot_cluster.view[slots], np.arange(len(ids) + 1)),
                            shape=(len(ids), cat.n_clusters))
    found, _ = cat.search_clusters(X, beams, 1)
    assert (found[:, 0] == slots).mean() > 0.95  # clicks on one cluster's items in one batch may undo each other


def test_each_item_is_served_once_and_by_its_new_classifier(with_novel, clicks):
    model = clone(with_novel)
    queries, ids = clicks
    model.add_feedback(queries[:20] + queries[:20], ids[:20] + ids[:20], weights=[1.0] * 20 + [0.5] * 20)
    found = model.predict(queries[:20], k=100).ids
    for row in found:
        real = [i for i in row if i]
        assert len(real) == len(set(real))  # the old slot is gone in the same state as the new one appears
    cat = model.catalog
    live_ids = [cat.ids[s] for s in np.flatnonzero(cat.slot_alive.view)]
    assert len(live_ids) == len(set(live_ids)) == len(model)
    assert model._state.clicks[-1] == (queries[19], ids[19], 0.5)


def test_a_trained_item_moves_to_the_inserted_layer(trained, data, split):
    model = clone(trained)
    Y = split.observed_set.Y.tocsc()
    for j in split.observed[:200]:  # the first clicked trained item that does not win its query yet
        if Y.indptr[j + 1] > Y.indptr[j]:
            query = data.query_texts[split.observed_set.queries[Y.indices[Y.indptr[j]]]].upper()
            item = data.item_ids[j]
            model.add_feedback([query], [item])
            if model.catalog.slot_of[item] >= model.catalog.n_base:
                break
    assert model.catalog.slot_of[item] >= model.catalog.n_base and item in model
    every = model.catalog.n_clusters  # a beam over every cluster: what the item scores, wherever it is
    assert item not in model.predict([query], k=100, beam_size=every, subset="observed").ids[0]
    assert item in model.predict([query], k=10, beam_size=every, subset="all").ids[0]
    n = len(model._state.clicks)
    model.remove_items([item])
    assert item not in model and len(model._state.clicks) < n


@pytest.mark.parametrize("queries, ids, weights, message", [
    (["Perceuse sans fil"], ["no-such-item"], None, "unknown or removed"),
    (["   "], None, None, "empty or non-string query"),
    ([None], None, None, "empty or non-string query"),
    (["Perceuse sans fil"], None, [0.0], "weights must be finite and > 0"),
    (["Perceuse sans fil"], None, [float("nan")], "weights must be finite and > 0"),
    (["Perceuse sans fil", "Scie"], None, None, "2 queries, 1 ids"),
    ("Perceuse sans fil", None, None, "not a single str"),
])
def test_bad_feedback_changes_nothing(saved_dir, novel, tmp_path, queries, ids, weights, message):
    folder = tmp_path / "model"
    shutil.copytree(saved_dir, folder)
    model = XRMetaModel.load(folder, log=True)
    model.add_items(novel[0][:3], novel[1][:3])
    before, log = snapshot(model.catalog), (folder / persist.LOG).read_bytes()
    ids = ids or [novel[1][0]]
    with pytest.raises(ModelError, match=message):
        model.add_feedback(queries, ids, weights)
    assert_unchanged(model.catalog, before)
    assert (folder / persist.LOG).read_bytes() == log and not model._state.clicks
    model.log.close()


def test_a_query_of_unknown_words_is_kept_and_moves_nothing(with_novel, novel):
    model = clone(with_novel)
    before = snapshot(model.catalog)
    model.add_feedback(["\t#@!", "Ǆǅǆ ǉǊ"], novel[1][:2])
    assert model.catalog.n_slots == len(before[1])  # no classifier moved
    assert [c[:2] for c in model._state.clicks] == [("\t#@!", novel[1][0]), ("Ǆǅǆ ǉǊ", novel[1][1])]


def test_removed_item_gets_no_feedback(with_novel, novel):
    model = clone(with_novel)
    model.remove_items([novel[1][0]])
    before = snapshot(model.catalog)
    with pytest.raises(ModelError, match="unknown or removed"):
        model.add_feedback(["anything"], [novel[1][0]])
    assert_unchanged(model.catalog, before)


def test_feedback_survives_save_load_and_compaction(saved_dir, novel, clicks, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved_dir, folder)
    model = XRMetaModel.load(folder, log=True)
    model.add_items(*novel)
    model.add_feedback(*clicks)
    queries = clicks[0]
    expected = model.predict(queries, k=10)
    model.log.close()
    replayed = XRMetaModel.load(folder)  # from the log
    assert_unchanged(replayed.catalog, snapshot(model.catalog))
    assert replayed._state.clicks == model._state.clicks
    replayed.compact()  # the replaced slots' storage goes; answers stay
    got = replayed.predict(queries, k=10)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-6)
    replayed.save(tmp_path / "saved")
    again = XRMetaModel.load(tmp_path / "saved")
    np.testing.assert_array_equal(again.predict(queries, k=10).ids, expected.ids)
    assert again._state.clicks == model._state.clicks


FEEDBACK_CHILD = r"""
import sys
from xrmeta.model import XRMetaModel

folder, clicks = sys.argv[1], sys.argv[2]
pairs = [line.split("\t") for line in open(clicks, encoding="utf-8").read().split("\n")[:-1]]
model = XRMetaModel.load(folder, log=True)
model.add_items([t for t, _ in pairs], [i for _, i in pairs])
print("inserted", flush=True)
for b in range(len(pairs)):  # one click per call, until killed
    model.add_feedback([pairs[b][0].upper()], [pairs[b][1]])
    print("clicked", b, flush=True)
"""


def test_kill_during_feedback_keeps_every_logged_click(saved_dir, novel, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved_dir, folder)
    pairs = list(zip(*novel))[:60]
    path = tmp_path / "clicks.tsv"
    path.write_text("".join(f"{t}\t{i}\n" for t, i in pairs), encoding="utf-8")
    proc = child(FEEDBACK_CHILD, folder, path, tmp_path=tmp_path)
    lines = []
    for line in proc.stdout:
        lines.append(line.split())
        if len(lines) == 25:
            proc.kill()
            break
    proc.wait(timeout=30)
    lines += [line.split() for line in proc.stdout]
    acked = [int(w[1]) for w in lines if w[0] == "clicked"]
    assert acked == list(range(len(acked))) and len(acked) >= 20

    model = XRMetaModel.load(folder)
    n = len(model._state.clicks)
    assert n in (len(acked), len(acked) + 1)  # every acknowledged click; at most the next one
    reference = XRMetaModel.load(saved_dir)
    reference.add_items([t for t, _ in pairs], [i for _, i in pairs])
    for t, i in pairs[:n]:
        reference.add_feedback([t.upper()], [i])
    assert_unchanged(model.catalog, snapshot(reference.catalog))


def test_queries_in_4_threads_during_feedback(with_novel, clicks):
    model = clone(with_novel)
    queries, ids = clicks
    live = set(model.catalog.slot_of)
    stop, errors, rounds = threading.Event(), [], [0]

    def query():
        try:
            while not stop.is_set():
                found = model.predict(queries, k=20, threads=1).ids
                for row in found:
                    real = [i for i in row if i]
                    assert len(real) == len(set(real)) and set(real) <= live
                rounds[0] += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    workers = [threading.Thread(target=query) for _ in range(4)]
    for w in workers:
        w.start()
    for b in range(0, len(queries), 4):
        model.add_feedback(queries[b : b + 4], ids[b : b + 4])
    stop.set()
    for w in workers:
        w.join()
    assert not errors and rounds[0] >= 4


def test_cli_takes_clicks_and_saves(saved_dir, novel, clicks, tmp_path, capsys):
    folder = tmp_path / "model"
    model = XRMetaModel.load(saved_dir)
    model.add_items(*novel)
    model.save(folder)
    path = tmp_path / "clicks.tsv"
    path.write_text("".join(f"  {q.title()} \t{i}\n" for q, i in zip(*clicks)) + "\n", encoding="utf-8")
    assert feedback_cli.main(["--model-dir", str(folder), "--clicks", str(path), "--batch-size", "7",
                              "--threads", "1"]) == 0
    assert f"took {len(clicks[1])} clicks" in capsys.readouterr().err
    saved = XRMetaModel.load(folder)
    assert [c[1] for c in saved._state.clicks] == clicks[1]
    model.add_feedback([q.title() for q in clicks[0]], clicks[1])  # the same clicks in one call
    queries = clicks[0][:30]
    np.testing.assert_array_equal(saved.predict(queries).ids[:, 0], model.predict(queries).ids[:, 0])


@pytest.mark.parametrize("content, match", [
    ("Perceuse sans fil\n", "line 1: expected 'query<TAB>item_id', found 1 field"),
    ("  \t{live}\n", "line 1: empty or non-string query"),
    ("Vis à bois\tno-such-id\n", "1 clicked ids are not live items .*'no-such-id'"),
    ("\n", "no clicks"),
])
def test_cli_bad_clicks_change_nothing(saved_dir, novel, tmp_path, capsys, content, match):
    folder = tmp_path / "model"
    shutil.copytree(saved_dir, folder)
    path = tmp_path / "clicks.tsv"
    path.write_text(content.format(live=XRMetaModel.load(folder).catalog.ids[0]), encoding="utf-8")
    before = dir_digest(folder)
    assert feedback_cli.main(["--model-dir", str(folder), "--clicks", str(path)]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert dir_digest(folder) == before


@pytest.mark.parametrize("step", [-0.1, float("nan"), float("inf"), "0.5"])
def test_bad_feedback_step_is_refused(step):
    with pytest.raises(ValueError, match="feedback_step"):
        ColdStartConfig(feedback_step=step).validate()


def test_step_zero_keeps_the_clicks_and_moves_nothing(with_novel, clicks):
    model = clone(with_novel, feedback_step=0.0)
    before = snapshot(model.catalog)
    model.add_feedback(*clicks)
    assert_unchanged(model.catalog, before)
    assert len(model._state.clicks) == len(clicks[1])
