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

import numba
import numpy as np
import scipy.sparse as smat

from xrmeta.evaluate import insert_novel, slot_columns
from xrmeta.model import XRMetaModel

from . import common as C
from .peer_api import Build, Point, pad_topk
from .resources import PeakRSS, path_bytes, quiet_fds


class Tfidf:
    """Query featurization shared by the four systems: the trained model's featurizer, single thread."""

    def __init__(self, featurizer):
        self.featurizer = featurizer

    def __call__(self, texts: list[str]) -> smat.csr_matrix:
        return self.featurizer.transform(texts, threads=1)


def build_xrmeta(data, split, seed: int, workdir: Path):
    """(full model: novel items inserted, plain model: as trained, builds for xrmeta and PECOS)."""
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # train on every core, as `xrmeta.train` does
    with PeakRSS() as mem:
        train_s, model = C.clock(
            XRMetaModel.train, [data.query_texts[i] for i in split.train_queries], split.Y_train,
            [data.item_texts[j] for j in split.observed], [data.item_ids[j] for j in split.observed],
            threads=-1, verbose=False,
            info={"split": {"novel_frac": split.novel_frac, "test_frac": split.test_frac, "seed": seed}})
    C.single_thread()
    stages = model.info["train_seconds"]
    model.save(workdir / "xrmeta")
    plain, full = XRMetaModel.load(workdir / "xrmeta"), XRMetaModel.load(workdir / "xrmeta")
    warm = XRMetaModel.load(workdir / "xrmeta")  # compile the insertion kernels off the clock
    warm.add_items([data.item_texts[j] for j in split.novel[:50]], [data.item_ids[j] for j in split.novel[:50]])
    insert_s, n_novel = C.clock(insert_novel, full, data, split)
    full.save(workdir / "xrmeta_full")
    gen = full.configs.coldstart
    nnz = full.catalog.weights(np.arange(full.catalog.n_slots)).getnnz(axis=1)  # a query's cost per scored item
    base = full.catalog.n_base
    facts = {"nnz_trained": float(nnz[:base].mean()), "nnz_inserted": float(nnz[base:].mean())}
    xr = Build("xrmeta", stages["featurize"], train_s - stages["featurize"], mem.peak,
               path_bytes(workdir / "xrmeta_full"), n_novel, insert_s,
               [f"cold start: generator `{gen.generator}`, assign `{gen.assign}`, k={gen.k}, max_nnz={gen.max_nnz}; "
                f"size includes the {n_novel} inserted items; classifier non-zeros per item, mean: trained "
                f"{facts['nnz_trained']:.1f}, inserted {facts['nnz_inserted']:.1f}"], facts)
    pecos_parts = sum(path_bytes(workdir / "xrmeta" / p) for p in ("featurizer", "xlinear"))
    pc = Build("PECOS XR-Linear", stages["featurize"], stages["XR-Linear tree + classifiers"], mem.peak,
               pecos_parts, notes=["trained inside xrmeta's training (same call); peak memory is that whole call's"])
    return full, plain, xr, pc


def xrmeta_points(full: XRMetaModel, plain: XRMetaModel, data, beams, k: int) -> list[Point]:
    """xrmeta (+ novel items), xrmeta as trained and PECOS predict-only, one point per beam."""
    tf = Tfidf(full.featurizer)
    pecos = plain.pecos_model()
    cols_full, cols_plain = slot_columns(full, data), slot_columns(plain, data)
    points = []
    for b in beams:
        for name, m, cols in (("xrmeta", full, cols_full), ("xrmeta (as trained)", plain, cols_plain)):
            points.append(Point(
                name, f"beam {b}",
                search=lambda texts, subset, kk, m=m, b=b: m.predict_slots(tf(texts), kk, b, subset, threads=1),
                one=lambda text, m=m, b=b: m.predict_slots(tf([text]), k, b, threads=1),
                batch=lambda texts, m=m, b=b: m.predict_slots(tf(texts), k, b, threads=1),
                slot_col=cols))
        points.append(Point(
            "PECOS XR-Linear", f"beam {b}",
            search=lambda texts, subset, kk, b=b: plain.pecos_predict_slots(tf(texts), kk, b, threads=1),
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
            feats = " ".join(f"{j}:{v:.7g}" for j, v in zip(X.indices[a:b], X.data[a:b]))
            f.write(f"{labels} {feats}\n")


def omikuji_point(X: smat.csr_matrix, Y: smat.csr_matrix, featurizer, split, workdir: Path, featurize_s: float,
                  k: int) -> tuple[Build, Point]:
    import omikuji

    path = workdir / "omikuji_train.txt"
    with PeakRSS() as mem:
        write_s, _ = C.clock(write_xc_file, path, X, Y)
        with quiet_fds():  # its trainer draws progress bars on stdout
            fit_s, model = C.clock(omikuji.Model.train_on_data, str(path), None, os.cpu_count())
    with quiet_fds():
        model.save(str(workdir / "omikuji"))
    model.init_prediction_thread_pool(1)
    tf = Tfidf(featurizer)

    def topk(X, kk):
        out = []
        for i in range(X.shape[0]):
            a, b = X.indptr[i], X.indptr[i + 1]
            out.append(model.predict(list(zip(X.indices[a:b].tolist(), X.data[a:b].tolist())), top_k=kk))
        return out

    build = Build("omikuji", featurize_s, write_s + fit_s, mem.peak,
                  path_bytes(workdir / "omikuji") + path_bytes(workdir / "xrmeta" / "featurizer"),
                  notes=[f"train time includes writing its training file ({write_s:.2f} s): its Python API trains "
                         "from a file; predicts one query per call (no batch API), beam 10"])
    point = Point("omikuji", "defaults", search=lambda texts, subset, kk: pad_topk(topk(tf(texts), kk), kk),
                  one=lambda text: topk(tf([text]), k), batch=lambda texts: topk(tf(texts), k),
                  slot_col=split.observed)
    return build, point


def napkinxc_point(X: smat.csr_matrix, Y: smat.csr_matrix, featurizer, split, workdir: Path, featurize_s: float,
                   k: int) -> tuple[Build, Point]:
    from napkinxc.models import PLT

    labels = [Y.indices[Y.indptr[i] : Y.indptr[i + 1]].tolist() for i in range(Y.shape[0])]
    model = PLT(str(workdir / "napkinxc"), seed=0, threads=0)  # 0 = every core for training
    with PeakRSS() as mem:
        fit_s, _ = C.clock(model.fit, X, labels)
    model.set_params(threads=1)
    tf = Tfidf(featurizer)
    build = Build("napkinXC PLT", featurize_s, fit_s, mem.peak,
                  path_bytes(workdir / "napkinxc") + path_bytes(workdir / "xrmeta" / "featurizer"))
    point = Point("napkinXC PLT", "defaults",
                  search=lambda texts, subset, kk: pad_topk(model.predict_proba(tf(texts), top_k=kk), kk),
                  one=lambda text: model.predict_proba(tf([text]), top_k=k),
                  batch=lambda texts: model.predict_proba(tf(texts), top_k=k), slot_col=split.observed)
    return build, point
