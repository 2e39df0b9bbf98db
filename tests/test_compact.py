"""Compaction: `XRMetaModel.compact` reclaims removed items' storage without changing any result; remove_items
runs it past `ColdStartConfig.compact_at`; the item log replays it; a crash mid-compaction loads as the state
before or after it; queries in other threads go on meanwhile."""

from __future__ import annotations

import gc
import json
import shutil
import threading
import traceback
import weakref

import numpy as np
import pytest

from xrmeta import persist
from xrmeta.inserted import Growable
from xrmeta.layout import leaf_arrays_problem
from xrmeta.model import XRMetaModel

from .conftest import assert_unchanged, clone, snapshot
from .test_reliability import child

BEAMS = (1, 4, 10)
SUBSETS = ("all", "observed", "inserted")
TITLES = ["Perceuse-visseuse sans fil 18 V, « Pro » — 2 batteries", "Café crème: tasse en grès (lot de 4)",
          "DEWALT 20V MAX* Cordless Drill/Driver Kit, 1/2-Inch", "Lampe à poser « Lumière » 40 W, E27"]


def answers(model: XRMetaModel, queries: list[str], X=None) -> list:
    """Top-10 of every beam and subset, from the texts (or their TF-IDF rows X)."""
    X = model.featurizer.transform(queries, threads=1) if X is None else X
    return [model.predict_features(X, k=10, beam_size=b, subset=s) for b in BEAMS for s in SUBSETS]


def assert_same(a: list, b: list) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.ids, y.ids)
        np.testing.assert_array_equal(x.scores, y.scores)


def storage_bytes(model: XRMetaModel) -> int:
    """Bytes allocated by the catalogue's arrays (buffers with their spare capacity, chunks, observed chunks)
    and the neighbour search's."""
    def arrays(obj):
        for v in vars(obj).values():
            if isinstance(v, Growable):
                yield v.buf
            elif isinstance(v, np.ndarray):
                yield v
            elif isinstance(v, tuple):
                yield from (a for a in v if isinstance(a, np.ndarray))
    c, s = model.catalog, model.selector
    parts = [*arrays(c), *arrays(c._chunks), *arrays(s), s.Z.data, s.Z.indices, s.Z.indptr]
    return sum({id(a): a.nbytes for a in parts}.values())


def with_removals(trained, novel, seed: int = 0, **coldstart):
    """A clone of `trained` with the novel items and a few real titles inserted, then a random fifth of the
    inserted items and of the trained items removed (no automatic compaction unless asked). Returns (model,
    removed inserted ids, removed trained ids)."""
    model = clone(trained, **{"compact_at": None, **coldstart})
    model.add_items(novel[0] + TITLES, novel[1] + [f"réel-{i}" for i in range(len(TITLES))], threads=1)
    rng = np.random.default_rng(seed)
    cat = model.catalog
    inserted, observed = cat.ids[cat.n_base:], cat.ids[: cat.n_base]
    gone_ins = [str(i) for i in rng.choice(inserted, size=len(inserted) // 5, replace=False)]
    gone_obs = [str(i) for i in rng.choice(observed, size=len(observed) // 5, replace=False)]
    model.remove_items(gone_ins + gone_obs)
    return model, gone_ins, gone_obs


@pytest.fixture
def model_dir(saved_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved_dir, folder)
    return folder


@pytest.fixture
def queries(test_queries, novel):
    return test_queries[:150] + novel[0][:50] + TITLES


def test_compaction_keeps_every_result_and_reclaims_storage(trained, novel, queries):
    model, gone_ins, gone_obs = with_removals(trained, novel)
    cat = model.catalog
    n_base, live = cat.n_base, len(model)
    order = [i for i in cat.ids[n_base:] if i in cat.slot_of]  # surviving inserted items, in slot order
    before, size = answers(model, queries), storage_bytes(model)
    model.compact()
    assert_same(answers(model, queries), before)
    cat = model.catalog
    assert len(model) == live and cat.tombstones == 0
    assert all(i not in model for i in gone_ins + gone_obs) and all(i in model for i in order)
    assert cat.n_slots == n_base + len(order)
    assert [cat.slot_of[i] for i in order] == list(range(n_base, cat.n_slots))  # contiguous, same order
    assert cat.ids[:n_base] == trained.catalog.ids  # trained items keep their slots
    assert leaf_arrays_problem(cat.arrays(), cat.n_features) is None
    dead = [trained.catalog.slot_of[i] for i in gone_obs]
    assert (np.diff(cat.w_ptr.view)[dead] == 0).all() and model.selector.Z[dead].nnz == 0
    assert len(cat.observed.slot) < len(trained.catalog.observed.slot)
    assert len(cat.entry_slot.view) == sum(len(np.flatnonzero(c >= 0)) for c in cat.item_clusters(
        np.arange(n_base, cat.n_slots)))  # only the live items' entries
    assert storage_bytes(model) < 0.85 * size


def test_old_buffers_live_while_a_query_holds_them_then_are_freed(model_dir, novel):
    """A query keeps the state it started with (its buffers stay valid); nothing else keeps the old buffers."""
    model = XRMetaModel.load(model_dir)  # its own arrays (a clone shares the session model's observed chunks)
    model.add_items(*novel, threads=1)
    cat = model.catalog
    model.remove_items(novel[1][::2] + cat.ids[:100])
    held = cat._state  # what a running query holds
    old = [weakref.ref(a) for a in (cat.w_val.buf, cat.slot_alive.buf, cat._chunks.val.buf, cat.observed.val,
                                    model.selector.inv_item, model.selector.Z.data)]
    model.compact()
    gc.collect()
    assert all(r() is not None for r in old[:4])  # the catalogue's, through the held state
    del held
    gc.collect()
    assert [r() for r in old] == [None] * len(old)


def test_removed_trained_item_is_never_a_neighbour_after_compaction(trained, data, monkeypatch):
    model = clone(trained, compact_at=None)
    slot = 7
    item = model.catalog.ids[slot]
    title = data.item_texts[data.item_ids.index(item)]
    S = model.featurizer.transform([title], threads=1)
    assert model.selector.search(S, 3, threads=1)[0][0][0] == slot  # its own title finds it first
    model.remove_items([item])
    model.compact()
    assert model.selector.Z[slot].nnz == 0
    seen = []
    search = model.selector.search  # the compacted model's own selector (the session model's is shared)
    monkeypatch.setattr(model.selector, "search", lambda *a: seen.append(search(*a)) or seen[-1])
    model.add_items([title], ["same-title"], threads=1)  # its exact title, as a new item
    (nbrs, _), = seen
    assert slot not in nbrs and (nbrs >= 0).all()
    assert trained.selector.search(S, 3, threads=1)[0][0][0] == slot  # the session model: untouched
    assert "same-title" in model and item not in model


def test_compacting_with_nothing_removed_changes_nothing(trained, novel, model_dir):
    model = XRMetaModel.load(model_dir, log=True)
    model.add_items(novel[0][:20], novel[1][:20], threads=1)
    state, published = snapshot(model.catalog), model.catalog._state
    model.compact()
    assert model.catalog._state is published
    assert_unchanged(model.catalog, state)
    assert [r["op"] for r in persist.read_log(model_dir)] == ["add"]  # nothing logged
    model.log.close()


def test_remove_items_compacts_past_the_threshold(trained, novel):
    model = clone(trained, compact_at=0.25)
    model.add_items(novel[0], novel[1], threads=1)
    cat = model.catalog
    n, first = cat.n_slots, int(0.25 * cat.n_slots)  # removing `first` items reaches the share, not past it
    model.remove_items(novel[1][:100] + cat.ids[: first - 100])
    assert model.catalog.n_slots == n and model.catalog.tombstones == first
    model.remove_items([novel[1][100]])  # one more: past it
    assert model.catalog.tombstones == 0 and model.catalog.n_slots == n - 101
    assert len(model) == n - first - 1 and novel[1][101] in model


def test_the_log_replays_compactions(model_dir, novel, queries):
    """Explicit and automatic compactions are logged; the replay rebuilds exactly the live catalogue."""
    model = XRMetaModel.load(model_dir, log=True)
    model.configs.coldstart.compact_at = 0.3  # the replay reads the log, not this setting
    model.add_items(novel[0][:150], novel[1][:150], threads=1)
    model.remove_items(novel[1][:40] + model.catalog.ids[:30])
    model.compact()
    model.add_items(novel[0][150:] + TITLES, novel[1][150:] + ["réel"] + [f"réel-{i}" for i in range(1, 4)],
                    threads=1)
    model.remove_items(novel[1][40:150] + model.catalog.ids[30:700])  # past 0.3: compacts on its own
    model.add_items(TITLES[:2], ["après-1", "après-2"], threads=1)
    ops = [r["op"] for r in persist.read_log(model_dir)]
    assert ops == ["add", "remove", "compact", "add", "remove", "compact", "add"]
    state, live = snapshot(model.catalog), answers(model, queries)
    model.log.close()
    again = XRMetaModel.load(model_dir)
    assert_unchanged(again.catalog, state)
    assert_same(answers(again, queries), live)
    np.testing.assert_array_equal(again.selector.Z.indptr, model.selector.Z.indptr)


def test_a_compacted_model_saves_and_loads(trained, novel, queries, tmp_path):
    model, _, _ = with_removals(trained, novel, seed=1)
    model.compact()
    model.save(tmp_path / "m")
    loaded = XRMetaModel.load(tmp_path / "m")
    assert_unchanged(loaded.catalog, snapshot(model.catalog))
    X = loaded.featurizer.transform(queries)  # saved idf values are rounded: the same rows for both
    assert_same(answers(loaded, queries, X), answers(model, queries, X))
    assert loaded.selector.Z.nnz == model.selector.Z.nnz
    # a config.json written before compaction existed loads with the default
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    del config["coldstart"]["compact_at"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert XRMetaModel.load(tmp_path / "m").configs.coldstart.compact_at == 0.25


KILL_CHILD = r"""
import os, sys
from xrmeta import catalog, persist
from xrmeta.model import XRMetaModel

folder, point = sys.argv[1], sys.argv[2]
model = XRMetaModel.load(folder, log=True)
if point == "building":  # the new arrays half made, nothing logged
    real = catalog.compacted
    catalog.compacted = lambda *a: (real(*a), os._exit(9))
else:  # the compaction logged, not yet published
    real_append = persist.ItemLog.append
    def append(self, record):
        real_append(self, record)
        if record["op"] == "compact":
            os._exit(9)
    persist.ItemLog.append = append
model.compact()
print("compacted", flush=True)
"""


@pytest.mark.parametrize("point", ["building", "logged"])
def test_kill_during_compaction_loads_the_state_before_or_after(model_dir, novel, queries, tmp_path, point):
    model = XRMetaModel.load(model_dir, log=True)
    model.configs.coldstart.compact_at = None
    model.add_items(novel[0], novel[1], threads=1)
    model.remove_items(novel[1][::3] + model.catalog.ids[:50])
    model.log.close()
    before = XRMetaModel.load(model_dir)
    state, want = snapshot(before.catalog), answers(before, queries)
    before.compact()
    after = snapshot(before.catalog)

    proc = child(KILL_CHILD, model_dir, point, tmp_path=tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 9 and "compacted" not in out

    reloaded = XRMetaModel.load(model_dir)
    assert_unchanged(reloaded.catalog, state if point == "building" else after)
    assert_same(answers(reloaded, queries), want)


def test_queries_in_four_threads_while_compacting(trained, novel, test_queries):
    """4 query threads while a writer inserts, removes and compacts: no error, every answer holds only ids of
    items present when the query started (live, or removed since)."""
    model = clone(trained)
    queries = test_queries[:100] + novel[0][:50]
    everyone = set(model.catalog.ids) | set(novel[1])
    removed, errors, counts = set(), [], [0] * 4
    stop = threading.Event()

    def reader(t):
        rng = np.random.default_rng(t)
        try:
            while not stop.is_set():
                gone = set(removed)
                rows = rng.choice(len(queries), size=8, replace=False)
                ids = model.predict([queries[r] for r in rows], k=10, beam_size=5,
                                    subset=SUBSETS[int(rng.integers(3))]).ids
                found = set(ids.ravel()) - {""}
                assert found <= everyone and not found & gone, found - everyone or found & gone
                counts[t] += 1
        except BaseException:
            errors.append(traceback.format_exc())
            stop.set()

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    titles, ids = novel
    try:
        rng = np.random.default_rng(9)
        for start in range(0, len(ids), 20):
            model.add_items(titles[start : start + 20], ids[start : start + 20], threads=1)
            victims = [str(i) for i in rng.choice(ids[start : start + 20], size=10, replace=False)]
            victims += [str(i) for i in rng.choice([i for i in model.catalog.ids[:200] if i in model], size=3,
                                                     replace=False)]
            model.remove_items(victims)
            removed.update(victims)
            model.compact()
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=60)
    assert not errors, "\n".join(errors)
    assert min(counts) >= 3, counts
    assert model.catalog.n_slots == model.catalog.n_base + len([i for i in ids if i in model])
