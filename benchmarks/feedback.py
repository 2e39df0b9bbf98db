"""One-shot feedback (IRENE's one-shot framing): a revealed click on each new item, `add_feedback` vs none vs a
model retrained from scratch with those clicks, over split seeds; feedback events per second; query latency.

Per split seed: the cached model (`xrmeta.train` defaults) with every novel item inserted is "no feedback". For
each novel item, one query is revealed: drawn among its queries outside the test set (training queries whose
clicks on novel items the split hid), so that every row is evaluated on the same, untouched test queries.
"add_feedback" takes those clicks; rows "(step s)" take them with another `ColdStartConfig.feedback_step`.
"retrained" is `XRMetaModel.train` with the same configs on the training queries plus the revealed clicks, over
every item (the novel ones observed, with their titles): what `xrmeta-retrain` makes; "retrained, no clicks" is
the same without the clicks, which tells what the clicks add to a retrain. Test sets: the generalized one (every
item ranked), its queries with a relevant new item (the new items' other queries), and the zero-shot one (ranked
among new items only; the retrained model's new items are trained ones, so it ranks everything and keeps the new
ones).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import scipy.sparse as smat

from xrmeta.model import XRMetaModel

from . import api, harness as H
from . import common as C

METRICS = ("P@1", "P@5", "R@10")


def revealed_clicks(data, split, seed: int) -> tuple[list[str], list[str]]:
    """(query texts, item ids): one query per novel item that has one outside the test set, drawn with seed."""
    rng = np.random.default_rng(seed)
    test = np.zeros(data.n_queries, dtype=bool)
    test[split.generalized_set.queries] = True
    Y = data.Y.tocsc()
    queries, ids = [], []
    for j in split.novel:
        rows = Y.indices[Y.indptr[j] : Y.indptr[j + 1]]
        rows = rows[~test[rows]]
        if len(rows):
            queries.append(data.query_texts[int(rng.choice(rows))])
            ids.append(data.item_ids[j])
    return queries, ids


def retrained(model, data, split, clicks, threads: int = -1) -> XRMetaModel:
    """The model trained from scratch on the training queries plus the revealed clicks, every item observed."""
    col = {i: j for j, i in enumerate(data.item_ids)}
    queries = C.texts(data, split.train_queries) + clicks[0]
    Yt = smat.csr_matrix(split.Y_train)
    items = np.concatenate([split.observed, split.novel])
    at = {j: c for c, j in enumerate(items)}
    rows = np.concatenate([np.repeat(np.arange(Yt.shape[0]), np.diff(Yt.indptr)), Yt.shape[0] + np.arange(len(clicks[1]))])
    cols = np.concatenate([Yt.indices, [at[col[i]] for i in clicks[1]]])  # items start with split.observed
    Y = smat.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(queries), len(items)))
    cs = model.configs
    return XRMetaModel.train(queries, Y, [data.item_texts[j] for j in items], [data.item_ids[j] for j in items],
                             featurizer_config=cs.featurizer, tree_config=cs.tree, coldstart_config=cs.coldstart,
                             threads=threads, verbose=False)


def quality(model, data, split, novel_ranked_among_all: bool) -> dict:
    """{test set: {metric: value}}: generalized, its queries with a relevant new item, zero-shot."""
    def predict(texts, subset, k):
        ids, scores = model.predict(texts, k=k, subset=subset, threads=1)
        return api.id_columns(ids, data), scores

    sets = evaluation_sets(split)
    out = {name: api.evaluate_set(predict, data, es, "all", k=100) for name, es in sets.items() if name != "zero-shot"}
    if novel_ranked_among_all:  # trained new items: rank every item, keep the new ones (evaluate_set restricts)
        out["zero-shot"] = api.evaluate_set(predict, data, sets["zero-shot"], "all", k=5000)
    else:
        out["zero-shot"] = api.evaluate_set(predict, data, sets["zero-shot"], "inserted", k=100)
    return out


def word_baselines(model, data, split, clicks) -> dict:
    """BM25 (bm25s) over the titles, BM25 with each revealed query appended to its item's title (what a BM25
    engine does with a click), and brute-force title TF-IDF in the model's feature space, on the same test sets."""
    text = dict(zip(clicks[1], clicks[0]))
    fed = dataclasses.replace(data, item_texts=[t + " " + text[i] if i in text else t
                                                for t, i in zip(data.item_texts, data.item_ids)])
    out = {}
    for name, run in (("BM25 (titles)", lambda es: api.bm25(data, es)),
                      ("BM25 (titles + revealed queries)", lambda es: api.bm25(fed, es)),
                      ("title TF-IDF, brute force", lambda es: api.title_tfidf(model, data, es))):
        out[name] = {name_: run(es) for name_, es in evaluation_sets(split).items()}
    return out


def evaluation_sets(split) -> dict:
    """The three test sets of the report, by name."""
    gen = split.generalized_set
    has_new = np.asarray(gen.Y[:, split.novel].sum(axis=1)).ravel() > 0
    return {"generalized": gen,
            "new items' queries": api.EvalSet("new items' queries", gen.queries[has_new], gen.Y[has_new],
                                              gen.candidates),
            "zero-shot": split.zero_shot_set}


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="split seeds")
    p.add_argument("--repeats", type=int, default=3, help="fresh copies timed for the events/s median")
    p.add_argument("--steps", type=float, nargs="*", default=[0.1, 0.5],
                   help="other values of ColdStartConfig.feedback_step to evaluate (the default is always)")
    args = C.parse(p, argv, seeds=[0], repeats=1, steps=[0.5])
    started = time.perf_counter()
    rows, cost, lat = {}, [], []
    for seed in args.seeds:
        model, data, split, folder = C.load(args.dataset, seed)
        H.insert_novel(model, data, split)
        clicks = revealed_clicks(data, split, seed)
        C.log(f"seed {seed}: {len(clicks[1])} of {len(split.novel)} novel items get a revealed click")
        results = {"no feedback": quality(model, data, split, False)}
        default = model.configs.coldstart.feedback_step
        for step in [default] + [s for s in args.steps if s != default]:
            after = model.copy(feedback_step=step)  # the same catalogue, novel items inserted
            after.add_feedback(*clicks, threads=1)
            results["add_feedback" + ("" if step == default else f" (step {step:g})")] = quality(after, data, split,
                                                                                             False)
            if step == default:
                fed = after
        results.update(word_baselines(model, data, split, clicks))
        t0 = time.perf_counter()
        results["retrained"] = quality(retrained(model, data, split, clicks), data, split, True)
        results["retrained, no clicks"] = quality(retrained(model, data, split, ([], [])), data, split, True)
        C.log(f"  retrained twice + evaluated in {time.perf_counter() - t0:.1f} s")
        rows[seed] = results
        if seed == args.seeds[0]:
            cost = feedback_rate(folder, data, split, clicks, args.repeats)
            lat = latency(model, fed, data, split)
    body = report_body(args, rows, cost, lat)
    C.report("feedback", args.dataset, body, started)
    return 0


def feedback_rate(folder, data, split, clicks, repeats: int) -> dict:
    """Events/s of add_feedback, single thread: all revealed clicks in one call, and one click per call."""
    batch, single = [], []
    for _ in range(repeats):
        m = XRMetaModel.load(folder)
        H.insert_novel(m, data, split)
        with H.single_thread():
            t0 = time.perf_counter()
            m.add_feedback(*clicks, threads=1)
            batch.append(time.perf_counter() - t0)
        m = XRMetaModel.load(folder)
        H.insert_novel(m, data, split)
        n = min(500, len(clicks[1]))
        with H.single_thread():
            t0 = time.perf_counter()
            for q, i in zip(clicks[0][:n], clicks[1][:n]):
                m.add_feedback([q], [i], threads=1)
            single.append((time.perf_counter() - t0) / n)
    n = len(clicks[1])
    return {"events": n, "batch_s": float(np.median(batch)), "per_s": n / float(np.median(batch)),
            "single_us": float(np.median(single)) * 1e6}


def latency(before, after, data, split) -> dict:
    """Batch ms per query, single thread, generalized test queries: PECOS predict-only, xrmeta before and after."""
    X = before.featurizer.transform(C.texts(data, split.generalized_set.queries), threads=1)
    calls = {"PECOS predict-only": lambda X: api.pecos_search(before, X),
             "xrmeta, no feedback": lambda X: api.search(before, X),
             "xrmeta, after add_feedback": lambda X: api.search(after, X)}
    lat = H.latency(calls, [X[i] for i in range(min(300, X.shape[0]))], X, 5, warm=[X[:64]])
    return {name: (v.batch_ms, v.median_ms) for name, v in lat.items()}


def report_body(args, rows: dict, cost: dict, lat: dict) -> str:
    seeds = list(rows)
    systems = list(rows[seeds[0]])
    sets = list(rows[seeds[0]][systems[0]])
    lines = []
    for s in sets:
        table_rows = []
        for name in systems:
            vals = [[rows[seed][name][s][m] for seed in seeds] for m in METRICS]
            table_rows.append([name] + [f"{np.mean(v):.2f} ± {np.std(v):.2f}" for v in vals])
        lines.append(f"**{s}** (mean ± sd over seeds {seeds})\n\n" + C.table(["system"] + list(METRICS), table_rows))
    base = lat["PECOS predict-only"][0] if lat else np.nan
    lat_rows = [[name, f"{b:.3f}", f"{b / base:.2f}", f"{o:.3f}"] for name, (b, o) in lat.items()]
    return C.text("feedback", seeds=seeds, events=cost.get("events", 0), batch_s=cost.get("batch_s", np.nan),
                  per_s=cost.get("per_s", np.nan), single_us=cost.get("single_us", np.nan),
                  quality="\n\n".join(lines),
                  latency=C.table(["system", "batch ms/query", "ratio to PECOS", "online median ms"], lat_rows))


if __name__ == "__main__":
    raise SystemExit(main())
