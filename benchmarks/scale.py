"""Scale check: how query latency and insertion cost grow from 10^4 to 10^6 labels, on synthetic catalogues
generated in memory: a 10^4-item tree grown by `add_items` (made-up titles: observed words recombined, seeded), and
trees trained at each decade up to --trained-max with xrmeta and PECOS on the same tree. Latency: beam 10, top-10,
`harness.latency` (online median / p99, batch median of 3).
"""

from __future__ import annotations

import json
import time

import numpy as np
import scipy.sparse as smat

from xrmeta.data import make_synthetic, make_zero_shot_split
from xrmeta.model import XRMetaModel

from . import api, harness as H
from . import common as C
from .plotting import scale_curves

QUERIES_PER_ITEM = 3  # make_synthetic's own ratio (2000 items, 6000 queries)


def title_batches(titles: list[str], total: int, batch: int, seed: int):
    """Yield (titles, ids) batches of made-up titles: lengths and words drawn from the given titles."""
    rng = np.random.default_rng(seed)
    lengths = np.array([len(t.split()) for t in titles])
    words = np.array([w for t in titles for w in t.split()], dtype=object)  # drawn by frequency
    for start in range(0, total, batch):
        n = min(batch, total - start)
        ln = rng.choice(lengths, size=n)
        drawn = words[rng.integers(0, len(words), size=int(ln.sum()))]
        yield [" ".join(w) for w in np.split(drawn, np.cumsum(ln)[:-1])], [f"scale{start + i:07d}" for i in range(n)]


def start(n_items: int, n_queries: int, seed: int) -> dict:
    """Train on a fresh synthetic catalogue (all cores), then insert its novel items (`harness.insert`: the JIT
    warmed on 20 of them, which stay in and are not counted)."""
    gen_s, data = H.clock(make_synthetic, n_items=n_items, n_queries=QUERIES_PER_ITEM * n_items, seed=seed)
    split = make_zero_shot_split(data, seed=seed)
    train_s, model = H.clock(XRMetaModel.train, C.texts(data, split.train_queries), split.Y_train,
                             *C.titles_ids(data, split.observed), threads=-1, verbose=False, **api.TRAIN_KWARGS)
    ins = H.insert_novel(model, data, split, warm=20)
    q = np.random.default_rng(seed).choice(split.generalized_set.queries, replace=False,
                                           size=min(n_queries, len(split.generalized_set.queries)))
    X = model.featurizer.transform(C.texts(data, np.sort(q)), threads=1)
    size = api.catalog_sizes(model)
    return dict(model=model, data=data, split=split, rows=[X[i : i + 1] for i in range(X.shape[0])],
                info=dict(labels=len(model.catalog), trained_items=len(split.observed), clusters=size["clusters"],
                          generator=model.configs.coldstart.generator, gen_s=gen_s, train_s=train_s,
                          inserted=ins.items, insert_s=ins.seconds, insert_us=ins.us_per_item))


def latency(fns: dict, rows: list) -> dict[str, H.Latency]:
    return H.latency(fns, rows, smat.vstack(rows).tocsr(), 3, warm=rows[:1])


def grown(max_items: int, batch: int, n_queries: int, seed: int) -> tuple[list[dict], dict]:
    s = start(10**4, n_queries, seed)
    model, rows, base = s["model"], s["rows"], s["info"]
    fns = {"xrmeta": lambda X: api.search(model, X, 10, 10)}

    def step(inserted, seconds, per_batch):
        lat = latency(fns, rows)["xrmeta"]
        C.log(f"scale: {len(model.catalog)} labels, {seconds:.1f} s")
        return dict(labels=len(model.catalog), inserted=inserted, insert_s=seconds, insert_us=seconds / inserted * 1e6,
                    batch_us=per_batch, online_median_ms=lat.median_ms, online_p99_ms=lat.p99_ms, batch_ms=lat.batch_ms)

    steps = [step(base["inserted"], base["insert_s"], [])]
    targets = [t for t in (3 * 10**4, 10**5, 3 * 10**5, 10**6) if t <= max_items]
    observed = C.titles_ids(s["data"], s["split"].observed)[0]
    gen = title_batches(observed, max(0, targets[-1] - len(model.catalog)) if targets else 0, batch, seed)
    pending = None
    for target in targets:
        per_batch, first = [], len(model.catalog)
        while len(model.catalog) < target:
            pending = pending or next(gen)
            take = min(len(pending[0]), target - len(model.catalog))
            ins = H.insert(model, pending[0][:take], pending[1][:take])
            pending = None if take == len(pending[0]) else (pending[0][take:], pending[1][take:])
            per_batch.append(ins)
        steps.append(step(len(model.catalog) - first, sum(i.seconds for i in per_batch),
                          [i.us_per_item for i in per_batch]))
    return steps, base


def trained(sizes: list[int], n_queries: int, seed: int) -> list[dict]:
    out = []
    for n_items in sizes:
        s = start(n_items, n_queries, seed)
        model, pecos = s["model"], api.pecos(s["model"])
        lat = latency({"xrmeta": lambda X: api.search(model, X, 10, 10),
                       "pecos": lambda X: pecos.predict(X, beam_size=10, only_topk=10, threads=1)}, s["rows"])
        x, pc = lat["xrmeta"], lat["pecos"]
        out.append(dict(s["info"], online_median_ms=x.median_ms, online_p99_ms=x.p99_ms, batch_ms=x.batch_ms,
                        pecos_median_ms=pc.median_ms, pecos_p99_ms=pc.p99_ms, pecos_batch_ms=pc.batch_ms))
        C.log(f"trained at {n_items}: train {s['info']['train_s']:.1f} s")
    return out


def render(steps: list[dict], base: dict, tr: list[dict], batch: int, n_queries: int, plot) -> str:
    def spread(us):
        return f"{min(us):.1f} / {np.median(us):.1f} / {max(us):.1f}" if us else ""

    g_rows = [[f"{r['labels']:,}", f"{r['inserted']:,}", r["insert_s"], r["insert_us"], spread(r["batch_us"]),
               r["online_median_ms"], r["online_p99_ms"], r["batch_ms"]] for r in steps]
    t_rows = [[f"{r['labels']:,}", f"{r['trained_items']:,}", r["clusters"], r["gen_s"], r["train_s"], r["insert_us"],
               r["online_median_ms"], r["online_p99_ms"], r["pecos_median_ms"],
               r["online_median_ms"] / r["pecos_median_ms"], r["batch_ms"], r["pecos_batch_ms"]] for r in tr]
    first, last = steps[0], steps[-1]
    grown_t = C.table(["labels in catalogue", "inserted in this step", "seconds", "µs/item (step)",
                       "µs/item per call min / median / max", "online median ms", "online p99 ms", "batch ms/query"],
                      g_rows, ["", "", ".2f", ".1f", "", ".3f", ".3f", ".3f"])
    trained_t = C.table(["labels", "trained items", "leaf clusters", "generate s", "train s (all cores)",
                         "insert µs/item", "xrmeta online median ms", "xrmeta p99 ms", "PECOS online median ms",
                         "xrmeta / PECOS", "xrmeta batch ms/query", "PECOS batch ms/query"], t_rows,
                        ["", "", "", ".1f", ".1f", ".1f", ".3f", ".3f", ".3f", ".2f", ".3f", ".3f"])
    return C.text("scale", link=f"benchmarks/plots/{plot.name}", name=plot.name, batch=batch, n_queries=n_queries,
                  grown=grown_t, first=first["labels"], last=last["labels"], trained=trained_t,
                  latency_x=last["online_median_ms"] / first["online_median_ms"],
                  insert_x=last["insert_us"] / first["insert_us"], **base)


def main(argv=None) -> int:
    p = C.parser(__doc__, dataset="synthetic")
    p.add_argument("--max-items", type=int, default=10**6, help="labels the grown catalogue reaches")
    p.add_argument("--trained-max", type=int, default=10**5, help="largest catalogue trained at its size")
    p.add_argument("--batch", type=int, default=10**4, help="items per add_items call while growing")
    p.add_argument("--queries", type=int, default=200, help="test queries timed")
    args = C.parse(p, argv, max_items=3 * 10**4, trained_max=10**4, batch=5000, queries=50)
    if args.dataset != "synthetic":
        p.error("the scale check runs on generated synthetic catalogues only (--dataset synthetic)")
    started = time.perf_counter()
    steps, base = grown(args.max_items, args.batch, args.queries, args.seed)
    tr = trained([10**e for e in range(4, 8) if 10**e <= args.trained_max], args.queries, args.seed)
    plot = scale_curves(steps, tr, "scale_synthetic.png",
                        "Scale: query latency and insertion cost vs catalogue size (synthetic, single thread)")
    C.OUT.mkdir(parents=True, exist_ok=True)
    (C.OUT / "scale_synthetic.json").write_text(json.dumps({"grown": steps, "base": base, "trained": tr}, indent=1))
    C.report("scale", "synthetic", render(steps, base, tr, args.batch, args.queries, plot), started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
