"""The one latency harness and the one insertion harness every section times with.

Latency: `time_calls` runs every system over the same inputs, interleaved (load from other processes falls on
all alike), single thread (numba, BLAS), gc off, after untimed warm-up calls; `latency` times one query per call
(median, p99) and whole batches (median of repeats) into a `Latency` per system; `ratio` compares two systems
timed in the same run. Insertion: `insert` times one `add_items` call, single thread, after a warm-up whose time
(JIT compilation, the featurizer's first call) is reported apart and never counted as insertion.
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass

import numba
import numpy as np

from . import api


def clock(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


@contextlib.contextmanager
def single_thread(numba_pool: bool = False):
    """numba and the BLAS / OpenMP pools at one thread, gc off: what every timed loop runs under. numba_pool:
    leave numba's thread count as it is (every core), as a user's process runs; calls then pass threads=1."""
    from threadpoolctl import threadpool_limits

    threads, was = numba.get_num_threads(), gc.isenabled()
    if not numba_pool:
        numba.set_num_threads(1)
    gc.disable()
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        numba.set_num_threads(threads)  # training afterwards gets every core back
        if was:
            gc.enable()


# ---------------------------------------------------------------- latency
def time_calls(calls: dict, inputs: list, *, warm: list = (), block: int = 1, seed: int = 0,
               numba_pool: bool = False) -> dict:
    """{name: seconds of calls[name](x) for each x in inputs}. Each system first runs untimed on every `warm`
    input. Inputs go in blocks; per block the systems run in a fresh random order, each over the whole block;
    with block > 1 each first makes one untimed call on the block's first input (its own data in cache, as a
    dedicated server would be, not the previous system's)."""
    names = list(calls)
    rng = np.random.default_rng(seed)
    samples = {name: np.empty(len(inputs)) for name in names}
    with single_thread(numba_pool):
        for f in calls.values():
            for x in warm:
                f(x)
        for a in range(0, len(inputs), block):
            for name in rng.permutation(names):
                f = calls[name]
                if block > 1:
                    f(inputs[a])
                for i in range(a, min(a + block, len(inputs))):
                    t0 = time.perf_counter()
                    f(inputs[i])
                    samples[name][i] = time.perf_counter() - t0
    return samples


@dataclass
class Latency:
    """One system's timings: one query per call (online, seconds per call) and whole-batch calls."""
    online: np.ndarray
    batch_s: float  # the batch statistic (median by default) of seconds per batch call
    n_batch: int  # queries per batch call

    @property
    def median_ms(self) -> float:
        return float(np.median(self.online) * 1e3)

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.online, 99) * 1e3)

    @property
    def batch_ms(self) -> float:
        """Batch ms per query."""
        return self.batch_s / self.n_batch * 1e3


def latency(calls: dict, rows: list, batch, repeats: int, *, warm: list = (), block: int = 1, seed: int = 0,
            batch_calls: dict | None = None, stat=np.median) -> dict[str, Latency]:
    """Online (one row per call, interleaved) and batch (`repeats` calls on `batch`, interleaved) timings of
    every system; batch_calls: other functions for the batch calls (a system whose batch API differs; a system
    without one has no batch time)."""
    online = time_calls(calls, rows, warm=warm, block=block, seed=seed)
    bt = time_calls(calls if batch_calls is None else batch_calls, [batch] * repeats, seed=seed)
    n = len(batch) if isinstance(batch, list) else batch.shape[0]
    return {name: Latency(online[name], float(stat(bt[name])) if name in bt else np.nan, n) for name in calls}


def ratio(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """median(a) / median(b) and its 95% bootstrap interval; a[i] and b[i] were timed on the same query in the
    same round, so queries are resampled in pairs."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(a), size=(n_boot, len(a)))
    boot = np.median(a[pick], axis=1) / np.median(b[pick], axis=1)
    return float(np.median(a) / np.median(b)), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def verdict(low: float, high: float) -> str:
    """Reading of a latency ratio's interval (first system / second system)."""
    return "faster" if high < 1.0 else "slower" if low > 1.0 else "equal within noise"


def recall_at_latency(latency_ms: np.ndarray, recall: np.ndarray, budget: float) -> float | None:
    """Best recall a system reaches within `budget`, interpolated linearly in log-latency between its measured
    settings (its frontier: a slower setting never counts as worse than a faster one). None: no setting that fast."""
    order = np.argsort(latency_ms)
    lat, rec = np.asarray(latency_ms)[order], np.maximum.accumulate(np.asarray(recall)[order])
    if budget < lat[0]:
        return None
    if budget >= lat[-1]:
        return float(rec[-1])
    return float(np.interp(np.log(budget), np.log(lat), rec))


# ---------------------------------------------------------------- insertion
@dataclass
class Insertion:
    items: int
    seconds: float
    warmup_s: float = 0.0  # the untimed warm-up call (compilation included): reported apart

    @property
    def per_s(self) -> float:
        return self.items / self.seconds if self.seconds else float("nan")

    @property
    def us_per_item(self) -> float:
        return self.seconds / self.items * 1e6 if self.items else float("nan")


def insert(model, titles: list[str], ids: list[str], *, warm: int = 0, warm_into=None) -> Insertion:
    """Time one `add_items` call of titles into model, single thread. First the first `warm` items go in
    untimed: into `warm_into` (a throw-away copy) if given, else into model itself (and are not counted)."""
    warm_s = 0.0
    if warm:
        target = model if warm_into is None else warm_into
        with single_thread():
            warm_s, _ = clock(api.add, target, titles[:warm], ids[:warm])
        if warm_into is None:
            titles, ids = titles[warm:], ids[warm:]
    with single_thread():
        seconds, _ = clock(api.add, model, titles, ids)
    return Insertion(len(ids), seconds, warm_s)


def insert_novel(model, data, split, **kw) -> Insertion:
    """`insert` of the split's novel items that the model does not hold yet."""
    missing = [j for j in split.novel if not api.holds(model, data.item_ids[j])]
    return insert(model, [data.item_texts[j] for j in missing], [data.item_ids[j] for j in missing], **kw)


@contextlib.contextmanager
def busy_neighbour(on: bool = True):
    """Another process spinning on one core for the duration (what a shared serving box looks like)."""
    import subprocess
    import sys

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        time.sleep(0.5 if on else 0)  # the spinner is up and running before the first timed call
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
