"""XRMetaModel: one object for the whole pipeline.

featurize (TF-IDF) -> tree (PECOS XR-Linear upper layers, predict-only) -> catalog (mutable leaf layer)
and, for items that arrive after training: select (K nearest observed items) -> assign (leaf cluster) ->
generate (sparse classifier) -> insert. A new item is retrievable by the next query; nothing is retrained.

Model directory (every file written by `save`):
  config.json        format version, all configs, counts (readable)
  featurizer/        TF-IDF vectorizer
  xlinear/           the trained PECOS model (observed items only): the peer xrmeta must match
  upper/             PECOS model of the layers above the leaves, served predict-only
  catalog.npz, catalog_ids.txt   leaf layer: trained and inserted items
  selector.npz       observed items' representations for neighbour search
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as smat
from pecos.xmc.xlinear.model import XLinearModel

from .catalog import Catalog
from .coldstart import Selector, assign_centroid, assign_vote, leaf_centroids, make_generator
from .coldstart.generate import Calibration, fit_calibration, synthesize
from .featurize import Featurizer, FeaturizerConfig
from .tree import TreeConfig, UpperLayers, train_xlinear

FORMAT_VERSION = 1
ASSIGNERS = ("vote", "centroid", "route")
SELECTORS = ("pruned", "exact")


class ModelError(ValueError):
    pass


@dataclass
class ColdStartConfig:
    k: int = 3  # neighbours per new item
    selector: str = "pruned"  # exact | pruned (impact-truncated posting lists + exact rescoring)
    max_postings: int = 16  # pruned: postings kept per feature
    n_candidates: int = 32  # pruned: candidates rescored exactly
    assign: str = "vote"  # vote | centroid | route (the leaf the tree sends the title to, as if a query)
    generator: str = "mean"
    max_nnz: int = 256  # non-zeros kept per synthesized classifier
    threshold: float | None = None  # pruning of synthesized weights; None = the tree's threshold

    def validate(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.selector not in SELECTORS:
            raise ValueError(f"selector must be one of {SELECTORS}, got {self.selector!r}")
        if self.max_postings < 1 or self.n_candidates < self.k:
            raise ValueError("max_postings must be >= 1 and n_candidates >= k")
        if self.assign not in ASSIGNERS:
            raise ValueError(f"assign must be one of {ASSIGNERS}, got {self.assign!r}")
        if self.max_nnz < 1:
            raise ValueError("max_nnz must be >= 1")
        make_generator(self.generator)  # raises on an unknown name


@dataclass
class _Configs:
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    tree: TreeConfig = field(default_factory=TreeConfig)
    coldstart: ColdStartConfig = field(default_factory=ColdStartConfig)


def _log(msg: str, verbose: bool) -> None:
    if verbose:
        print(msg, file=sys.stderr, flush=True)


class XRMetaModel:
    def __init__(self, workdir: Path, featurizer: Featurizer, upper: UpperLayers, catalog: Catalog,
                 selector: Selector, label_slot: np.ndarray, configs: _Configs, calibration: Calibration,
                 info: dict, tmp: tempfile.TemporaryDirectory | None = None):
        self.workdir = Path(workdir)  # where the PECOS parts live (a model directory, or a temp dir after train)
        self.featurizer = featurizer
        self.upper = upper
        self.catalog = catalog
        self.selector = selector
        self.label_slot = label_slot  # PECOS label j of the trained model -> catalog slot
        self.configs = configs
        self.calibration = calibration
        self.info = info
        self._tmp = tmp
        self._centroids = None
        self._pecos = None
        self.generator = make_generator(configs.coldstart.generator, calibration)

    # ------------------------------------------------------------ training
    @classmethod
    def train(cls, query_texts: list[str], Y: smat.spmatrix, item_texts: list[str], item_ids: list[str],
              featurizer_config: FeaturizerConfig | None = None, tree_config: TreeConfig | None = None,
              coldstart_config: ColdStartConfig | None = None, threads: int = -1, verbose: bool = True,
              info: dict | None = None) -> XRMetaModel:
        """Train on queries x items (Y: binary relevance, n_queries x n_items). Every item given here is an
        observed item of the tree; items that arrive later go through `add_items`."""
        configs = _Configs(featurizer_config or FeaturizerConfig(), tree_config or TreeConfig(),
                           coldstart_config or ColdStartConfig())
        configs.tree.validate()
        configs.coldstart.validate()
        Y = smat.csr_matrix(Y, dtype=np.float32)
        if Y.shape != (len(query_texts), len(item_texts)) or len(item_ids) != len(item_texts):
            raise ModelError(f"Y is {Y.shape} for {len(query_texts)} queries and {len(item_texts)} items "
                             f"({len(item_ids)} ids)")
        if len(set(item_ids)) != len(item_ids):
            raise ModelError("item ids must be unique")
        t0 = time.perf_counter()
        timings = {}

        def step(name):
            timings[name] = time.perf_counter() - t0 - sum(timings.values())
            _log(f"  {name:<28s} {timings[name]:7.2f} s", verbose)

        _log(f"training on {Y.shape[0]} queries x {Y.shape[1]} items", verbose)
        featurizer = Featurizer.train(list(query_texts) + list(item_texts), configs.featurizer, threads)
        X = featurizer.transform(query_texts, threads)
        Z = featurizer.transform(item_texts, threads)
        step("featurize")
        xlinear = train_xlinear(X, Y, Z, configs.tree, threads)
        step("XR-Linear tree + classifiers")

        tmp = tempfile.TemporaryDirectory(prefix="xrmeta-")
        workdir = Path(tmp.name)
        xlinear.save(str(workdir / "xlinear"))
        UpperLayers.save_from(xlinear, workdir / "upper")
        leaf = xlinear.model.model_chain[-1]
        catalog = Catalog.from_leaf_layer(leaf.W, leaf.C, leaf.bias, list(item_ids), configs.tree.post_processor)
        upper = UpperLayers.load(workdir / "upper", catalog.n_clusters)
        label_slot = np.array([catalog.slot_of[i] for i in item_ids], dtype=np.int64)
        slot_label = np.argsort(label_slot)
        selector = make_selector(Z[slot_label], configs.coldstart)
        calibration = _calibrate(X, Y, catalog, selector, label_slot, configs.tree.seed)
        step("catalog + selector")
        info = dict(info or {}, n_train_queries=int(Y.shape[0]), n_observed_items=int(Y.shape[1]),
                    n_features=featurizer.n_features, n_clusters=catalog.n_clusters, train_seconds=timings)
        return cls(workdir, featurizer, upper, catalog, selector, label_slot, configs, calibration, info, tmp)

    # ------------------------------------------------------------ cold start
    def add_items(self, titles: list[str], ids: list[str], threads: int | None = None) -> np.ndarray:
        """Insert new items known only by their titles; they are searchable as soon as this returns.

        The whole batch is checked first: on any bad title or id nothing is inserted. Returns the slots.
        """
        titles = list(titles)
        ids = list(ids)
        if len(titles) != len(ids):
            raise ModelError(f"add_items: {len(titles)} titles for {len(ids)} ids")
        bad = [i for i, t in zip(ids, titles) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ModelError(f"add_items: empty or non-string title for ids {bad[:5]}")
        self.catalog._check_new_ids(ids)
        if not ids:
            return np.empty(0, dtype=np.int64)
        threads = threads if threads is not None else numba.get_num_threads()
        S = self.featurizer.transform(titles, threads=threads)
        empty = [ids[i] for i in np.flatnonzero(np.diff(S.indptr) == 0)]
        if empty:
            raise ModelError(f"add_items: titles share no n-gram with the vocabulary, ids {empty[:5]}")
        weights, biases, clusters = self.synthesize(S)
        return self.catalog.add(ids, clusters, weights, biases)

    def synthesize(self, S: smat.csr_matrix):
        """Classifier weights, biases and leaf clusters for new items with title TF-IDF rows S."""
        nbrs, sims = self.selector.search(S, self.configs.coldstart.k)
        clusters = self.assign(S, nbrs, sims)
        weights, biases = self.generate(S, nbrs, sims)
        return weights, biases, clusters

    def assign(self, S: smat.csr_matrix, nbrs: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """Leaf cluster of each new item (rows of S, with its selected neighbours)."""
        how = self.configs.coldstart.assign
        if how == "route":
            return self.upper.beams(S, beam_size=1).indices.astype(np.int64)
        if how == "centroid":
            return assign_centroid(S, self.centroids)
        fallback = np.zeros(len(nbrs), dtype=np.int64)  # items with no neighbour at all go to the nearest centroid
        no_nbr = nbrs[:, 0] < 0
        if no_nbr.any():
            fallback[no_nbr] = assign_centroid(S[no_nbr], self.centroids)
        return assign_vote(nbrs, sims, self.catalog.slot_cluster.view, fallback)

    def generate(self, S: smat.csr_matrix, nbrs: np.ndarray, sims: np.ndarray):
        """Sparse classifier weights (CSR) and biases of new items, pruned like the trained ones."""
        cs = self.configs.coldstart
        threshold = self.configs.tree.threshold if cs.threshold is None else cs.threshold
        c = self.catalog
        return synthesize(self.generator.plan(nbrs, sims), nbrs, c.slot_bias.view, c.w_ptr.view, c.w_idx.view,
                          c.w_val.view, S, threshold, cs.max_nnz)

    @property
    def centroids(self) -> smat.csr_matrix:
        if self._centroids is None:
            cluster = self.catalog.slot_cluster.view[: self.catalog.n_base]
            self._centroids = leaf_centroids(self.selector.Z, cluster, self.catalog.n_clusters)
        return self._centroids

    def remove_items(self, ids: list[str]) -> None:
        """Delist items (trained or inserted); they never come back in results. Unknown ids: nothing removed."""
        self.catalog.remove(list(ids))

    # ------------------------------------------------------------ search
    def predict_slots(self, X: smat.csr_matrix, k: int = 10, beam_size: int | None = None, subset: str = "all",
                      threads: int = 1):
        """Top-k (slots, scores) for TF-IDF query rows X."""
        beam_size = beam_size or self.configs.tree.beam_size
        X = smat.csr_matrix(X, dtype=np.float32)
        if X.shape[1] != self.featurizer.n_features:
            raise ModelError(f"queries have {X.shape[1]} features, the model {self.featurizer.n_features}")
        X.sort_indices()
        beams = self.upper.beams(X, beam_size, threads)
        return self.catalog.topk(X, beams, k, subset)

    def predict(self, queries: list[str], k: int = 10, beam_size: int | None = None, subset: str = "all",
                threads: int = 1):
        """Top-k item ids and scores per query text: (ids (n, k) object array, None where fewer; scores)."""
        X = self.featurizer.transform(list(queries), threads=threads)
        slots, scores = self.predict_slots(X, k, beam_size, subset, threads)
        ids = np.array(self.catalog.ids + [None], dtype=object)[slots]  # slot -1 -> None
        return ids, scores

    def pecos_model(self) -> XLinearModel:
        """The trained PECOS model (observed items only), predict-only: the peer for checks and benchmarks."""
        if self._pecos is None:
            self._pecos = XLinearModel.load(str(self.workdir / "xlinear"), is_predict_only=True)
        return self._pecos

    def pecos_predict_slots(self, X, k=10, beam_size=None, threads=1):
        """PECOS's own predict, mapped to catalog slots (same shape as predict_slots' output)."""
        beam_size = beam_size or self.configs.tree.beam_size
        P = self.pecos_model().predict(smat.csr_matrix(X, dtype=np.float32), beam_size=beam_size, only_topk=k,
                                       threads=threads)
        return _csr_topk(P, k, self.label_slot)

    # ------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> None:
        """Write the model directory. Saving into the directory the model came from rewrites only the parts
        that change after training (catalog, config)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if folder.resolve() != self.workdir.resolve():
            self.featurizer.save(folder / "featurizer")
            for part in ("xlinear", "upper"):
                if (folder / part).exists():
                    shutil.rmtree(folder / part)
                if (self.workdir / part).exists():
                    shutil.copytree(self.workdir / part, folder / part)
        self.catalog.save(folder)
        Z = self.selector.Z
        np.savez(folder / "selector.npz", indptr=Z.indptr, indices=Z.indices, data=Z.data,
                 shape=np.array(Z.shape), label_slot=self.label_slot)
        config = {
            "format_version": FORMAT_VERSION,
            "featurizer": asdict(self.configs.featurizer),
            "tree": asdict(self.configs.tree),
            "coldstart": asdict(self.configs.coldstart),
            "calibration": asdict(self.calibration),
            "info": dict(self.info, n_items=len(self.catalog), n_inserted=self.catalog.n_slots - self.catalog.n_base),
        }
        (folder / "config.json").write_text(json.dumps(config, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> XRMetaModel:
        folder = Path(folder)
        if not (folder / "config.json").exists():
            raise ModelError(f"{folder}: not an xrmeta model directory (no config.json)")
        config = json.loads((folder / "config.json").read_text())
        if config.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{folder / 'config.json'}: format version {config.get('format_version')}, "
                             f"this xrmeta reads {FORMAT_VERSION}")
        configs = _Configs(FeaturizerConfig(**config["featurizer"]), TreeConfig(**config["tree"]),
                           ColdStartConfig(**config["coldstart"]))
        featurizer = Featurizer.load(folder / "featurizer")
        catalog = Catalog.load(folder, featurizer.n_features, configs.tree.post_processor)
        upper = UpperLayers.load(folder / "upper", catalog.n_clusters)
        with np.load(folder / "selector.npz") as z:
            Z = smat.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
            label_slot = z["label_slot"]
        return cls(folder, featurizer, upper, catalog, make_selector(Z, configs.coldstart), label_slot, configs,
                   Calibration(**config["calibration"]), config["info"])


def make_selector(Z: smat.spmatrix, config: ColdStartConfig) -> Selector:
    if config.selector == "exact":
        return Selector(Z)
    return Selector(Z, max_postings=config.max_postings, n_candidates=config.n_candidates)


def _csr_topk(P: smat.csr_matrix, k: int, col_map: np.ndarray):
    """Dense (n, k) top-k (slots, scores) of a CSR score matrix, best first, -1 padded."""
    n = P.shape[0]
    slots = np.full((n, k), -1, dtype=np.int64)
    scores = np.zeros((n, k), dtype=np.float32)
    for i in range(n):
        a, b = P.indptr[i], P.indptr[i + 1]
        cols, vals = col_map[P.indices[a:b]], P.data[a:b]
        order = np.lexsort((cols, -vals))[:k]
        slots[i, : len(order)] = cols[order]
        scores[i, : len(order)] = vals[order]
    return slots, scores


def _calibrate(X, Y, catalog: Catalog, selector: Selector, label_slot, seed, n_pairs=20000) -> Calibration:
    """Fit the title-vector score scale on positive pairs and as many same-cluster negatives."""
    rng = np.random.default_rng(seed)
    Y = Y.tocoo()
    if Y.nnz == 0:
        return Calibration()
    pick = rng.choice(Y.nnz, size=min(n_pairs, Y.nnz), replace=False)
    q = Y.row[pick]
    pos = label_slot[Y.col[pick]]
    cluster = catalog.slot_cluster.view[pos]
    lo, hi = catalog.base_slot_ptr[cluster], catalog.base_slot_ptr[cluster + 1]
    neg = lo + (rng.random(len(pick)) * (hi - lo)).astype(np.int64)
    W = catalog.weights(np.arange(catalog.n_base))
    return fit_calibration(X, np.concatenate([q, q]), np.concatenate([pos, neg]), W, catalog.slot_bias.view,
                           selector.Z)
