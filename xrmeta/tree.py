"""Stage 2: the XR-Linear tree and matcher (PECOS).

Training: label embeddings (PIFA, the items' own title TF-IDF, or a convex mix) -> hierarchical spherical
k-means -> one-vs-rest sparse linear classifiers per layer, pruned at |w| < threshold.

Serving splits the tree in two. The upper layers stay a PECOS model loaded in its fast predict-only mode and
return, for each query, the top-b leaf clusters with their path scores. The last layer becomes our mutable
`Catalog`, which scores the items under those clusters. Scores combine as in PECOS:
score(item) = transform(w_item . [x, bias]) * score(cluster).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as smat
from pecos.xmc import Indexer, LabelEmbeddingFactory
from pecos.xmc.xlinear.model import XLinearModel

from .kernels import POST_PROCESSORS

LABEL_EMBEDDINGS = ("pifa", "title", "mix")


@dataclass
class TreeConfig:
    label_embedding: str = "pifa"  # pifa | title | mix
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


def train_xlinear(X, Y, Z, config: TreeConfig, threads: int = -1) -> XLinearModel:
    """Train XR-Linear on queries X (n x F), labels Y (n x L) and item title TF-IDF Z (L x F)."""
    config.validate()
    X = smat.csr_matrix(X, dtype=np.float32)
    Y = smat.csr_matrix(Y, dtype=np.float32)
    emb = label_embeddings(X, Y, Z, config)
    n_labels = Y.shape[1]
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
    return XLinearModel.train(
        X,
        Y.tocsc(),
        C=chain,
        threshold=config.threshold,
        Cp=config.Cp,
        Cn=config.Cn,
        threads=threads,
        beam_size=config.beam_size,
        post_processor=config.post_processor,
        only_topk=config.beam_size,
    )


class UpperLayers:
    """Top-b leaf clusters with path scores, from PECOS's predict-only model of the layers above the leaves."""

    def __init__(self, model: XLinearModel | None, n_clusters: int):
        self.model = model  # None: a single leaf cluster, every query reaches it with score 1
        self.n_clusters = n_clusters

    @staticmethod
    def save_from(xlinear: XLinearModel, folder: Path) -> None:
        """Write the upper layers of a trained (Python-mode) model as their own PECOS model."""
        if xlinear.model.depth > 1:
            XLinearModel(xlinear.model[:-1]).save(str(folder))

    @classmethod
    def load(cls, folder: Path, n_clusters: int) -> UpperLayers:
        model = XLinearModel.load(str(folder), is_predict_only=True) if Path(folder).exists() else None
        return cls(model, n_clusters)

    def beams(self, X: smat.csr_matrix, beam_size: int, threads: int = 1) -> smat.csr_matrix:
        n = X.shape[0]
        if self.model is None or self.n_clusters == 1:
            return smat.csr_matrix((np.ones(n, dtype=np.float32), np.zeros(n, dtype=np.int32), np.arange(n + 1)),
                                   shape=(n, 1))
        B = self.model.predict(X, beam_size=beam_size, only_topk=beam_size, threads=threads)
        return smat.csr_matrix(B, dtype=np.float32)

