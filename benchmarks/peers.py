"""Recall vs latency against peers, all built and measured in this one run on this machine: xrmeta (beam sweep),
PECOS XR-Linear predict-only (same beams), omikuji, napkinXC, BM25 over titles and MiniLM + hnswlib (efSearch
sweep, and exact search).

Each system is built from nothing in this process (train / index time, peak memory, size on disk); xrmeta then
inserts the split's novel items with its configured generator, MiniLM + hnswlib adds them to its graph, BM25
re-indexes every title; PECOS, omikuji and napkinXC cannot add labels. Every system is scored by
`xrmeta.evaluate.evaluate_sets` on the observed, zero-shot and generalized test sets (top-100), and timed from
query text to top-100, single thread: one query per call over sampled generalized test queries (systems
interleaved in blocks of queries, in random order) and in batch calls over the same queries.

Run: .venv/bin/python -m benchmarks.peers --dataset homedepot
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gc  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from xrmeta.data import load_dataset, make_zero_shot_split  # noqa: E402
from xrmeta.evaluate import evaluate_sets  # noqa: E402

from . import common as C  # noqa: E402
from . import peer_text, peer_xmc, peers_report  # noqa: E402
from .latency import check  # noqa: E402


def build_all(data, split, args, workdir: Path):
    """(builds, points, xrmeta with novel items, xrmeta as trained): every system trained or indexed here, and
    the novel items added wherever the system can add items."""
    C.log("xrmeta (and PECOS inside it)")
    full, plain, xr, pc = peer_xmc.build_xrmeta(data, split, args.seed, workdir)
    beams = [int(b) for b in args.beams.split(",")]
    points = peer_xmc.xrmeta_points(full, plain, data, beams, args.k)
    X = full.featurizer.transform([data.query_texts[i] for i in split.train_queries], threads=-1)
    builds = [xr, pc]
    for name, make in (("omikuji", peer_xmc.omikuji_point), ("napkinXC", peer_xmc.napkinxc_point)):
        C.log(name)
        b, p = make(X, split.Y_train, full.featurizer, split, workdir, xr.featurize_s, args.k)
        builds.append(b)
        points.append(p)
    C.log("BM25")
    b, p = peer_text.bm25_point(data, split, workdir, args.k)
    builds.append(b)
    points.append(p)
    C.log("MiniLM + hnswlib (encoding every title)")
    b, ps = peer_text.dense_points(data, split, workdir, [int(e) for e in args.efs.split(",")], args.k,
                                   os.cpu_count())
    builds.append(b)
    points += ps
    C.single_thread()
    return builds, points, full, plain


def quality(points, data, split) -> list[dict]:
    out = []
    for p in points:
        t0 = time.perf_counter()
        out.append(evaluate_sets(p.search, data, split, p.slot_col, k=100))
        C.log(f"quality {p.system} {p.setting}: {time.perf_counter() - t0:.1f} s")
    return out


def timings(points, extra: dict, sample: list[str], repeats: int, block: int) -> tuple[dict, dict]:
    """(online seconds per call {name: array over sample}, batch seconds {name: median over repeats}), single
    thread (BLAS too). `extra`: parts timed on their own (featurizing alone, xrmeta's beam search alone)."""
    calls = {f"{p.system} | {p.setting}": p.one for p in points} | extra
    batch = {f"{p.system} | {p.setting}": p.batch for p in points}
    with threadpool_limits(limits=1):
        for f in calls.values():  # warm-up: JIT, allocations, lazy imports
            for t in sample[:3]:
                f(t)
        gc.disable()
        try:
            online = C.interleaved(calls, sample, block=block)
            C.log("online timing done")
            batch_s = {k: float(np.median(v)) for k, v in C.interleaved(batch, [sample] * repeats).items()}
        finally:
            gc.enable()
    return online, batch_s


def parts(full, beam: int) -> dict:
    """Timed alone, to show where xrmeta's time goes: featurizing a query, and the beam search down the upper layers."""
    def tf(text):
        return full.featurizer.transform([text], threads=1)

    upper = f"xrmeta upper layers only (featurize + beam search) | beam {beam}"
    return {"TF-IDF featurize only | -": tf, upper: lambda t: full.upper.beams(tf(t), beam, 1)}


def observed_check(plain, data, split, beams, k: int) -> dict:
    """Per beam: xrmeta (as trained) top-k vs PECOS top-k on the observed test queries (`latency.check`)."""
    X = plain.featurizer.transform([data.query_texts[i] for i in split.observed_set.queries], threads=1)
    return {b: check(plain, X, b, k) for b in beams}


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--beams", default="1,5,10,15,20,30,50,100", help="beam sizes of xrmeta and PECOS")
    p.add_argument("--efs", default="100,200,400,800", help="hnswlib efSearch values (>= k)")
    p.add_argument("--k", type=int, default=100, help="items returned per timed query")
    p.add_argument("--online", type=int, default=1000, help="generalized test queries timed one per call")
    p.add_argument("--block", type=int, default=50, help="queries each system runs in a row when timed online")
    p.add_argument("--repeats", type=int, default=3, help="batch calls per system (median)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    data = load_dataset(args.dataset)
    split = make_zero_shot_split(data, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="xrmeta-peers-") as tmp:
        builds, points, full, plain = build_all(data, split, args, Path(tmp))
        results = quality(points, data, split)
        beams = [int(b) for b in args.beams.split(",")]
        checks = observed_check(plain, data, split, beams, args.k)
        es = split.generalized_set
        texts = [data.query_texts[i] for i in es.queries]
        rng = np.random.default_rng(args.seed)
        sample = [texts[i] for i in np.sort(rng.choice(len(texts), size=min(args.online, len(texts)),
                                                       replace=False))]
        C.log(f"timing {len(points)} points on {len(sample)} queries, one per call and in batch")
        beam = full.configs.tree.beam_size
        online, batch = timings(points, parts(full, beam), sample, args.repeats, args.block)
    run = peers_report.Run(args.dataset, data, split, builds, points, results, online, batch, checks, len(sample),
                           beam, args)
    body = peers_report.render(run)
    C.OUT.mkdir(parents=True, exist_ok=True)
    (C.OUT / f"peers_{args.dataset}.json").write_text(json.dumps(peers_report.raw(run), indent=1))
    C.report("peers", args.dataset, body, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
