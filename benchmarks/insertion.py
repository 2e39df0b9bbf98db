"""Insertion throughput, single thread: raw title -> retrievable item (`model.add_items`, featurization included).

The novel items in one call into a fresh copy per repeat (`harness.insert`), and `add_items` step by step with a
clock around each step. Growth with the catalogue, up to 10^6 items: `benchmarks.scale`.
"""

from __future__ import annotations

import time

import numpy as np

from xrmeta.model import XRMetaModel

from . import api, harness as H
from . import common as C


def add_items_steps(model, titles: list[str], ids: list[str]) -> dict:
    """`model.add_items` step by step (`api.add_items_steps`), seconds per step."""
    t, t0 = {}, time.perf_counter()

    def lap(name):
        nonlocal t0
        t[name], t0 = time.perf_counter() - t0, time.perf_counter()

    api.add_items_steps(model, titles, ids, lap)
    return t


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--repeats", type=int, default=5, help="fresh model copies for the throughput median (>= 3)")
    args = C.parse(p, argv)
    if args.repeats < 3:
        p.error("need --repeats >= 3")
    started = time.perf_counter()
    model, data, split, folder = C.load(args.dataset, args.seed)
    titles, ids = C.titles_ids(data, split.novel)
    n = len(ids)
    first = H.insert(model, titles[:50], ids[:50])  # warm-up: the JIT and the featurizer, timed apart
    add_items_steps(XRMetaModel.load(folder), titles[:50], ids[:50])
    totals, steps = [], []
    for r in range(args.repeats):
        m = XRMetaModel.load(folder)
        totals.append(H.insert(m, titles, ids).seconds)
        m2 = XRMetaModel.load(folder)
        with H.single_thread():
            steps.append(add_items_steps(m2, titles, ids))
        C.log(f"repeat {r}: add_items {totals[-1]:.3f} s; steps {sum(steps[-1].values()):.3f} s")
    med = {s: float(np.median([st[s] for st in steps])) for s in steps[0]}
    step_total, total = sum(med.values()), float(np.median(totals))
    rows = [["`add_items` (whole call)", f"{total:.3f}", f"{n / total:,.0f}", f"{total / n * 1e6:.1f}", ""]]
    rows += [[s, f"{v:.4f}", "", f"{v / n * 1e6:.1f}", f"{v / step_total:.0%}"] for s, v in med.items()]
    rows.append(["sum of steps", f"{step_total:.3f}", f"{n / step_total:,.0f}", f"{step_total / n * 1e6:.1f}", "100%"])
    cs, size = model.configs.coldstart, api.catalog_sizes(model)
    body = C.text("insertion", n=n, n_base=size["base"], n_clusters=size["clusters"], generator=cs.generator,
                  assign=cs.assign, k=cs.k, repeats=args.repeats, same="yes" if api.same_catalogue(m, m2) else "NO",
                  n_warm=first.items, warm_s=first.seconds,
                  table=C.table(["what", "seconds", "items/s", "µs/item", "share of steps"], rows))
    C.report("insertion", args.dataset, body, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
