"""Stage 2: the XR-Linear tree and matcher (PECOS).

Training: label embeddings (PIFA, the items' own title TF-IDF, or a convex mix) -> hierarchical spherical
k-means -> one-vs-rest sparse linear classifiers per layer, pruned at |w| < threshold. The training instances
are the queries and, with `title_weight` > 0, every item's own title as one more instance labelled with that
item (weight `title_weight` on its positive loss): a product clicked once or never then still has a classifier
that knows its words, and PIFA, hence the clustering, sees every title.

Serving splits the tree in two. The upper layers (`UpperLayers`, saved as a PECOS model) return, for each query,
the top-b leaf clusters with their path scores, by the same beam search as PECOS but in our own kernel. The last
layer becomes our mutable `Catalog`, which scores the items under those clusters. Scores combine as in PECOS:
score(item) = transform(w_item . [x, bias]) * score(cluster).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as smat
from pecos.xmc import Indexer, LabelEmbeddingFactory
from pecos.xmc.xlinear.model import XLinearModel

from . import _core
from .layout import POST_PROCESSORS, UpperLayout, check_beams, feature_major, rows, upper_layout
from .threads import resolve

LABEL_EMBEDDINGS = ("pifa", "title", "mix")
TITLE_LAYERS = ("all", "upper")


@dataclass
class TreeConfig:
    """The XR-Linear tree: label embedding and titles as instances, clustering, leaf classifiers, beam, seed."""

    label_embedding: str = "pifa"  # pifa | title | mix
    title_weight: float = 1.0  # weight of each item's title as a training instance; 0: clicks only
    title_layers: str = "all"  # all | upper: the layers the titles train (upper: the leaf classifiers learn clicks only)
    # observed items' served classifiers mix in their titles, trusted by click count (`xrmeta.ground`); False:
    # the leaf layer exactly as PECOS trained it (xrmeta's top-k then equals PECOS's predict)
    observed_titles: bool = True
    mix_alpha: float = 0.5  # weight of PIFA in the mix (1 - alpha on the title TF-IDF)
    branching: int = 16  # children per internal node
    max_leaf_size: int = 100  # items per leaf cluster at most
    threshold: float = 0.1  # weight pruning epsilon
    beam_size: int = 10
    post_processor: str = "l3-hinge"
    Cp: float = 1.0  # positive / negative penalty of the squared-hinge solver
    Cn: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError on a setting out of range or an unknown name."""
        if self.label_embedding not in LABEL_EMBEDDINGS:
            raise ValueError(f"label_embedding must be one of {LABEL_EMBEDDINGS}, got {self.label_embedding!r}")
        if not 0.0 <= self.mix_alpha <= 1.0:
            raise ValueError(f"mix_alpha must be in [0, 1], got {self.mix_alpha}")
        if self.branching < 2 or self.max_leaf_size < 2 or self.beam_size < 1:
            raise ValueError("branching and max_leaf_size must be >= 2 and beam_size >= 1")
        if self.post_processor not in POST_PROCESSORS:
            raise ValueError(f"post_processor must be one of {sorted(POST_PROCESSORS)}, got {self.post_processor!r}")
        if self.threshold < 0:
            raise ValueError("threshold must be >= 0")
        if self.title_layers not in TITLE_LAYERS:
            raise ValueError(f"title_layers must be one of {TITLE_LAYERS}, got {self.title_layers!r}")
        if not (self.title_weight >= 0 and np.isfinite(self.title_weight)):
            raise ValueError(f"title_weight must be a finite number >= 0, got {self.title_weight}")


def label_embeddings(X: smat.csr_matrix, Y: smat.csr_matrix, Z: smat.csr_matrix, config: TreeConfig):
    """Item embeddings used for clustering: PIFA (sum of positive queries' TF-IDF, normalised), the items'
    own title TF-IDF Z, or alpha * PIFA + (1 - alpha) * Z."""
    from sklearn.preprocessing import normalize

    if config.label_embedding == "title":
        return normalize(Z.astype(np.float32)).tocsr()
    pifa = LabelEmbeddingFactory.create(Y.tocsc(), X, method="pifa")
    if config.label_embedding == "pifa":
        return pifa
    mix = config.mix_alpha * normalize(pifa) + (1.0 - config.mix_alpha) * normalize(Z)
    return normalize(mix.astype(np.float32)).tocsr()


def training_instances(X, Y, Z, title_weight: float):
    """(instances, labels, relevance) for XR-Linear: the queries X (n x F) with their labels Y (n x L) and, with
    title_weight > 0, the L item titles Z (L x F), each labelled with its own item. Relevance weights the
    positives' loss (PECOS's cost-sensitive R): 1 for clicks, title_weight for titles; None when all are 1."""
    X = smat.csr_matrix(X, dtype=np.float32)
    Y = smat.csr_matrix(Y, dtype=np.float32)
    Y.data[:] = 1.0
    if title_weight == 0:
        return X, Y, None
    n_items = Y.shape[1]
    X = smat.vstack([X, smat.csr_matrix(Z, dtype=np.float32)], format="csr")
    Y = smat.vstack([Y, smat.identity(n_items, dtype=np.float32, format="csr")], format="csr")
    if title_weight == 1:
        return X, Y, None
    R = Y.copy()
    R.data[R.indptr[-n_items - 1] :] = title_weight  # the title rows' positives
    return X, Y, R


def train_xlinear(X, Y, Z, config: TreeConfig, threads: int = -1) -> XLinearModel:
    """Train XR-Linear on queries X (n x F), labels Y (n x L) and item title TF-IDF Z (L x F) (see
    `training_instances` for how titles join the queries). With title_layers "upper" the titles train the
    clustering and the layers above the leaves only: the leaf classifiers learn from the clicks alone (an item's
    own title reaches its served classifier through `xrmeta.ground` instead), which keeps the leaf layer's
    training as cheap as without titles."""
    config.validate()
    X_all, Y_all, R = training_instances(X, Y, Z, config.title_weight)
    emb = label_embeddings(X_all, Y_all if R is None else R, Z, config)
    n_labels = Y_all.shape[1]
    if n_labels <= config.max_leaf_size:
        # too few labels for a tree: one root cluster above the leaves (PECOS needs >= 2 leaf clusters to
        # split, so build the chain by hand)
        chain = [smat.csc_matrix(np.ones((n_labels, 1), dtype=np.float32))]
    else:
        chain = Indexer.gen(
            emb,
            indexer_type="hierarchicalkmeans",
            nr_splits=config.branching,
            max_leaf_size=config.max_leaf_size,
            seed=config.seed,
            threads=threads,
        )

    def train(X, Y, R=None, **mode):
        return XLinearModel.train(
            X, Y.tocsc(), C=chain, threshold=config.threshold, Cp=config.Cp, Cn=config.Cn, threads=threads,
            beam_size=config.beam_size, post_processor=config.post_processor, only_topk=config.beam_size,
            **({} if R is None else dict(R=R.tocsc(), rel_mode="induce", rel_norm="no-norm")), **mode)

    if config.title_layers == "all" or config.title_weight == 0 or len(chain) < 2:
        return train(X_all, Y_all, R)
    Yq = smat.csr_matrix(Y, dtype=np.float32)
    Yq.data[:] = 1.0
    matcher = train(X_all, Y_all, R, mode="matcher", ranker_level=1)
    ranker = train(smat.csr_matrix(X, dtype=np.float32), Yq, mode="ranker", ranker_level=1)
    return XLinearModel(matcher.model + ranker.model)


class UpperLayers:
    """Beam search over the layers above the leaves: each query's top-b leaf clusters with their path scores.

    The trained PECOS model of these layers is read once at load and laid out like the catalogue's observed
    items (`layout.UpperLayout`: per tree node, its children feature-major), so that one call of the C++ core
    (`_core.search_topk`) goes from the query to its top-k items. PECOS's own predict pays about 0.1 ms
    of Python per call (copies of its parameters, result matrices), which was most of an online query.
    """

    def __init__(self, layout: UpperLayout, n_clusters: int, post_processor: str):
        self.layout = layout
        self.n_clusters = n_clusters
        self.post_processor = post_processor
        self.max_group_size = max(int(np.diff(layout.group_slot_ptr).max(initial=0)), 1)

    @classmethod
    def from_chain(cls, chain: list, n_clusters: int, post_processor: str) -> UpperLayers:
        """From PECOS's model chain of the upper layers (each with W: (features+1) x nodes, bias weight in the last
        row; C: nodes x parent nodes). An empty chain, or one leaf cluster, means every query reaches cluster 0
        with score 1."""
        if n_clusters == 1:
            chain = []
        posts = {layer.pred_params.post_processor for layer in chain}
        if posts - {post_processor}:
            raise ValueError(f"upper layers use post-processor {sorted(posts)}, the leaf layer {post_processor!r}")
        layer_slot_ptr, weights, biases, groups, nodes = [0], [], [], [], []
        slot_of_node = np.zeros(1, dtype=np.int64)
        for d, layer in enumerate(chain):
            W = smat.csc_matrix(layer.W, dtype=np.float32)
            C = smat.csr_matrix(layer.C)
            n_features, n_nodes = W.shape[0] - 1, W.shape[1]
            if C.shape != (n_nodes, len(slot_of_node)) or (np.diff(C.indptr) != 1).any():
                raise ValueError(f"upper layer {d}: C {C.shape} does not give each of {n_nodes} nodes one parent")
            group = np.zeros(n_nodes, dtype=np.int64) if d == 0 else 1 + slot_of_node[C.indices]
            order = np.argsort(group, kind="stable")  # slot order: by group, then node
            slot_of_node = np.empty(n_nodes, dtype=np.int64)
            slot_of_node[order] = layer_slot_ptr[-1] + np.arange(n_nodes)
            weights.append(W[:n_features, order])
            biases.append(W[n_features, order].toarray().ravel() * layer.bias)
            groups.append(group[order])
            nodes.append(order)
            layer_slot_ptr.append(layer_slot_ptr[-1] + n_nodes)
        if chain and layer_slot_ptr[-1] - layer_slot_ptr[-2] != n_clusters:
            raise ValueError(f"the upper layers end in {layer_slot_ptr[-1] - layer_slot_ptr[-2]} nodes, "
                             f"the catalogue has {n_clusters} clusters")
        n_groups = 1 + layer_slot_ptr[-2] if chain else 0  # the root, then every node above the last layer
        slot_group = np.concatenate(groups) if chain else np.zeros(0, dtype=np.int64)
        group_slot_ptr = np.searchsorted(slot_group, np.arange(n_groups + 1)).astype(np.int64)
        slot_node = np.concatenate(nodes).astype(np.int64) if chain else np.zeros(0, dtype=np.int64)
        W = smat.hstack(weights).tocsc() if chain else smat.csc_matrix((0, 0), dtype=np.float32)
        layout = upper_layout(
            layer_slot_ptr, group_slot_ptr, feature_major(W, slot_group, group_slot_ptr),
            np.concatenate(biases) if chain else np.zeros(0, dtype=np.float32), slot_node,
            np.argsort(slot_node + np.repeat(layer_slot_ptr[:-1], np.diff(layer_slot_ptr))),
            W.shape[0] if chain else 0, POST_PROCESSORS[post_processor])
        return cls(layout, n_clusters, post_processor)

    @staticmethod
    def save_from(xlinear: XLinearModel, folder: Path) -> None:
        """Write the upper layers of a trained (Python-mode) model as their own PECOS model."""
        if xlinear.model.depth > 1:
            XLinearModel(xlinear.model[:-1]).save(str(folder))

    @classmethod
    def load(cls, folder: Path, n_clusters: int, post_processor: str) -> UpperLayers:
        chain = XLinearModel.load(str(folder)).model.model_chain if Path(folder).exists() else []
        try:
            return cls.from_chain(chain, n_clusters, post_processor)
        except ValueError as e:
            raise ValueError(f"{folder}: {e}") from None

    def top_clusters(self, X: smat.csr_matrix, beam_size: int, threads: int = 1,
                     last_beam: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(clusters, path scores), both (n, last_beam): the top leaf clusters of each row of X, best first;
        cluster -1 where there are fewer. Every layer keeps `beam_size` nodes, the last `last_beam` (default
        beam_size, at least beam_size): its first beam_size are the beam search's leaf clusters.
        threads: -1 all cores, n >= 1 that many (`xrmeta.threads`)."""
        last_beam = check_beams(beam_size, last_beam, "last_beam")
        n = resolve(threads)
        X = smat.csr_matrix(X, dtype=np.float32)
        X.sort_indices()
        return _core.upper_beams(rows(X), self.layout, int(beam_size), int(last_beam), self.max_group_size, n)

    def beams(self, X: smat.csr_matrix, beam_size: int, threads: int = 1,
              last_beam: int | None = None) -> smat.csr_matrix:
        """Queries x clusters: the top leaf clusters of each row of X (as `top_clusters`) with their path scores."""
        clusters, scores = self.top_clusters(X, beam_size, threads, last_beam)
        keep = clusters >= 0
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
        B = smat.csr_matrix((scores[keep], clusters[keep], indptr), shape=(X.shape[0], self.n_clusters))
        B.sort_indices()
        return B
