"""`ColdStart`: a new item, known only by its title, gets a leaf cluster and a classifier without retraining:
select its K nearest observed items, assign it to leaf clusters of the trained tree, generate its weight vector.

It holds the selector, the generator (any registered one: `generate.GENERATORS`), the calibration of title
vectors, the lazy leaf centroids, and reads the observed items' classifiers and clusters from the catalogue and
the tree's upper layers; every fit takes explicit arrays (queries X, relevance Ys in slot order), never the
model. `XRMetaModel` holds one as `model.coldstart`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as smat

from ..errors import ModelError
from ..ground import TitleTrust
from .assign import assign_centroid, assign_centroid_left_out, assign_vote, leaf_centroids
from .feedback import refine
from .generate import GENERATORS, Calibration, Generator, check_generator, fit_calibration, make_generator, synthesize
from .learned import LearnedConfig, LearnedGenerator
from .select import Selector, neighbours_excluding
from .training import HeldOut, ServedLeaf, fit_title_trust, hold_out

ASSIGNERS = ("vote", "centroid", "route")
AUTO = "auto"  # at training: the assigner that puts observed items, treated as new, where their queries' beams reach
SELECTORS = ("pruned", "exact")
MAX_TRUST_QUERIES = 2000  # held-out queries the title trust is fitted on (its ~20 parameters need no more)
MAX_CLUSTERS_PER_ITEM = 8  # the search keeps k * m candidates to drop an item's repeats: m stays small


@dataclass
class ColdStartConfig:
    """How new items are inserted: neighbour selection, leaf assignment, generator, pruning. `validate` raises
    ValueError on a bad value."""

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
    # any name of `generate.GENERATORS`: learned (trained with the model, see `LearnedConfig`) | mean | weighted |
    # self | mean_self (hand-made: nothing to train)
    generator: str = "learned"
    max_nnz: int = 128  # non-zeros kept per synthesized classifier (query cost grows with it; see BENCHMARKS.md)
    threshold: float | None = None  # pruning of synthesized weights; None = the tree's threshold
    # remove_items compacts (`XRMetaModel.compact`) once removed items still holding storage pass this share of
    # the slots; 0 or None: only explicit compact() calls. A compaction copies the live storage, so at share f
    # each removal costs about (1 - f) / f slot copies and memory stays under 1 / (1 - f) of the live items':
    # 0.25 gives 3 copies per removal and at most 4/3 of the memory
    compact_at: float | None = 0.25
    # leaf split (`xrmeta.parts`): a part of a leaf cluster's inserted items holding more than split_size live
    # entries splits in two (0: never), and a query scores split_probe parts of each split cluster it reaches,
    # those whose routers match it best (BENCHMARKS.md "lifecycle" measures both)
    split_size: int = 256
    split_probe: int = 2
    # add_feedback: one click moves a classifier by at most this share of its norm (`coldstart.feedback`). A
    # larger step lifts clicked new items further among all items and costs the ranking among new items only
    # (benchmarks/feedback.py, 3 seeds: 0.1 / 0.25 / 0.5 gave PriceRunner P@1 on the new items' other queries
    # +2.0 / +3.6 / +4.1 and Home Depot zero-shot P@1 -2.2 / -5.9 / -9.5); 0: clicks are only kept
    feedback_step: float = 0.25

    def validate(self) -> None:
        """Raise ValueError on a setting out of range or an unknown name."""
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
        if self.compact_at is not None and not 0 <= self.compact_at <= 1:
            raise ValueError(f"compact_at must be None or in [0, 1], got {self.compact_at!r}")
        if not (isinstance(self.split_size, int) and self.split_size >= 0):
            raise ValueError(f"split_size must be an integer >= 0 (0: never split), got {self.split_size!r}")
        if not (isinstance(self.feedback_step, (int, float)) and 0 <= self.feedback_step < float("inf")):
            raise ValueError(f"feedback_step must be a number >= 0, got {self.feedback_step!r}")
        if not (isinstance(self.split_probe, int) and self.split_probe >= 1):
            raise ValueError(f"split_probe must be an integer >= 1, got {self.split_probe!r}")
        check_generator(self.generator)


class ColdStart:
    """select -> assign -> generate for new items, over a trained tree and its observed items.

    config: its ColdStartConfig (the model's own copy: `use_generator` and `choose_assigner` update it);
    selector: the observed items' title rows in slot order and their neighbour search; catalog: the leaf layer
    (`catalog.Catalog`), read for the observed items' clusters, classifiers and biases; upper: the tree's layers
    above the leaves (`tree.UpperLayers`); feature_block (F,) int8: the featurizer's n-gram block of each
    feature; tree_threshold: the tree's weight pruning (used unless config.threshold is set); calibration: the
    score scale of title vectors; generator: the `Generator` in use, or None until `fit_generator` makes one.

    Thread safety: `synthesize` only reads, so inserts may run while queries do; `use_generator` and
    `fit_generator` must not run while another thread inserts.
    """

    def __init__(self, config: ColdStartConfig, selector: Selector, catalog, upper, feature_block: np.ndarray,
                 tree_threshold: float, calibration: Calibration, generator: Generator | None):
        self.config = config
        self.selector = selector
        self.catalog = catalog
        self.upper = upper
        self.feature_block = feature_block
        self.tree_threshold = tree_threshold
        self.calibration = calibration
        self.generator = generator
        self._centroids = None

    # ------------------------------------------------------------ insertion
    def synthesize(self, S: smat.csr_matrix, threads: int = -1) -> tuple[smat.csr_matrix, np.ndarray, np.ndarray]:
        """For n new items with title TF-IDF rows S (n x F): (weights CSR float32 (n x F), biases float32 (n,),
        clusters int64 (n, m), best first, -1 padded; m = clusters_per_item). threads: -1 = all cores, n >= 1."""
        if self.generator is None:
            raise ModelError(f"no {self.config.generator!r} generator yet: train it with `fit_generator`")
        nbrs, sims = self.selector.search(S, self.config.k, threads)
        clusters = self.assign(S, nbrs, sims, threads)
        weights, biases = self.generate(S, nbrs, sims, threads)
        return weights, biases, clusters

    def use_selector(self, selector: Selector) -> None:
        """Search new items' neighbours with `selector` (the same observed items, some rows emptied by a
        compaction): the generator reads its rows, the leaf centroids are recomputed from them."""
        self.selector = selector
        if self.generator is not None:
            self.generator = self.generator.with_rows(selector.Z)
        self._centroids = None

    def assign(self, S: smat.csr_matrix, nbrs: np.ndarray, sims: np.ndarray, threads: int = -1) -> np.ndarray:
        """Leaf clusters of each new item (rows of S, with its selected neighbours nbrs, sims (n, K)): (n, m),
        best first, -1 where an item has fewer than m (m = clusters_per_item)."""
        how, m = self.config.assign, self.config.clusters_per_item  # AUTO is resolved by training, else "vote"
        if how == "route":
            return self.upper.top_clusters(S, beam_size=m, threads=threads)[0]
        if how == "centroid":
            return assign_centroid(S, self.centroids, m)
        fallback = np.zeros(len(nbrs), dtype=np.int64)  # items with no neighbour at all go to the nearest centroid
        no_nbr = nbrs[:, 0] < 0
        if no_nbr.any():
            fallback[no_nbr] = assign_centroid(S[no_nbr], self.centroids)[:, 0]
        return assign_vote(nbrs, sims, self.catalog.slot_cluster.view, fallback, m)

    def generate(self, S: smat.csr_matrix, nbrs: np.ndarray, sims: np.ndarray, threads: int = -1,
                 rows: tuple | None = None) -> tuple[smat.csr_matrix, np.ndarray]:
        """Sparse classifier weights (CSR float32, n x F) and biases (n,) of new items, pruned like the trained
        ones: |w| >= threshold, at most max_nnz non-zeros. rows: the neighbours' classifiers where the catalogue
        does not hold them (a sharded router's, `xrmeta.distributed`): (at (n, K), each neighbour's row, -1
        where nbrs has none; biases, w_ptr, w_idx, w_val of those rows); None: the catalogue's."""
        c = self.catalog
        at, table = (nbrs, (c.slot_bias.view, c.w_ptr.view, c.w_idx.view, c.w_val.view)) if rows is None \
            else (rows[0], rows[1:])
        return synthesize(self.generator.plan(S, nbrs, sims, threads), at, *table, S, self.threshold,
                          self.config.max_nnz, self.feature_block, threads)

    def refine(self, X: smat.csr_matrix, slots: np.ndarray,
               weights: np.ndarray) -> tuple[np.ndarray, smat.csr_matrix, np.ndarray]:
        """New classifiers for clicked items (`feedback.refine`): (their slots, unique in first-click order; weights
        CSR (u, F); biases (u,)) from the clicks' query rows X (n, F), the clicked slots (n,) and weights (n,)."""
        return refine(self.catalog, X, slots, weights, self.config.feedback_step, self.threshold, self.config.max_nnz)

    @property
    def threshold(self) -> float:
        """Pruning of synthesized and refined weights: the config's, else the tree's."""
        return self.tree_threshold if self.config.threshold is None else self.config.threshold

    @property
    def centroids(self) -> smat.csr_matrix:
        """(n_clusters, F) CSR: the normalised mean title row of each leaf cluster's observed items."""
        if self._centroids is None:
            cluster = self.catalog.slot_cluster.view[: self.catalog.n_base]
            self._centroids = leaf_centroids(self.selector.Z, cluster, self.catalog.n_clusters)
        return self._centroids

    # ------------------------------------------------------------ choices made at training
    def use_generator(self, name: str, folder: Path | None = None) -> None:
        """Generate later items with the registered generator `name` (items already inserted keep their
        classifier): a hand-made one, or a trained one, kept if it is the one in use, else read from the model
        directory folder (GeneratorError, a ModelError, if it holds none). Not while another thread inserts."""
        check_generator(name)
        if not (self.generator is not None and self.generator.name == name and self.generator.trained):
            self.generator = make_generator(name, self.calibration, folder, self.selector.Z, self.feature_block)
        self.config.generator = name

    def choose_assigner(self, X: smat.spmatrix, Ys: smat.spmatrix, seed: int, beam_size: int,
                        max_items: int = 2000, threads: int = -1) -> dict[str, float]:
        """Pick the assigner under which new items land where their queries look. X: (n_queries, F) training
        queries, Ys: (n_queries, n_base) their relevance, columns in slot order; beam_size: the tree's. Up to
        max_items observed items with a training query (sampled with seed) are treated as new (their own title
        left out of their neighbours and of their cluster's centroid); each assigner's reach is the share of their
        (training query, item) pairs whose query's beam holds the assigned cluster. Sets `config.assign` and
        returns the reaches (%). Which assigner wins depends on the data: neighbours' clusters are a good guess
        where similar titles are clicked by the same queries, and a poor one where most items were never clicked
        (their clusters then follow no query)."""
        cat = self.catalog
        Ys = smat.csc_matrix(Ys, dtype=np.float32)
        clicked = np.flatnonzero(np.diff(Ys.indptr) > 0)
        if len(clicked) == 0:
            raise ModelError("choose_assigner: no observed item has a training query")
        rng = np.random.default_rng(seed)
        items = np.sort(rng.choice(clicked, size=min(max_items, len(clicked)), replace=False))
        S = self.selector.Z[items]
        nbrs, sims = neighbours_excluding(self.selector, S, items, self.config.k, threads=threads)
        cluster = cat.slot_cluster.view[: cat.n_base]
        left_out = assign_centroid_left_out(self.selector.Z, cluster, cat.n_clusters, items)
        fallback = np.where(nbrs[:, 0] < 0, left_out, 0)
        choices = {
            "vote": assign_vote(nbrs, sims, cluster, fallback)[:, 0],
            "centroid": left_out,
            "route": self.upper.top_clusters(S, beam_size=1, threads=threads)[0][:, 0],
        }
        pairs = Ys[:, items].tocoo()  # (query, position in items)
        queries, at = np.unique(pairs.row, return_inverse=True)
        B = self.upper.beams(smat.csr_matrix(X, dtype=np.float32)[queries], beam_size, threads=threads).tocsr()
        reach = {name: float(np.asarray(B[at, c[pairs.col]] > 0).mean() * 100) for name, c in choices.items()}
        self.config.assign = max(ASSIGNERS, key=lambda name: reach[name])  # ties: the first in ASSIGNERS
        return reach

    def fit_generator(self, X: smat.csr_matrix, Ys: smat.csr_matrix, config: LearnedConfig | None,
                      trust: TitleTrust, tree, min_df: int, threads: int = -1, verbose: bool = True,
                      held: HeldOut | None = None) -> LearnedGenerator:
        """Train the learned generator and make it the one in use (torch needed: `pip install 'xrmeta[train]'`).

        X: (n_queries, F) the training queries' TF-IDF rows; Ys: (n_queries, n_base) their relevance, columns
        in slot order; trust: the served leaf layer's `TitleTrust`; tree: the `TreeConfig` the tree was trained
        with (held-out retraining, pruning); min_df: the featurizer's; held: held-out clicks drawn already (at
        training, those the title trust was fitted on), else drawn here. The tree and classifiers stay frozen."""
        from .train_learned import train_generator  # torch: only when training

        config = config or LearnedConfig()
        config.validate()
        X = smat.csr_matrix(X, dtype=np.float32)
        X.sort_indices()
        Ys = smat.csr_matrix(Ys, dtype=np.float32)
        leaf = served_leaf(self.catalog)
        if Ys.shape != (X.shape[0], leaf.W.shape[0]):
            raise ModelError(f"Y is {Ys.shape}, expected {X.shape[0]} queries x {leaf.W.shape[0]} trained items")
        rng = None
        if held is None:  # the served classifiers stand for the ones not retrained: training reads only the rest
            rng = np.random.default_rng(config.seed)
            held = hold_out(X, Ys, self.selector.Z, leaf.W, leaf.bias, leaf.cluster, leaf.cluster_ptr, tree,
                            config.max_items, config.proxy_frac, config.observed_query_frac, rng, threads)
        self.generator = train_generator(X, Ys, held, leaf, self.selector, self.upper, trust, tree.threshold,
                                         self.feature_block, min_df, self.calibration, self.config.k, config,
                                         threads, verbose, rng)
        self.config.generator = self.generator.name
        return self.generator


# ---------------------------------------------------------------- what training fits before the generator
def make_selector(Z: smat.spmatrix, config: ColdStartConfig, normalized: bool = False) -> Selector:
    """The neighbour search over observed items' title rows Z (n_base x F, slot order) that config asks for;
    normalized: Z is a selector's own rows, as saved (`Selector`)."""
    if config.selector == "exact":
        return Selector(Z, normalized=normalized)
    return Selector(Z, max_postings=config.max_postings, n_candidates=config.n_candidates, normalized=normalized)


def served_leaf(catalog) -> ServedLeaf:
    """The observed items' leaf layer as the catalogue (`catalog.Catalog`) serves it."""
    n = catalog.n_base
    return ServedLeaf(catalog.weights(np.arange(n)), catalog.slot_bias.view[:n].copy(),
                      catalog.slot_cluster.view[:n].copy(), catalog.base_slot_ptr)


def needs_training(name: str) -> bool:
    """Whether the registered generator `name` is trained (so `XRMetaModel.train` fits it, with torch)."""
    return GENERATORS[name].trained


def calibrate(X: smat.csr_matrix, Y: smat.spmatrix, label_slot: np.ndarray, leaf: ServedLeaf, Z: smat.csr_matrix,
              seed: int, n_pairs: int = 20000) -> Calibration:
    """Fit the title-vector score scale on positive pairs and as many same-cluster negatives. X: (n_queries, F)
    training queries; Y: (n_queries, n_base) relevance in training order, label_slot (n_base,) each trained
    item's slot; leaf: the observed items as served; Z: their title rows, slot order."""
    rng = np.random.default_rng(seed)
    Y = Y.tocoo()
    if Y.nnz == 0:
        return Calibration()
    pick = rng.choice(Y.nnz, size=min(n_pairs, Y.nnz), replace=False)
    q = Y.row[pick]
    pos = label_slot[Y.col[pick]]
    cluster = leaf.cluster[pos]
    lo, hi = leaf.cluster_ptr[cluster], leaf.cluster_ptr[cluster + 1]
    neg = lo + (rng.random(len(pick)) * (hi - lo)).astype(np.int64)
    return fit_calibration(X, np.concatenate([q, q]), np.concatenate([pos, neg]), leaf.W, leaf.bias, Z)


def fit_trust(X: smat.csr_matrix, Ys: smat.csr_matrix, leaf: ServedLeaf, upper, selector: Selector, tree,
              config: LearnedConfig, threads: int = -1, verbose: bool = True) -> tuple[HeldOut, TitleTrust]:
    """(held-out clicks, the title trust fitted on them) for a freshly trained tree whose leaf layer is still
    PECOS's (leaf). X, Ys: training queries and their relevance, columns in slot order; tree: its TreeConfig;
    config: the learned generator's settings, whose sample of held-out clicks both fits share."""
    rng = np.random.default_rng(config.seed)
    held = hold_out(X, Ys, selector.Z, leaf.W, leaf.bias, leaf.cluster, leaf.cluster_ptr, tree, config.max_items,
                    config.proxy_frac, config.observed_query_frac, rng, threads)
    beams = upper.beams(X[held.queries[:MAX_TRUST_QUERIES]], tree.beam_size, threads=threads).tocsr()
    beams.sort_indices()
    trust = fit_title_trust(X, Ys, selector.Z, held, beams, leaf.cluster, leaf.n_clusters, rng, verbose=verbose,
                            threads=threads)
    return held, trust

