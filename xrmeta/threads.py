"""One threads rule for every call that takes `threads`, as in PECOS and hnswlib: -1 means all cores, n >= 1
means n threads (capped at the cores this process may run on). Anything else is an error.

The serving kernels are C++ (`xrmeta._core`, cpp/): they take the resolved count and cut a batch into that many
chunks, one thread runs in the caller's thread (`cpp/include/xrmeta/threads.hpp`). The numba kernels left (the
test oracle, training helpers) are compiled twice from one Python function (`parallel_and_serial`): `run` calls
the serial build for one thread, so `threads=1` never enters a numba parallel region (whose workers would wait
on a busy core), and the parallel build under numba's thread-local thread count otherwise. numba is imported
only by them: serving never pays for it.
"""

from __future__ import annotations

import os
import types

import numpy as np

ALL = -1
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve(threads) -> int:
    """The number of threads `threads` asks for: -1 -> all cores (`CORES`), n >= 1 -> min(n, CORES)."""
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
        raise ValueError(f"threads must be -1 (all cores) or an integer >= 1, got {threads!r}")
    if threads == ALL:
        return CORES
    if threads < 1:
        raise ValueError(f"threads must be -1 (all cores) or an integer >= 1, got {threads}")
    return min(int(threads), CORES)


def parallel_and_serial(fn=None, **options):
    """Decorator: (parallel build, serial build) of one numba kernel; `prange` runs as `range` in the serial one.

    The serial build compiles a copy of the function named `<name>_serial`: numba's on-disk cache (`cache=True`)
    files a function under its module, name and line, not its flags, so with one name the builds would load
    each other's machine code (a serial call could then run the parallel code, and enter a parallel region)."""
    import numba

    def build(f):
        serial = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_serial", f.__defaults__,
                                    f.__closure__)
        serial.__qualname__ = f.__qualname__ + "_serial"
        serial.__kwdefaults__, serial.__doc__, serial.__module__ = f.__kwdefaults__, f.__doc__, f.__module__
        return numba.njit(parallel=True, **options)(f), numba.njit(parallel=False, **options)(serial)
    return build if fn is None else build(fn)


def run(kernel, threads: int, *args):
    """Call a numba (parallel, serial) kernel pair with `resolve(threads)` threads (at most numba's own count);
    returns the kernel's result."""
    import numba

    n = min(resolve(threads), numba.config.NUMBA_NUM_THREADS)
    parallel, serial = kernel
    if n == 1:
        return serial(*args)
    before = numba.get_num_threads()
    numba.set_num_threads(n)  # thread-local in numba: other Python threads keep theirs
    try:
        return parallel(*args)
    finally:
        numba.set_num_threads(before)
