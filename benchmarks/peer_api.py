"""What every peer provides, so that one harness scores and times them all alike: a `Build` (what it cost to make
the system ready and to add the novel items) and `Point`s (one setting each: a point on its recall-latency curve).
Search functions return top-k (slots, scores), (n, k), best first, slot -1 where fewer; `slot_col` maps slots to
the dataset's item columns, so `evaluate_sets` scores every system with the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# subset names of `xrmeta.evaluation.SUBSET_OF_SET`: which items a test set ranks
SUBSETS = ("observed", "inserted", "all")


@dataclass
class Build:
    system: str
    featurize_s: float  # the query/title representation step (TF-IDF featurizer training, or title encoding)
    train_s: float  # training or indexing, after featurization
    peak_bytes: int  # peak RSS increase during the build (resources.PeakRSS)
    disk_bytes: int  # everything needed to answer a query from its text
    insert_items: int = 0  # novel items made searchable after the build
    insert_s: float | None = None  # their cost; None: the system cannot add items
    notes: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # measured numbers the report's notes quote


@dataclass
class Point:
    system: str  # the curve
    setting: str  # e.g. "beam 10", "ef 200", "defaults"
    search: Callable[[list[str], str, int], tuple[np.ndarray, np.ndarray]]  # (texts, subset, k), not timed
    one: Callable[[str], object]  # one query text -> its top-k (timed, single thread)
    batch: Callable[[list[str]], object]  # all query texts -> top-k (timed, single thread)
    slot_col: np.ndarray


def pad_topk(rows: list[list[tuple[int, float]]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query lists of (slot, score), best first -> (n, k) slots and scores, -1 / 0 padded."""
    slots = np.full((len(rows), k), -1, dtype=np.int64)
    scores = np.zeros((len(rows), k), dtype=np.float32)
    for i, row in enumerate(rows):
        row = row[:k]
        if row:
            slots[i, : len(row)], scores[i, : len(row)] = zip(*row)
    return slots, scores


def subset_mask(subset: str, observed: np.ndarray, novel: np.ndarray, n_items: int) -> np.ndarray | None:
    """Boolean mask over item columns of the items a subset ranks; None for all items."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}")
    if subset == "all":
        return None
    mask = np.zeros(n_items, dtype=bool)
    mask[observed if subset == "observed" else novel] = True
    return mask
