"""One threads rule for every call that takes `threads`, as in PECOS and hnswlib: -1 means all cores, n >= 1
means n threads (capped at the cores numba may use). Anything else is an error.

A kernel with a parallel loop is compiled twice from one Python function (`parallel_and_serial`): `run` calls
the serial build for one thread, so `threads=1` never enters a numba parallel region (whose workers would wait
on a busy core), and the parallel build under numba's thread-local thread count otherwise.
"""

from __future__ import annotations

import numba
import numpy as np

ALL = -1


def resolve(threads) -> int:
    """The number of threads `threads` asks for: -1 -> numba's thread count (all cores), n >= 1 -> min(n, that)."""
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
        raise ValueError(f"threads must be -1 (all cores) or an integer >= 1, got {threads!r}")
    if threads == ALL:
        return numba.config.NUMBA_NUM_THREADS
    if threads < 1:
        raise ValueError(f"threads must be -1 (all cores) or an integer >= 1, got {threads}")
    return min(int(threads), numba.config.NUMBA_NUM_THREADS)


def parallel_and_serial(fn=None, **options):
    """Decorator: (parallel build, serial build) of one kernel; `prange` runs as `range` in the serial one."""
    def build(f):
        return numba.njit(parallel=True, **options)(f), numba.njit(parallel=False, **options)(f)
    return build if fn is None else build(fn)


def run(kernel, threads: int, *args):
    """Call a (parallel, serial) kernel pair with `resolve(threads)` threads; returns the kernel's result."""
    n = resolve(threads)
    parallel, serial = kernel
    if n == 1:
        return serial(*args)
    before = numba.get_num_threads()
    numba.set_num_threads(n)  # thread-local in numba: other Python threads keep theirs
    try:
        return parallel(*args)
    finally:
        numba.set_num_threads(before)
