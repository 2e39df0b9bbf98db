"""Comparing recall-vs-latency curves: a system's best recall at a latency budget, and how sure a latency ratio
is on a noisy machine."""

from __future__ import annotations

import numpy as np


def recall_at_latency(latency: np.ndarray, recall: np.ndarray, budget: float) -> float | None:
    """Best recall a system reaches within `budget`, interpolated linearly in log-latency between its measured
    settings (its frontier: a slower setting never counts as worse than a faster one). None: it has no setting
    that fast."""
    order = np.argsort(latency)
    lat, rec = np.asarray(latency)[order], np.maximum.accumulate(np.asarray(recall)[order])
    if budget < lat[0]:
        return None
    if budget >= lat[-1]:
        return float(rec[-1])
    return float(np.interp(np.log(budget), np.log(lat), rec))


def median_ratio(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """median(a) / median(b) and its 95% bootstrap interval; a[i] and b[i] were timed on the same query in the
    same round, so queries are resampled in pairs."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(a), size=(n_boot, len(a)))
    boot = np.median(a[pick], axis=1) / np.median(b[pick], axis=1)
    return float(np.median(a) / np.median(b)), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def verdict(low: float, high: float) -> str:
    """Reading of a latency ratio's interval (first system / second system)."""
    if high < 1.0:
        return "faster"
    if low > 1.0:
        return "slower"
    return "equal within noise"
