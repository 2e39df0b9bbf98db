"""The Ray side: a shard worker (an actor per shard replica) and the bulk cold-start task.

Actors, not Ray Serve deployments: a shard is state with one writer (its log), its replicas must all receive
every write in order, and the router picks the replica it reads from; Serve's HTTP proxy, controller and
replica autoscaling would add a hop per query and hide the replicas behind a load balancer that cannot route
writes. An actor restarts in place (max_restarts) and Ray retries the calls it missed (max_task_retries), so a
killed worker reloads its directory, replays its log and then receives the writes sent meanwhile (each applied
once: `Shard.apply` skips those it has).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .shard import Shard

try:
    import ray

    # a read is never retried by Ray (the router asks another replica, or answers partial); writes and the
    # rest are retried on a restarted worker (the actor's max_task_retries), where `Shard.apply` skips repeats
    _read = ray.method(max_task_retries=0)
except ImportError:  # cutting a model (`sharding.cut`) needs no Ray
    def _read(f):
        return f


class ShardWorker:
    """One replica of one shard. The primary (replica 0) logs every write to the shard directory before
    applying it; the other replicas apply them in memory and catch up from that log when they restart."""

    def __init__(self, folder: str, primary: bool):
        self.folder = Path(folder)
        self.primary = primary
        self.shard = Shard.load(self.folder, log=primary)

    def ping(self) -> dict:
        return {"pid": os.getpid(), "seq": self.shard.seq, "items": len(self.shard), "primary": self.primary}

    @_read
    def search(self, X, clusters, paths, beam, k, subset, split_probe):
        return self.shard.search(X, clusters, paths, beam, k, subset, split_probe)

    def apply(self, record: dict) -> int:
        self.shard.apply(record)
        return self.shard.seq

    def holds(self, ids):
        return self.shard.holds(ids)

    def homes(self, ids):
        return self.shard.homes(ids)

    def n_homes(self) -> int:
        return len(self.shard) - len(self.shard.guests)

    def max_key(self) -> int:
        return self.shard.max_key()

    def refine(self, X, ids, weights):
        return self.shard.refine(X, ids, weights)

    def save(self) -> int:
        """Checkpoint the shard directory (primary only): a snapshot of every write so far, an empty log."""
        if not self.primary:
            raise RuntimeError("only a shard's primary replica writes its directory")
        self.shard.save(self.folder)
        return self.shard.seq

    def memory(self) -> int:
        """Bytes of the shard's catalogue arrays (what sharding divides)."""
        return int(sum(v.nbytes for v in self.shard.catalog.arrays().values()))


_coldstart_cache: dict = {}


def synthesize_chunk(router_dir: str, log_size: int, titles: list[str], threads: int = 1):
    """Bulk cold start, one Ray task: featurize and synthesize (select, assign, generate) a chunk of new titles
    with the router's model read from its directory (cached per worker process, reloaded when its log grew).
    Returns (weights CSR, biases, clusters, rows with no known n-gram)."""
    from ..model import XRMetaModel

    key = router_dir
    cached = _coldstart_cache.get(key)
    if cached is None or cached[0] != log_size:
        _coldstart_cache[key] = cached = (log_size, XRMetaModel.load(router_dir))
    model = cached[1]
    S = model.featurizer.transform(titles, threads=threads)
    empty = np.flatnonzero(np.diff(S.indptr) == 0)
    if len(empty):
        return None, None, None, empty
    W, biases, clusters = model.coldstart.synthesize(S, threads)
    return W, biases, clusters, empty
