"""Recall vs latency against peers, all built and measured in this one run on this machine: xrmeta (beam sweep),
PECOS XR-Linear predict-only (same beams), omikuji, napkinXC, BM25 over titles and MiniLM + hnswlib (efSearch
sweep, and exact search).

Each system is built from nothing in this process (train / index time, peak memory, size on disk); xrmeta then
inserts the split's novel items with its configured generator, MiniLM + hnswlib adds them to its graph, BM25
re-indexes every title; PECOS, omikuji and napkinXC cannot add labels. Every system is scored by
`xrmeta.evaluation.evaluate_sets` on the observed, zero-shot and generalized test sets (top-100), and timed from
query text to top-100 by `harness.latency`, single thread: one query per call over sampled generalized test
queries (systems interleaved in blocks of queries, in random order) and in batch calls over the same queries.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from xrmeta.data import load_dataset, make_zero_shot_split  # noqa: E402

from . import api, harness as H  # noqa: E402
from . import common as C  # noqa: E402
from . import peer_text, peer_xmc, peers_report  # noqa: E402
from .latency import check  # noqa: E402


def build_all(data, split, args, workdir: Path):
    """(builds, points, xrmeta with novel items, xrmeta as trained): every system trained or indexed here, and
    the novel items added wherever the system can add items."""
    C.log("xrmeta (and PECOS inside it)")
    full, plain, xr, pc = peer_xmc.build_xrmeta(data, split, args.seed, workdir)
    points = peer_xmc.xrmeta_points(full, plain, data, [int(b) for b in args.beams.split(",")], args.k)
    X = full.featurizer.transform(C.texts(data, split.train_queries), threads=-1)
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
    return builds + [b], points + ps, full, plain


def parts(full, beam: int) -> dict:
    """Timed alone, to show where xrmeta's time goes: featurizing a query, and the beam search down the upper layers."""
    def tf(text):
        return full.featurizer.transform([text], threads=1)

    upper = f"xrmeta upper layers only (featurize + beam search) | beam {beam}"
    return {"TF-IDF featurize only | -": tf, upper: lambda t: api.beams(full, tf(t), beam)}


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--beams", default="1,5,10,15,20,30,50,100", help="beam sizes of xrmeta and PECOS")
    p.add_argument("--efs", default="100,200,400,800", help="hnswlib efSearch values (>= k)")
    p.add_argument("--k", type=int, default=100, help="items returned per timed query")
    p.add_argument("--online", type=int, default=1000, help="generalized test queries timed one per call")
    p.add_argument("--block", type=int, default=50, help="queries each system runs in a row when timed online")
    p.add_argument("--repeats", type=int, default=3, help="batch calls per system (median)")
    args = C.parse(p, argv, beams="1,10", efs="100", online=60, block=10, repeats=1)
    started = time.perf_counter()
    data = load_dataset(args.dataset)
    split = make_zero_shot_split(data, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="xrmeta-peers-") as tmp:
        builds, points, full, plain = build_all(data, split, args, Path(tmp))
        results = []
        for pt in points:
            t, r = H.clock(api.evaluate_sets, pt.search, data, split, pt.slot_col, k=100)
            results.append(r)
            C.log(f"quality {pt.system} {pt.setting}: {t:.1f} s")
        X_obs = plain.featurizer.transform(C.texts(data, split.observed_set.queries), threads=1)
        checks = {b: check(plain, X_obs, b, args.k) for b in (int(b) for b in args.beams.split(","))}
        texts = C.texts(data, split.generalized_set.queries)
        sample = [texts[i] for i in C.sample(len(texts), args.online, args.seed)]
        C.log(f"timing {len(points)} points on {len(sample)} queries, one per call and in batch")
        beam = full.configs.tree.beam_size
        lat = H.latency({peers_report.key(pt): pt.one for pt in points} | parts(full, beam), sample, sample,
                        args.repeats, warm=sample[:3], block=args.block,
                        batch_calls={peers_report.key(pt): pt.batch for pt in points})
    run = peers_report.Run(args.dataset, data, split, builds, points, results, lat, checks, len(sample), beam, args)
    C.OUT.mkdir(parents=True, exist_ok=True)
    (C.OUT / f"peers_{args.dataset}.json").write_text(json.dumps(peers_report.raw(run), indent=1))
    C.report("peers", args.dataset, peers_report.render(run), started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
