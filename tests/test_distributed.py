"""xrmeta.distributed: the cut, the shards' logged writes, and ShardedModel on a local Ray instance against the
XRMetaModel it was cut from (top-10 ids and scores, bit for bit), through inserts, removals, feedback, splits,
restarts, killed and frozen workers and the bulk cold start."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import ray

from xrmeta.distributed import ShardedModel, cut, plan_shards, router
from xrmeta.distributed.shard import Shard, add_record, remove_record
from xrmeta.errors import ModelError
from xrmeta.model import XRMetaModel
from xrmeta.persist import PersistError, _encode

from .conftest import clone

ODD_QUERIES = ["  Café ÉTAGÈRE, Noir!  ", "CORDLESS drill-driver 18V", "zzzqqq xxyyzz", "Ünïcödé Çhâîr"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def fresh_dir(trained, tmp_path_factory):
    """`trained` with split_size 8 (clusters split as items arrive), saved: loading it builds every inserted chunk
    afresh, as a shard does, so scores agree bit for bit."""
    folder = tmp_path_factory.mktemp("fresh") / "model"
    clone(trained, split_size=8).save(folder)
    return folder


def assert_same(model: XRMetaModel, sharded: ShardedModel, queries, **kw) -> None:
    want, got = model.predict(queries, **kw), sharded.predict(queries, **kw)
    assert not got.partial.any()
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.scores, want.scores)


def wait_for(condition, seconds: float = 60.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


# ---------------------------------------------------------------- the cut (no Ray)
def test_plan_deals_whole_subtrees_in_balanced_runs(trained):
    upper, cat = trained.upper, trained.catalog
    weight = np.bincount(cat.slot_cluster.view[: cat.n_base], np.diff(cat.w_ptr.view[: cat.n_base + 1]),
                         minlength=cat.n_clusters)
    lay = upper.layout
    leaf_slot = lay.node_slot[lay.layer_slot_ptr[-2] + np.arange(cat.n_clusters)]
    parent = np.searchsorted(lay.group_slot_ptr, leaf_slot, side="right")
    for n in (1, 2, 3, len(np.unique(parent)) + 1):
        shard = plan_shards(upper, weight, n)
        assert sorted(set(shard.tolist())) == list(range(n))
        if n <= len(np.unique(parent)):
            for p in np.unique(parent):  # siblings stay together
                assert len(set(shard[parent == p].tolist())) == 1
            per_shard = np.bincount(shard, weight)
            assert per_shard.max() <= 2.5 * per_shard.mean()
    for bad in (0, cat.n_clusters + 1, 2.5):
        with pytest.raises(ModelError, match="n_shards"):
            plan_shards(upper, weight, bad)


def test_cut_writes_every_item_once_per_cluster_owner(with_novel, tmp_path):
    out = cut(with_novel, 3, tmp_path / "s")
    info = json.loads((out / "sharding.json").read_text())
    shards = [Shard.load(out / name) for name in info["shards"]]
    cat = with_novel.catalog
    held = {}
    for s in shards:
        for i in s.key_of:
            held.setdefault(i, []).append(s.config.index)
            assert s.key_of[i] == cat.slot_of[i]  # keys are the whole catalogue's slots
    assert set(held) == set(cat.slot_of)
    for i, owners in held.items():  # an item is in exactly the shards owning one of its clusters
        clusters = cat.item_clusters([cat.slot_of[i]])[0]
        plan = np.load(out / "plan.npz")["cluster_shard"]
        assert sorted(owners) == sorted(set(plan[clusters[clusters >= 0]].tolist()))
    router_model = XRMetaModel.load(out / "router")  # trained items' titles and clusters, not their classifiers
    assert len(router_model) == cat.n_base and router_model.catalog.n_slots == cat.n_base
    assert router_model.catalog.w_ptr.view[-1] == 0 and len(router_model.catalog.observed.val) == 0
    np.testing.assert_array_equal(router_model.catalog.slot_cluster.view, cat.slot_cluster.view[: cat.n_base])
    with pytest.raises(ModelError, match="not an empty directory"):
        cut(with_novel, 2, out)


def test_shard_writes_are_numbered_logged_and_replayed(with_novel, tmp_path):
    out = cut(with_novel, 2, tmp_path / "s")
    shard = Shard.load(out / "shard-000", log=True)
    cluster = int(shard.clusters[0])
    W = with_novel.catalog.weights([0])
    record = add_record(1, ["nouveau-Élan"], [10**6], np.array([[cluster]]), W, np.zeros(1, np.float32))
    assert shard.apply(record) and "nouveau-Élan" in shard.key_of
    assert not shard.apply(record)  # a retried write is applied once
    with pytest.raises(ModelError, match="missing"):
        shard.apply(remove_record(3, ["nouveau-Élan"]))
    shard.log.close()
    again = Shard.load(out / "shard-000")  # a restarted worker: snapshot + log
    assert again.seq == 1 and again.key_of["nouveau-Élan"] == 10**6
    log = out / "shard-000" / "items.log"
    good = log.read_bytes()
    log.write_bytes(good + _encode({"op": "add", "seq": 2}))  # well formed, but no items
    with pytest.raises(PersistError, match="record 2: cannot replay"):
        Shard.load(out / "shard-000")
    log.write_bytes(good + b"00000000 {}\n")
    with pytest.raises(PersistError, match="line 2: corrupted"):
        Shard.load(out / "shard-000")


# ---------------------------------------------------------------- ShardedModel on Ray
def test_sharded_model_equals_the_model(local_ray, fresh_dir, novel, test_queries, data, split, tmp_path):
    model = XRMetaModel.load(fresh_dir)
    sharded = ShardedModel.from_model(model, 3, out=tmp_path / "s")
    queries = test_queries[:300] + ODD_QUERIES
    titles, ids = novel
    half = len(ids) // 2
    try:
        assert_same(model, sharded, queries)
        for m in (model, sharded):
            m.add_items(titles[:half], ids[:half])
        assert_same(model, sharded, queries)
        gone = ids[:15] + [data.item_ids[j] for j in split.observed[:15]]
        for m in (model, sharded):
            m.remove_items(gone)
        assert_same(model, sharded, queries)
        clicked = list(model.predict(test_queries[:40], k=3).ids[:, 2])
        for m in (model, sharded):
            m.add_feedback(test_queries[:40], clicked)
        assert_same(model, sharded, queries)
        for m in (model, sharded):
            m.add_items(titles[half:], ids[half:])
        for kw in ({}, {"beam_size": 1}, {"beam_size": 5, "k": 20}, {"subset": "observed"}, {"subset": "inserted"}):
            assert_same(model, sharded, queries, **kw)
        assert (sharded.predict(["zzzqqq xxyyzz"]).ids == "").all()  # no known n-gram: nothing, as in the model

        sharded.close()  # workers gone: new ones replay each shard's log over its snapshot
        sharded = ShardedModel.open(tmp_path / "s")
        assert_same(model, sharded, queries)
        sharded.save()  # snapshots; the logs start empty
        assert all((tmp_path / "s" / f"shard-00{i}" / "items.log").stat().st_size == 0 for i in range(3))
        split_parts = [Shard.load(tmp_path / "s" / f"shard-00{i}").catalog._parts.n_parts for i in range(3)]
        assert max(split_parts) > model.catalog.n_clusters  # the leaf split ran inside the shards
        sharded.close()
        sharded = ShardedModel.open(tmp_path / "s")
        assert_same(model, sharded, queries)
    finally:
        sharded.close()


def test_bulk_cold_start_runs_in_ray_tasks(local_ray, fresh_dir, novel, test_queries, tmp_path, monkeypatch):
    monkeypatch.setattr(router, "BULK_CHUNK", 50)
    model = XRMetaModel.load(fresh_dir)
    sharded = ShardedModel.from_model(model, 2, replicas=2, out=tmp_path / "s")
    try:
        ray.get([w.ping.remote() for row in sharded.workers for w in row])
        # the workers' CPU reservations leave room for one bulk task per core
        assert ray.available_resources()["CPU"] // router.TASK_CPUS == 2
        titles, ids = novel
        for m in (model, sharded):
            m.add_items(titles[:180], ids[:180])
        assert_same(model, sharded, test_queries[:200])
        with pytest.raises(ModelError, match="no n-gram"):  # a bad title in any task: nothing written
            sharded.add_items(titles[180:250] + ["ʬʬʬ"], ids[180:250] + ["odd"])
        assert [r["seq"] for row in sharded.status() for r in row] == [1, 1, 1, 1]
    finally:
        sharded.close()


def test_frozen_or_killed_worker_never_hangs_a_query(local_ray, fresh_dir, novel, test_queries, tmp_path):
    model = XRMetaModel.load(fresh_dir)
    model.add_items(*novel)  # cut with its inserted items
    titles, ids = novel
    queries = test_queries[:200]
    want = model.predict(queries)
    sharded = ShardedModel.from_model(model, 2, replicas=1, out=tmp_path / "s", timeout=0.5)
    try:
        pid = sharded.status()[0][0]["pid"]
        os.kill(pid, signal.SIGSTOP)  # a worker that stops answering
        try:
            t = time.perf_counter()
            got = sharded.predict(queries)
            assert time.perf_counter() - t < 1.5
        finally:
            os.kill(pid, signal.SIGCONT)
        reach = np.array([sharded.cluster_shard[c[c >= 0]].min() == 0
                          for c in model.upper.top_clusters(model.featurizer.transform(queries), 10, 1, 20)[0]])
        assert got.partial.any() and (got.partial <= reach).all()  # flagged where shard 0 was needed
        ok = ~got.partial
        np.testing.assert_array_equal(got.ids[ok], want.ids[ok])  # the rest is whole
        wait_for(lambda: not sharded.predict(queries).partial.any())

        extra = [t.upper() + " (2e édition)" for t in titles], [f"copy-{i}" for i in ids]
        model.add_items(*extra)
        sharded.add_items(*extra)  # logged by shard 0's worker, then it is killed
        assert sharded.status()[0][0]["seq"] == 1
        os.kill(sharded.status()[0][0]["pid"], signal.SIGKILL)
        t = time.perf_counter()
        got = sharded.predict(queries)
        assert time.perf_counter() - t < 1.5
        restarted = wait_for(lambda: (s := sharded.status()[0][0]) and s["pid"] != pid and s)
        assert restarted["seq"] == 1  # caught up from its log
        assert_same(model, sharded, queries)
    finally:
        sharded.close()


def test_a_replica_serves_while_the_primary_is_killed(local_ray, fresh_dir, novel, test_queries, tmp_path):
    model = XRMetaModel.load(fresh_dir)
    sharded = ShardedModel.from_model(model, 2, replicas=2, out=tmp_path / "s", timeout=1.0)
    try:
        for m in (model, sharded):
            m.add_items(*novel)
        queries = test_queries[:100]
        want = model.predict(queries)
        served, slowest, stop = [], [0.0], threading.Event()

        def load():
            i = 0
            while not stop.is_set():
                t = time.perf_counter()
                got = sharded.predict([queries[i % len(queries)]])
                slowest[0] = max(slowest[0], time.perf_counter() - t)
                served.append(bool(got.partial[0]) or bool((got.ids[0] == want.ids[i % len(queries)]).all()))
                i += 1

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(0.5)
        os.kill(sharded.status()[0][0]["pid"], signal.SIGKILL)
        time.sleep(3)
        stop.set()
        thread.join(10)
        assert not thread.is_alive() and len(served) > 20
        assert all(served) and slowest[0] < 1.0  # backed up by the other replica after hedge_after (0.1 s)
        wait_for(lambda: all(r and r["seq"] == 1 for r in sharded.status()[0]))
        for m in (model, sharded):  # writes reach the restarted primary and its replica
            m.remove_items(novel[1][:5])
        assert_same(model, sharded, queries)
        assert {r["seq"] for row in sharded.status() for r in row} == {2}
    finally:
        sharded.close()


def test_bad_writes_change_nothing(local_ray, fresh_dir, novel, tmp_path):
    model = XRMetaModel.load(fresh_dir)
    sharded = ShardedModel.from_model(model, 2, out=tmp_path / "s")
    try:
        titles, ids = novel
        sharded.add_items(titles[:3], ids[:3])
        before = [s[0]["seq"] for s in sharded.status()]
        bad = [
            (lambda: sharded.add_items(["Chaise longue"], [ids[0]]), "already in the catalogue"),
            (lambda: sharded.add_items(["a", "b"], ["x", "x"]), "duplicate"),
            (lambda: sharded.add_items(["  "], ["blank"]), "empty"),
            (lambda: sharded.add_items("one title", ["x"]), "list of strings"),
            (lambda: sharded.remove_items([ids[0], "nope"]), "unknown item ids"),
            (lambda: sharded.add_feedback(["Café"], ["nope"]), "unknown or removed"),
            (lambda: sharded.add_feedback(["Café"], [ids[0]], [-1.0]), "weights"),
            (lambda: sharded.predict(["x"], k=0), "k must be"),
        ]
        for call, message in bad:
            with pytest.raises((ModelError, ValueError), match=message):
                call()
        assert [s[0]["seq"] for s in sharded.status()] == before
        with pytest.raises(ModelError, match=r"failed on shards \[0\] \(applied on \[1\]\).*unknown write"):
            sharded._write({0: lambda seq: {"op": "bogus", "seq": seq}, 1: lambda seq: remove_record(seq, [])})
        sharded.add_items(titles[3:6], ids[3:6])  # the write numbers were read back: the next write applies
        assert all(i in sharded for i in ids[:6]) and len(sharded) == len(model) + 6
        reader = ShardedModel.open(tmp_path / "s", writer=False)  # attaches to the running workers
        assert reader.status()[0][0]["pid"] == sharded.status()[0][0]["pid"]
        np.testing.assert_array_equal(reader.predict(["Chaise"]).ids, sharded.predict(["Chaise"]).ids)
        with pytest.raises(ModelError, match="writer=False"):
            reader.add_items(["Chaise"], ["c"])
        with pytest.raises(ModelError, match="not a sharded directory"):
            ShardedModel.open(fresh_dir)
    finally:
        sharded.close()
    (tmp_path / "s" / "shard-001" / "shard.npz").write_bytes(b"not an npz")  # a damaged shard: named, no hang
    with pytest.raises(ModelError, match="could not load their shard.*shard-001"):
        ShardedModel.open(tmp_path / "s", write_timeout=60)
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "xrmeta"]



def test_cli_cuts_a_saved_model(saved_dir, tmp_path, capsys):
    from xrmeta.cli import shard as cli

    assert cli.main(["--model-dir", str(saved_dir), "--shards", "2", "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "sharding.json").read_text())["n_shards"] == 2
    assert "wrote 2 shards" in capsys.readouterr().err
    assert cli.main(["--model-dir", str(saved_dir), "--shards", "2", "--out", str(tmp_path / "s")]) != 0
    assert "not an empty directory" in capsys.readouterr().err
    assert cli.main(["--model-dir", str(saved_dir), "--shards", "0", "--out", str(tmp_path / "t")]) != 0
    assert "--shards must be >= 1" in capsys.readouterr().err
    assert cli.main(["--model-dir", str(saved_dir), "--out", str(tmp_path / "t")]) != 0
    assert "needs --model-dir, --shards and --out" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
