"""What a build costs besides time: peak memory (sampled RSS) and size on disk; and a way to silence libraries
that print progress bars from native code (omikuji writes straight to file descriptor 1)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakRSS:
    """Context manager: `.peak` = highest RSS sampled every `interval` s inside the block minus RSS on entry.

    A sampler thread is needed because native code (PECOS, omikuji, napkinXC, torch) allocates outside Python's
    tracemalloc. Memory freed by earlier steps and reused inside the block is not counted; a spike shorter than
    the interval can be missed.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self._start = self._max = rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, rss_bytes())
        self.peak = self._max - self._start
        return False


def path_bytes(path: str | Path) -> int:
    """Bytes of a file, or of every file below a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@contextlib.contextmanager
def quiet_fds():
    """Send native stdout/stderr (fds 1 and 2) to /dev/null inside the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)
