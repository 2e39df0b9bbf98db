"""Generate: a new item's classifier, as a sparse mix of its neighbours' classifiers and its own TF-IDF vector.

Every generator only decides mixing coefficients (a `Plan`); `synthesize` applies them with one numba kernel
and prunes the result to |w| >= threshold and at most max_nnz weights, so synthesized items cost no more to
score than trained ones. Baselines:

- mean: the average of the K neighbours' classifiers (the product-search paper's suggestion);
- weighted: the similarity-weighted average;
- self: the item's own title TF-IDF, with scale and bias fitted so that its scores match the scale of trained
  classifiers (least squares of each observed item's own score on its title cosine, over training pairs);
- mean_self: mean + the calibrated self vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as smat

from ..kernels.coldstart import mix_sparse


@dataclass
class Plan:
    nbr_coef: np.ndarray  # (n, K) weights on the neighbours' classifiers (weight vector and bias alike)
    self_coef: np.ndarray  # (n,) weight on the item's own TF-IDF vector, or (n, n_blocks): one per n-gram block
    bias: np.ndarray  # (n,) added to the mixed bias


@dataclass
class Calibration:
    """Score scale of a title TF-IDF vector used as a classifier: w = scale * z, bias = bias."""

    scale: float = 1.0
    bias: float = 0.0


class Generator:
    name = "base"

    def __init__(self, calibration: Calibration | None = None):
        self.calibration = calibration or Calibration()

    def plan(self, S: smat.csr_matrix, nbr_items: np.ndarray, nbr_sims: np.ndarray) -> Plan:
        """Mixing coefficients for new items with TF-IDF rows S and their neighbours (items, similarities)."""
        raise NotImplementedError

    def _neighbour_mean(self, nbr_items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        weights = np.where(nbr_items >= 0, weights, 0.0)
        total = weights.sum(axis=1, keepdims=True)
        return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0).astype(np.float32)

    def _self_plan(self, n: int, nbr_coef: np.ndarray) -> Plan:
        return Plan(nbr_coef, np.full(n, self.calibration.scale, np.float32), np.full(n, self.calibration.bias, np.float32))


class MeanGenerator(Generator):
    name = "mean"

    def plan(self, S, nbr_items, nbr_sims):
        coef = self._neighbour_mean(nbr_items, np.ones_like(nbr_sims))
        n = len(coef)
        return Plan(coef, np.zeros(n, np.float32), np.zeros(n, np.float32))


class WeightedGenerator(Generator):
    name = "weighted"

    def plan(self, S, nbr_items, nbr_sims):
        coef = self._neighbour_mean(nbr_items, np.maximum(nbr_sims, 0.0))
        n = len(coef)
        return Plan(coef, np.zeros(n, np.float32), np.zeros(n, np.float32))


class SelfGenerator(Generator):
    name = "self"

    def plan(self, S, nbr_items, nbr_sims):
        return self._self_plan(len(nbr_items), np.zeros(nbr_items.shape, np.float32))


class MeanSelfGenerator(Generator):
    name = "mean_self"

    def plan(self, S, nbr_items, nbr_sims):
        plan = self._self_plan(len(nbr_items), self._neighbour_mean(nbr_items, np.ones_like(nbr_sims)))
        plan.bias[:] = 0.0  # the neighbours' biases already set the score scale
        return plan


GENERATORS = {g.name: g for g in (MeanGenerator, WeightedGenerator, SelfGenerator, MeanSelfGenerator)}


def make_generator(name: str, calibration: Calibration | None = None) -> Generator:
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose from {sorted(GENERATORS)}")
    return GENERATORS[name](calibration)


def synthesize(plan: Plan, nbr_items, slot_bias, W_ptr, W_idx, W_val, S: smat.csr_matrix, threshold: float,
               max_nnz: int, feature_block: np.ndarray | None = None):
    """Apply a plan: returns (weights CSR (n x F), biases (n,)). nbr_items index the rows of W (item-major).
    A per-block self_coef needs the featurizer's feature -> block map."""
    n, n_features = S.shape
    self_coef, self_val = plan.self_coef.astype(np.float32), S.data
    if self_coef.ndim == 2:  # scale each non-zero of S by its row's coefficient for its n-gram block
        block = feature_block[S.indices]
        self_val = S.data * self_coef[np.repeat(np.arange(n), np.diff(S.indptr)), block]
        self_coef = np.ones(n, dtype=np.float32)
    ptr, idx, val = mix_sparse(
        np.ascontiguousarray(nbr_items, dtype=np.int64), np.ascontiguousarray(plan.nbr_coef, dtype=np.float32),
        W_ptr, W_idx, W_val,
        S.indptr.astype(np.int64), S.indices, self_val.astype(np.float32), self_coef,
        n_features, np.float32(threshold), int(max_nnz),
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
