"""Query latency, single thread: xrmeta vs PECOS's own predict-only model of the same trained tree.

xrmeta with PECOS's own leaf layer (`--no-observed-titles`: must return PECOS's top-k, checked), as trained, and
with every novel item inserted, against PECOS's `predict` and the C call inside it (PECOS's floor); batch and
online, interleaved (`harness.latency`). The report (texts.md, `latency`) states the method.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as smat

from xrmeta.model import XRMetaModel

from . import api, harness as H
from . import common as C


def same_topk(s1, v1, s2, v2, rtol=1e-5) -> str:
    """'identical', 'tie' (differ only among items tied, in both lists, with the last score) or 'mismatch'."""
    a, b = s1 >= 0, s2 >= 0
    s1, v1, s2, v2 = s1[a], v1[a], s2[b], v2[b]
    if len(s1) != len(s2) or not np.allclose(v1, v2, rtol=rtol, atol=1e-7):
        return "mismatch"
    if len(s1) == 0 or np.array_equal(s1, s2):
        return "identical"
    return "tie" if set(s1[v1 != v1[-1]]) == set(s2[v2 != v2[-1]]) else "mismatch"


def check(model, X, beam: int, k: int) -> dict:
    """xrmeta's top-k vs PECOS's on every row of X (rows with no known term are not compared)."""
    s1, v1 = api.search(model, X, k, beam)
    s2, v2 = api.pecos_search(model, X, k, beam)
    out = {"identical": 0, "tie": 0, "mismatch": 0, "empty": 0}
    for i in range(X.shape[0]):
        if X.indptr[i] == X.indptr[i + 1]:  # no known term: xrmeta returns nothing, PECOS its biases' order
            out["empty"] += 1
        else:
            out[same_topk(s1[i], v1[i], s2[i], v2[i])] += 1
    valid = (s1 >= 0) & (s2 >= 0)
    out["max_abs_score_diff"] = float(np.abs(v1 - v2)[valid].max()) if valid.any() else 0.0
    return out


def pecos_c_call(pecos, beam: int, k: int):
    """PECOS's predict-only search without its Python wrapper: the C call that `predict` makes."""
    from pecos.core import clib
    from pecos.core.base import ScipyCompressedSparseAllocator

    chain = pecos.model.model_chain

    def run(X):
        out = ScipyCompressedSparseAllocator()
        clib.xlinear_predict(chain, X, beam, None, k, 1, out)
        return out.get()

    return run


def systems(pecos, models: dict, beam: int, k: int, inputs: list) -> dict:
    """name -> f(X): every timed call. The leaf parts take beams computed for every input in advance, off the
    clock and not right before the timed call (which would warm the upper layers for xrmeta only)."""
    fns = {"pecos": lambda X: pecos.predict(X, beam_size=beam, only_topk=k, threads=1),
           "pecos_c": pecos_c_call(pecos, beam, k)}
    for name, m in models.items():
        fns[name] = lambda X, m=m: api.search(m, X, k, beam)
    for name in ("xrmeta", "xrmeta+novel"):  # the numba kernel the C++ core replaced, same model and arguments
        fns["numba " + name] = lambda X, m=models[name]: api.numba_search(m, X, k, beam)
    for suffix, m in (("", models["xrmeta"]), ("+novel", models["xrmeta+novel"])):
        pre = {id(X): api.beams(m, X, beam) for X in inputs}
        fns["upper" + suffix] = lambda X, m=m: api.beams(m, X, beam)
        fns["leaf" + suffix] = lambda X, m=m, pre=pre: api.leaf_topk(m, X, pre[id(X)], k)
    return fns


def fixed_costs(pecos, model, k: int, n: int = 1000) -> str:
    """Median µs of each call on an empty query (no feature): the per-call cost that online mode pays. PECOS still
    returns beam_size clusters (bias-only scores) for it, so xrmeta also scans those clusters."""
    E = smat.csr_matrix((1, model.featurizer.n_features), dtype=np.float32)
    EB = smat.csr_matrix((1, api.catalog_sizes(model)["clusters"]), dtype=np.float32)
    pecos_c = pecos_c_call(pecos, 10, k)
    calls = {
        "PECOS `predict` (whole model)": lambda _: pecos.predict(E, beam_size=10, only_topk=k, threads=1),
        "PECOS C call `clib.xlinear_predict` (whole model, no Python wrapper)": lambda _: pecos_c(E),
        "xrmeta search (`model._search`)": lambda _: api.search(model, E, k, 10),
        "· part: `upper.beams` alone (beam search kernel; still returns beam clusters)":
            lambda _: api.beams(model, E, 10),
        "· part: leaf scoring given no beam (C++ call overhead)": lambda _: api.leaf_topk(model, E, EB, k),
    }
    samples = H.time_calls(calls, [None] * n, block=n)  # each system n calls in a row
    return C.table(["call on an empty query", "median µs"], [[name, np.median(v) * 1e6] for name, v in samples.items()],
                   ["", ".1f"])


def busy_neighbour(pecos, model, rows: list, k: int, beam: int = 10) -> str:
    """Online medians and p99 at threads=1 with numba's pool left at every core (as a user's process runs, not
    under `single_thread`'s numba limit), idle and while another process spins one core: a threads=1 search that
    entered a parallel region waited on the busy core (0.3 ms -> 16 ms before the threads rule)."""
    calls = {"pecos": lambda X: pecos.predict(X, beam_size=beam, only_topk=k, threads=1),
             "xrmeta": lambda X: api.search(model, X, k, beam, threads=1)}
    out = []
    for label, on in (("idle", False), ("one other process spinning on a core", True)):
        with H.busy_neighbour(on):
            t = H.time_calls(calls, rows, warm=rows[:2], numba_pool=True)
        pc, x = (np.median(t[n]) * 1e3 for n in ("pecos", "xrmeta"))
        out.append([label, pc, np.percentile(t["pecos"], 99) * 1e3, x, np.percentile(t["xrmeta"], 99) * 1e3, x / pc])
    return C.table(["machine", "PECOS median ms", "PECOS p99 ms", "xrmeta median ms", "xrmeta p99 ms",
                    "median ratio"], out, ["", ".4f", ".4f", ".4f", ".4f", ".2f"])


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--beams", default="1,10,50", help="comma-separated beam sizes")
    p.add_argument("--k", type=int, default=10, help="items returned per query")
    p.add_argument("--repeats", type=int, default=7, help="batch repeats (median)")
    p.add_argument("--online", type=int, default=1000, help="queries sampled for online mode (>= 500)")
    args = C.parse(p, argv, repeats=2, online=50, beams="1,10")
    if not args.quick and (args.repeats < 5 or args.online < 500):
        p.error("need --repeats >= 5 and --online >= 500")
    started = time.perf_counter()
    beams = [int(b) for b in args.beams.split(",")]

    plain, data, split, _ = C.load(args.dataset, args.seed, ["--no-observed-titles"])
    grounded, _, _, folder = C.load(args.dataset, args.seed)
    full, full_1 = XRMetaModel.load(folder), XRMetaModel.load(folder)
    n_novel = H.insert_novel(full, data, split).items
    api.set_spread(full_1, 1, 1)  # the novel items in one cluster, looked for in the beam only
    H.insert_novel(full_1, data, split)
    pecos = api.pecos(grounded)
    size = api.catalog_sizes(plain)
    assert api.same_tree(plain, grounded), "the two trainings built different trees"
    X = smat.csr_matrix(plain.featurizer.transform(C.texts(data, split.generalized_set.queries), threads=1),
                        dtype=np.float32)
    X.sort_indices()
    rows = [X[i : i + 1] for i in C.sample(X.shape[0], args.online, args.seed)]
    models = {"xrmeta pecos leaf": plain, "xrmeta": grounded, "xrmeta+novel": full, "xrmeta+novel m=1": full_1}
    C.log(f"{args.dataset}: {X.shape[0]} test queries, {size['base']} observed items, {n_novel} novel inserted, "
          f"{size['clusters']} leaf clusters")
    checks, lat = {}, {}
    for b in beams:
        checks[b] = check(plain, X, b, args.k)  # also warms every kernel
        C.log(f"beam {b}: check {checks[b]}; timing")
        x2 = X[:2]  # warm-up input (the leaf parts look their beams up by object)
        lat[b] = H.latency(systems(pecos, models, b, args.k, [X, x2] + rows), rows, X, args.repeats, warm=[x2])
    fixed = fixed_costs(pecos, grounded, args.k)
    busy = busy_neighbour(pecos, full, rows, args.k)
    C.report("latency", args.dataset, render(args, beams, checks, lat, fixed, busy, X, rows, models, n_novel, size), started)
    return 0


def render(args, beams, checks, lat, fixed, busy, X, rows, models, n_novel, size) -> str:
    full = models["xrmeta+novel"]
    m, f = full.configs.coldstart.clusters_per_item, full.configs.coldstart.inserted_beam_factor
    times = []
    for b in beams:
        for mode, get in (("batch ms/query", "batch_ms"), ("online median ms", "median_ms"),
                          ("online p99 ms", "p99_ms")):
            t = {name: getattr(v, get) for name, v in lat[b].items()}
            pc, leaf, x, xn = t["pecos"], t["xrmeta pecos leaf"], t["xrmeta"], t["xrmeta+novel"]
            nx, nxn = t["numba xrmeta"], t["numba xrmeta+novel"]
            times.append([b, mode, pc, t["pecos_c"], leaf, leaf / pc, x, x / pc, nx, x / nx, xn, xn / pc,
                          xn / t["pecos_c"], nxn, xn / nxn, t["xrmeta+novel m=1"] / pc])
    t1 = C.table(["beam", "mode", "PECOS `predict`", "PECOS C call", "xrmeta, PECOS's leaf layer", "ratio",
                  "xrmeta (defaults)", "ratio", "numba kernel (defaults)", "C++ / numba",
                  f"xrmeta + novel (m={m}, f={f})", "ratio (+novel)/PECOS", "ratio (+novel)/PECOS C call",
                  "numba kernel + novel", "C++ / numba (+novel)", "ratio (+novel, m=1, f=1)/PECOS"], times,
                 ["", "", ".4f", ".4f", ".4f", ".2f", ".4f", ".2f", ".4f", ".2f", ".4f", ".2f", ".2f", ".4f", ".2f",
                  ".2f"])
    parts = []
    for b in beams:
        t = lat[b]
        for suffix, label in (("", "xrmeta"), ("+novel", "xrmeta + novel")):
            up, leaf = t["upper" + suffix], t["leaf" + suffix]
            parts.append([b, label, up.batch_ms, leaf.batch_ms, up.batch_ms / (up.batch_ms + leaf.batch_ms),
                          up.median_ms, leaf.median_ms, up.median_ms / t["xrmeta" + suffix].median_ms])
    t2 = C.table(["beam", "system", "batch upper ms/q", "batch leaf ms/q", "batch upper share",
                  "online upper median ms", "online leaf median ms", "online upper / online total"], parts,
                 ["", "", ".4f", ".4f", ".0%", ".4f", ".4f", ".0%"])
    chk = C.table(["beam", "queries", "identical top-k", "differ only among exactly tied scores", "mismatching",
                   "max abs score diff", "no known term (not compared)"],
                  [[b, X.shape[0], c["identical"], c["tie"], c["mismatch"], c["max_abs_score_diff"], c["empty"]]
                   for b, c in checks.items()], ["", "", "", "", "", ".2e", ""])
    plain, grounded = models["xrmeta pecos leaf"], models["xrmeta"]
    n_base, n_slots = size["base"], api.catalog_sizes(full)["slots"]
    return C.text("latency", n_queries=X.shape[0], n_base=n_base, n_clusters=size["clusters"], n_novel=n_novel, m=m,
                  f=f, nnz_pecos=api.nnz_per_item(plain, 0, n_base), nnz_titles=api.nnz_per_item(grounded, 0, n_base),
                  nnz_inserted=api.nnz_per_item(full, n_base, n_slots), k=args.k, repeats=args.repeats,
                  n_online=len(rows), check=chk, latency=t1, parts=t2, n_features=plain.featurizer.n_features,
                  fixed=fixed, busy=busy)


if __name__ == "__main__":
    raise SystemExit(main())
