"""Peers that learn from clicks, all on xrmeta's TF-IDF features of the same training queries x observed items:
xrmeta (and the PECOS XR-Linear model inside it, served predict-only), omikuji and napkinXC.

Hyper-parameters are each library's defaults: xrmeta = `XRMetaModel.train` defaults (PECOS XR-Linear: PIFA,
branching 16, leaf size 100, threshold 0.1, l3-hinge; cold start as `ColdStartConfig()`); omikuji =
`Model.default_hyper_param()` (Parabel-like: 3 trees, balanced 2-means, leaves of <= 100 labels, hinge loss,
C=1, weight threshold 0.1), predicted with its default beam 10; napkinXC = `PLT()` defaults (hierarchical
balanced 2-means, <= 100 leaves per node, logistic loss, liblinear C=10, weight threshold 0.1, exact top-k
search), seed 0. Only xrmeta can add items after training.
"""

from __future__ import annotations

import os
from pathlib import Path

import scipy.sparse as smat

from xrmeta.model import XRMetaModel

from . import api, harness as H
from . import common as C
from .peer_api import Build, Point, pad_topk
from .resources import PeakRSS, path_bytes, quiet_fds


def build_xrmeta(data, split, seed: int, workdir: Path):
    """(full model: novel items inserted, plain model: as trained, builds for xrmeta and PECOS)."""
    with PeakRSS() as mem:  # every core, as `xrmeta.train` does
        train_s, model = H.clock(
            XRMetaModel.train, C.texts(data, split.train_queries), split.Y_train, *C.titles_ids(data, split.observed),
            threads=-1, verbose=False, **api.TRAIN_KWARGS,
            info={"split": {"novel_frac": split.novel_frac, "test_frac": split.test_frac, "seed": seed}})
    stages = model.info["train_seconds"]
    model.save(workdir / "xrmeta")
    plain, full, warm = (XRMetaModel.load(workdir / "xrmeta") for _ in range(3))
    ins = H.insert_novel(full, data, split, warm=50, warm_into=warm)  # compile the insertion kernels off the clock
    full.save(workdir / "xrmeta_full")
    gen, size = full.configs.coldstart, api.catalog_sizes(full)
    facts = {"nnz_trained": api.nnz_per_item(full, 0, size["base"]),
             "nnz_inserted": api.nnz_per_item(full, size["base"], size["slots"])}
    xr = Build("xrmeta", stages["featurize"], train_s - stages["featurize"], mem.peak,
               path_bytes(workdir / "xrmeta_full"), ins.items, ins.seconds,
               [f"cold start: generator `{gen.generator}`, assign `{gen.assign}`, k={gen.k}, max_nnz={gen.max_nnz}; "
                f"size includes the {ins.items} inserted items; classifier non-zeros per item, mean: trained "
                f"{facts['nnz_trained']:.1f}, inserted {facts['nnz_inserted']:.1f}"], facts)
    pecos_parts = sum(path_bytes(workdir / "xrmeta" / p) for p in ("featurizer", "xlinear"))
    pc = Build("PECOS XR-Linear", stages["featurize"], stages["XR-Linear tree + classifiers"], mem.peak,
               pecos_parts, notes=["trained inside xrmeta's training (same call); peak memory is that whole call's"])
    return full, plain, xr, pc


def tfidf(featurizer):
    """Query featurization shared by the four systems: the trained model's featurizer, single thread."""
    return lambda texts: featurizer.transform(texts, threads=1)


def xrmeta_points(full, plain, data, beams, k: int) -> list[Point]:
    """xrmeta (+ novel items), xrmeta as trained and PECOS predict-only, one point per beam."""
    tf, pecos = tfidf(full.featurizer), api.pecos(plain)
    cols_full, cols_plain = api.slot_columns(full, data), api.slot_columns(plain, data)
    points = []
    for b in beams:
        for name, m, cols in (("xrmeta", full, cols_full), ("xrmeta (as trained)", plain, cols_plain)):
            points.append(Point(
                name, f"beam {b}", search=lambda texts, subset, kk, m=m, b=b: api.search(m, tf(texts), kk, b, subset),
                one=lambda text, m=m, b=b: api.search(m, tf([text]), k, b),
                batch=lambda texts, m=m, b=b: api.search(m, tf(texts), k, b), slot_col=cols))
        points.append(Point(
            "PECOS XR-Linear", f"beam {b}",
            search=lambda texts, subset, kk, b=b: api.pecos_search(plain, tf(texts), kk, b),
            one=lambda text, b=b: pecos.predict(tf([text]), beam_size=b, only_topk=k, threads=1),
            batch=lambda texts, b=b: pecos.predict(tf(texts), beam_size=b, only_topk=k, threads=1),
            slot_col=cols_plain))
    return points


def write_xc_file(path: Path, X: smat.csr_matrix, Y: smat.csr_matrix) -> None:
    """The Extreme Classification Repository text format that omikuji trains from."""
    with open(path, "w") as f:
        f.write(f"{X.shape[0]} {X.shape[1]} {Y.shape[1]}\n")
        for i in range(X.shape[0]):
            labels = ",".join(map(str, Y.indices[Y.indptr[i] : Y.indptr[i + 1]]))
            a, b = X.indptr[i], X.indptr[i + 1]
            f.write(labels + " " + " ".join(f"{j}:{v:.7g}" for j, v in zip(X.indices[a:b], X.data[a:b])) + "\n")


def omikuji_point(X, Y, featurizer, split, workdir: Path, featurize_s: float, k: int) -> tuple[Build, Point]:
    import omikuji

    path = workdir / "omikuji_train.txt"
    with PeakRSS() as mem:
        write_s, _ = H.clock(write_xc_file, path, X, Y)
        with quiet_fds():  # its trainer draws progress bars on stdout
            fit_s, model = H.clock(omikuji.Model.train_on_data, str(path), None, os.cpu_count())
    with quiet_fds():
        model.save(str(workdir / "omikuji"))
    model.init_prediction_thread_pool(1)
    tf = tfidf(featurizer)

    def topk(X, kk):
        rows = (zip(X.indices[X.indptr[i] : X.indptr[i + 1]].tolist(), X.data[X.indptr[i] : X.indptr[i + 1]].tolist())
                for i in range(X.shape[0]))
        return [model.predict(list(r), top_k=kk) for r in rows]

    build = Build("omikuji", featurize_s, write_s + fit_s, mem.peak,
                  path_bytes(workdir / "omikuji") + path_bytes(workdir / "xrmeta" / "featurizer"),
                  notes=[f"train time includes writing its training file ({write_s:.2f} s): its Python API trains "
                         "from a file; predicts one query per call (no batch API), beam 10"])
    return build, Point("omikuji", "defaults", search=lambda texts, subset, kk: pad_topk(topk(tf(texts), kk), kk),
                        one=lambda text: topk(tf([text]), k), batch=lambda texts: topk(tf(texts), k),
                        slot_col=split.observed)


def napkinxc_point(X, Y, featurizer, split, workdir: Path, featurize_s: float, k: int) -> tuple[Build, Point]:
    from napkinxc.models import PLT

    labels = [Y.indices[Y.indptr[i] : Y.indptr[i + 1]].tolist() for i in range(Y.shape[0])]
    model = PLT(str(workdir / "napkinxc"), seed=0, threads=0)  # 0 = every core for training
    with PeakRSS() as mem:
        fit_s, _ = H.clock(model.fit, X, labels)
    model.set_params(threads=1)
    tf = tfidf(featurizer)
    build = Build("napkinXC PLT", featurize_s, fit_s, mem.peak,
                  path_bytes(workdir / "napkinxc") + path_bytes(workdir / "xrmeta" / "featurizer"))
    return build, Point("napkinXC PLT", "defaults",
                        search=lambda texts, subset, kk: pad_topk(model.predict_proba(tf(texts), top_k=kk), kk),
                        one=lambda text: model.predict_proba(tf([text]), top_k=k),
                        batch=lambda texts: model.predict_proba(tf(texts), top_k=k), slot_col=split.observed)
