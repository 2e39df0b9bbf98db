"""XRMetaModel: one object for the whole pipeline.

featurize (TF-IDF) -> tree (XR-Linear upper layers, beam search) -> catalog (mutable leaf layer)
and, for items that arrive after training, `model.coldstart` (`coldstart.ColdStart`): select (K nearest observed
items) -> assign (leaf clusters) -> generate (sparse classifier) -> insert. A new item is retrievable by the next
query; nothing is retrained.

`save` and `load` write and read a model directory (`modeldir` lists its files): the PECOS copy `xlinear/`
is in it only when the model was trained with `keep_pecos=True`.

Thread safety: any number of threads may query (predict, predict_features) while others call add_items,
remove_items, compact, save or reload; writers are serialised, and a query sees each item either whole or
not at all. A query reads the model's parts (`ModelState`: featurizer, upper layers, catalogue, cold start,
configs) with one attribute read, so a `reload` swapping in a retrained model never gives it parts of two models.
Serving (load, add_items, predict) never imports torch; training the title trust or the learned generator does.
"""

from __future__ import annotations

import copy
import ctypes
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as smat
from pecos.xmc.xlinear.model import XLinearModel

from . import modeldir, persist, trainset
from .catalog import Catalog
from .coldstart import ColdStart, Generator, LearnedConfig, Selector, make_generator, make_selector
from .coldstart.generate import Calibration
from .coldstart.pipeline import (ASSIGNERS, AUTO, SELECTORS, ColdStartConfig, calibrate, fit_trust, needs_training,
                                 served_leaf)
from .coldstart.training import import_torch
from .data.xmc import preview
from .errors import ModelError
from .featurize import Featurizer, FeaturizerConfig
from .ground import TitleTrust
from .modeldir import PECOS_DIR, Configs
from .threads import resolve
from .tree import TreeConfig, UpperLayers, train_xlinear

__all__ = ["ASSIGNERS", "AUTO", "SELECTORS", "ColdStartConfig", "ModelError", "Results", "XRMetaModel",
           "make_selector", "title_problem"]


class Results(NamedTuple):
    """Top-k search results, best first. ids: numpy str array (n, k); scores: float32 (n, k), the search scores.
    Where fewer than k items are found (an empty query, or one with no n-gram the model knows, finds none) the
    row is padded with id "" and score -inf."""

    ids: np.ndarray
    scores: np.ndarray


class ModelState(NamedTuple):
    """Everything a query reads, and what a writer changes, as one immutable bundle: `reload` replaces it whole
    (one assignment), so a query that read it once never mixes parts of two models. The catalogue inside is
    mutable (add_items / remove_items change it in place, under the model's writer lock)."""

    workdir: Path  # where the PECOS parts live (a model directory, or a temp dir after train)
    featurizer: Featurizer
    upper: UpperLayers
    catalog: Catalog
    coldstart: ColdStart
    label_slot: np.ndarray  # PECOS label j of the trained model -> catalog slot
    configs: Configs
    title_trust: TitleTrust
    info: dict
    titles: dict  # id -> title of the live inserted items (what a retrain trains them on); writers keep it
    clicks: list  # (query, id, weight) of every feedback click since training (a retrain trains on them)
    source: Path | None  # the model directory this was loaded from (None: fresh from training)
    snapshot: str | None  # that directory's snapshot id (`modeldir.snapshot_id`) when loaded or last saved there
    tmp: tempfile.TemporaryDirectory | None  # keeps a fresh model's workdir alive


def _field(name: str, doc: str) -> property:
    """A read-only property of the model reading one field of its current `ModelState`."""
    return property(lambda self: getattr(self._state, name), doc=doc)


def _log(msg: str, verbose: bool) -> None:
    if verbose:
        print(msg, file=sys.stderr, flush=True)


class XRMetaModel:
    """A trained tree over the observed items, its mutable catalogue and the cold start of new items. Make one
    with `train` or `load`; the constructor assembles the parts (`generator` None: the one the configs name,
    read from workdir when it is trained)."""

    def __init__(self, workdir: Path, featurizer: Featurizer, upper: UpperLayers, catalog: Catalog,
                 selector: Selector, label_slot: np.ndarray, configs: Configs, calibration: Calibration,
                 info: dict, tmp: tempfile.TemporaryDirectory | None = None, title_trust: TitleTrust | None = None,
                 generator: Generator | None = None, titles: dict | None = None, source: Path | None = None,
                 snapshot: str | None = None, clicks: list | None = None):
        workdir = Path(workdir)
        if generator is None:
            generator = make_generator(configs.coldstart.generator, calibration, workdir, selector.Z,
                                       featurizer.feature_block)
        coldstart = ColdStart(configs.coldstart, selector, catalog, upper, featurizer.feature_block,
                              configs.tree.threshold, calibration, generator)
        self._state = ModelState(workdir, featurizer, upper, catalog, coldstart, label_slot, configs,
                            title_trust or TitleTrust.pecos(configs.tree.post_processor), info, dict(titles or {}),
                            [tuple(c) for c in clicks or ()], source, snapshot, tmp)
        self._pecos = None
        self._writes = threading.RLock()  # serialises add_items, remove_items, save and reload; queries never wait
        self.log: persist.ItemLog | None = None  # set by load(log=True): add/remove calls are logged there first
        self.replayed = 0  # log records replayed by load (the cut a retrain folds in)

    # the parts, read-only: each property reads the current bundle (a query takes `_parts` once instead)
    workdir = _field("workdir", "Where the PECOS parts live: the model directory, or a temp dir after train.")
    featurizer = _field("featurizer", "The TF-IDF featurizer (`featurize.Featurizer`).")
    upper = _field("upper", "The tree's layers above the leaves (`tree.UpperLayers`).")
    catalog = _field("catalog", "The leaf layer: trained and inserted items (`catalog.Catalog`).")
    coldstart = _field("coldstart", "The cold start of new items (`coldstart.ColdStart`).")
    label_slot = _field("label_slot", "PECOS label j of the trained model -> catalog slot (int64 array).")
    configs = _field("configs", "The featurizer, tree and cold-start configs (`modeldir.Configs`).")
    title_trust = _field("title_trust", "How much the trained items' classifiers trust their titles.")
    info = _field("info", "What training recorded (counts, timings, the dataset and split), saved in config.json.")

    @property
    def selector(self) -> Selector:
        """The observed items' title rows (`selector.Z`, slot order) and their neighbour search."""
        return self.coldstart.selector

    @property
    def calibration(self) -> Calibration:
        """The score scale of title vectors used as classifiers."""
        return self.coldstart.calibration

    @property
    def generator(self) -> Generator:
        """The generator of new items' classifiers (`use_generator` switches it)."""
        return self.coldstart.generator

    @generator.setter
    def generator(self, generator: Generator) -> None:
        self.coldstart.generator = generator

    # ------------------------------------------------------------ training
    @classmethod
    def train(cls, query_texts: list[str], Y: smat.spmatrix, item_texts: list[str], item_ids: list[str], *,
              featurizer_config: FeaturizerConfig | None = None, tree_config: TreeConfig | None = None,
              coldstart_config: ColdStartConfig | None = None, generator_config: LearnedConfig | None = None,
              threads: int = -1, verbose: bool = True, keep_pecos: bool = False, info: dict | None = None,
              title_trust: TitleTrust | None = None) -> XRMetaModel:
        """Train on n_queries query texts x n_items item texts. Y: (n_queries, n_items) binary relevance;
        item_ids: n_items unique strings. Every item given here is an observed item of the tree; items that
        arrive later go through `add_items`.

        The configs are copied (the caller's objects are never changed); None = defaults. A trained generator
        ("learned", the default) is trained last, with generator_config (`fit_generator`). threads: -1 = all
        cores, n >= 1. keep_pecos: also keep the trained PECOS model (`xlinear/`), for `pecos_model`. info: extra
        entries for `model.info`. title_trust: served leaf layer's trust (None: fitted on held-out clicks when
        tree_config.observed_titles, else PECOS's). Training the title trust or a learned generator needs torch.
        """
        configs = copy.deepcopy(Configs(featurizer_config or FeaturizerConfig(), tree_config or TreeConfig(),
                                         coldstart_config or ColdStartConfig()))
        generator_config = copy.deepcopy(generator_config or LearnedConfig())
        configs.tree.validate()
        configs.coldstart.validate()
        resolve(threads)
        fit_title = title_trust is None and configs.tree.observed_titles
        if fit_title or needs_training(configs.coldstart.generator):  # before the tree's minutes, not after
            import_torch("the title trust (TreeConfig.observed_titles) or a learned generator")
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
        trainset.write(workdir / trainset.DIR, query_texts, Y, item_ids, item_texts)  # what a retrain starts from
        if keep_pecos:
            xlinear.save(str(workdir / PECOS_DIR))
        UpperLayers.save_from(xlinear, workdir / "upper")
        leaf = xlinear.model.model_chain[-1]
        catalog = Catalog.from_leaf_layer(leaf.W, leaf.C, leaf.bias, list(item_ids), configs.tree.post_processor)
        upper = UpperLayers.from_chain(xlinear.model.model_chain[:-1], catalog.n_clusters, configs.tree.post_processor)
        label_slot = np.array([catalog.slot_of[i] for i in item_ids], dtype=np.int64)
        Ys = _slot_order(Y, label_slot)
        cs = configs.coldstart
        selector = make_selector(Z[np.argsort(label_slot)], cs)
        step("catalog + selector")
        held, trust = None, title_trust or TitleTrust.pecos(configs.tree.post_processor)
        if fit_title:
            held, trust = fit_trust(X, Ys, served_leaf(catalog), upper, selector, configs.tree, generator_config,
                                    threads, verbose)
            step("title trust (held-out clicks)")
        if not trust.is_pecos:  # the served leaf layer: each observed item's classifier carries its title
            W = trust.apply(leaf.W, Z, np.diff(smat.csc_matrix(Y).indptr), configs.tree.threshold)
            catalog = Catalog.from_leaf_layer(W, leaf.C, leaf.bias, list(item_ids), trust.post_processor,
                                              trust.path_exponent)
        calibration = calibrate(X, Y, label_slot, served_leaf(catalog), selector.Z, configs.tree.seed)
        info = dict(info or {}, n_train_queries=int(Y.shape[0]), n_observed_items=int(Y.shape[1]),
                    n_features=featurizer.n_features, n_clusters=catalog.n_clusters, train_seconds=timings)
        pending = needs_training(cs.generator)
        coldstart = ColdStart(cs, selector, catalog, upper, featurizer.feature_block, configs.tree.threshold,
                              calibration, None if pending else make_generator(cs.generator, calibration))
        if cs.assign == AUTO:
            info["assign_reach"] = coldstart.choose_assigner(X, Ys, configs.tree.seed, configs.tree.beam_size,
                                                             threads=threads)
            step(f"assigner: {cs.assign}")
        if pending:
            info["generator"] = coldstart.fit_generator(X, Ys, generator_config, trust, configs.tree,
                                                        configs.featurizer.min_df, threads, verbose, held).info
            step("learned generator")
        return cls(workdir, featurizer, upper, catalog, selector, label_slot, configs, calibration, info, tmp, trust,
                   coldstart.generator)

    def fit_generator(self, X: smat.csr_matrix, Y: smat.spmatrix, config: LearnedConfig | None = None,
                      threads: int = -1, verbose: bool = True) -> Generator:
        """Train the learned generator and make it the model's (torch needed: `pip install 'xrmeta[train]'`).
        X: (n_queries, F) the training queries' TF-IDF rows (`featurizer.transform`); Y: (n_queries, n_items)
        their relevance to the trained items, in training order; threads: -1 = all cores, n >= 1. The tree and
        the classifiers stay frozen. Queries may run meanwhile; inserts must wait until it returns."""
        resolve(threads)
        import_torch("the learned generator")
        if Y.shape != (X.shape[0], len(self.label_slot)):
            raise ModelError(f"Y is {Y.shape}, expected {X.shape[0]} queries x {len(self.label_slot)} trained items")
        generator = self.coldstart.fit_generator(X, _slot_order(Y, self.label_slot), copy.deepcopy(config),
                                                 self.title_trust, self.configs.tree,
                                                 self.configs.featurizer.min_df, threads, verbose)
        self.info["generator"] = generator.info
        return generator

    def copy(self, **coldstart) -> XRMetaModel:
        """An independent copy with its own catalogue (inserted and removed items as they are now), sharing the
        read-only parts (featurizer, tree, selector, a trained generator); `coldstart` overrides ColdStartConfig
        fields (split_size=0, generator="self", ...), validated. It logs nowhere and keeps no directory."""
        p = self._state
        configs = copy.deepcopy(p.configs)
        for key, value in coldstart.items():
            setattr(configs.coldstart, key, value)
        configs.coldstart.validate()
        c = p.catalog
        catalog = Catalog(c.arrays(), c.ids, c.n_features, c.post_processor, c.path_exponent)
        same = configs.coldstart.generator == p.configs.coldstart.generator
        return type(self)(p.workdir, p.featurizer, p.upper, catalog, p.coldstart.selector, p.label_slot, configs,
                          p.coldstart.calibration, dict(p.info), title_trust=p.title_trust,
                          generator=p.coldstart.generator if same else None, titles=p.titles, clicks=p.clicks)

    def use_generator(self, name: str) -> None:
        """Generate later items' classifiers with the generator `name` (`coldstart.GENERATORS`): "mean",
        "weighted", "self", "mean_self" (hand-made) or "learned" (the model's own, trained with it or by
        `fit_generator`; ModelError if it has none). Items already inserted keep their classifier. Not while
        another thread inserts."""
        self.coldstart.use_generator(name, self.workdir)

    # ------------------------------------------------------------ items
    def add_items(self, titles: list[str], ids: list[str], threads: int = -1) -> None:
        """Insert new items known only by their titles (n strings, at most MAX_TITLE_CHARS characters each)
        under n new unique ids; they are searchable as soon as this returns. threads: -1 = all cores, n >= 1,
        for every stage (featurize, select, assign, generate).

        The whole batch is checked first: on any bad title or id nothing is inserted, in memory or on disk.
        Thread-safe: batches are serialised with each other, with remove_items, save and reload, while queries in
        other threads go on and see the batch all at once. With a log (`load(..., log=True)`) the batch is
        written and fsync'd to it before it becomes visible: once this returns it survives a crash.
        """
        titles, ids = _as_list(titles, "titles"), _as_list(ids, "ids")
        resolve(threads)
        if len(titles) != len(ids):
            raise ModelError(f"add_items: {len(titles)} titles for {len(ids)} ids")
        with self._writes:  # one model's parts from the checks to the insert (a reload waits)
            p = self._state
            p.catalog._check_new_ids(ids)  # ids first: title errors then name readable ids
            check_texts("add_items", ids, titles)
            if not ids:
                return
            S = p.featurizer.transform(titles, threads=threads)
            empty = [ids[i] for i in np.flatnonzero(np.diff(S.indptr) == 0)]
            if empty:
                raise ModelError(f"add_items: titles share no n-gram with the vocabulary, ids {empty[:5]}")
            weights, biases, clusters = p.coldstart.synthesize(S, threads)
            record = {"op": "add", "slot": p.catalog.n_slots, "ids": ids, "titles": titles}
            p.catalog.add(ids, clusters, weights, biases, modeldir.journal(self.log, record),
                          p.configs.coldstart.split_size)
            p.titles.update(zip(ids, titles))

    def add_feedback(self, query_texts: list[str], item_ids: list[str], weights=None, threads: int = -1) -> None:
        """Take n clicks: query_texts[i] led to the live item item_ids[i] (trained or inserted), with weights[i] > 0
        (default 1) scaling its effect. Each clicked item's classifier moves toward its clicks' queries, by the
        smallest step that lets it outscore the other items of its (best) leaf cluster for them, capped per click
        (`coldstart.feedback`), and is visible to the next query. A clicked trained item is served from the
        inserted layer from then on (`subset="observed"` no longer returns it). The clicks are kept for
        `xrmeta-retrain`. threads: -1 = all cores, n >= 1, for featurizing.

        A query with no n-gram the model knows moves nothing; its click is kept all the same. The whole batch is
        checked first: an unknown or removed id, an empty query or a bad weight changes nothing, in memory or on
        disk. Thread-safe and logged like add_items.
        """
        queries, ids, weights = feedback_arguments(query_texts, item_ids, weights)
        resolve(threads)
        with self._writes:
            p = self._state
            unknown = [i for i in ids if not isinstance(i, str) or i not in p.catalog.slot_of]
            if unknown:
                raise ModelError(f"add_feedback: unknown or removed item ids {preview(unknown)}")
            check_texts("add_feedback", ids, queries, "query")
            if not ids:
                return
            X = p.featurizer.transform(queries, threads=threads)
            known = np.flatnonzero(np.diff(X.indptr) > 0)  # a query of unknown words moves nothing (kept, though)
            slots = np.array([p.catalog.slot_of[ids[i]] for i in known], dtype=np.int64)
            items, W, biases = p.coldstart.refine(X[known], slots, weights[known])
            record = {"op": "feedback", "slot": p.catalog.n_slots, "ids": ids, "queries": queries,
                      "weights": weights.tolist()}
            p.catalog.replace([p.catalog.ids[s] for s in items], W, biases, modeldir.journal(self.log, record),
                              p.configs.coldstart.split_size)
            p.clicks.extend(zip(queries, ids, weights.tolist()))

    def remove_items(self, ids: list[str]) -> None:
        """Delist items (trained or inserted) by id; they never come back in results. An unknown id: nothing
        removed (CatalogError).

        Thread-safe like add_items: each item vanishes from queries atomically (a query that starts after this
        returns never sees it); with a log, the removal is fsync'd to it first. Once the removed items still
        holding storage pass `ColdStartConfig.compact_at` of the slots, this compacts (`compact`) before it
        returns.
        """
        ids = _as_list(ids, "ids")
        if ids:
            self._remove(ids, auto_compact=True)

    def _remove(self, ids: list[str], auto_compact: bool) -> None:
        """remove_items; auto_compact: compact past `ColdStartConfig.compact_at` (a log replay compacts only where
        the log says)."""
        with self._writes:  # no other writer between the removal and its compaction
            p = self._state
            p.catalog.remove(ids, modeldir.journal(self.log, {"op": "remove", "ids": ids}))
            for i in ids:
                p.titles.pop(i, None)
            if p.clicks:
                gone = set(ids)
                p.clicks[:] = [c for c in p.clicks if c[1] not in gone]
            at = p.configs.coldstart.compact_at
            if auto_compact and at and p.catalog.tombstones > at * p.catalog.n_slots:
                self.compact()

    def compact(self) -> None:
        """Reclaim the memory of removed items: their weights, chunk postings and neighbour-search rows. Ids
        and results are unchanged (same ids, same scores, same order); inserted items get new slots (n_base..,
        in their order), trained items keep theirs, and a removed trained item is never a new item's neighbour
        again. Costs about a copy of the live catalogue; a no-op when nothing was removed since the last one.

        Thread-safe: writers wait, queries go on (each reads the catalogue as it was when it started) and the
        old buffers are freed when the last of them finishes. With a log, the compaction is logged before it is
        published, and replaying the log compacts at the same point (remove_items' own compactions too).
        """
        with self._writes:
            p = self._state
            cat = p.catalog
            if not cat.tombstones:
                return
            selector = p.coldstart.selector.without(np.flatnonzero(~cat.slot_alive.view[: cat.n_base]))
            record = {"op": "compact", "slot": cat.n_slots}
            cat.compact(modeldir.journal(self.log, record))
            p.coldstart.use_selector(selector)
        _return_freed_memory()

    def __len__(self) -> int:
        """Live items: trained and inserted, not removed."""
        return len(self.catalog)

    def __contains__(self, item_id) -> bool:
        """Whether item_id names a live item."""
        return item_id in self.catalog.slot_of

    # ------------------------------------------------------------ search
    def predict(self, queries: list[str], k: int = 10, beam_size: int | None = None, subset: str = "all",
                threads: int = 1) -> Results:
        """Top-k items for each of n query texts: `Results(ids, scores)`, both (n, k), best first, padded with
        id "" and score -inf where fewer than k are found (an empty query finds none). beam_size: leaf clusters
        searched (None = the model's, else an integer >= 1); subset: "all" | "observed" | "inserted" items;
        threads: -1 = all cores, n >= 1."""
        p = self._state  # one read: featurizer, tree and catalogue of the same model, whatever a reload does
        X = p.featurizer.transform(_as_list(queries, "queries"), threads=threads)
        return self._results(*self._search_in(p, X, k, beam_size, subset, threads))

    def predict_features(self, X: smat.spmatrix, k: int = 10, beam_size: int | None = None, subset: str = "all",
                         threads: int = 1) -> Results:
        """`predict` from TF-IDF rows X (n, F) (`model.featurizer.transform(texts)`): the search alone."""
        p = self._state
        return self._results(*self._search_in(p, X, k, beam_size, subset, threads))

    def _search(self, X: smat.spmatrix, k: int = 10, beam_size: int | None = None, subset: str = "all",
                threads: int = 1) -> tuple[np.ndarray, np.ndarray, list]:
        """Top-k (slots int64, scores float32), both (n, k), for TF-IDF query rows X; slot -1, score 0 padded;
        and the slot -> id list of the catalogue state searched (a compaction renumbers inserted slots)."""
        return self._search_in(self._state, X, k, beam_size, subset, threads)

    def _search_in(self, p: ModelState, X, k, beam_size, subset, threads) -> tuple[np.ndarray, np.ndarray, list]:
        beam = self._beam_size(beam_size, p.configs)
        resolve(threads)
        X = smat.csr_matrix(X, dtype=np.float32)
        if X.shape[1] != p.featurizer.n_features:
            raise ModelError(f"queries have {X.shape[1]} features, the model {p.featurizer.n_features}")
        wide = beam * p.configs.coldstart.inserted_beam_factor
        return p.catalog.search(X, p.upper, beam, k, subset, threads, wide, p.configs.coldstart.split_probe)

    def _beam_size(self, beam_size, configs: Configs | None = None) -> int:
        return check_beam_size(beam_size, configs or self.configs)

    def _results(self, slots: np.ndarray, scores: np.ndarray, ids: list[str] | None = None) -> Results:
        """Slots to ids with `ids`, the id list of the catalogue state that was searched (default: the current one,
        right for trained items' slots only: a compaction renumbers inserted ones)."""
        ids = self.catalog.ids if ids is None else ids
        found = np.array([ids[s] if s >= 0 else "" for s in slots.ravel().tolist()], dtype=str)
        return Results(found.reshape(slots.shape), np.where(slots >= 0, scores, -np.inf).astype(np.float32))

    # ------------------------------------------------------------ the PECOS peer (train with keep_pecos=True)
    def pecos_model(self) -> XLinearModel:
        """The trained PECOS model (observed items only), predict-only: the peer for checks and benchmarks.
        ModelError unless the model was trained with keep_pecos=True (or saved by an xrmeta that kept it)."""
        if self._pecos is None:
            self._pecos = XLinearModel.load(str(self._pecos_dir()), is_predict_only=True)
        return self._pecos

    def pecos_predict_features(self, X: smat.spmatrix, k: int = 10, beam_size: int | None = None,
                               threads: int = 1) -> Results:
        """PECOS's own predict on TF-IDF rows X (n, F), as `Results` (same padding as `predict_features`)."""
        # trained items' slots never change: any state's id list maps them
        return self._results(*self._pecos_search(X, k, beam_size, threads), self.catalog.ids)

    def _pecos_search(self, X, k=10, beam_size=None, threads=1):
        """PECOS's own predict, mapped to catalog slots: (slots, scores) as `_search` gives them."""
        P = self.pecos_model().predict(smat.csr_matrix(X, dtype=np.float32), beam_size=self._beam_size(beam_size),
                                       only_topk=k, threads=threads)
        return _csr_topk(P, k, self.label_slot)

    def _pecos_dir(self) -> Path:
        folder = self.workdir / PECOS_DIR
        if not folder.exists():
            raise ModelError(f"{self.workdir}: no PECOS copy ({PECOS_DIR}/): train with keep_pecos=True to keep it")
        return folder

    def _pecos_leaf(self) -> tuple[smat.csr_matrix, np.ndarray]:
        """The observed items' leaf classifiers as PECOS trained them (item-major rows, in slot order) and their
        biases: the served ones unless observed items carry their titles, else read from the PECOS copy."""
        n_base = self.catalog.n_base
        if self.title_trust.is_pecos:
            return self.catalog.weights(np.arange(n_base)), self.catalog.slot_bias.view[:n_base].copy()
        leaf = XLinearModel.load(str(self._pecos_dir())).model.model_chain[-1]
        W = smat.csc_matrix(leaf.W, dtype=np.float32)[:, np.argsort(self.label_slot)]
        return W[:-1].T.tocsr(), (W[-1].toarray().ravel() * leaf.bias).astype(np.float32)

    # ------------------------------------------------------------ persistence (`modeldir`)
    def save(self, folder: str | Path) -> None:
        """Write the model directory atomically (see `persist`): every file goes to a temporary sibling, is
        fsync'd, and the sibling replaces folder by rename, so a crash at any point leaves the previous model
        loadable. config.json, written last, lists the size and sha256 of every other file.

        folder must be absent, empty or a model directory: it is replaced whole. Saving into the directory the
        model was loaded from hard-links the unchanged PECOS parts instead of copying them. The new snapshot
        holds every insert and removal so far, so it starts without a log; a model that logs to folder goes on
        logging to the new one. add_items / remove_items wait while this runs; queries do not.
        """
        modeldir.write(self, folder)

    @classmethod
    def load(cls, folder: str | Path, log: bool = False) -> XRMetaModel:
        """Read a model directory: check every file against config.json's manifest (a missing, truncated or
        corrupted file raises an error naming it), load the snapshot, then replay the directory's log (inserts,
        removals and compactions made since that save).

        log=True makes this process the directory's one writer: every later add_items / remove_items / compact
        is appended to the log and fsync'd before it returns, so a crash loses none of them (`model.log.close()`
        releases the directory). log=False keeps later changes in memory until `save`.
        """
        return modeldir.read(cls, folder, log)

    def reload(self) -> bool:
        """Swap in what the model's directory now holds, in one step: queries in other threads go on without
        waiting and each sees either the old model or the new one whole (featurizer, tree, catalogue, cold
        start, configs); add_items / remove_items / save wait. Returns whether anything changed.

        - If this process logs to the directory (`load(log=True)`) and `xrmeta-retrain` left a staging snapshot
          beside it (`<dir>.next`, following the snapshot this model serves): load it, replay the inserts and
          removals logged here since the retrain's cut, install it as the directory (atomic two-rename swap: a
          crash leaves the previous or the new model, each with its log), log to the new one from then on.
        - Otherwise, if the directory holds another snapshot than the one served (an offline retrain or save
          replaced it): load it (and its log).
        A broken or foreign staging or directory raises an error naming it, and the old model keeps serving.
        Use `xrmeta.retraining.watch(model, seconds)` to call it periodically from a thread.

        Loading allocates enough to set off a full garbage collection, which holds the GIL while it scans every
        object of the process (scipy and PECOS make that long: `benchmarks/swap.py` measures it); a service
        calls `gc.freeze()` once after loading its model so that those collections skip what is already there.
        The model itself has no reference cycle: the old one is freed by reference counting after a reload."""
        return modeldir.reload(self)


def _return_freed_memory() -> None:
    """Hand the heap's free pages back to the OS. glibc keeps freed memory for reuse (and, once large arrays have
    been freed, serves arrays of up to 32 MB from its heap), so without this a compaction's savings barely showed
    in RSS. A no-op without glibc; ctypes releases the GIL for the call."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _slot_order(Y: smat.spmatrix, label_slot: np.ndarray) -> smat.csr_matrix:
    """Relevance to the trained items (columns in training order) with its columns in slot order."""
    Ys = smat.csr_matrix(Y, dtype=np.float32)[:, np.argsort(label_slot)]
    Ys.sort_indices()
    return Ys


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


# ---------------------------------------------------------------- input checks and the item log
MAX_TITLE_CHARS = 4096  # a product title, not a document: longer ones are rejected (the log stores every title)


def title_problem(title, what: str = "title") -> str | None:
    """Why a new item's title (or another text: what names it) is unusable (a str saying so), or None."""
    if not isinstance(title, str) or not title.strip():
        return f"empty or non-string {what}"
    if len(title) > MAX_TITLE_CHARS:
        return f"{what} longer than {MAX_TITLE_CHARS} characters"
    try:
        title.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid Unicode (lone surrogates, as from undecodable bytes)"
    return None


def check_beam_size(beam_size, configs: Configs) -> int:
    """The beam a search uses: beam_size, an integer >= 1, or None for the model's (configs')."""
    if beam_size is None:
        return configs.tree.beam_size
    if isinstance(beam_size, (bool, np.bool_)) or not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
        raise ModelError(f"beam_size must be None (the model's) or an integer >= 1, got {beam_size!r}")
    return int(beam_size)


def check_texts(op: str, ids: list, texts: list, what: str = "title") -> None:
    """ModelError naming op, the first problem (`title_problem`) and the ids whose text has it, if any has one."""
    bad = [(problem, i) for i, t in zip(ids, texts) if (problem := title_problem(t, what))]
    if bad:
        raise ModelError(f"{op}: {bad[0][0]} for ids {[i for q, i in bad if q == bad[0][0]][:5]}")


def feedback_arguments(query_texts, item_ids, weights) -> tuple[list, list, np.ndarray]:
    """add_feedback's arguments as (queries, ids, float weights: default 1), checked for what needs no model."""
    queries, ids = _as_list(query_texts, "query_texts"), _as_list(item_ids, "item_ids")
    weights = np.ones(len(ids)) if weights is None else np.asarray(_as_list(weights, "weights"), dtype=float)
    if not len(queries) == len(ids) == len(weights):
        raise ModelError(f"add_feedback: {len(queries)} queries, {len(ids)} ids, {len(weights)} weights")
    if not (np.isfinite(weights).all() and (weights > 0).all()):
        raise ModelError("add_feedback: weights must be finite and > 0")
    return queries, ids, weights


def _as_list(values, what: str) -> list:
    """A list of the given values; a lone string is refused (list() would split it into characters)."""
    if isinstance(values, (str, bytes)):
        raise ModelError(f"{what} must be a list of strings, not a single {type(values).__name__}")
    try:
        return list(values)
    except TypeError:
        raise ModelError(f"{what} must be a list of strings, got {type(values).__name__}") from None

