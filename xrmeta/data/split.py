"""The zero-shot split: a random set of items hidden from training, so that cold-start ("zero-shot") ranking can
be evaluated next to ordinary ranking; and the split a saved model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .readers import load_dataset
from .xmc import DataError, XMCData

@dataclass
class EvalSet:
    """Test queries, their truth (global item columns) and the items eligible for ranking."""

    name: str
    queries: np.ndarray
    Y: sp.csr_matrix
    candidates: np.ndarray


@dataclass
class ZeroShotSplit:
    seed: int
    novel_frac: float
    test_frac: float
    observed: np.ndarray
    novel: np.ndarray
    train_queries: np.ndarray
    Y_train: sp.csr_matrix
    observed_set: EvalSet
    zero_shot_set: EvalSet
    generalized_set: EvalSet

    def eval_sets(self) -> list[EvalSet]:
        return [self.observed_set, self.zero_shot_set, self.generalized_set]


def _keep_columns(Y: sp.csr_matrix, mask: np.ndarray) -> sp.csr_matrix:
    """Drop the entries in columns where ``mask`` is False, keeping the shape."""
    keep = mask[Y.indices]
    rows = np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=Y.shape[0]))])
    return sp.csr_matrix((Y.data[keep], Y.indices[keep], indptr), shape=Y.shape)


def _eval_set(name: str, queries: np.ndarray, Y_test: sp.csr_matrix, candidates: np.ndarray) -> EvalSet:
    has_pos = np.diff(Y_test.indptr) > 0
    return EvalSet(name, queries[has_pos], Y_test[has_pos], candidates)


def make_zero_shot_split(
    data: XMCData, novel_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0
) -> ZeroShotSplit:
    """Hide ``round(novel_frac * n_items)`` items from training and hold out test queries.

    Only items with at least one positive query can become novel (an item without
    positives could never be evaluated). Test queries are ``data.test_queries`` if
    set, else a random ``test_frac`` of all queries.
    """
    if not 0.0 <= novel_frac <= 1.0 or not 0.0 <= test_frac <= 1.0:
        raise ValueError("novel_frac and test_frac must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    n_q, n_i = data.Y.shape

    eligible = np.flatnonzero(data.Y.getnnz(axis=0) > 0)
    n_novel = min(round(novel_frac * n_i), eligible.size)
    novel = np.sort(rng.choice(eligible, size=n_novel, replace=False)).astype(np.int64)
    is_novel = np.zeros(n_i, dtype=bool)
    is_novel[novel] = True
    observed = np.flatnonzero(~is_novel).astype(np.int64)

    if data.test_queries is not None:
        test = data.test_queries.astype(np.int64)
    else:
        test = np.sort(rng.permutation(n_q)[: round(test_frac * n_q)]).astype(np.int64)
    is_test = np.zeros(n_q, dtype=bool)
    is_test[test] = True
    train = np.flatnonzero(~is_test).astype(np.int64)

    Y_train = data.Y[train][:, observed]
    has_pos = np.diff(Y_train.indptr) > 0
    Y_train = Y_train[has_pos]
    Y_train.sort_indices()
    train_queries = train[has_pos]

    Y_test = data.Y[test]
    all_items = np.arange(n_i, dtype=np.int64)
    return ZeroShotSplit(
        seed=seed,
        novel_frac=novel_frac,
        test_frac=test_frac,
        observed=observed,
        novel=novel,
        train_queries=train_queries,
        Y_train=Y_train,
        observed_set=_eval_set("observed", test, _keep_columns(Y_test, ~is_novel), observed),
        zero_shot_set=_eval_set("zero_shot", test, _keep_columns(Y_test, is_novel), novel),
        generalized_set=_eval_set("generalized", test, Y_test, all_items),
    )


def split_for(model, data: XMCData) -> ZeroShotSplit:
    """Rebuild the split a model saved by `xrmeta-train` was trained on (its `info["split"]`), and check that it is
    that split: the model's trained items must be the split's observed items."""
    s = model.info.get("split")
    if s is None:
        raise DataError("the model was not trained by `xrmeta-train` on a dataset split; nothing to evaluate on")
    split = make_zero_shot_split(data, novel_frac=s["novel_frac"], test_frac=s["test_frac"], seed=s["seed"])
    trained = set(model.catalog.ids[: model.catalog.n_base])
    if trained != {data.item_ids[j] for j in split.observed}:
        raise DataError("the model's trained items differ from this dataset's split: wrong dataset or seed?")
    return split


def dataset_and_split(model, name: str | None = None, data_home=None) -> tuple[XMCData, ZeroShotSplit]:
    """The dataset a model was trained on (its `info["dataset"]`, or `name`) and the split it was trained on."""
    name = name or model.info.get("dataset")
    if not name:
        raise DataError("the model does not record its dataset; pass --dataset")
    data = load_dataset(name, data_home)
    return data, split_for(model, data)
