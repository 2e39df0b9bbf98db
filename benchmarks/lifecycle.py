"""Lifecycle: query latency as inserted items outgrow the trained leaf clusters, with and without the leaf split
(`xrmeta.parts`), and the split's effect on zero-shot accuracy on the real datasets.

Growth: a tree trained on --items synthetic items (90% observed) gets its novel items, then made-up titles
(`scale.title_batches`) up to each checkpoint; the same batches go into one copy of the catalogue per split_size
(0: never split), alternating, and at each checkpoint every (split_size, split_probe) is timed in the same
process, interleaved (`harness.latency`: beam 10, top-10, online median / p99, batch). 'agree@10': the share of
each query's top-10 that the copy without split returns too (what the routers lose). Accuracy: zero-shot and
generalized P@1 with the novel items inserted, on the cached models of --datasets, for split_size 0, the default
and a forced small one that splits most clusters.
"""

from __future__ import annotations

import json
import time

import numpy as np
import scipy.sparse as smat

from xrmeta.coldstart import ColdStartConfig
from xrmeta.data import make_synthetic, make_zero_shot_split
from xrmeta.evaluation import evaluate_sets, id_columns
from xrmeta.model import XRMetaModel

from . import harness as H
from . import common as C
from .scale import QUERIES_PER_ITEM, title_batches

DEFAULT = ColdStartConfig()


def parts_info(model: XRMetaModel) -> dict:
    c = model.catalog
    per_cluster = np.bincount(c._parts.part_cluster.view, minlength=c.n_clusters)
    return dict(parts=int(c._parts.n_parts), split_clusters=int((per_cluster > 1).sum()),
                max_parts=int(per_cluster.max()))


def searcher(model: XRMetaModel, probe: int):
    wide = 10 * model.configs.coldstart.inserted_beam_factor
    return lambda X: model.catalog.search(X, model.upper, 10, 10, "all", 1, wide, probe)


def agreement(slots: np.ndarray, ref: np.ndarray) -> float:
    """Mean share of each query's reference top-10 found in its top-10 (slots are the same in every copy)."""
    found = [len(set(a[a >= 0]) & set(b[b >= 0])) / max((b >= 0).sum(), 1) for a, b in zip(slots, ref)]
    return float(np.mean(found))


# ---------------------------------------------------------------- growth (synthetic)
def grow(n_items: int, checkpoints: list[int], sizes: list[int], probes: list[int], batch: int, n_queries: int,
         seed: int) -> tuple[dict, list[dict]]:
    gen_s, data = H.clock(make_synthetic, n_items=n_items, n_queries=QUERIES_PER_ITEM * n_items, seed=seed)
    split = make_zero_shot_split(data, seed=seed)
    train_s, base = H.clock(XRMetaModel.train, C.texts(data, split.train_queries), split.Y_train,
                            *C.titles_ids(data, split.observed), threads=-1, verbose=False,
                            coldstart_config=ColdStartConfig(split_size=0))
    models = {s: base.copy(split_size=s) for s in sizes}  # base stays alive: its temporary workdir
    ins = {s: H.insert_novel(m, data, split, warm=20) for s, m in models.items()}
    q = np.random.default_rng(seed).choice(split.generalized_set.queries, replace=False,
                                           size=min(n_queries, len(split.generalized_set.queries)))
    X = models[sizes[0]].featurizer.transform(C.texts(data, np.sort(q)), threads=1)
    rows = [X[i : i + 1] for i in range(X.shape[0])]
    info = dict(trained_items=len(split.observed), clusters=models[sizes[0]].catalog.n_clusters, gen_s=gen_s,
                train_s=train_s, novel=ins[sizes[0]].items)
    calls = {(s, p): searcher(m, p) for s, m in models.items() for p in (probes if s else [1])}
    n_base = models[sizes[0]].catalog.n_base

    def step(inserted_s: dict) -> dict:
        lat = H.latency({f"{s}/{p}": f for (s, p), f in calls.items()}, rows, X, 3, warm=rows[:1])
        ref = calls[(0, 1)](X)[0] if 0 in sizes else None
        out = dict(inserted=models[sizes[0]].catalog.n_slots - n_base, configs=[])
        for (s, p), f in calls.items():
            r = lat[f"{s}/{p}"]
            out["configs"].append(dict(split_size=s, probe=p, online_median_ms=r.median_ms, online_p99_ms=r.p99_ms,
                                       batch_ms=r.batch_ms, insert_s=inserted_s.get(s, 0.0),
                                       agree=agreement(f(X)[0], ref) if ref is not None else np.nan,
                                       **parts_info(models[s])))
        C.log(f"lifecycle: {out['inserted']:,} inserted")
        return out

    step({})  # untimed: the first timing after training ran slow (caches, clock), and it is every ratio's base
    steps = [step({s: i.seconds for s, i in ins.items()})]
    observed = C.titles_ids(data, split.observed)[0]
    first = steps[0]["inserted"]
    gen = title_batches(observed, max(0, checkpoints[-1] - first), batch, seed)
    pending = None
    for target in [t for t in checkpoints if t > first]:  # the first row already holds the novel items
        seconds = dict.fromkeys(sizes, 0.0)
        while models[sizes[0]].catalog.n_slots - n_base < target:
            pending = pending or next(gen)
            take = min(len(pending[0]), target - (models[sizes[0]].catalog.n_slots - n_base))
            titles, ids = pending[0][:take], pending[1][:take]
            pending = None if take == len(pending[0]) else (pending[0][take:], pending[1][take:])
            for s in sizes:  # the same batch into every copy, one after the other
                seconds[s] += H.insert(models[s], titles, ids).seconds
        steps.append(step(seconds))
    return info, steps


# ---------------------------------------------------------------- accuracy (real datasets)
def accuracy(dataset: str, seed: int, settings: list[tuple[int, int]]) -> list[dict]:
    model, data, split, _ = C.load(dataset, seed)
    out = []
    for s, probe in settings:
        m = model.copy(split_size=s, split_probe=probe)
        t0 = time.perf_counter()
        missing = [j for j in split.novel if data.item_ids[j] not in m]
        m.add_items([data.item_texts[j] for j in missing], [data.item_ids[j] for j in missing], threads=1)
        add_s = time.perf_counter() - t0

        def predict(texts, subset, k, m=m):
            ids, scores = m.predict(texts, k=k, subset=subset, threads=1)
            return id_columns(ids, data), scores

        res = evaluate_sets(predict, data, split, None, 100)
        out.append(dict(dataset=dataset, split_size=s, probe=probe, add_s=add_s, inserted=len(missing),
                        zero_shot_p1=res["zero_shot"]["P@1"], zero_shot_r10=res["zero_shot"]["R@10"],
                        generalized_p1=res["generalized"]["P@1"], **parts_info(m)))
        C.log(f"accuracy {dataset} split_size {s}: {out[-1]}")
    return out


# ---------------------------------------------------------------- report
def render(info: dict, steps: list[dict], acc: list[dict], args) -> str:
    base = {(c["split_size"], c["probe"]): c for c in steps[0]["configs"]}
    rows = []
    for st in steps:
        for c in st["configs"]:
            b = base[(c["split_size"], c["probe"])]
            rows.append([f"{st['inserted']:,}", c["split_size"], c["probe"], c["parts"], c["split_clusters"],
                         c["max_parts"], c["insert_s"], c["online_median_ms"], c["online_p99_ms"], c["batch_ms"],
                         c["online_median_ms"] / b["online_median_ms"], c["agree"]])
    grown = C.table(["inserted", "split_size", "split_probe", "parts", "clusters split", "most parts in a cluster",
                     "insert s (step)", "online median ms", "online p99 ms", "batch ms/query",
                     "median / as trained", "agree@10 with split_size 0"], rows,
                    ["", "", "", "", "", "", ".1f", ".3f", ".3f", ".3f", ".2f", ".3f"])
    acc_t = C.table(["dataset", "split_size", "split_probe", "novel inserted", "parts", "clusters split",
                     "zero-shot P@1", "zero-shot R@10", "generalized P@1", "insert s"],
                    [[a["dataset"], a["split_size"], a["probe"], a["inserted"], a["parts"], a["split_clusters"],
                      a["zero_shot_p1"], a["zero_shot_r10"], a["generalized_p1"], a["add_s"]] for a in acc],
                    ["", "", "", "", "", "", ".2f", ".2f", ".2f", ".1f"])
    last = {(c["split_size"], c["probe"]): c for c in steps[-1]["configs"]}
    ratio = {key: last[key]["online_median_ms"] / base[key]["online_median_ms"] for key in last}
    default = (DEFAULT.split_size, DEFAULT.split_probe)
    verdict = C.text("lifecycle.verdict", inserted=steps[-1]["inserted"], split=ratio.get(default, np.nan),
                     none=ratio.get((0, 1), np.nan), size=default[0], probe=default[1],
                     outcome="met" if ratio.get(default, np.inf) <= 1.5 else "missed")
    return C.text("lifecycle", grown=grown, accuracy=acc_t, batch=args.batch, n_queries=args.queries,
                  default_size=DEFAULT.split_size, default_probe=DEFAULT.split_probe, verdict=verdict, **info)


def ints(text: str) -> list[int]:
    return [int(float(v)) for v in text.split(",") if v]


def main(argv=None) -> int:
    p = C.parser(__doc__, dataset="synthetic")
    p.add_argument("--items", type=int, default=10**5, help="synthetic items generated (90%% trained)")
    p.add_argument("--checkpoints", type=ints, default=[10**4, 10**5, 10**6], help="inserted items timed at")
    p.add_argument("--sizes", type=ints, default=[0, DEFAULT.split_size], help="split_size of each copy")
    p.add_argument("--probes", type=ints, default=sorted({1, DEFAULT.split_probe}), help="split_probe timed per copy")
    p.add_argument("--batch", type=int, default=10**4, help="items per add_items call while growing")
    p.add_argument("--queries", type=int, default=200, help="test queries timed")
    p.add_argument("--datasets", default="homedepot,pricerunner", help="real datasets for accuracy ('': none)")
    p.add_argument("--forced-size", type=int, default=8, help="a small split_size that splits most clusters")
    p.add_argument("--forced-probes", type=ints, default=sorted({1, DEFAULT.split_probe, 4}),
                   help="its split_probes")
    args = C.parse(p, argv, items=3000, checkpoints=[1000, 3000], batch=500, queries=30, datasets="",
                   sizes=[0, 16], probes=[1, 2])
    if 0 not in args.sizes:
        p.error("--sizes must include 0 (the copy without split is the reference)")
    started = time.perf_counter()
    info, steps = grow(args.items, sorted(args.checkpoints), args.sizes, args.probes, args.batch, args.queries,
                       args.seed)
    acc = []
    for ds in [d for d in args.datasets.split(",") if d]:
        acc += accuracy(ds, args.seed, [(0, 1), (DEFAULT.split_size, DEFAULT.split_probe)]
                        + [(args.forced_size, p) for p in args.forced_probes])
    C.OUT.mkdir(parents=True, exist_ok=True)
    (C.OUT / "lifecycle_synthetic.json").write_text(json.dumps({"info": info, "grown": steps, "accuracy": acc},
                                                               indent=1, default=float))
    C.report("lifecycle", "synthetic", render(info, steps, acc, args), started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
