"""XRMetaModel: one object for the whole pipeline.

featurize (TF-IDF) -> tree (XR-Linear upper layers, beam search) -> catalog (mutable leaf layer)
and, for items that arrive after training: select (K nearest observed items) -> assign (leaf cluster) ->
generate (sparse classifier) -> insert. A new item is retrievable by the next query; nothing is retrained.

Model directory (every file written by `save`, atomically: see `persist`):
  config.json        format version, all configs, counts (readable); manifest: size and sha256 of every file
  featurizer/        TF-IDF vectorizer
  xlinear/           the trained PECOS model (observed items only): the peer xrmeta must match
  upper/             PECOS model of the layers above the leaves (read into `UpperLayers` at load)
  catalog.npz, catalog_ids.txt   leaf layer: trained and inserted items
  selector.npz       observed items' representations for neighbour search
  generator.npz      the learned generator's parameters (when it is the model's generator)
  items.log          inserts and removals since the last save, replayed on load (written under `load(log=True)`)

Thread safety: any number of threads may query (predict, predict_slots) while others call add_items,
remove_items or save; writers are serialised, and a query sees each item either whole or not at all.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as smat
from pecos.xmc.xlinear.model import XLinearModel

from . import persist
from .catalog import Catalog
from .coldstart import Selector, assign_centroid, assign_vote, leaf_centroids, make_generator
from .coldstart.assign import assign_centroid_left_out
from .coldstart.generate import Calibration, Generator, fit_calibration, synthesize
from .coldstart.learned import GENERATOR_FILE, LearnedConfig, LearnedGenerator, train_generator
from .coldstart.select import neighbours_excluding
from .coldstart.training import HeldOut, fit_title_trust, hold_out
from .featurize import Featurizer, FeaturizerConfig
from .ground import TitleTrust
from .tree import TreeConfig, UpperLayers, train_xlinear

FORMAT_VERSION = 2  # 2: config.json carries a manifest (size, sha256 of every file); 1 is still read, unverified
ASSIGNERS = ("vote", "centroid", "route")
AUTO = "auto"  # at training: the assigner that puts observed items, treated as new, where their queries' beams reach
SELECTORS = ("pruned", "exact")
MAX_TRUST_QUERIES = 2000  # held-out queries the title trust is fitted on (its ~20 parameters need no more)
MAX_CLUSTERS_PER_ITEM = 8  # the search keeps k * m candidates to drop an item's repeats: m stays small


class ModelError(ValueError):
    pass


@dataclass
class ColdStartConfig:
    k: int = 3  # neighbours per new item
    selector: str = "pruned"  # exact | pruned (impact-truncated posting lists + exact rescoring)
    max_postings: int = 16  # pruned: postings kept per feature
    n_candidates: int = 32  # pruned: candidates rescored exactly
    # route (the leaf clusters the tree sends the title to, as if it were a query) | vote (the neighbours'
    # clusters) | centroid | auto (chosen at training by `choose_assigner`; it may pick centroid, whose search
    # costs about as much as the rest of an insertion)
    assign: str = "route"
    clusters_per_item: int = 3  # a new item joins its best m clusters: more queries reach it; it costs m times
    # a query looks for inserted items in its top beam * inserted_beam_factor leaf clusters (only the beam's last
    # layer widens; observed items stay in the top beam): more queries reach new items, at the cost of scoring them
    inserted_beam_factor: int = 2
    generator: str = "learned"  # learned (trained by `train` / `fit_generator`) | mean | weighted | self | mean_self
    max_nnz: int = 128  # non-zeros kept per synthesized classifier (query cost grows with it; see BENCHMARKS.md)
    threshold: float | None = None  # pruning of synthesized weights; None = the tree's threshold

    def validate(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.selector not in SELECTORS:
            raise ValueError(f"selector must be one of {SELECTORS}, got {self.selector!r}")
        if self.max_postings < 1 or self.n_candidates < self.k:
            raise ValueError("max_postings must be >= 1 and n_candidates >= k")
        if self.assign not in ASSIGNERS + (AUTO,):
            raise ValueError(f"assign must be one of {ASSIGNERS + (AUTO,)}, got {self.assign!r}")
        if self.max_nnz < 1:
            raise ValueError("max_nnz must be >= 1")
        if not (isinstance(self.inserted_beam_factor, int) and self.inserted_beam_factor >= 1):
            raise ValueError(f"inserted_beam_factor must be an integer >= 1, got {self.inserted_beam_factor!r}")
        if not 1 <= self.clusters_per_item <= MAX_CLUSTERS_PER_ITEM:
            raise ValueError(f"clusters_per_item must be in [1, {MAX_CLUSTERS_PER_ITEM}], got {self.clusters_per_item}")
        if self.generator != LearnedGenerator.name:
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
                 info: dict, tmp: tempfile.TemporaryDirectory | None = None, title_trust: TitleTrust | None = None):
        self.workdir = Path(workdir)  # where the PECOS parts live (a model directory, or a temp dir after train)
        self.featurizer = featurizer
        self.upper = upper
        self.catalog = catalog
        self.selector = selector
        self.label_slot = label_slot  # PECOS label j of the trained model -> catalog slot
        self.configs = configs
        self.calibration = calibration
        self.title_trust = title_trust or TitleTrust.pecos(configs.tree.post_processor)
        self.info = info
        self._tmp = tmp
        self._centroids = None
        self._pecos = None
        self.log: persist.ItemLog | None = None  # set by load(log=True): add/remove calls are logged there first
        self.generator = self._make_generator(configs.coldstart.generator)

    # ------------------------------------------------------------ training
    @classmethod
    def train(cls, query_texts: list[str], Y: smat.spmatrix, item_texts: list[str], item_ids: list[str],
              featurizer_config: FeaturizerConfig | None = None, tree_config: TreeConfig | None = None,
              coldstart_config: ColdStartConfig | None = None, threads: int = -1, verbose: bool = True,
              info: dict | None = None, generator_config: LearnedConfig | None = None,
              title_trust: TitleTrust | None = None) -> XRMetaModel:
        """Train on queries x items (Y: binary relevance, n_queries x n_items). Every item given here is an
        observed item of the tree; items that arrive later go through `add_items`. With the coldstart generator
        "learned", the generator is trained last (`fit_generator`, with generator_config)."""
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
        upper = UpperLayers.from_chain(xlinear.model.model_chain[:-1], catalog.n_clusters, configs.tree.post_processor)
        label_slot = np.array([catalog.slot_of[i] for i in item_ids], dtype=np.int64)
        slot_label = np.argsort(label_slot)
        selector = make_selector(Z[slot_label], configs.coldstart)
        step("catalog + selector")
        held, trust = None, title_trust or TitleTrust.pecos(configs.tree.post_processor)
        if title_trust is None and configs.tree.observed_titles:
            held, trust = _fit_title_trust(X, Y, catalog, upper, selector, slot_label, configs.tree,
                                           generator_config or LearnedConfig(), threads, verbose)
            step("title trust (held-out clicks)")
        if not trust.is_pecos:  # the served leaf layer: each observed item's classifier carries its title
            W = trust.apply(leaf.W, Z, np.diff(smat.csc_matrix(Y).indptr), configs.tree.threshold)
            catalog = Catalog.from_leaf_layer(W, leaf.C, leaf.bias, list(item_ids), trust.post_processor,
                                              trust.path_exponent)
        calibration = _calibrate(X, Y, catalog, selector, label_slot, configs.tree.seed)
        info = dict(info or {}, n_train_queries=int(Y.shape[0]), n_observed_items=int(Y.shape[1]),
                    n_features=featurizer.n_features, n_clusters=catalog.n_clusters, train_seconds=timings)
        learned = configs.coldstart.generator == LearnedGenerator.name
        if learned:
            configs.coldstart.generator = "mean"  # until fit_generator installs the learned one
        model = cls(workdir, featurizer, upper, catalog, selector, label_slot, configs, calibration, info, tmp,
                    trust)
        if configs.coldstart.assign == AUTO:
            model.choose_assigner(X, Y)
            step(f"assigner: {configs.coldstart.assign}")
        if learned:
            model.fit_generator(X, Y, generator_config, threads=threads if threads > 0 else numba.get_num_threads(),
                                verbose=verbose, held=held)
            step("learned generator")
        return model

    # ------------------------------------------------------------ cold start
    def add_items(self, titles: list[str], ids: list[str], threads: int | None = None) -> np.ndarray:
        """Insert new items known only by their titles; they are searchable as soon as this returns.

        The whole batch is checked first: on any bad title or id nothing is inserted, in memory or on disk.
        Titles are limited to MAX_TITLE_CHARS characters. Returns the slots.

        Thread-safe: batches are serialised with each other, with remove_items and with save, while queries in
        other threads go on and see the batch all at once. With a log (`load(..., log=True)`) the batch is
        written and fsync'd to it before it becomes visible: once this returns it survives a crash.
        """
        titles, ids = _as_list(titles, "titles"), _as_list(ids, "ids")
        if len(titles) != len(ids):
            raise ModelError(f"add_items: {len(titles)} titles for {len(ids)} ids")
        self.catalog._check_new_ids(ids)  # ids first: title errors then name readable ids
        bad = [(problem, i) for i, t in zip(ids, titles) if (problem := title_problem(t))]
        if bad:
            raise ModelError(f"add_items: {bad[0][0]} for ids {[i for p, i in bad if p == bad[0][0]][:5]}")
        if not ids:
            return np.empty(0, dtype=np.int64)
        threads = threads if threads is not None else numba.get_num_threads()
        S = self.featurizer.transform(titles, threads=threads)
        empty = [ids[i] for i in np.flatnonzero(np.diff(S.indptr) == 0)]
        if empty:
            raise ModelError(f"add_items: titles share no n-gram with the vocabulary, ids {empty[:5]}")
        with self.catalog.lock:  # the log must list batches in the order they change the catalogue
            weights, biases, clusters = self.synthesize(S)
            record = {"op": "add", "slot": self.catalog.n_slots, "ids": ids, "titles": titles}
            return self.catalog.add(ids, clusters, weights, biases, _journal(self.log, record))

    def synthesize(self, S: smat.csr_matrix):
        """Classifier weights, biases and leaf clusters for new items with title TF-IDF rows S."""
        nbrs, sims = self.selector.search(S, self.configs.coldstart.k)
        clusters = self.assign(S, nbrs, sims)
        weights, biases = self.generate(S, nbrs, sims)
        return weights, biases, clusters

    def assign(self, S: smat.csr_matrix, nbrs: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """Leaf clusters of each new item (rows of S, with its selected neighbours): (n, m), best first, -1 where
        an item has fewer than m (m = clusters_per_item)."""
        cs = self.configs.coldstart
        how, m = cs.assign, cs.clusters_per_item  # AUTO is resolved by training; left unresolved it means "vote"
        if how == "route":
            return self.upper.top_clusters(S, beam_size=m, threads=numba.get_num_threads())[0]
        if how == "centroid":
            return assign_centroid(S, self.centroids, m)
        fallback = np.zeros(len(nbrs), dtype=np.int64)  # items with no neighbour at all go to the nearest centroid
        no_nbr = nbrs[:, 0] < 0
        if no_nbr.any():
            fallback[no_nbr] = assign_centroid(S[no_nbr], self.centroids)[:, 0]
        return assign_vote(nbrs, sims, self.catalog.slot_cluster.view, fallback, m)

    def choose_assigner(self, X: smat.spmatrix, Y: smat.spmatrix, max_items: int = 2000) -> dict[str, float]:
        """Pick the assigner under which new items land where their queries look. Up to max_items observed items
        with a training query (seeded sample) are treated as new (their own title left out of their neighbours and
        of their cluster's centroid); each assigner's reach is the share of their (training query, item) pairs
        whose query's beam holds the assigned cluster. Sets `configs.coldstart.assign`; returns the reaches (%),
        also kept in `info["assign_reach"]`. Which assigner wins depends on the data: neighbours' clusters are a
        good guess where similar titles are clicked by the same queries, and a poor one where most items were
        never clicked (their clusters then follow no query)."""
        cs, cat = self.configs.coldstart, self.catalog
        Ys = smat.csr_matrix(Y, dtype=np.float32)[:, np.argsort(self.label_slot)].tocsc()  # columns in slot order
        clicked = np.flatnonzero(np.diff(Ys.indptr) > 0)
        if len(clicked) == 0:
            raise ModelError("choose_assigner: no observed item has a training query")
        rng = np.random.default_rng(self.configs.tree.seed)
        items = np.sort(rng.choice(clicked, size=min(max_items, len(clicked)), replace=False))
        S = self.selector.Z[items]
        nbrs, sims = neighbours_excluding(self.selector, S, items, cs.k)
        cluster = cat.slot_cluster.view[: cat.n_base]
        left_out = assign_centroid_left_out(self.selector.Z, cluster, cat.n_clusters, items)
        fallback = np.where(nbrs[:, 0] < 0, left_out, 0)
        choices = {
            "vote": assign_vote(nbrs, sims, cluster, fallback)[:, 0],
            "centroid": left_out,
            "route": self.upper.top_clusters(S, beam_size=1)[0][:, 0],
        }
        pairs = Ys[:, items].tocoo()  # (query, position in items)
        queries, at = np.unique(pairs.row, return_inverse=True)
        B = self.upper.beams(smat.csr_matrix(X, dtype=np.float32)[queries], self.configs.tree.beam_size).tocsr()
        reach = {name: float(np.asarray(B[at, c[pairs.col]] > 0).mean() * 100) for name, c in choices.items()}
        cs.assign = max(ASSIGNERS, key=lambda name: reach[name])  # ties: the first in ASSIGNERS
        self.info["assign_reach"] = reach
        return reach

    def generate(self, S: smat.csr_matrix, nbrs: np.ndarray, sims: np.ndarray):
        """Sparse classifier weights (CSR) and biases of new items, pruned like the trained ones."""
        cs = self.configs.coldstart
        threshold = self.configs.tree.threshold if cs.threshold is None else cs.threshold
        c = self.catalog
        return synthesize(self.generator.plan(S, nbrs, sims), nbrs, c.slot_bias.view, c.w_ptr.view,
                          c.w_idx.view, c.w_val.view, S, threshold, cs.max_nnz, self.featurizer.feature_block)

    def _make_generator(self, name: str) -> Generator:
        if name != LearnedGenerator.name:
            return make_generator(name, self.calibration)
        if isinstance(getattr(self, "generator", None), LearnedGenerator):
            return self.generator
        if not (self.workdir / GENERATOR_FILE).exists():
            raise ModelError(f"{self.workdir}: no learned generator ({GENERATOR_FILE}); train one with "
                             f"`python -m xrmeta.train_generator --model-dir <model>` or `fit_generator`")
        return LearnedGenerator.load(self.workdir, self.selector.Z, self.featurizer.feature_block)

    def use_generator(self, name: str) -> None:
        """Switch the generator used by later `add_items` calls (items already inserted keep their classifier).
        Not to be called while another thread inserts."""
        generator = self._make_generator(name)
        self.configs.coldstart.generator = name
        self.generator = generator

    def fit_generator(self, X: smat.csr_matrix, Y: smat.spmatrix, config: LearnedConfig | None = None,
                      threads: int = 1, verbose: bool = True, held: HeldOut | None = None) -> LearnedGenerator:
        """Train the learned generator on the training queries' TF-IDF rows X and their relevance Y (queries x
        trained items, in training order) and make it the model's generator. The tree and classifiers stay
        frozen. Queries may run meanwhile; inserts must wait until it returns."""
        self.generator = train_generator(self, X, Y, config, threads, verbose, held)
        self.configs.coldstart.generator = LearnedGenerator.name
        self.info["generator"] = self.generator.info
        return self.generator

    @property
    def centroids(self) -> smat.csr_matrix:
        if self._centroids is None:
            cluster = self.catalog.slot_cluster.view[: self.catalog.n_base]
            self._centroids = leaf_centroids(self.selector.Z, cluster, self.catalog.n_clusters)
        return self._centroids

    def remove_items(self, ids: list[str]) -> None:
        """Delist items (trained or inserted); they never come back in results. Unknown ids: nothing removed.

        Thread-safe like add_items: each item vanishes from queries atomically (a query that starts after this
        returns never sees it); with a log, the removal is fsync'd to it first.
        """
        ids = _as_list(ids, "ids")
        if ids:
            self.catalog.remove(ids, _journal(self.log, {"op": "remove", "ids": ids}))

    # ------------------------------------------------------------ search
    def predict_slots(self, X: smat.csr_matrix, k: int = 10, beam_size: int | None = None, subset: str = "all",
                      threads: int = 1):
        """Top-k (slots, scores) for TF-IDF query rows X."""
        beam_size = beam_size or self.configs.tree.beam_size
        X = smat.csr_matrix(X, dtype=np.float32)
        if X.shape[1] != self.featurizer.n_features:
            raise ModelError(f"queries have {X.shape[1]} features, the model {self.featurizer.n_features}")
        wide = self.configs.coldstart.inserted_beam_factor
        inserted_beam = beam_size * wide if isinstance(beam_size, (int, np.integer)) else None  # else search says why
        return self.catalog.search(X, self.upper, beam_size, k, subset, threads, inserted_beam)

    def predict(self, queries: list[str], k: int = 10, beam_size: int | None = None, subset: str = "all",
                threads: int = 1):
        """Top-k item ids and scores per query text: (ids (n, k) object array, None where fewer; scores)."""
        X = self.featurizer.transform(list(queries), threads=threads)
        slots, scores = self.predict_slots(X, k, beam_size, subset, threads)
        ids = self.catalog.ids  # only appended to, under the catalogue's lock: every returned slot is in it
        found = np.empty(slots.shape, dtype=object)  # slot -1 -> None; per returned slot, not per catalogue item
        found.ravel()[:] = [ids[s] if s >= 0 else None for s in slots.ravel().tolist()]
        return found, scores

    def pecos_leaf(self) -> tuple[smat.csr_matrix, np.ndarray]:
        """The observed items' leaf classifiers as PECOS trained them (item-major rows, in slot order) and their
        biases: the served ones unless observed items carry their titles, else read from the PECOS model."""
        n_base = self.catalog.n_base
        if self.title_trust.is_pecos:
            return self.catalog.weights(np.arange(n_base)), self.catalog.slot_bias.view[:n_base].copy()
        leaf = XLinearModel.load(str(self.workdir / "xlinear")).model.model_chain[-1]
        W = smat.csc_matrix(leaf.W, dtype=np.float32)[:, np.argsort(self.label_slot)]
        return W[:-1].T.tocsr(), (W[-1].toarray().ravel() * leaf.bias).astype(np.float32)

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
        """Write the model directory atomically (see `persist`): every file goes to a temporary sibling, is
        fsync'd, and the sibling replaces folder by rename, so a crash at any point leaves the previous model
        loadable. config.json, written last, lists the size and sha256 of every other file.

        folder must be absent, empty or a model directory: it is replaced whole. Saving into the directory the
        model was loaded from hard-links the unchanged PECOS parts instead of copying them. The new snapshot
        holds every insert and removal so far, so it starts without a log; a model that logs to folder goes on
        logging to the new one. add_items / remove_items wait while this runs; queries do not.
        """
        folder = Path(folder).resolve()
        with self.catalog.lock:  # one consistent state on disk
            own_log = self.log is not None and self.log.folder == folder
            if not own_log:
                persist.check_no_writer(folder)  # replacing folder would cut a logging process off its log
            config = {
                "format_version": FORMAT_VERSION,
                "featurizer": asdict(self.configs.featurizer),
                "tree": asdict(self.configs.tree),
                "coldstart": asdict(self.configs.coldstart),
                "calibration": asdict(self.calibration),
                "title_trust": self.title_trust.to_dict(),
                "info": dict(self.info, n_items=len(self.catalog),
                             n_inserted=self.catalog.n_slots - self.catalog.n_base),
            }
            in_place = folder == self.workdir.resolve()
            with persist.write_dir(folder, config) as out:
                for part in ("featurizer", "xlinear", "upper"):  # never change after training
                    if (self.workdir / part).exists():
                        persist.copy_tree(self.workdir / part, out / part, link=in_place)
                if not (out / "featurizer").exists():  # fresh from training: only in memory
                    self.featurizer.save(out / "featurizer")
                self.catalog.save(out)
                Z = self.selector.Z
                np.savez(out / "selector.npz", indptr=Z.indptr, indices=Z.indices, data=Z.data,
                         shape=np.array(Z.shape), label_slot=self.label_slot)
                if isinstance(self.generator, LearnedGenerator):
                    self.generator.save(out)
            if own_log:  # the old log went away with the old snapshot, which the new one supersedes
                self.log.close()
                self.log = persist.ItemLog.open(folder)[0]

    @classmethod
    def load(cls, folder: str | Path, log: bool = False) -> XRMetaModel:
        """Read a model directory: check every file against config.json's manifest (a missing, truncated or
        corrupted file raises an error naming it), load the snapshot, then replay the directory's log (inserts
        and removals made since that save).

        log=True makes this process the directory's one writer: every later add_items / remove_items is
        appended to the log and fsync'd before it returns, so a crash loses none of them (`model.log.close()`
        releases the directory). log=False keeps later changes in memory until `save`.
        """
        folder = Path(folder)
        config = persist.read_config(folder)
        version = config.get("format_version")
        if version not in (1, FORMAT_VERSION):
            raise ModelError(f"{folder / 'config.json'}: format version {version!r}, this xrmeta reads 1 and "
                             f"{FORMAT_VERSION}")
        if version != 1:
            persist.verify(folder, config.get("files"))
        try:
            # a setting missing from a model saved before it existed reads as what that model did: no titles in
            # training or in the served classifiers, new items in one cluster
            configs = _Configs(FeaturizerConfig.from_saved(config["featurizer"]),
                               TreeConfig(**{"title_weight": 0.0, "observed_titles": False, **config["tree"]}),
                               ColdStartConfig(**{"clusters_per_item": 1, **config["coldstart"]}))
            calibration = Calibration(**config["calibration"])
            trust = (TitleTrust.from_dict(config["title_trust"]) if "title_trust" in config
                     else TitleTrust.pecos(configs.tree.post_processor))  # saved before items carried titles
        except (KeyError, TypeError) as e:
            raise ModelError(f"{folder / 'config.json'}: missing or unknown setting {e}") from None
        featurizer = Featurizer.load(folder / "featurizer")
        catalog = Catalog.load(folder, featurizer.n_features, trust.post_processor, trust.path_exponent)
        upper = UpperLayers.load(folder / "upper", catalog.n_clusters, configs.tree.post_processor)
        with np.load(folder / "selector.npz") as z:
            Z = smat.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
            label_slot = z["label_slot"]
        model = cls(folder, featurizer, upper, catalog, make_selector(Z, configs.coldstart), label_slot, configs,
                    calibration, config["info"], title_trust=trust)
        _open_log(model, folder, log)
        if persist.read_config(folder) != config:  # a save replaced the directory while we read it: files of two
            if model.log is not None:               # snapshots (and maybe the new one's empty log) were mixed
                model.log.close()
            raise persist.PersistError(f"{folder}: replaced by a concurrent save while loading; load it again")
        return model


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


def _fit_title_trust(X, Y, catalog: Catalog, upper: UpperLayers, selector: Selector, slot_label: np.ndarray,
                     tree: TreeConfig, config: LearnedConfig, threads: int, verbose: bool):
    """(held-out clicks, the title trust fitted on them) for a freshly trained, PECOS-served catalogue."""
    rng = np.random.default_rng(config.seed)
    Ys = smat.csr_matrix(Y, dtype=np.float32)[:, slot_label]
    Ys.sort_indices()
    n_base = catalog.n_base
    slot_cluster = catalog.slot_cluster.view[:n_base]
    held = hold_out(X, Ys, selector.Z, catalog.weights(np.arange(n_base)), catalog.slot_bias.view[:n_base],
                    slot_cluster, catalog.base_slot_ptr, tree, config.max_items, config.proxy_frac,
                    config.observed_query_frac, rng, threads if threads > 0 else numba.get_num_threads())
    beams = upper.beams(X[held.queries[:MAX_TRUST_QUERIES]], tree.beam_size).tocsr()
    beams.sort_indices()
    trust = fit_title_trust(X, Ys, selector.Z, held, beams, slot_cluster, catalog.n_clusters, rng, verbose=verbose)
    return held, trust


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


# ---------------------------------------------------------------- input checks and the item log
MAX_TITLE_CHARS = 4096  # a product title, not a document: longer ones are rejected (the log stores every title)


def title_problem(title) -> str | None:
    """Why a new item's title is unusable, or None."""
    if not isinstance(title, str) or not title.strip():
        return "empty or non-string title"
    if len(title) > MAX_TITLE_CHARS:
        return f"title longer than {MAX_TITLE_CHARS} characters"
    try:
        title.encode("utf-8")
    except UnicodeEncodeError:
        return "title is not valid Unicode (lone surrogates, as from undecodable bytes)"
    return None


def _as_list(values, what: str) -> list:
    """A list of the given values; a lone string is refused (list() would split it into characters)."""
    if isinstance(values, (str, bytes)):
        raise ModelError(f"{what} must be a list of strings, not a single {type(values).__name__}")
    try:
        return list(values)
    except TypeError:
        raise ModelError(f"{what} must be a list of strings, got {type(values).__name__}") from None


def _journal(log: persist.ItemLog | None, record: dict):
    """The catalogue's before_change hook: log the batch once it is known to be valid, before it is visible."""
    return None if log is None else (lambda: log.append(record))


def _open_log(model: XRMetaModel, folder: Path, log: bool) -> None:
    """Replay folder's log into a freshly loaded model; with log, also lock it and make it the model's log."""
    journal, records = persist.ItemLog.open(folder.resolve()) if log else (None, persist.read_log(folder))
    try:
        for n, rec in enumerate(records, 1):
            try:
                if rec.get("op") == "add":
                    if rec.get("slot") != model.catalog.n_slots:  # a log of another snapshot
                        raise ModelError(f"written at slot {rec.get('slot')}, the snapshot has "
                                         f"{model.catalog.n_slots} slots")
                    model.add_items(rec["titles"], rec["ids"])
                elif rec.get("op") == "remove":
                    model.remove_items(rec["ids"])
                else:
                    raise ModelError(f"unknown operation {rec.get('op')!r}")
            except (KeyError, ValueError) as e:
                raise persist.PersistError(f"{folder / persist.LOG} record {n}: cannot replay ({e})") from None
    except BaseException:
        if journal is not None:
            journal.close()
        raise
    model.log = journal
