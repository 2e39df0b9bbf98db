"""Retrain and swap without downtime: the retrain's time, and queries in 4 threads while `reload()` swaps it in.

A copy of the cached model serves with its log (`load(log=True)`); the split's novel items go in by cold start;
`xrmeta.retraining.retrain` trains on the training clicks plus half of the novel items' test clicks and stages the
result beside the directory (a process holds its log). Then, per repeat, 4 threads each call `predict` on one query
at a time (online, beam 10, threads=1) for --before seconds, the main thread calls `reload()`, and the threads go
on for --after seconds. Reported: errors, p99 before the swap, the longest query that overlapped the reload, their
ratio (target: below 10), and the reload's own time. Repeats after the first re-stage the same retrained model
(following the snapshot now served), so every repeat times a full load + install + swap.
"""

from __future__ import annotations

import gc
import shutil
import sys
import threading
import time
import traceback

import numpy as np

from xrmeta import modeldir, retraining
from xrmeta.model import XRMetaModel

from . import common as C
from . import harness as H


def new_clicks(data, split, seed: int) -> list[tuple[str, str]]:
    """Half of the novel items' test clicks (query text, item id), as a click log after their insertion."""
    Y = split.zero_shot_set.Y.tocoo()
    pairs = [(data.query_texts[split.zero_shot_set.queries[r]], data.item_ids[c]) for r, c in zip(Y.row, Y.col)]
    keep = C.sample(len(pairs), len(pairs) // 2, seed)
    return [pairs[i] for i in keep]


def serve_and_swap(model: XRMetaModel, queries: list[str], before: float, after: float, threads: int = 4) -> dict:
    """Query threads around one reload: {errors, p99_before_ms, longest_during_ms, reload_s, ...}."""
    stop, errors, marks = threading.Event(), [], {}
    timings = [[] for _ in range(threads)]  # (start, end) per query

    def reader(t):
        rng = np.random.default_rng(t)
        try:
            while not stop.is_set():
                q = queries[int(rng.integers(len(queries)))]
                t0 = time.perf_counter()
                model.predict([q], k=10, beam_size=10, threads=1)
                timings[t].append((t0, time.perf_counter()))
        except BaseException:
            errors.append(traceback.format_exc())

    workers = [threading.Thread(target=reader, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    time.sleep(before)
    marks["start"] = time.perf_counter()
    swapped = model.reload()
    marks["end"] = time.perf_counter()
    time.sleep(after)
    stop.set()
    for w in workers:
        w.join()
    spans = np.array([s for per in timings for s in per])
    took = spans[:, 1] - spans[:, 0]
    pre = took[spans[:, 1] < marks["start"]]
    during = took[(spans[:, 1] >= marks["start"]) & (spans[:, 0] <= marks["end"])]
    post = took[spans[:, 0] > marks["end"]]
    p99 = float(np.percentile(pre, 99) * 1e3)
    longest = float(during.max() * 1e3) if len(during) else float("nan")
    return {"swapped": swapped, "errors": len(errors), "first_error": errors[0] if errors else "",
            "queries": len(took), "p99_before_ms": p99, "median_before_ms": float(np.median(pre) * 1e3),
            "longest_before_ms": float(pre.max() * 1e3),
            "longest_during_ms": longest, "ratio": longest / p99, "during": len(during),
            "p99_after_ms": float(np.percentile(post, 99) * 1e3) if len(post) else float("nan"),
            "reload_s": marks["end"] - marks["start"]}


def main(argv=None) -> int:
    p = C.parser(__doc__, dataset="homedepot")
    p.add_argument("--repeats", type=int, default=3, help="reloads, each with its own before/after window")
    p.add_argument("--before", type=float, default=8.0, help="seconds of queries before each reload")
    p.add_argument("--after", type=float, default=3.0, help="seconds of queries after each reload")
    p.add_argument("--switch-interval", type=float, default=None,
                   help="sys.setswitchinterval (seconds) while measuring; default: Python's (0.005)")
    args = C.parse(p, argv, repeats=1, before=1.0, after=0.5)
    started = time.perf_counter()
    _, data, split, cached = C.load(args.dataset, args.seed)
    folder = (C.OUT / "swap" / f"{args.dataset}_s{args.seed}").resolve()
    shutil.rmtree(folder.parent, ignore_errors=True)
    folder.parent.mkdir(parents=True)
    shutil.copytree(cached, folder)  # never the cache itself: the swap replaces the directory
    serving = XRMetaModel.load(folder, log=True)
    titles, ids = C.titles_ids(data, split.novel)
    serving.add_items(titles, ids)  # logged: the retrain folds them in
    clicks = new_clicks(data, split, args.seed)
    C.log(f"retraining {args.dataset} with {len(clicks)} new clicks")
    load_avg = open("/proc/loadavg").read().split()[:3]
    seconds, (model, follows) = H.clock(retraining.retrain, folder, clicks, -1, False)
    retraining.write(model, folder, follows)
    C.log(f"retrained in {seconds:.1f} s; staged in {modeldir.staging_dir(folder)}")
    queries = C.texts(data, split.generalized_set.queries)
    serving.predict(queries[:50], beam_size=10)  # compiled and warm before anything is timed
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    rows = []
    # first as the process is, then after gc.freeze() (what the README advises a service): a full collection, which
    # a reload's allocations set off, then skips the imported modules' objects (~0.1 s less of GIL held)
    for frozen in (False, True):
        if frozen:
            gc.freeze()
        for r in range(args.repeats):
            if rows:  # the same retrained model again, following the snapshot now served
                modeldir.write(model, modeldir.staging_dir(folder),
                               follows={"snapshot": serving._state.snapshot, "log_records": 0})
            out = serve_and_swap(serving, queries, args.before, args.after)
            C.log(f"gc.freeze {frozen}, repeat {r}: {out}")
            if out["errors"]:
                print(out["first_error"], file=sys.stderr)
            rows.append(["gc.freeze()" if frozen else "default", r, out["swapped"], out["errors"], out["queries"],
                         out["median_before_ms"], out["p99_before_ms"], out["longest_before_ms"], out["during"],
                         out["longest_during_ms"], out["ratio"], out["p99_after_ms"], out["reload_s"]])
    gc.unfreeze()
    serving.log.close()
    n = len(model)
    body = "\n\n".join([
        C.text("swap", clicks=len(clicks), seconds=seconds, items=n, trained=model.catalog.n_base,
               load=" ".join(load_avg), switch=args.switch_interval or sys.getswitchinterval()),
        C.table(["gc", "repeat", "swapped", "errors", "queries", "median before ms", "p99 before ms", "longest before ms",
                 "overlapping reload",
                 "longest during ms", "longest / p99", "p99 after ms", "reload s"], rows,
                ["", "", "", "", "", ".2f", ".2f", ".1f", "", ".1f", ".1f", ".2f", ".2f"]),
    ])
    C.report("swap", args.dataset, body, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
