"""Insertion throughput, single thread: raw title -> retrievable item (`model.add_items`, featurization included).

The dataset's novel items, inserted in one `add_items` call into a fresh copy of the model (reloaded from disk)
per repeat; median items/s. A breakdown repeats the steps of `XRMetaModel.add_items` / `synthesize` one by one
with a clock around each (and checks that they produce the same catalogue as `add_items`).

How the cost grows with the catalogue, up to 10^6 items: `benchmarks.scale`.
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


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="fresh model copies for the throughput median (>= 3)")
    args = p.parse_args(argv)
    if args.repeats < 3:
        p.error("need --repeats >= 3")
    started = time.perf_counter()
    C.single_thread()
    body = throughput(args.dataset, args.seed, args.repeats)
    C.report("insertion", args.dataset, body, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
