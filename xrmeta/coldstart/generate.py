"""Generate: a new item's classifier, as a sparse mix of its neighbours' classifiers and its own TF-IDF vector.

Every generator only decides mixing coefficients (a `Plan`); `synthesize` applies them with one compiled kernel
(`_core.mix_sparse`) and prunes the result to |w| >= threshold and at most max_nnz weights, so synthesized items
cost no more to score than trained ones. Baselines:

- mean: the average of the K neighbours' classifiers (the product-search paper's suggestion);
- weighted: the similarity-weighted average;
- self: the item's own title TF-IDF, with scale and bias fitted so that its scores match the scale of trained
  classifiers (least squares of each observed item's own score on its title cosine, over training pairs);
- mean_self: mean + the calibrated self vector.

Every generator, hand-made or learned (`learned.LearnedGenerator`), is registered by name in `GENERATORS`: a
model names its generator in its config and `make_generator` makes it, or reads it back from the model
directory when it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as smat

from .. import _core
from ..layout import rows


@dataclass
class Plan:
    """A generator's mixing coefficients for n new items with K neighbours each."""

    nbr_coef: np.ndarray  # (n, K) weights on the neighbours' classifiers (weight vector and bias alike)
    self_coef: np.ndarray  # (n,) weight on the item's own TF-IDF vector, or (n, n_blocks): one per n-gram block
    bias: np.ndarray  # (n,) added to the mixed bias


@dataclass
class Calibration:
    """Score scale of a title TF-IDF vector used as a classifier: w = scale * z, bias = bias."""

    scale: float = 1.0
    bias: float = 0.0


class Generator:
    """Decides how to mix a new item's classifier (`plan`); `synthesize` applies the mix. A subclass registered
    with `register` can be named in `ColdStartConfig.generator`."""

    name = "base"
    trained = False  # True: made by training, saved with the model (`save`) and read back by `load`

    def __init__(self, calibration: Calibration | None = None):
        self.calibration = calibration or Calibration()

    @classmethod
    def load(cls, folder: Path | None, calibration: Calibration, Z: smat.csr_matrix,
             feature_block: np.ndarray) -> Generator:
        """The generator of the model in folder (None: a model only in memory). A hand-made one has nothing
        on disk: it is made from the calibration of the title vectors."""
        return cls(calibration)

    def save(self, folder: Path) -> None:
        """Write what `load` reads back into the model directory folder (a hand-made generator: nothing)."""

    def with_rows(self, Z: smat.csr_matrix) -> Generator:
        """This generator reading the selector's rows Z from now on (a compaction emptied some): itself when
        it reads none."""
        return self

    def plan(self, S: smat.csr_matrix, nbr_items: np.ndarray, nbr_sims: np.ndarray, threads: int = -1) -> Plan:
        """Mixing coefficients for n new items with TF-IDF rows S (n x F) and their K neighbours: nbr_items
        (n, K) int64 rows of the observed items (-1 = none), nbr_sims (n, K) float32 cosines."""
        raise NotImplementedError

    def _neighbour_mean(self, nbr_items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        weights = np.where(nbr_items >= 0, weights, 0.0)
        total = weights.sum(axis=1, keepdims=True)
        return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0).astype(np.float32)

    def _self_plan(self, n: int, nbr_coef: np.ndarray) -> Plan:
        return Plan(nbr_coef, np.full(n, self.calibration.scale, np.float32), np.full(n, self.calibration.bias, np.float32))


GENERATORS: dict[str, type[Generator]] = {}  # name -> class; filled by `register`


def register(cls: type[Generator]) -> type[Generator]:
    """Class decorator: make a generator class available by its `name`."""
    GENERATORS[cls.name] = cls
    return cls


@register
class MeanGenerator(Generator):
    """The average of the neighbours' classifiers."""

    name = "mean"

    def plan(self, S, nbr_items, nbr_sims, threads=-1):
        coef = self._neighbour_mean(nbr_items, np.ones_like(nbr_sims))
        n = len(coef)
        return Plan(coef, np.zeros(n, np.float32), np.zeros(n, np.float32))


@register
class WeightedGenerator(Generator):
    """The similarity-weighted average of the neighbours' classifiers."""

    name = "weighted"

    def plan(self, S, nbr_items, nbr_sims, threads=-1):
        coef = self._neighbour_mean(nbr_items, np.maximum(nbr_sims, 0.0))
        n = len(coef)
        return Plan(coef, np.zeros(n, np.float32), np.zeros(n, np.float32))


@register
class SelfGenerator(Generator):
    """The item's own title vector, calibrated to the trained classifiers' scale."""

    name = "self"

    def plan(self, S, nbr_items, nbr_sims, threads=-1):
        return self._self_plan(len(nbr_items), np.zeros(nbr_items.shape, np.float32))


@register
class MeanSelfGenerator(Generator):
    """The neighbours' average plus the calibrated title vector."""

    name = "mean_self"

    def plan(self, S, nbr_items, nbr_sims, threads=-1):
        plan = self._self_plan(len(nbr_items), self._neighbour_mean(nbr_items, np.ones_like(nbr_sims)))
        plan.bias[:] = 0.0  # the neighbours' biases already set the score scale
        return plan


def check_generator(name: str) -> None:
    """Raise ValueError unless name is a registered generator."""
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose from {sorted(GENERATORS)}")


def make_generator(name: str, calibration: Calibration | None = None, folder: Path | None = None,
                   Z: smat.csr_matrix | None = None, feature_block: np.ndarray | None = None) -> Generator:
    """The generator `name`: a hand-made one made from the calibration; a trained one read from the model
    directory folder, where its selector rows Z and the featurizer's feature -> n-gram block map feature_block
    serve it."""
    check_generator(name)
    return GENERATORS[name].load(folder, calibration or Calibration(), Z, feature_block)


def synthesize(plan: Plan, nbr_items, slot_bias, W_ptr, W_idx, W_val, S: smat.csr_matrix, threshold: float,
               max_nnz: int, feature_block: np.ndarray | None = None, threads: int = -1):
    """Apply a plan: returns (weights CSR float32 (n x F), biases float32 (n,)). nbr_items (n, K) index the rows
    of the item-major classifiers W (W_ptr, W_idx, W_val) and slot_bias. A per-block self_coef needs the
    featurizer's feature -> block map."""
    n, n_features = S.shape
    self_coef, self_val = plan.self_coef.astype(np.float32), S.data
    if self_coef.ndim == 2:  # scale each non-zero of S by its row's coefficient for its n-gram block
        block = feature_block[S.indices]
        self_val = S.data * self_coef[np.repeat(np.arange(n), np.diff(S.indptr)), block]
        self_coef = np.ones(n, dtype=np.float32)
    ptr, idx, val = _core.mix_sparse(
        np.ascontiguousarray(nbr_items, dtype=np.int64), np.ascontiguousarray(plan.nbr_coef, dtype=np.float32),
        W_ptr, W_idx, W_val,
        *rows(S)[:2], self_val.astype(np.float32), self_coef,
        n_features, np.float32(threshold), np.full(n, max_nnz, dtype=np.int64),
    )
    valid = nbr_items >= 0
    biases = (plan.nbr_coef * np.where(valid, slot_bias[np.maximum(nbr_items, 0)], 0.0)).sum(axis=1) + plan.bias
    return smat.csr_matrix((val, idx, ptr), shape=(n, n_features)), biases.astype(np.float32)


def fit_calibration(X: smat.csr_matrix, pairs_q: np.ndarray, pairs_item: np.ndarray, W: smat.csr_matrix,
                    slot_bias: np.ndarray, Z: smat.csr_matrix) -> Calibration:
    """Least-squares fit of own classifier score (w_j . x + b_j) on title cosine (z_j . x) over (query, item)
    pairs, so that a title vector scores on the same scale as trained classifiers."""
    cos = np.asarray(X[pairs_q].multiply(Z[pairs_item]).sum(axis=1)).ravel()
    own = np.asarray(X[pairs_q].multiply(W[pairs_item]).sum(axis=1)).ravel() + slot_bias[pairs_item]
    A = np.stack([cos, np.ones_like(cos)], axis=1)
    (scale, bias), *_ = np.linalg.lstsq(A, own, rcond=None)
    return Calibration(float(scale), float(bias))
