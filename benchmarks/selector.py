"""Neighbour selection for new items: exact inverted index, the pruned index at several settings, PECOS's sparse
HNSW, and hnswlib over a dense random projection of the TF-IDF rows. Recall@K of the exact K nearest observed
items and single-thread µs per new item (one batch of the split's novel items; for hnswlib the projection is
included), median of repeats (`harness.latency`, batch calls only). Build time is reported once.
"""

from __future__ import annotations

import time

import hnswlib
import numpy as np
from pecos.ann.hnsw import HNSW
from sklearn.preprocessing import normalize
from sklearn.random_projection import SparseRandomProjection

from . import api, harness as H
from . import common as C


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = [len(set(f[f >= 0]) & set(e[e >= 0])) / max(1, (e >= 0).sum()) for f, e in zip(found, exact)]
    return 100.0 * float(np.mean(hits))


def projected(Z, dim: int, seed: int):
    proj = SparseRandomProjection(n_components=dim, dense_output=True, random_state=seed).fit(Z)
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=Z.shape[0], M=16, ef_construction=100, random_seed=seed)
    index.set_num_threads(1)
    index.add_items(normalize(proj.transform(Z)).astype(np.float32))
    index.set_ef(64)
    return proj, index


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    args = C.parse(p, argv, repeats=1)
    started = time.perf_counter()
    model, data, split, _ = C.load(args.dataset, args.seed)
    S = normalize(model.featurizer.transform(C.titles_ids(data, split.novel)[0], threads=1))
    Z, n, k = api.neighbour_index(model), S.shape[0], args.k
    exact_items = api.Selector(Z).search(S, k)[0]

    def sel(**kw):
        return lambda: api.Selector(Z, **kw), lambda s, Q: s.search(Q, k)[0]

    def pecos_hnsw(ef):
        params = HNSW.TrainParams(M=16, efC=100, metric_type="ip", threads=1)
        return (lambda: HNSW.train(Z, train_params=params),
                lambda h, Q: h.predict(Q, pred_params=HNSW.PredParams(efS=ef, topk=k, threads=1),
                                       ret_csr=False)[0].astype(np.int64))

    def dense(dim):
        return (lambda: projected(Z, dim, args.seed),
                lambda b, Q: b[1].knn_query(normalize(b[0].transform(Q)).astype(np.float32), k=k,
                                            num_threads=1)[0].astype(np.int64))

    variants = {"exact inverted index": sel()}
    for postings, cands in [(8, 16), (8, 32), (16, 32), (16, 64), (32, 64)]:
        variants[f"pruned: {postings} postings/feature, {cands} rescored"] = sel(max_postings=postings,
                                                                                 n_candidates=cands)
    for ef in (16, 64):
        variants[f"PECOS HNSW (sparse, M=16, efC=100), efS={ef}"] = pecos_hnsw(ef)
    for dim in (128, 256):
        variants[f"hnswlib, sparse random projection to {dim}-d, M=16, ef=64"] = dense(dim)
    rows = []
    for name, (build, search) in variants.items():
        with H.single_thread():
            build_s, index = H.clock(build)
        lat = H.latency({name: lambda Q: search(index, Q)}, [], S, args.repeats, warm=[S[:5]])[name]
        rows.append([name, build_s, lat.batch_ms * 1e3, recall(search(index, S), exact_items)])
    body = C.text("selector", n=n, n_observed=Z.shape[0], n_features=Z.shape[1], k=k, repeats=args.repeats,
                  table=C.table(["selector", "build s", "search µs/item", f"recall@{k} %"], rows,
                                ["", ".2f", ".1f", ".1f"]))
    C.report("selector", args.dataset, body, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
