"""Scale check: how query latency and insertion cost grow from 10^4 to 10^6 labels, on synthetic catalogues
that are generated in memory and never stored.

1. Grown by insertion: a tree trained on a 10^4-item synthetic catalogue (`make_synthetic`, 10% of items held
   out as novel), whose leaf layer then grows to 10^6 items through `add_items`: the split's novel items first,
   then made-up titles (words of the observed titles recombined, seeded, generated lazily per batch). At each
   size: query latency and the cost per inserted item of getting there.
2. Trained at size: trees trained on synthetic catalogues of each decade up to --trained-max (default 10^5: a
   10^6-item tree takes longer to generate and train than the whole benchmark's budget), their novel items
   inserted; xrmeta and PECOS latency on the same tree, and the insertion cost.

Latency: beam 10, top-10 (serving defaults), single thread, test queries featurized off the clock; one query per
call (median, p99) and one batch call (median of 3).

Run: .venv/bin/python -m benchmarks.scale
"""

from __future__ import annotations

import json
import time

import numba
import numpy as np

from xrmeta.data import make_synthetic, make_zero_shot_split
from xrmeta.evaluate import insert_novel
from xrmeta.model import XRMetaModel

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
        cut = np.cumsum(ln)[:-1]
        yield ([" ".join(w) for w in np.split(drawn, cut)],
               [f"scale{start + i:07d}" for i in range(n)])


def train_synthetic(n_items: int, seed: int):
    """(model, data, split, seconds to generate, seconds to train) for a synthetic catalogue of n_items."""
    gen_s, data = C.clock(make_synthetic, n_items=n_items, n_queries=QUERIES_PER_ITEM * n_items, seed=seed)
    split = make_zero_shot_split(data, seed=seed)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    train_s, model = C.clock(
        XRMetaModel.train, [data.query_texts[i] for i in split.train_queries], split.Y_train,
        [data.item_texts[j] for j in split.observed], [data.item_ids[j] for j in split.observed],
        threads=-1, verbose=False)
    C.single_thread()
    return model, data, split, gen_s, train_s


def query_rows(model, data, split, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    q = rng.choice(split.generalized_set.queries, size=min(n, len(split.generalized_set.queries)), replace=False)
    X = model.featurizer.transform([data.query_texts[i] for i in np.sort(q)], threads=1)
    return [X[i : i + 1] for i in range(X.shape[0])]


def latency(fns: dict, rows: list) -> dict:
    """{name: (online median ms, online p99 ms, batch ms/query)} for fns[name](X), interleaved."""
    import scipy.sparse as smat

    online = C.interleaved(fns, rows)
    X = smat.vstack(rows).tocsr()
    batch = C.interleaved(fns, [X] * 3)
    return {k: (float(np.median(v) * 1e3), float(np.percentile(v, 99) * 1e3),
                float(np.median(batch[k]) / X.shape[0] * 1e3)) for k, v in online.items()}


def xrmeta_call(model):
    return lambda X: model.predict_slots(X, k=10, beam_size=10, threads=1)


def start(n_items: int, n_queries: int, seed: int) -> dict:
    """Train on a fresh synthetic catalogue, then insert its novel items (timed, JIT warmed on 20 of them)."""
    model, data, split, gen_s, train_s = train_synthetic(n_items, seed)
    novel = list(split.novel)
    model.add_items([data.item_texts[j] for j in novel[:20]], [data.item_ids[j] for j in novel[:20]], threads=1)
    insert_s, n = C.clock(insert_novel, model, data, split)
    return dict(model=model, data=data, split=split, rows=query_rows(model, data, split, n_queries, seed),
                info=dict(labels=len(model.catalog), trained_items=len(split.observed),
                          clusters=model.catalog.n_clusters, generator=model.configs.coldstart.generator,
                          gen_s=gen_s, train_s=train_s, inserted=n,
                          insert_s=insert_s, insert_us=insert_s / n * 1e6))


def grown(max_items: int, batch: int, n_queries: int, seed: int) -> tuple[list[dict], dict]:
    s = start(10**4, n_queries, seed)
    model, rows, base = s["model"], s["rows"], s["info"]
    f = xrmeta_call(model)
    f(rows[0])
    lat = latency({"xrmeta": f}, rows)["xrmeta"]
    steps = [dict(labels=base["labels"], inserted=base["inserted"], insert_s=base["insert_s"],
                  insert_us=base["insert_us"], batch_us=[], online_median_ms=lat[0], online_p99_ms=lat[1],
                  batch_ms=lat[2])]
    C.log(f"scale: {len(model.catalog)} labels")
    observed = [s["data"].item_texts[j] for j in s["split"].observed]
    targets = [t for t in (3 * 10**4, 10**5, 3 * 10**5, 10**6) if t <= max_items]
    gen = title_batches(observed, max(0, targets[-1] - len(model.catalog)) if targets else 0, batch, seed)
    pending = None
    for target in targets:
        seconds, per_batch, first = 0.0, [], len(model.catalog)
        while len(model.catalog) < target:
            if pending is None:
                pending = next(gen)
            take = min(len(pending[0]), target - len(model.catalog))
            t, ids = pending[0][:take], pending[1][:take]
            pending = None if take == len(pending[0]) else (pending[0][take:], pending[1][take:])
            sec, _ = C.clock(model.add_items, t, ids, threads=1)
            seconds += sec
            per_batch.append(sec / take * 1e6)
        n = len(model.catalog) - first
        lat = latency({"xrmeta": f}, rows)["xrmeta"]
        steps.append(dict(labels=len(model.catalog), inserted=n, insert_s=seconds, insert_us=seconds / n * 1e6,
                          batch_us=per_batch, online_median_ms=lat[0], online_p99_ms=lat[1], batch_ms=lat[2]))
        C.log(f"scale: {len(model.catalog)} labels, {seconds:.1f} s")
    return steps, base


def trained(sizes: list[int], n_queries: int, seed: int) -> list[dict]:
    out = []
    for n_items in sizes:
        s = start(n_items, n_queries, seed)
        model, rows = s["model"], s["rows"]
        pecos = model.pecos_model()
        fns = {"xrmeta": xrmeta_call(model),
               "pecos": lambda X: pecos.predict(X, beam_size=10, only_topk=10, threads=1)}
        for fn in fns.values():
            fn(rows[0])
        lat = latency(fns, rows)
        out.append(dict(s["info"], online_median_ms=lat["xrmeta"][0], online_p99_ms=lat["xrmeta"][1],
                        batch_ms=lat["xrmeta"][2], pecos_median_ms=lat["pecos"][0], pecos_p99_ms=lat["pecos"][1],
                        pecos_batch_ms=lat["pecos"][2]))
        C.log(f"trained at {n_items}: train {s['info']['train_s']:.1f} s")
    return out


def render(steps: list[dict], base: dict, tr: list[dict], batch: int, n_queries: int, plot) -> str:
    g_rows = [[f"{r['labels']:,}", f"{r['inserted']:,}", f"{r['insert_s']:.2f}", f"{r['insert_us']:.1f}",
               (f"{min(r['batch_us']):.1f} / {np.median(r['batch_us']):.1f} / {max(r['batch_us']):.1f}"
                if r["batch_us"] else ""),
               f"{r['online_median_ms']:.3f}", f"{r['online_p99_ms']:.3f}", f"{r['batch_ms']:.3f}"] for r in steps]
    t_rows = [[f"{r['labels']:,}", f"{r['trained_items']:,}", r["clusters"], f"{r['gen_s']:.1f}", f"{r['train_s']:.1f}",
               f"{r['insert_us']:.1f}", f"{r['online_median_ms']:.3f}", f"{r['online_p99_ms']:.3f}",
               f"{r['pecos_median_ms']:.3f}", f"{r['online_median_ms'] / r['pecos_median_ms']:.2f}",
               f"{r['batch_ms']:.3f}", f"{r['pecos_batch_ms']:.3f}"] for r in tr]
    first, last = steps[0], steps[-1]
    link = f"benchmarks/plots/{plot.name}"
    return (
        f"![scale]({link})\n\n[{plot.name}]({link})\n\n"
        f"## Grown by insertion: a tree trained on {base['trained_items']:,} items ({base['clusters']} leaf clusters; "
        f"generated in {base['gen_s']:.1f} s, trained in {base['train_s']:.1f} s)\n\n"
        f"Cold start: `xrmeta` defaults (generator `{base['generator']}`) here and in the trained-at-size rows. "
        f"The first row inserts the split's real novel items; later rows insert made-up titles in `add_items` calls "
        f"of {batch:,} items (title generation off the clock). The tree and its leaf clusters stay as trained, so "
        f"every cluster grows. Latency over {n_queries} test queries.\n\n"
        + C.md_table(["labels in catalogue", "inserted in this step", "seconds", "µs/item (step)",
                      "µs/item per call min / median / max", "online median ms", "online p99 ms", "batch ms/query"],
                     g_rows)
        + f"\n\nFrom {first['labels']:,} to {last['labels']:,} labels: query latency (online median) x"
        f"{last['online_median_ms'] / first['online_median_ms']:.1f}, insertion cost per item "
        f"x{last['insert_us'] / first['insert_us']:.2f}.\n\n"
        "## Trained at size: a tree trained on each catalogue, its novel items (10%) inserted\n\n"
        + C.md_table(["labels", "trained items", "leaf clusters", "generate s", "train s (all cores)",
                      "insert µs/item", "xrmeta online median ms", "xrmeta p99 ms", "PECOS online median ms",
                      "xrmeta / PECOS", "xrmeta batch ms/query", "PECOS batch ms/query"], t_rows)
        + "\n"
    )


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.set_defaults(dataset="synthetic")
    p.add_argument("--max-items", type=int, default=10**6, help="labels the grown catalogue reaches")
    p.add_argument("--trained-max", type=int, default=10**5, help="largest catalogue trained at its size")
    p.add_argument("--batch", type=int, default=10**4, help="items per add_items call while growing")
    p.add_argument("--queries", type=int, default=200, help="test queries timed")
    args = p.parse_args(argv)
    if args.dataset != "synthetic":
        p.error("the scale check runs on generated synthetic catalogues only (--dataset synthetic)")
    started = time.perf_counter()
    C.single_thread()
    steps, base = grown(args.max_items, args.batch, args.queries, args.seed)
    sizes = [10**e for e in range(4, 8) if 10**e <= args.trained_max]
    tr = trained(sizes, args.queries, args.seed)
    plot = scale_curves(steps, tr, "scale_synthetic.png",
                        "Scale: query latency and insertion cost vs catalogue size (synthetic, single thread)")
    C.OUT.mkdir(parents=True, exist_ok=True)
    (C.OUT / "scale_synthetic.json").write_text(json.dumps({"grown": steps, "base": base, "trained": tr}, indent=1))
    C.report("scale", "synthetic", render(steps, base, tr, args.batch, args.queries, plot), started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
