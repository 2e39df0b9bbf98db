"""Scale-out on Ray (`xrmeta.distributed`): is a sharded model the same model, and what do shards cost and buy?

The cached model is saved and reloaded first (a freshly loaded model builds its inserted items' chunks the way a
shard does), then every system starts from that copy. Equality: the same writes (half the novel items in, 5% of
them and 1% of the observed items out, ~200 clicks, the other half in) go to an `XRMetaModel` and to a
`ShardedModel` of 2 and of 3 shards; top-k ids and scores compared on every generalized test query at the model's
beam. Latency and throughput: `XRMetaModel.predict` (single thread) beside `ShardedModel.predict` at 1 shard,
2 shards and 1 shard x 2 replicas, all holding every novel item, and a bare Ray actor round trip (`ping`), in one
process, interleaved (online: one query per call, systems in a random order per query; batch: 100 queries per
call, systems in a random order per batch, median of repeats). The same on a two-node Ray cluster on 127.0.0.1
(`ray.cluster_utils.Cluster`, one CPU per node). Memory: catalogue bytes per shard (`memory`) at 1, 2 and 3
shards, the router's, and the inserted items held by two shards. Bulk cold start: made-up titles (observed words
recombined, seeded: `scale.title_batches`) through `ShardedModel.add_items` (Ray tasks above `BULK_CHUNK`) and
`XRMetaModel.add_items` (threads=-1) in the same batches, alternating. Kill a shard: SIGKILL shard 0's primary
while a driver thread queries; what the queries saw, and when the worker is back with the same write number.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from xrmeta.catalog import memory as catalog_memory
from xrmeta.model import XRMetaModel

from . import harness as H
from . import common as C
from .scale import title_batches


def ray_module():
    import ray

    return ray


# ---------------------------------------------------------------- models
class Models:
    """The cached model saved once to a scratch directory; `fresh()` loads a copy of it (every system's start)."""

    def __init__(self, model: XRMetaModel, work: Path):
        self.work = work
        self.dir = work / "model"
        model.save(self.dir)
        self._n = 0

    def fresh(self) -> XRMetaModel:
        return XRMetaModel.load(self.dir)

    def out(self) -> Path:
        """A new, empty directory for a cut."""
        self._n += 1
        return self.work / f"cut{self._n}"

    def sharded(self, n_shards: int, replicas: int = 1, items=None, **options):
        """A ShardedModel cut from a fresh copy, with items (titles, ids) inserted through it."""
        from xrmeta.distributed import ShardedModel

        sm = ShardedModel.from_model(self.fresh(), n_shards, replicas=replicas, out=self.out(), **options)
        if items is not None:
            sm.add_items(*items)
        return sm


def compare(ref, sm, queries: list[str], k: int, beam: int) -> dict:
    """Top-k of ref (XRMetaModel) vs sm (ShardedModel) on every query: rows with identical ids, max |score diff|."""
    a, b = ref.predict(queries, k=k, beam_size=beam), sm.predict(queries, k=k, beam_size=beam)
    ia, ib = np.asarray(a.ids).astype(str), np.asarray(b.ids).astype(str)
    sa, sb = np.asarray(a.scores, dtype=np.float64), np.asarray(b.scores, dtype=np.float64)
    same = (ia == ib).all(axis=1)
    both = (ia != "") & (ib != "")
    diff = float(np.abs(sa - sb)[both].max()) if both.any() else 0.0
    return {"identical": int(same.sum()), "total": len(queries), "max_diff": diff,
            "partial": int(np.asarray(b.partial).sum())}


# ---------------------------------------------------------------- 1. equality under the same writes
def write_plan(data, split, seed: int, n_clicks: int = 200) -> list[tuple]:
    """The writes of the equality check, as (method, args) in order."""
    rng = np.random.default_rng(seed)
    titles, ids = C.titles_ids(data, split.novel)
    half = len(ids) // 2
    gone_new = [ids[j] for j in np.sort(rng.choice(half, size=max(1, half // 20), replace=False))]
    observed = [data.item_ids[j] for j in split.observed]
    gone_old = [observed[j] for j in np.sort(rng.choice(len(observed), size=max(1, len(observed) // 100),
                                                        replace=False))]
    gone = set(gone_new) | set(gone_old)
    live = set(ids[:half]) | set(observed)
    live -= gone
    ev = split.generalized_set
    queries, clicked = [], []
    for row in rng.permutation(len(ev.queries)):  # a test query and one of its relevant items, live by then
        cols = ev.Y.indices[ev.Y.indptr[row]: ev.Y.indptr[row + 1]]
        held = [data.item_ids[c] for c in cols if data.item_ids[c] in live]
        if held:
            queries.append(data.query_texts[ev.queries[row]])
            clicked.append(held[rng.integers(len(held))])
        if len(queries) == n_clicks:
            break
    return [("add_items", (titles[:half], ids[:half])), ("remove_items", (gone_new + gone_old,)),
            ("add_feedback", (queries, clicked)), ("add_items", (titles[half:], ids[half:]))]


def apply(target, plan) -> None:
    for method, args in plan:
        getattr(target, method)(*args)


def equality(models: Models, plan, queries, k: int, beam: int, shards=(2, 3)) -> list[list]:
    rows = []
    for n in shards:
        ref, sm = models.fresh(), models.sharded(n)
        apply(ref, plan)
        apply(sm, plan)
        c = compare(ref, sm, queries, k, beam)
        C.log(f"equality at {n} shards: {c}")
        rows.append([n, c["total"], c["identical"], c["identical"] / c["total"], c["max_diff"], c["partial"]])
        sm.close()
    return rows


# ---------------------------------------------------------------- 2./3. latency and throughput
def batches(queries: list[str], size: int) -> list[list[str]]:
    return [queries[a: a + size] for a in range(0, len(queries), size)]


def throughput(systems: dict, ping, online: list[str], queries: list[str], repeats: int, seed: int) -> dict:
    """{name: (online seconds per call, batch queries/s per repeat or None)}. systems: name -> f(list of queries),
    timed online (one query per call, `harness.time_calls`: interleaved, single thread) and in batches of 100
    (every test query per repeat, systems in a random order per batch); ping: an actor whose bare round trip is
    timed online beside them."""
    ray = ray_module()
    calls = {name: (lambda q, f=f: f([q])) for name, f in systems.items()}
    calls[PING] = lambda q: ray.get(ping.ping.remote())
    samples = H.time_calls(calls, online, warm=online[:5], seed=seed)
    chunks = batches(queries, 100)
    qps = {name: [] for name in systems}
    rng = np.random.default_rng(seed)
    with H.single_thread():
        for _ in range(repeats):
            spent = dict.fromkeys(systems, 0.0)
            for chunk in chunks:
                for name in rng.permutation(list(systems)):
                    t0 = time.perf_counter()
                    systems[name](chunk)
                    spent[name] += time.perf_counter() - t0
            for name in systems:
                qps[name].append(len(queries) / spent[name])
    return {name: (samples[name], qps.get(name)) for name in calls}


PING = "Ray actor round trip (`ping`)"


def latency_rows(result: dict) -> list[list]:
    rows = []
    base = np.median(result["xrmeta (in process)"][0])
    for name, (online, qps) in result.items():
        med = np.median(online)
        rows.append([name, med * 1e3, np.percentile(online, 99) * 1e3, 1 / np.mean(online), med / base,
                     np.median(qps) if qps else float("nan")])
    return rows


LAT_HEADER = ["system", "online median ms", "online p99 ms", "online queries/s", "median / xrmeta",
              "batch queries/s (100 per call)"]
LAT_FMT = ["", ".3f", ".3f", ",.0f", ".2f", ",.0f"]


def local_latency(models: Models, full, items, online, queries, args, beam):
    configs = {"ShardedModel 1 shard": (1, 1), "ShardedModel 2 shards": (2, 1),
               "ShardedModel 1 shard x 2 replicas": (1, 2)}
    sharded = {name: models.sharded(n, r, items) for name, (n, r) in configs.items()}
    checks = [[name, *compare(full, sm, queries, args.k, beam).values()] for name, sm in sharded.items()]
    systems = {"xrmeta (in process)": lambda q: full.predict(q, k=args.k, beam_size=beam)}
    systems.update({name: (lambda q, sm=sm: sm.predict(q, k=args.k, beam_size=beam)) for name, sm in sharded.items()})
    result = throughput(systems, sharded["ShardedModel 1 shard"].workers[0][0], online, queries, args.repeats,
                        args.seed)
    for sm in sharded.values():
        sm.close()
    return latency_rows(result), checks


def two_nodes(models: Models, full, items, online, queries, args, beam) -> dict:
    """2 shards on a 2-node cluster on 127.0.0.1 (one CPU each): where the workers run, latency, equality."""
    from ray.cluster_utils import Cluster
    ray = ray_module()
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        cluster.wait_for_nodes()
        sm = models.sharded(2, 1, items)
        check = compare(full, sm, queries, args.k, beam)
        head = cluster.head_node.node_id
        placed = [[s, "head (node 1)" if r["node"] == head else "node 2", r["pid"]]
                  for s, row in enumerate(sm.status()) for r in row]
        systems = {"xrmeta (in process)": lambda q: full.predict(q, k=args.k, beam_size=beam),
                   "ShardedModel 2 shards, 2 nodes": lambda q: sm.predict(q, k=args.k, beam_size=beam)}
        result = throughput(systems, sm.workers[1][0], online, queries, args.repeats, args.seed)
        sm.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"rows": latency_rows(result), "check": check, "placed": placed}


# ---------------------------------------------------------------- 4. memory
def catalogue_bytes(model) -> int:
    """What `ShardWorker.memory` counts: the catalogue's live arrays (inserted items' chunks included) and ids."""
    m = catalog_memory(model.catalog)
    return m["live"] + m["ids"]


def selector_bytes(model) -> int:
    Z = model.selector.Z
    return int(Z.data.nbytes + Z.indices.nbytes + Z.indptr.nbytes)


def memory(models: Models, full, items) -> tuple[list[list], dict]:
    ray = ray_module()
    rows, router = [], {}
    ids = items[1]
    for n in (1, 2, 3):
        sm = models.sharded(n, 1, items)
        per = ray.get([w[0].memory.remote() for w in sm.workers])
        held = np.stack(ray.get([w[0].holds.remote(ids) for w in sm.workers]), axis=1).sum(axis=1)
        rows.append([n, " / ".join(f"{b / 2**20:.2f}" for b in per), max(per) / 2**20, sum(per) / 2**20,
                     sum(per) / catalogue_bytes(full), int((held >= 2).sum()), len(ids)])
        router = {"catalogue": catalogue_bytes(sm.router), "selector": selector_bytes(sm.router)}
        sm.close()
    return rows, router


# ---------------------------------------------------------------- 5. bulk cold start
def bulk(models: Models, data, split, total: int, batch: int, seed: int) -> dict:
    """The same batches of made-up titles into a ShardedModel (2 shards) and an XRMetaModel, alternating."""
    sm, m = models.sharded(2), models.fresh()
    observed = C.titles_ids(data, split.observed)[0]
    spent = {"sharded": 0.0, "xrmeta": 0.0}
    done = dropped = 0
    for i, (titles, ids) in enumerate(title_batches(observed, total, batch, seed)):
        known = np.diff(m.featurizer.transform(titles).indptr) > 0  # off the clock: a title of unknown words only
        dropped += int((~known).sum())                               # is refused by both systems
        titles, ids = [t for t, ok in zip(titles, known) if ok], [f"bulk-{j}" for j, ok in zip(ids, known) if ok]
        steps = [("sharded", lambda: sm.add_items(titles, ids)),
                 ("xrmeta", lambda: m.add_items(titles, ids, threads=-1))]
        for name, fn in steps if i % 2 == 0 else steps[::-1]:
            seconds, _ = H.clock(fn)
            spent[name] += seconds
        done += len(ids)
        C.log(f"bulk: {done} titles; sharded {spent['sharded']:.1f} s, xrmeta {spent['xrmeta']:.1f} s")
    sm.close()
    return {"items": done, "dropped": dropped, **spent}


# ---------------------------------------------------------------- 6. kill a shard
def kill_run(models: Models, full, items, queries: list[str], replicas: int, seconds: float, k: int, beam: int):
    """Online queries from a driver thread for `seconds`; shard 0's primary SIGKILLed after 1 s."""
    sm = models.sharded(2, replicas, items)
    ref = np.asarray(full.predict(queries, k=k, beam_size=beam).ids).astype(str)
    for q in queries[:5]:
        sm.predict([q], k=k, beam_size=beam)
    before = sm.status()[0][0]
    seen, stop = [], threading.Event()

    def loop():
        i = 0
        while not stop.is_set():
            j = i % len(queries)
            t0 = time.perf_counter()
            r = sm.predict([queries[j]], k=k, beam_size=beam)
            seen.append((time.perf_counter() - t0, bool(r.partial[0]), bool((r.ids[0] == ref[j]).all())))
            i += 1

    driver = threading.Thread(target=loop)
    start = time.perf_counter()
    driver.start()
    time.sleep(1.0)
    killed = time.perf_counter()
    os.kill(before["pid"], 9)
    back = float("nan")
    while time.perf_counter() - killed < 60:
        now = sm.status()[0][0]
        if now is not None and now["pid"] != before["pid"] and now["seq"] == before["seq"]:
            back = time.perf_counter() - killed
            break
        time.sleep(0.02)
    time.sleep(max(0.0, seconds - (time.perf_counter() - start)))
    stop.set()
    driver.join()
    after = compare(full, sm, queries, k, beam)
    sm.close()
    lat = np.array([s[0] for s in seen])
    partial = sum(s[1] for s in seen)
    wrong = sum(1 for s in seen if not s[1] and not s[2])
    return [f"2 x {replicas}", len(seen), np.median(lat) * 1e3, lat.max() * 1e3, partial, wrong, back,
            before["seq"], f"{after['identical']} / {after['total']}", after["partial"]], (sm.timeout, sm.hedge_after)


# ---------------------------------------------------------------- 7. capacity plan inputs
def fan_out(model, queries: list[str], beam: int, counts=(2, 4, 8, 16, 32)) -> list[list]:
    """Shards a query's beam reaches (its top beam x inserted_beam_factor leaf clusters) when this tree is cut into
    n shards (`plan_shards`), for each n up to a quarter of the leaf clusters: mean, p90, max; and the largest
    shard's classifier weights over the mean."""
    from xrmeta.distributed import plan_shards

    cat = model.catalog
    weight = np.bincount(cat.slot_cluster.view[: cat.n_base], np.diff(cat.w_ptr.view[: cat.n_base + 1]),
                         minlength=cat.n_clusters)
    wide = beam * model.configs.coldstart.inserted_beam_factor
    clusters, _ = model.upper.top_clusters(model.featurizer.transform(queries), beam, 1, wide)
    rows = []
    for n in [c for c in counts if c <= cat.n_clusters // 4]:
        shard = plan_shards(model.upper, weight, n)
        reach = np.array([len(set(shard[c[c >= 0]].tolist())) for c in clusters])
        per = np.bincount(shard, weight, minlength=n)
        rows.append([n, reach.mean(), np.percentile(reach, 90), reach.max(), per.max() / per.mean()])
    return rows


def capacity(fresh, full, router: dict, n_novel: int, fan: list[list], lat: list[list], args) -> dict:
    """The 10^8-product plan from this run's figures: bytes per trained and per inserted item, the router's per
    trained item, the shards a worker budget asks for, and a latency estimate from the measured fan-out cost."""
    n_base = fresh.catalog.n_base
    trained = catalogue_bytes(fresh) / n_base
    inserted = (catalogue_bytes(full) - catalogue_bytes(fresh)) / n_novel
    routed = (router["catalogue"] + router["selector"]) / n_base
    n_new = int(args.products * args.new_share)
    total = (args.products - n_new) * trained + n_new * inserted
    shards = int(np.ceil(total / (args.worker_gib * 2**30)))
    by = {r[0]: r for r in lat}
    x, s1, s2 = (by[name][1] for name in ("xrmeta (in process)", "ShardedModel 1 shard", "ShardedModel 2 shards"))
    reach2 = fan[0][1] if fan and fan[0][0] == 2 else float("nan")
    per_extra = (s2 - s1) / max(reach2 - 1, 1e-9)  # ms per further shard a query reaches, calls serialised here
    widest = fan[-1] if fan else [0, float("nan")]
    return {"trained": trained, "inserted": inserted, "routed": routed, "n_new": n_new, "total": total / 2**30,
            "shards": shards, "router": args.products * routed / 2**30, "per_extra": per_extra, "overhead": s1 - x,
            "fan_n": widest[0], "fan_mean": widest[1],
            "estimate": s1 + per_extra * (widest[1] - 1)}


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--k", type=int, default=10, help="items returned per query")
    p.add_argument("--online", type=int, default=1000, help="test queries sampled for online mode")
    p.add_argument("--repeats", type=int, default=5, help="batch passes over every test query (median)")
    p.add_argument("--bulk", type=int, default=10**6, help="made-up titles inserted in the bulk cold start")
    p.add_argument("--bulk-batch", type=int, default=50_000, help="titles per add_items call in the bulk cold start")
    p.add_argument("--kill-seconds", type=float, default=8.0, help="length of each kill-a-shard run")
    p.add_argument("--products", type=float, default=1e8, help="catalogue size of the capacity plan")
    p.add_argument("--new-share", type=float, default=0.1, help="share of the plan's products inserted, not trained")
    p.add_argument("--worker-gib", type=float, default=8.0, help="catalogue GiB per shard worker in the plan")
    args = C.parse(p, argv, online=50, repeats=2, bulk=2000, bulk_batch=1000, kill_seconds=3.0)
    started = time.perf_counter()
    ray = ray_module()
    from xrmeta.distributed.router import BULK_CHUNK

    model, data, split, _ = C.load(args.dataset, args.seed)
    beam = model._beam_size(None)
    work = Path(tempfile.mkdtemp(prefix="xrmeta-distributed-"))
    try:
        models = Models(model, work)
        items = C.titles_ids(data, split.novel)
        queries = C.texts(data, split.generalized_set.queries)
        online = [queries[i] for i in C.sample(len(queries), args.online, args.seed)]
        full = models.fresh()
        full.add_items(*items)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        plan = write_plan(data, split, args.seed)
        eq = equality(models, plan, queries, args.k, beam)
        lat, lat_checks = local_latency(models, full, items, online, queries, args, beam)
        C.log("local latency done")
        mem, router = memory(models, full, items)
        C.log("memory done")
        kills, timeouts = zip(*[kill_run(models, full, items, online, r, args.kill_seconds, args.k, beam)
                                for r in (1, 2)])
        fan = fan_out(full, queries, beam)
        plan_10e8 = capacity(models.fresh(), full, router, len(items[1]), fan, lat, args)
        C.log(f"kill runs: {kills}")
        bk = bulk(models, data, split, args.bulk, args.bulk_batch, args.seed)
        ray.shutdown()
        nodes = two_nodes(models, full, items, online, queries, args, beam)
        C.log("two nodes done")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    body = render(args, model, full, data, split, plan, beam, eq, lat, lat_checks, mem, router, list(kills), bk,
                  nodes, BULK_CHUNK, ray.__version__, timeouts[0], fan, plan_10e8)
    C.report("distributed", args.dataset, body, started)
    return 0


def render(args, model, full, data, split, plan, beam, eq, lat, lat_checks, mem, router, kills, bk, nodes,
           bulk_chunk, ray_version, timeouts, fan, cap) -> str:
    eq_t = C.table(["shards", "test queries", "identical top-k ids", "share", "max abs score diff",
                    "flagged partial"], eq, ["", "", "", ".1%", ".2e", ""])
    check_t = C.table(["system", "identical top-k rows", "test queries", "max abs score diff", "flagged partial"],
                      lat_checks + [["ShardedModel 2 shards, 2 nodes", *nodes["check"].values()]],
                      ["", "", "", ".2e", ""])
    lat_t = C.table(LAT_HEADER, lat, LAT_FMT)
    nodes_t = C.table(LAT_HEADER, nodes["rows"], LAT_FMT)
    placed_t = C.table(["shard", "node", "worker pid"], nodes["placed"])
    mem_t = C.table(["shards", "MiB per shard", "largest shard MiB", "sum MiB", "sum / whole catalogue",
                     "inserted items held by 2+ shards", "inserted items"], mem,
                    ["", "", ".2f", ".2f", ".2f", "", ""])
    kill_t = C.table(["shards x replicas", "queries served", "median ms", "max ms", "flagged partial",
                      "unflagged and different from the reference", "s until the worker is back (same seq)",
                      "seq", "identical after recovery (sampled queries)", "partial after recovery"], kills,
                     ["", "", ".2f", ".1f", "", "", ".2f", "", "", ""])
    bulk_t = C.table(["system", "titles", "seconds", "items/s"],
                     [["ShardedModel.add_items (2 shards)", bk["items"], bk["sharded"], bk["items"] / bk["sharded"]],
                      ["XRMetaModel.add_items (threads=-1)", bk["items"], bk["xrmeta"], bk["items"] / bk["xrmeta"]]],
                     ["", ",", ".1f", ",.0f"])
    fan_t = C.table(["shards", "shards per query, mean", "p90", "max", "largest shard's weights / mean"], fan,
                    ["", ".2f", ".0f", "", ".2f"])
    by = {r[0]: r for r in lat}
    x, s1, s2 = by["xrmeta (in process)"], by["ShardedModel 1 shard"], by["ShardedModel 2 shards"]
    ping = by[PING]
    return C.text(
        "distributed", dataset=args.dataset, n_items=model.catalog.n_base, n_novel=len(split.novel),
        n_clusters=model.upper.n_clusters, beam=beam, k=args.k, n_test=len(split.generalized_set.queries),
        n_new_half=len(plan[0][1][1]), n_removed=len(plan[1][1][0]), n_clicks=len(plan[2][1][0]),
        equality=eq_t, checks=check_t, latency=lat_t, n_online=args.online, repeats=args.repeats,
        cores=os.cpu_count(), ping_ms=ping[1], s1_ms=s1[1], x_ms=x[1], s2_ms=s2[1],
        ping_share=ping[1] / s1[1], overhead_ms=s1[1] - x[1], s1_batch=s1[5] / x[5], s2_batch=s2[5] / x[5],
        nodes=nodes_t, placed=placed_t, n_used=len({r[1] for r in nodes["placed"]}), memory=mem_t,
        router_cat=router["catalogue"] / 2**20,
        router_sel=router["selector"] / 2**20, whole=catalogue_bytes(full) / 2**20,
        router_share=(router["catalogue"] + router["selector"]) / catalogue_bytes(full), timeout=timeouts[0],
        hedge=timeouts[1], kill=kill_t, fan=fan_t, wide=beam * model.configs.coldstart.inserted_beam_factor,
        products=args.products, new_share=args.new_share, worker_gib=args.worker_gib, **cap,
        kill_seconds=args.kill_seconds, bulk=bulk_t, n_bulk=bk["items"], n_dropped=bk["dropped"],
        bulk_batch=args.bulk_batch,
        bulk_chunk=bulk_chunk, via=("in Ray tasks of {:,} titles".format(bulk_chunk) if args.bulk_batch > bulk_chunk
                                    else "in the router's process (a batch this small is not split into Ray tasks)"),
        ray=ray_version, bulk_ratio=bk["xrmeta"] / bk["sharded"])


if __name__ == "__main__":
    raise SystemExit(main())
