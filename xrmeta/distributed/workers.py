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
import scipy.sparse as smat

from ..catalog import memory
from ..errors import ModelError
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
        try:
            self._shard = Shard.load(self.folder, log=primary)
            self.error = None
        # kept, not raised: Ray would restart the worker to fail the same way forever
        except Exception as e:  # noqa: BLE001
            self._shard, self.error = None, f"{self.folder}: {e}"

    @property
    def shard(self) -> Shard:
        if self._shard is None:
            raise ModelError(f"this worker could not load its shard: {self.error}")
        return self._shard

    def ping(self) -> dict:
        """Where the worker runs and what it holds, or {"error": why it could not load its shard}."""
        if self.error is not None:
            return {"pid": os.getpid(), "error": self.error}
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "seq": self.shard.seq,
                "items": len(self.shard), "primary": self.primary}

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

    def trained_rows(self, slots):
        return self.shard.trained_rows(slots)

    def refine(self, X, ids, weights):
        return self.shard.refine(X, ids, weights)

    def save(self) -> int:
        """Checkpoint the shard directory (primary only): a snapshot of every write so far, an empty log."""
        if not self.primary:
            raise RuntimeError("only a shard's primary replica writes its directory")
        self.shard.save(self.folder)
        return self.shard.seq

    def memory(self) -> int:
        """Bytes of the shard's catalogue (`catalog.memory`: live arrays, inserted chunks included, and ids)."""
        m = memory(self.shard.catalog)
        return m["live"] + m["ids"]


def neighbour_rows(nbrs: np.ndarray, primaries: list, timeout: float) -> tuple:
    """The trained classifiers of new items' neighbours (nbrs (n, K) whole-catalogue slots, -1 for none), read
    from the shards that hold them (each trained item is in one): `ColdStart.generate`'s rows argument."""
    wanted = np.unique(nbrs[nbrs >= 0])
    answers = ray.get([w.trained_rows.remote(wanted) for w in primaries], timeout=timeout)
    at = np.concatenate([np.flatnonzero(found) for found, _, _ in answers])
    if len(at) != len(wanted) or len(np.unique(at)) != len(at):
        raise ModelError(f"the shards hold {len(at)} of {len(wanted)} neighbour classifiers, each once")
    order = np.argsort(at)
    W = smat.vstack([rows for _, rows, _ in answers]).tocsr()[order]
    biases = np.concatenate([b for _, _, b in answers])[order]
    where = np.where(nbrs >= 0, np.searchsorted(wanted, np.maximum(nbrs, 0)), -1)
    return (where, biases.astype(np.float32), W.indptr.astype(np.int64), W.indices.astype(np.int32),
            W.data.astype(np.float32))


def synthesize_sharded(coldstart, S, primaries: list, threads: int, timeout: float):
    """`ColdStart.synthesize` for a router whose catalogue holds no classifiers: select and assign here, the
    neighbours' classifiers read from the shards, then generate. Returns (weights CSR, biases, clusters)."""
    if coldstart.generator is None:
        raise ModelError(f"no {coldstart.config.generator!r} generator yet: train it with `fit_generator`")
    nbrs, sims = coldstart.selector.search(S, coldstart.config.k, threads)
    clusters = coldstart.assign(S, nbrs, sims, threads)
    W, biases = coldstart.generate(S, nbrs, sims, threads, neighbour_rows(nbrs, primaries, timeout))
    return W, biases, clusters


_router_cache: dict = {}


def synthesize_chunk(router_dir: str, log_size: int, titles: list[str], primaries: list, timeout: float,
                     threads: int = 1):
    """Bulk cold start, one Ray task: featurize and synthesize (`synthesize_sharded`) a chunk of new titles with
    the router's model read from its directory (cached per worker process, reloaded when its log grew).
    Returns (weights CSR, biases, clusters, rows with no known n-gram); nothing synthesized if there are any."""
    from ..model import XRMetaModel

    cached = _router_cache.get(router_dir)
    if cached is None or cached[0] != log_size:
        _router_cache[router_dir] = cached = (log_size, XRMetaModel.load(router_dir))
    model = cached[1]
    S = model.featurizer.transform(titles, threads=threads)
    empty = np.flatnonzero(np.diff(S.indptr) == 0)
    if len(empty):
        return None, None, None, empty
    return (*synthesize_sharded(model.coldstart, S, primaries, threads, timeout), empty)
