"""Through the tree vs what the words already find: xrmeta (defaults of `python -m xrmeta.train`, every novel item
inserted) against PECOS, BM25 (bm25s) and brute-force title TF-IDF on the same test sets, over split seeds; and
reach: the share of each query's relevant items in one of its beam clusters, the ceiling of recall through the tree.
"""

from __future__ import annotations

import shlex
import time

import numpy as np

from . import api, harness as H
from . import common as C

SETS = ("observed", "zero_shot", "generalized")
METRICS = ("P@1", "P@5", "R@10", "R@100")


def reach(model, data, es, beam: int, wide: bool) -> float:
    """Percent of each query's relevant items whose leaf clusters meet the query's beam (wide: the wider list of
    clusters the search looks for inserted items in), averaged over queries."""
    X = model.featurizer.transform(C.texts(data, es.queries), threads=1)
    B = api.beams(model, X, beam, beam * model.configs.coldstart.inserted_beam_factor if wide else beam).tocsr()
    Y = es.Y.tocsr()
    rows = np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))
    clusters = api.item_clusters(model, api.slots_of(model, [data.item_ids[j] for j in Y.indices]))
    hit = np.zeros(len(rows), dtype=bool)
    for j in range(clusters.shape[1]):
        ok = clusters[:, j] >= 0
        if ok.any():
            hit[ok] |= np.asarray(B[rows[ok], clusters[ok, j]] > 0).ravel()
    n_rel = np.diff(Y.indptr)
    return float((np.bincount(rows, hit, Y.shape[0])[n_rel > 0] / n_rel[n_rel > 0]).mean() * 100)


def xrmeta_of(results: dict) -> dict:
    return next(v for name, v in results.items() if name.startswith("xrmeta"))


def reach_sweep(dataset: str, seed: int, extra: list[str], values=((1, 1), (3, 1), (2, 2), (3, 2), (3, 3))):
    """Zero-shot quality, reach, insertion rate and batch query time with each new item in m clusters and
    queries looking for new items in beam x f clusters (the same trained model)."""
    rows = []
    for m, f in values:
        model, data, split, _ = C.load(dataset, seed, extra)
        api.set_spread(model, m, f)
        ins = H.insert_novel(model, data, split)
        zs = xrmeta_of(api.evaluate_model(model, data, split, threads=1, k=100))["zero_shot"]
        X = model.featurizer.transform(C.texts(data, split.generalized_set.queries), threads=1)
        lat = H.latency({"xrmeta": lambda X: api.search(model, X)}, [], X, 3, warm=[X[:64]], stat=np.min)
        rows.append([m, f, zs["P@1"], zs["R@10"], zs["R@100"],
                     reach(model, data, split.zero_shot_set, model.configs.tree.beam_size, True), f"{ins.per_s:,.0f}",
                     lat["xrmeta"].batch_ms])
    return rows


def run_seed(dataset: str, seed: int, extra: list[str]) -> dict:
    model, data, split, _ = C.load(dataset, seed, extra)
    warm = C.load(dataset, seed, extra)[0]  # a throw-away copy: compiled kernels are loaded off the clock
    beam, cs = model.configs.tree.beam_size, model.configs.coldstart
    ins = H.insert_novel(model, data, split, warm=8, warm_into=warm)
    results = api.evaluate_model(model, data, split, beam_size=beam, threads=1, k=100)
    steps = model.info.get("train_seconds", {})
    return {"xrmeta": xrmeta_of(results), "PECOS": results["XR-Linear (PECOS)"],
            "BM25": {es.name: api.bm25(data, es) for es in split.eval_sets()},
            "title TF-IDF": {es.name: api.title_tfidf(model, data, es) for es in split.eval_sets()},
            "reach zero_shot": reach(model, data, split.zero_shot_set, beam, wide=True),
            "reach observed": reach(model, data, split.observed_set, beam, wide=False),
            "beam": beam, "insert items/s": ins.per_s, "train s": sum(steps.values()), "train steps": steps,
            "assign": cs.assign, "clusters_per_item": cs.clusters_per_item,
            "inserted_beam_factor": cs.inserted_beam_factor, "trust": model.title_trust.to_dict()}


def mean_sd(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-args", default="", help="extra `xrmeta.train` flags, e.g. '--clusters-per-item 1'")
    args = C.parse(p, argv, seeds=[0])
    started = time.perf_counter()
    extra, seeds = shlex.split(args.train_args), args.seeds
    per_seed = {}
    for seed in seeds:
        C.log(f"{args.dataset} seed {seed}")
        per_seed[seed] = run_seed(args.dataset, seed, extra)
    first = per_seed[seeds[0]]
    quality = C.table(["system"] + [f"{s} {m}" for s in SETS for m in METRICS],
                      [[name] + [mean_sd([per_seed[sd][name][s][m] for sd in seeds]) for s in SETS for m in METRICS]
                       for name in ("xrmeta", "PECOS", "BM25", "title TF-IDF")])
    facts = C.table(["measure", "mean ± sd over seeds", "per seed"], [
        [name, mean_sd([per_seed[sd][key] for sd in seeds]), ", ".join(f"{per_seed[sd][key]:.1f}" for sd in seeds)]
        for name, key in (("zero-shot reach at the default beam, %", "reach zero_shot"),
                          ("observed reach at the default beam, %", "reach observed"),
                          ("insertion, items/s (one add_items call, single thread)", "insert items/s"),
                          ("training, s (all cores)", "train s"))])
    verdict = []
    for s, m in (("zero_shot", "P@1"), ("zero_shot", "R@10"), ("observed", "P@1"), ("generalized", "P@1")):
        x, b = (np.mean([per_seed[sd][name][s][m] for sd in seeds]) for name in ("xrmeta", "BM25"))
        verdict.append(f"{s} {m}: xrmeta {x:.2f}, BM25 {b:.2f}, xrmeta / BM25 = {x / b:.3f}")
    C.log("reach sweep")
    sweep = C.table(["clusters per new item (m)", "inserted beam factor (f)", "zero-shot P@1", "zero-shot R@10",
                     "zero-shot R@100", "reach %", "insertion items/s", "batch ms/query (generalized, 1 thread)"],
                    reach_sweep(args.dataset, seeds[0], extra), ["", "", ".2f", ".2f", ".2f", ".1f", "", ".4f"])
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in first["train steps"].items())
    body = C.text("grounding", seeds=seeds, train_args=f" plus `{args.train_args}`" if extra else "",
                  quality=quality, facts=facts, verdict=C.bullets(verdict), seed=seeds[0], steps=steps, sweep=sweep,
                  **{k: first[k] for k in ("beam", "assign", "clusters_per_item", "inserted_beam_factor", "trust")})
    C.report("grounding", args.dataset, body, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
