"""Query latency, single thread: xrmeta vs PECOS's own predict-only model of the same trained tree.

PECOS runs twice: through its Python API (`predict`, what a user calls) and through the C call inside it
(`clib.xlinear_predict`, skipping the wrapper's per-call parameter copies): the second is PECOS's floor.

Queries: the generalized test set, featurized once (featurization excluded for both). Two modes:
batch (all queries in one call; ms/query = time / n, median over repeats) and online (one query per call;
median and p99 over sampled queries). xrmeta runs three times: with PECOS's own leaf layer (`--no-observed-titles`,
nothing inserted: it must return PECOS's top-k, which the correctness table checks), with the defaults as
trained (observed items carry their titles), and with the defaults and every novel item of the split inserted.
Calls of all systems are interleaved, so every ratio comes from one run.
"""

from __future__ import annotations

import gc
import time

import numpy as np
import scipy.sparse as smat

from xrmeta.evaluate import insert_novel
from xrmeta.model import XRMetaModel

from . import common as C


def same_topk(s1, v1, s2, v2, rtol=1e-5) -> str:
    """'identical', 'tie' (differ only among items tied, in both lists, with the last score) or 'mismatch'."""
    a, b = s1 >= 0, s2 >= 0
    s1, v1, s2, v2 = s1[a], v1[a], s2[b], v2[b]
    if len(s1) != len(s2) or not np.allclose(v1, v2, rtol=rtol, atol=1e-7):
        return "mismatch"
    if np.array_equal(s1, s2):
        return "identical"
    if len(s1) == 0:
        return "identical"
    above1, above2 = set(s1[v1 != v1[-1]]), set(s2[v2 != v2[-1]])
    return "tie" if above1 == above2 else "mismatch"


def check(model: XRMetaModel, X, beam: int, k: int) -> dict:
    s1, v1 = model.predict_slots(X, k=k, beam_size=beam, threads=1)
    s2, v2 = model.pecos_predict_slots(X, k=k, beam_size=beam, threads=1)
    out = {"identical": 0, "tie": 0, "mismatch": 0, "empty": 0}
    for i in range(X.shape[0]):
        if X.indptr[i] == X.indptr[i + 1]:  # no known term: xrmeta returns nothing, PECOS its biases' order
            out["empty"] += 1
            continue
        out[same_topk(s1[i], v1[i], s2[i], v2[i])] += 1
    valid = (s1 >= 0) & (s2 >= 0)
    out["max_abs_score_diff"] = float(np.abs(v1 - v2)[valid].max()) if valid.any() else 0.0
    return out


def pecos_c_call(pecos, beam: int, k: int):
    """PECOS's predict-only search without its Python wrapper: the C call that `predict` makes, and its result."""
    from pecos.core import clib
    from pecos.core.base import ScipyCompressedSparseAllocator

    chain = pecos.model.model_chain

    def run(X):
        out = ScipyCompressedSparseAllocator()
        clib.xlinear_predict(chain, X, beam, None, k, 1, out)
        return out.get()

    return run


def systems(pecos, plain: XRMetaModel, grounded: XRMetaModel, full: XRMetaModel, full_1: XRMetaModel, beam: int,
            k: int, inputs: list) -> dict:
    """name -> f(X): every timed call. The leaf-kernel parts take beams computed for every input in advance, off
    the clock and not right before the timed call (which would warm the upper layers for xrmeta only)."""
    def parts(m):
        beams = {id(X): m.upper.beams(X, beam, 1) for X in inputs}

        def upper(X):
            return m.upper.beams(X, beam, 1)

        def leaf(X):
            return m.catalog.topk(X, beams[id(X)], k, "all")

        return upper, leaf

    up_p, leaf_p = parts(grounded)
    up_f, leaf_f = parts(full)
    return {
        "pecos": lambda X: pecos.predict(X, beam_size=beam, only_topk=k, threads=1),
        "pecos_c": pecos_c_call(pecos, beam, k),
        "xrmeta pecos leaf": lambda X: plain.predict_slots(X, k=k, beam_size=beam, threads=1),
        "xrmeta": lambda X: grounded.predict_slots(X, k=k, beam_size=beam, threads=1),
        "xrmeta+novel": lambda X: full.predict_slots(X, k=k, beam_size=beam, threads=1),
        "xrmeta+novel m=1": lambda X: full_1.predict_slots(X, k=k, beam_size=beam, threads=1),
        "upper": up_p, "leaf": leaf_p, "upper+novel": up_f, "leaf+novel": leaf_f,
    }


def time_batch(fns: dict, X, repeats: int) -> dict:
    samples = C.interleaved(fns, [X] * repeats)
    return {name: np.median(v) / X.shape[0] * 1e3 for name, v in samples.items()}  # ms / query


def time_online(fns: dict, rows: list) -> dict:
    samples = C.interleaved(fns, rows)
    return {name: (np.median(v) * 1e3, np.percentile(v, 99) * 1e3) for name, v in samples.items()}  # ms


def _nnz(model: XRMetaModel, lo: int, hi: int) -> float:
    ptr = model.catalog.w_ptr.view
    return float((ptr[hi] - ptr[lo]) / max(hi - lo, 1))


def fixed_costs(pecos, model: XRMetaModel, k: int, n: int = 1000) -> str:
    """Median µs of each call on an empty query (no feature): the per-call cost that online mode pays. PECOS still
    returns beam_size clusters (bias-only scores) for it, so `predict_slots` also scans those clusters."""
    E = smat.csr_matrix((1, model.featurizer.n_features), dtype=np.float32)
    pecos_c = pecos_c_call(pecos, 10, k)
    EB = smat.csr_matrix((1, model.catalog.n_clusters), dtype=np.float32)
    calls = {
        "PECOS `predict` (whole model)": lambda: pecos.predict(E, beam_size=10, only_topk=k, threads=1),
        "PECOS C call `clib.xlinear_predict` (whole model, no Python wrapper)": lambda: pecos_c(E),
        "xrmeta `predict_slots`": lambda: model.predict_slots(E, k=k, beam_size=10, threads=1),
        "· part: `upper.beams` alone (beam search kernel; still returns beam clusters)":
            lambda: model.upper.beams(E, 10, 1),
        "· part: `catalog.topk` given no beam (numba call overhead)": lambda: model.catalog.topk(E, EB, k),
    }
    rows = [[name, f"{np.median(C.repeat(f, n)) * 1e6:.1f}"] for name, f in calls.items()]
    return C.md_table(["call on an empty query", "median µs"], rows)


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--beams", default="1,10,50", help="comma-separated beam sizes")
    p.add_argument("--k", type=int, default=10, help="items returned per query")
    p.add_argument("--repeats", type=int, default=7, help="batch repeats (median)")
    p.add_argument("--online", type=int, default=1000, help="queries sampled for online mode (>= 500)")
    args = p.parse_args(argv)
    if args.repeats < 5 or args.online < 500:
        p.error("need --repeats >= 5 and --online >= 500")
    started = time.perf_counter()
    beams = [int(b) for b in args.beams.split(",")]
    C.single_thread()

    plain, data, split, _ = C.load(args.dataset, args.seed, ["--no-observed-titles"])
    grounded, _, _, folder = C.load(args.dataset, args.seed)
    full = XRMetaModel.load(folder)
    n_novel = insert_novel(full, data, split)
    full_1 = XRMetaModel.load(folder)  # the novel items in one cluster, looked for in the beam only: the cheapest
    full_1.configs.coldstart.clusters_per_item = 1
    full_1.configs.coldstart.inserted_beam_factor = 1
    insert_novel(full_1, data, split)
    pecos = grounded.pecos_model()
    assert plain.catalog.n_clusters == grounded.catalog.n_clusters and np.array_equal(
        plain.catalog.slot_cluster.view, grounded.catalog.slot_cluster.view), "the two trainings built different trees"
    es = split.generalized_set
    X = plain.featurizer.transform([data.query_texts[i] for i in es.queries], threads=1)
    X = smat.csr_matrix(X, dtype=np.float32)
    X.sort_indices()
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(X.shape[0], size=min(args.online, X.shape[0]), replace=False))
    rows = [X[i : i + 1] for i in pick]
    C.log(f"{args.dataset}: {X.shape[0]} test queries, {plain.catalog.n_base} observed items, "
          f"{n_novel} novel inserted, {plain.catalog.n_clusters} leaf clusters")

    checks, batch, online = {}, {}, {}
    gc.disable()
    for b in beams:
        checks[b] = check(plain, X, b, args.k)  # also warms every kernel
        x2 = X[:2]
        fns = systems(pecos, plain, grounded, full, full_1, b, args.k, [X, x2] + rows)
        for f in fns.values():  # warm-up
            f(x2)
        C.log(f"beam {b}: check {checks[b]}; timing")
        batch[b] = time_batch(fns, X, args.repeats)
        online[b] = time_online(fns, rows)
        gc.collect()
    fixed = fixed_costs(pecos, grounded, args.k)
    gc.enable()

    # ---------------------------------------------------------------- tables
    rows_md = []
    for b in beams:
        bt, on = batch[b], online[b]
        cells = [(bt, None, "batch ms/query"), (on, 0, "online median ms"), (on, 1, "online p99 ms")]
        for table, j, mode in cells:
            t = {name: v if j is None else v[j] for name, v in table.items()}
            rows_md.append([b, mode, f"{t['pecos']:.4f}", f"{t['pecos_c']:.4f}", f"{t['xrmeta pecos leaf']:.4f}",
                            f"{t['xrmeta pecos leaf'] / t['pecos']:.2f}", f"{t['xrmeta']:.4f}",
                            f"{t['xrmeta'] / t['pecos']:.2f}", f"{t['xrmeta+novel']:.4f}",
                            f"{t['xrmeta+novel'] / t['pecos']:.2f}", f"{t['xrmeta+novel'] / t['pecos_c']:.2f}",
                            f"{t['xrmeta+novel m=1'] / t['pecos']:.2f}"])
    m, f = full.configs.coldstart.clusters_per_item, full.configs.coldstart.inserted_beam_factor
    t1 = C.md_table(["beam", "mode", "PECOS `predict`", "PECOS C call", "xrmeta, PECOS's leaf layer", "ratio",
                     "xrmeta (defaults)", "ratio", f"xrmeta + novel (m={m}, f={f})", "ratio (+novel)/PECOS",
                     "ratio (+novel)/PECOS C call", "ratio (+novel, m=1, f=1)/PECOS"], rows_md)

    split_md = []
    for b in beams:
        bt, on = batch[b], online[b]
        for suffix, label in (("", "xrmeta"), ("+novel", "xrmeta + novel")):
            up, leaf = bt["upper" + suffix], bt["leaf" + suffix]
            oup, oleaf, otot = on["upper" + suffix][0], on["leaf" + suffix][0], on["xrmeta" + suffix][0]
            split_md.append([b, label, f"{up:.4f}", f"{leaf:.4f}", f"{up / (up + leaf):.0%}",
                             f"{oup:.4f}", f"{oleaf:.4f}", f"{oup / otot:.0%}"])
    t2 = C.md_table(["beam", "system", "batch upper ms/q", "batch leaf ms/q", "batch upper share",
                     "online upper median ms", "online leaf median ms", "online upper / online total"], split_md)

    chk = C.md_table(["beam", "queries", "identical top-k", "differ only among exactly tied scores", "mismatching",
                      "max abs score diff", "no known term (not compared)"],
                     [[b, X.shape[0], c["identical"], c["tie"], c["mismatch"], f"{c['max_abs_score_diff']:.2e}",
                       c["empty"]] for b, c in checks.items()])
    body = (
        f"Generalized test set: {X.shape[0]} queries (featurized once, outside the clock); catalogue "
        f"{plain.catalog.n_base} observed items in {plain.catalog.n_clusters} leaf clusters; "
        f"'+ novel' = all {n_novel} novel items of the split inserted (each into {m} clusters, looked for in "
        f"beam x {f} clusters). Classifier non-zeros per item: PECOS's "
        f"{_nnz(plain, 0, plain.catalog.n_base):.1f}, served with their titles {_nnz(grounded, 0, grounded.catalog.n_base):.1f}, "
        f"inserted {_nnz(full, full.catalog.n_base, full.catalog.n_slots):.1f}. Single thread (numba 1 thread, PECOS "
        f"threads=1), top-{args.k}. Batch: one call for all queries, median of {args.repeats} repeats / n. "
        f"Online: one query per call over {len(rows)} sampled queries. Systems interleaved in the same run, in a "
        "random order per query (batch: per repeat). "
        f"PECOS = `model.pecos_model().predict` of the default model (observed items only); PECOS C call = the `clib.xlinear_predict` call "
        f"inside it, without the wrapper's per-call copies of its parameters; xrmeta = `model.predict_slots` (beam "
        f"search and leaf scoring in one kernel call).\n\n"
        f"## Correctness (PECOS's leaf layer, no inserted item): xrmeta top-{args.k} vs PECOS top-{args.k}, all test "
        f"queries\n\n{chk}\n\n"
        f"## Latency\n\n{t1}\n\n"
        f"## Where xrmeta's time goes (upper = beam search alone, `model.upper.beams`; leaf = "
        f"`model.catalog.topk` given those beams)\n\n"
        f"Parts timed separately (leaf given precomputed beams), medians; online upper / total relates the median "
        f"upper-layer call to the median full `predict_slots` call. The parts use the plain beam: the wider list of "
        f"clusters for inserted items (f={f}) is in the latency table's totals only.\n\n{t2}\n\n"
        f"## Fixed cost per call (what online mode pays regardless of the query; "
        f"{plain.featurizer.n_features} features)\n\n{fixed}\n"
    )
    C.report("latency", args.dataset, body, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
