"""Neighbour selection for new items: exact inverted index, the pruned index at several settings, PECOS's sparse
HNSW, and hnswlib over a dense random projection of the TF-IDF rows. Recall@K of the exact K nearest observed
items and single-thread µs per new item (one batch of the split's novel items; for hnswlib the projection is
included), median of repeats. Build time is reported once.

Run: .venv/bin/python -m benchmarks.selector --dataset homedepot
"""

from __future__ import annotations

import time

import hnswlib
import numpy as np
from pecos.ann.hnsw import HNSW
from sklearn.preprocessing import normalize
from sklearn.random_projection import SparseRandomProjection

from xrmeta.coldstart import Selector

from .common import clock, load, md_table, parser, report, single_thread


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = [len(set(f[f >= 0]) & set(e[e >= 0])) / max(1, (e >= 0).sum()) for f, e in zip(found, exact)]
    return 100.0 * float(np.mean(hits))


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    started = time.perf_counter()
    single_thread()
    model, data, split, _ = load(args.dataset, args.seed)
    S = normalize(model.featurizer.transform([data.item_texts[j] for j in split.novel], threads=1))
    Z = model.selector.Z
    n, k = S.shape[0], args.k
    exact_items = Selector(Z).search(S, k)[0]
    rows = []

    def measure(name, build, search):
        build_s, index = clock(build)
        search(index, S[:5])  # JIT / allocation warm-up
        times = [clock(search, index, S)[0] for _ in range(args.repeats)]
        found = search(index, S)
        rows.append([name, f"{build_s:.2f}", f"{np.median(times) / n * 1e6:.1f}", f"{recall(found, exact_items):.1f}"])

    measure("exact inverted index", lambda: Selector(Z), lambda sel, Q: sel.search(Q, k)[0])
    for postings, cands in [(8, 16), (8, 32), (16, 32), (16, 64), (32, 64)]:
        measure(f"pruned: {postings} postings/feature, {cands} rescored",
                lambda: Selector(Z, max_postings=postings, n_candidates=cands), lambda sel, Q: sel.search(Q, k)[0])
    for ef in (16, 64):
        measure(f"PECOS HNSW (sparse, M=16, efC=100), efS={ef}",
                lambda: HNSW.train(Z, train_params=HNSW.TrainParams(M=16, efC=100, metric_type="ip", threads=1)),
                lambda h, Q, ef=ef: h.predict(Q, pred_params=HNSW.PredParams(efS=ef, topk=k, threads=1),
                                              ret_csr=False)[0].astype(np.int64))
    for dim in (128, 256):
        def build(dim=dim):
            proj = SparseRandomProjection(n_components=dim, dense_output=True, random_state=args.seed).fit(Z)
            index = hnswlib.Index(space="ip", dim=dim)
            index.init_index(max_elements=Z.shape[0], M=16, ef_construction=100, random_seed=args.seed)
            index.set_num_threads(1)
            index.add_items(normalize(proj.transform(Z)).astype(np.float32))
            index.set_ef(64)
            return proj, index

        def search(built, Q):
            proj, index = built
            return index.knn_query(normalize(proj.transform(Q)).astype(np.float32), k=k, num_threads=1)[0].astype(
                np.int64)

        measure(f"hnswlib, sparse random projection to {dim}-d, M=16, ef=64", build, search)

    body = (f"{n} novel items of the split searched against {Z.shape[0]} observed items ({Z.shape[1]} TF-IDF "
            f"features); recall of the exact {k} nearest, percent; single thread; search µs/item is the median of "
            f"{args.repeats} runs over the whole batch.\n\n"
            + md_table(["selector", "build s", "search µs/item", f"recall@{k} %"], rows))
    report("selector", args.dataset, body, started)


if __name__ == "__main__":
    main()
