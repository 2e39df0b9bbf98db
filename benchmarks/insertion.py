"""Insertion throughput, single thread: raw title -> retrievable item (`model.add_items`, featurization included).

1. The dataset's novel items, inserted in one `add_items` call into a fresh copy of the model (reloaded from
   disk) per repeat; median items/s. A breakdown repeats the steps of `XRMetaModel.add_items` / `synthesize`
   one by one with a clock around each (and checks that they produce the same catalogue as `add_items`).
2. Scale check (on the synthetic model; default on for --dataset synthetic): 10^3 .. 10^6 made-up items (words
   of observed titles recombined, seeded, generated lazily per batch) inserted cumulatively in batches; cost per
   item per decade, and batch query latency (beam 10) after each decade.
"""

from __future__ import annotations

import time

import numpy as np

from xrmeta.model import XRMetaModel

from . import common as C

STEPS = ("checks", "featurize", "select", "assign", "generate", "catalog add")


def add_items_steps(model: XRMetaModel, titles: list[str], ids: list[str], threads: int = 1) -> dict:
    """`model.add_items` step by step (same calls, same order), seconds per step."""
    t = {}
    t0 = time.perf_counter()

    def lap(name):
        nonlocal t0
        now = time.perf_counter()
        t[name] = now - t0
        t0 = now

    assert all(isinstance(x, str) and x.strip() for x in titles)
    model.catalog._check_new_ids(ids)
    lap("checks")
    S = model.featurizer.transform(titles, threads=threads)
    assert (np.diff(S.indptr) > 0).all()
    lap("featurize")
    cs = model.configs.coldstart
    nbrs, sims = model.selector.search(S, cs.k)
    lap("select")
    clusters = model.assign(S, nbrs, sims)
    lap("assign")
    weights, biases = model.generate(S, nbrs, sims)
    lap("generate")
    model.catalog.add(ids, clusters, weights, biases)
    lap("catalog add")
    return t


def same_catalogue(a: XRMetaModel, b: XRMetaModel) -> bool:
    x, y = a.catalog.arrays(), b.catalog.arrays()
    return a.catalog.ids == b.catalog.ids and all(np.array_equal(x[key], y[key]) for key in x)


def throughput(dataset: str, seed: int, repeats: int) -> str:
    model, data, split, folder = C.load(dataset, seed)
    titles = [data.item_texts[j] for j in split.novel]
    ids = [data.item_ids[j] for j in split.novel]
    n = len(ids)
    model.add_items(titles[:50], ids[:50], threads=1)  # warm the JIT (and the featurizer)
    add_items_steps(XRMetaModel.load(folder), titles[:50], ids[:50])

    totals, steps = [], {s: [] for s in STEPS}
    for r in range(repeats):
        m = XRMetaModel.load(folder)
        seconds, _ = C.clock(m.add_items, titles, ids, threads=1)
        totals.append(seconds)
        m2 = XRMetaModel.load(folder)
        for s, v in add_items_steps(m2, titles, ids).items():
            steps[s].append(v)
        C.log(f"repeat {r}: add_items {seconds:.3f} s; steps {sum(v[-1] for v in steps.values()):.3f} s")
    consistent = same_catalogue(m, m2)
    med = {s: float(np.median(v)) for s, v in steps.items()}
    step_total = sum(med.values())
    total = float(np.median(totals))
    rows = [["`add_items` (whole call)", f"{total:.3f}", f"{n / total:,.0f}", f"{total / n * 1e6:.1f}", ""]]
    rows += [[s, f"{v:.4f}", "", f"{v / n * 1e6:.1f}", f"{v / step_total:.0%}"] for s, v in med.items()]
    rows.append(["sum of steps", f"{step_total:.3f}", f"{n / step_total:,.0f}", f"{step_total / n * 1e6:.1f}", "100%"])
    return (
        f"## Throughput: {n} novel items of the split, one `add_items` call, single thread\n\n"
        f"Catalogue before: {model.catalog.n_base} observed items, {model.catalog.n_clusters} leaf clusters; "
        f"generator `{model.configs.coldstart.generator}`, assign `{model.configs.coldstart.assign}`, "
        f"k={model.configs.coldstart.k}. Medians over {repeats} fresh copies (reloaded from disk each), JIT warmed. "
        f"Steps timed on separate fresh copies; their catalogue equals `add_items`'s: "
        f"{'yes' if consistent else 'NO'}.\n\n"
        + C.md_table(["what", "seconds", "items/s", "µs/item", "share of steps"], rows)
        + "\n"
    )


# ---------------------------------------------------------------- scale check
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


def scale_check(seed: int, max_items: int, batch: int, n_queries: int, repeats: int, budget: float) -> str:
    model, data, split, _ = C.load("synthetic", seed)
    observed_titles = [data.item_texts[j] for j in split.observed]
    es = split.generalized_set
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(es.queries, size=min(n_queries, len(es.queries)), replace=False))
    X = model.featurizer.transform([data.query_texts[i] for i in q], threads=1)
    model.predict_slots(X[:2], k=10, beam_size=10)  # warm
    model.add_items(*next(title_batches(observed_titles, 20, 20, seed + 1)), threads=1)  # warm the JIT
    model = XRMetaModel.load(model.workdir)

    def latency():
        return float(np.median(C.repeat(lambda: model.predict_slots(X, k=10, beam_size=10, threads=1), repeats))
                     / X.shape[0] * 1e3)

    decades = [10**e for e in range(3, 7) if 10**e <= max_items]
    rows = [["0 (as trained)", "", "", "", "", "", f"{latency():.3f}"]]
    gen = title_batches(observed_titles, decades[-1], batch, seed)
    done, cum_seconds, note, pending, per_item = 0, 0.0, "", None, []
    for target in decades:
        if per_item and target > 10**5:
            projected = per_item[-1] * 1e-6 * (target - done)
            if projected > budget:
                note = (f"Stopped at {done:,} items: the next decade was projected to take {projected:.0f} s "
                        f"(> {budget:.0f} s budget).")
                break
        seconds, per_batch, start, t_start = 0.0, [], done, time.perf_counter()
        while done < target:
            if pending is None:
                pending = next(gen)
            take = min(len(pending[0]), target - done)
            titles, ids = pending[0][:take], pending[1][:take]
            pending = None if take == len(pending[0]) else (pending[0][take:], pending[1][take:])
            s, _ = C.clock(model.add_items, titles, ids, threads=1)
            seconds += s
            per_batch.append(s / take * 1e6)
            done += take
            if time.perf_counter() - t_start > budget:
                note = f"Stopped inside the decade at {done:,} items: over the {budget:.0f} s budget."
                break
        cum_seconds += seconds
        per_item.append(seconds / (done - start) * 1e6)
        rows.append([f"{done:,}", f"{done - start:,}", f"{seconds:.2f}", f"{per_item[-1]:.1f}",
                     f"{np.min(per_batch):.1f} / {np.median(per_batch):.1f} / {np.max(per_batch):.1f}",
                     f"{cum_seconds / done * 1e6:.1f}", f"{latency():.3f}"])
        C.log(f"scale: {done} items, {seconds:.1f} s")
        if note:
            break
    first, last = per_item[0], per_item[-1]
    return (
        f"## Scale check: made-up items inserted into the synthetic model (seed {seed})\n\n"
        f"Titles: words of the {len(observed_titles)} observed titles recombined (title lengths and words drawn "
        f"from them, seeded), generated lazily in batches of {batch:,}; generation is off the clock. Insertion is "
        f"cumulative (the catalogue keeps growing); each decade is inserted in `add_items` calls of at most "
        f"{batch:,} items. Query latency: batch mode, beam 10, top-10, {X.shape[0]} test queries, median of "
        f"{repeats} repeats; base catalogue {model.catalog.n_base} items in {model.catalog.n_clusters} leaf "
        f"clusters.\n\n"
        + C.md_table(["items inserted (cumulative)", "this decade", "seconds", "µs/item (decade)",
                      "µs/item per batch min / median / max", "µs/item (cumulative)", "query ms/query (beam 10)"],
                     rows)
        + f"\n\nLast decade / first decade per-item cost: {last / first:.2f}. {note}\n"
    )


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="fresh model copies for the throughput median (>= 3)")
    p.add_argument("--scale-check", choices=("auto", "yes", "no"), default="auto",
                   help="run the synthetic scale check (auto: only for --dataset synthetic)")
    p.add_argument("--scale-max", type=int, default=10**6, help="largest decade of the scale check")
    p.add_argument("--scale-batch", type=int, default=10**4, help="items per add_items call in the scale check")
    p.add_argument("--scale-queries", type=int, default=200, help="test queries for latency in the scale check")
    p.add_argument("--budget", type=float, default=300.0, help="seconds allowed for one decade of the scale check")
    args = p.parse_args(argv)
    if args.repeats < 3:
        p.error("need --repeats >= 3")
    started = time.perf_counter()
    C.single_thread()
    body = throughput(args.dataset, args.seed, args.repeats)
    if args.scale_check == "yes" or (args.scale_check == "auto" and args.dataset == "synthetic"):
        body += "\n" + scale_check(args.seed, args.scale_max, args.scale_batch, args.scale_queries, 5, args.budget)
    C.report("insertion", args.dataset, body, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
