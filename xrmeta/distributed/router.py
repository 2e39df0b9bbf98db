"""`ShardedModel`: an `XRMetaModel` whose leaf layer is split over Ray actors, with the same API.

The router (this object, in the caller's process) featurizes, runs the beam search over the tree's upper layers,
sends each query to the shards that own its beam's leaf clusters (one replica each) and merges their top-k by
(score, key), the whole catalogue's order. New items are synthesized here (select and assign with the router's
model, which holds the trained items' titles and clusters but not their classifiers; generate with their
neighbours' classifiers read from the shards; big batches in parallel Ray tasks) and written to the shards that
own their clusters. Reads never wait longer than `timeout`: a shard that does not answer is asked again on
another replica, and a query it still lacks comes back flagged `partial`. Writes wait for every replica of
every shard they touch (Ray retries them on a restarted worker).

One process writes (add_items, remove_items, add_feedback, save); any number may query the same shards
(`ShardedModel.open(folder, writer=False)` attaches to the running actors).
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as smat

from .. import modeldir
from ..catalog import check_search, checked_queries
from ..data.xmc import new_ids_problem, preview
from ..errors import ModelError
from ..model import XRMetaModel, _as_list, check_beam_size, check_texts, feedback_arguments
from ..threads import resolve
from . import sharding
from .shard import add_record, remove_record, replace_record
from .workers import ShardWorker, synthesize_chunk, synthesize_sharded

try:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError:  # pragma: no cover - the message is the point
    ray = None

BULK_CHUNK = 20_000  # add_items of more titles than this synthesizes them in parallel Ray tasks of this size
MIN_CPUS = 0.0001  # what a shard worker reserves at least (Ray's smallest unit; see start_workers)
# a bulk task's CPUs, short of 1 so that the workers' MIN_CPUS do not cost a node a task (2 workers' reservations
# on 2 cores leave room for one 1-CPU task)
TASK_CPUS = 0.99


class ShardedResults(NamedTuple):
    """`Results` plus partial (n,) bool: a shard that the query's beam reaches gave no answer in time (none of
    its replicas), so the row lacks that shard's items."""

    ids: np.ndarray
    scores: np.ndarray
    partial: np.ndarray


def _serialised(method):
    """A write of ShardedModel: checked for a writer, and run under its write lock."""
    @functools.wraps(method)
    def write(self, *args, **kwargs):
        if not self.writer:
            raise ModelError("this ShardedModel was opened with writer=False: it only queries")
        with self._writes:
            return method(self, *args, **kwargs)
    return write


def _need_ray():
    if ray is None:
        raise ModelError("xrmeta.distributed needs Ray: pip install 'xrmeta[distributed]'")
    if not ray.is_initialized():  # a local instance; call ray.init(address=...) first to join a cluster
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)


class ShardedModel:
    """Make one with `from_model` (cut a model, start its shards) or `open` (a directory `cut` wrote)."""

    def __init__(self, folder: Path, search: tuple, router: XRMetaModel | None, cluster_shard: np.ndarray,
                 workers: list[list], timeout: float, write_timeout: float, hedge_after: float):
        self.folder = folder
        self.featurizer, self.upper, self.configs = search
        self.router = router  # the writer's model of the trained items: the cold start; None: queries only
        self.cluster_shard = cluster_shard
        self.n_shards = len(workers)
        self.workers = workers  # [shard][replica] actor handles; replica 0 is the primary (it logs)
        self.timeout = timeout
        self.hedge_after = min(hedge_after, timeout)
        self.write_timeout = write_timeout
        self.writer = router is not None
        self._turn = np.zeros(self.n_shards, dtype=np.int64)  # round robin over replicas
        self._last = [0] * self.n_shards  # the replica last asked, per shard
        self._down: dict = {}  # (shard, replica) whose worker died -> its ping, answered once it is back
        self._writes = threading.Lock()  # one write at a time: each shard's writes are numbered in order
        if self.writer:
            self._seq = [s["seq"] for s in self._all(lambda w: w.ping.remote())]
            keys = self._all(lambda w: w.max_key.remote())
            info = json.loads((folder / sharding.SHARDING).read_text(encoding="utf-8"))
            self._next_key = max(max(keys) + 1, int(info["next_key"]))

    # ------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model: XRMetaModel | str | Path, n_shards: int, replicas: int = 1,
                   out: str | Path | None = None, **options) -> ShardedModel:
        """Cut `model` (an `XRMetaModel` or its directory) into n_shards (`cut`) in out (default: a new
        temporary directory) and serve it with `replicas` workers per shard; options as `open`."""
        out = Path(tempfile.mkdtemp(prefix="xrmeta-shards-")) if out is None else Path(out)
        sharding.cut(model, n_shards, out)
        return cls.open(out, replicas, **options)

    @classmethod
    def open(cls, folder: str | Path, replicas: int = 1, timeout: float = 2.0, writer: bool = True,
             write_timeout: float = 600.0, cpus_per_worker: float = 0.0, hedge_after: float = 0.1) -> ShardedModel:
        """Serve the sharded directory `folder`: start its workers on the Ray cluster (a local one unless
        ray.init joined another), or attach to those already running for it (named after the directory).
        timeout: seconds a query batch waits for the shards, then answers partial; hedge_after: seconds after
        which a shard's unanswered query is also sent to its next replica (the first answer wins, and the slow
        one is passed over until it answers a ping; batches that take longer than this should raise it);
        writer: this process writes (it loads the router's cold start with its log); write_timeout: seconds a
        write waits for all replicas. cpus_per_worker: Ray CPUs each worker reserves (at least MIN_CPUS, which
        puts no practical limit on how many share a machine)."""
        folder = Path(folder).resolve()
        info = read_sharding(folder)
        if not isinstance(replicas, int) or replicas < 1:
            raise ModelError(f"replicas must be an integer >= 1, got {replicas!r}")
        if not (timeout > 0 and hedge_after > 0):
            raise ModelError(f"timeout and hedge_after must be > 0 seconds, got {timeout!r} and {hedge_after!r}")
        with np.load(folder / sharding.PLAN) as z:
            cluster_shard = z["cluster_shard"]
        workers = start_workers(folder, replicas, cpus_per_worker)
        status = ray.get([w.ping.remote() for row in workers for w in row], timeout=write_timeout)
        failed = [st["error"] for st in status if "error" in st]
        if failed:
            stop_workers(folder)
            raise ModelError(f"{len(failed)} shard workers could not load their shard; the first: {failed[0]}")
        if writer:  # the cold start: featurizer, tree, the trained items' titles and clusters, generator
            router = XRMetaModel.load(folder / info["router"], log=True)
            search = router.featurizer, router.upper, router.configs
        else:  # what a query reads above the leaves
            router, search = None, modeldir.read_search(folder / info["router"], int(info["n_clusters"]))
        return cls(folder, search, router, cluster_shard, workers, float(timeout), float(write_timeout),
                   float(hedge_after))

    def close(self, stop: bool = True) -> None:
        """Release the router's log; stop: also end the workers (others attached to them lose them)."""
        if self.router is not None and self.router.log is not None:
            self.router.log.close()
        if stop:
            stop_workers(self.folder)

    # ------------------------------------------------------------ search
    def predict(self, queries: list[str], k: int = 10, beam_size: int | None = None, subset: str = "all",
                threads: int = 1) -> ShardedResults:
        """As `XRMetaModel.predict`, plus `partial` per query."""
        X = self.featurizer.transform(_as_list(queries, "queries"), threads=threads)
        return self.predict_features(X, k, beam_size, subset, threads)

    def predict_features(self, X: smat.spmatrix, k: int = 10, beam_size: int | None = None, subset: str = "all",
                         threads: int = 1) -> ShardedResults:
        """As `XRMetaModel.predict_features`, plus `partial` per query."""
        beam = check_beam_size(beam_size, self.configs)
        resolve(threads)
        check_search(subset, k)
        X = smat.csr_matrix(X, dtype=np.float32)
        n_features = self.featurizer.n_features
        if X.shape[1] != n_features:
            raise ModelError(f"queries have {X.shape[1]} features, the model {n_features}")
        X = checked_queries(X, n_features)
        cs, n_clusters = self.configs.coldstart, self.upper.n_clusters
        wide = min(beam * cs.inserted_beam_factor if subset != "observed" else beam, n_clusters)
        clusters, paths = self.upper.top_clusters(X, min(beam, n_clusters), threads, wide)
        clusters[np.diff(X.indptr) == 0] = -1  # a query of unknown words finds nothing, as in the whole model
        n = X.shape[0]
        asked = {}
        for s in range(self.n_shards):
            rows = np.flatnonzero(((clusters >= 0) & (self.cluster_shard[np.maximum(clusters, 0)] == s)).any(axis=1))
            if len(rows):
                asked[s] = (rows, (X[rows], clusters[rows], paths[rows], beam, int(k), subset, cs.split_probe))
        answers, partial = self._fan_out(asked)
        return _merge(answers, asked, partial, n, int(k))

    def _fan_out(self, asked: dict) -> tuple[dict, set]:
        """Send each shard its queries, one replica at a time: a replica that fails, or has not answered within
        hedge_after, is backed up by the next one (the first answer wins). Returns the answers per shard and the
        shards that gave none within the timeout."""
        start = time.monotonic()
        deadline = start + self.timeout
        answers, pending, tried, backup_at = {}, {}, {}, {}
        for s, (_, args) in asked.items():
            pending[self._call(s, args)] = s, self._last[s]
            tried[s] = 1
            backup_at[s] = start + self.hedge_after
        while pending:
            now = time.monotonic()
            for s in [s for s in asked if s not in answers and tried[s] < len(self.workers[s])
                      and backup_at[s] <= now]:  # slow or dead: ask the next replica too
                self._suspect(s, self._last[s])
                pending[self._call(s, asked[s][1])] = s, self._last[s]
                tried[s] += 1
                backup_at[s] = now + self.hedge_after
            if now >= deadline:
                break
            waiting = [backup_at[s] for s in asked if s not in answers and tried[s] < len(self.workers[s])]
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(min([deadline] + waiting) - now, 0))
            if not ready:
                continue
            s, r = pending.pop(ready[0])
            try:
                answer = ray.get(ready[0])
            except ray.exceptions.RayError:  # the worker died
                self._suspect(s, r)
                if s not in answers and tried[s] < len(self.workers[s]):
                    backup_at[s] = time.monotonic()
                continue
            if s not in answers:
                answers[s] = answer
            if len(answers) == len(asked):
                break
        for ref in pending:  # late or orphaned calls: nobody waits for them
            try:
                ray.cancel(ref)
            except (ray.exceptions.RayError, ValueError, TypeError):
                pass
        return answers, set(asked) - set(answers)

    def _suspect(self, s: int, r: int) -> None:
        """Pass over shard s's replica r until it answers a ping (it died, or let a query go unanswered)."""
        if len(self.workers[s]) > 1:
            self._down.setdefault((s, r), self.workers[s][r].ping.remote())

    def _call(self, s: int, args: tuple):
        """Ask shard s's next replica (round robin), passing over suspects until they answer a ping (calls to a
        worker Ray is restarting wait for it)."""
        if self._down:
            back, _ = ray.wait(list(self._down.values()), num_returns=len(self._down), timeout=0)
            self._down = {key: ref for key, ref in self._down.items() if ref not in back}
        n = len(self.workers[s])
        up = [r for r in range(n) if (s, r) not in self._down] or list(range(n))
        r = up[self._turn[s] % len(up)]
        self._turn[s] += 1
        self._last[s] = r
        return self.workers[s][r].search.remote(*args)

    # ------------------------------------------------------------ writes
    @_serialised
    def add_items(self, titles: list[str], ids: list[str], threads: int = -1) -> None:
        """As `XRMetaModel.add_items`: the batch is checked whole first (nothing is written on a bad title or id),
        synthesized here (in Ray tasks of BULK_CHUNK titles when larger), and written to every shard that owns one
        of its items' clusters; searchable when this returns."""
        titles, ids = _as_list(titles, "titles"), _as_list(ids, "ids")
        resolve(threads)
        if len(titles) != len(ids):
            raise ModelError(f"add_items: {len(titles)} titles for {len(ids)} ids")
        problem = new_ids_problem(ids)
        if problem:
            raise ModelError(f"add_items: {problem}")
        check_texts("add_items", ids, titles)
        if not ids:
            return
        taken = [i for i, held in zip(ids, self._held_anywhere(ids)) if held]
        if taken:
            raise ModelError(f"add: ids already in the catalogue {preview(taken)}")
        W, biases, clusters = self._synthesize(titles, ids, threads)
        first = clusters[:, 0]
        keys = np.empty(len(ids), dtype=np.int64)
        keys[np.argsort(first, kind="stable")] = self._next_key + np.arange(len(ids))  # the catalogue's slots
        self._next_key += len(ids)
        touched = np.zeros((len(ids), self.n_shards), dtype=bool)
        valid = clusters >= 0
        touched[np.nonzero(valid)[0], self.cluster_shard[clusters[valid]]] = True
        records = {}
        for s in range(self.n_shards):
            rows = np.flatnonzero(touched[:, s])
            if len(rows):
                records[s] = lambda seq, rows=rows: add_record(seq, [ids[j] for j in rows], keys[rows],
                                                               clusters[rows], W[rows], biases[rows])
        self._write(records)

    def _synthesize(self, titles, ids, threads):
        """(weights, biases, clusters) of new items: here, or in Ray tasks for a batch larger than BULK_CHUNK; the
        neighbours' classifiers come from the shards (the router's catalogue holds none)."""
        primaries = [replicas[0] for replicas in self.workers]
        if len(titles) <= BULK_CHUNK:
            S = self.featurizer.transform(titles, threads=threads)
            empty = np.flatnonzero(np.diff(S.indptr) == 0)
            if not len(empty):
                return synthesize_sharded(self.router.coldstart, S, primaries, threads, self.write_timeout)
        else:
            log = Path(self.router.workdir) / "items.log"
            task = ray.remote(num_cpus=TASK_CPUS)(synthesize_chunk)
            starts = range(0, len(titles), BULK_CHUNK)
            parts = ray.get([task.remote(str(self.router.workdir), log.stat().st_size if log.exists() else 0,
                                         titles[a: a + BULK_CHUNK], primaries, self.write_timeout)
                             for a in starts])
            empty = [a + j for a, p in zip(starts, parts) for j in p[3].tolist()]
            if not empty:
                m = max(p[2].shape[1] for p in parts)
                clusters = np.vstack([np.pad(p[2], ((0, 0), (0, m - p[2].shape[1])), constant_values=-1)
                                      for p in parts])
                return smat.vstack([p[0] for p in parts]).tocsr(), np.concatenate([p[1] for p in parts]), clusters
        raise ModelError(f"add_items: titles share no n-gram with the vocabulary, ids {[ids[i] for i in empty[:5]]}")

    @_serialised
    def remove_items(self, ids: list[str]) -> None:
        """As `XRMetaModel.remove_items`: an unknown or repeated id removes nothing (ModelError). Each shard
        holding one of them delists it; a trained item also leaves the router's cold start (never a new item's
        neighbour once the router's catalogue compacts, as in `XRMetaModel`)."""
        ids = _as_list(ids, "ids")
        if len(set(ids)) != len(ids):
            raise ModelError("remove: duplicate ids in the request")
        if not ids:
            return
        held = self._holders(ids)
        unknown = [i for i, h in zip(ids, held.any(axis=1)) if not h]
        if unknown:
            raise ModelError(f"remove: unknown item ids {preview(unknown)}")
        records = {s: (lambda seq, s=s: remove_record(seq, [i for i, h in zip(ids, held[:, s]) if h]))
                   for s in range(self.n_shards) if held[:, s].any()}
        self._write(records)
        trained = [i for i in ids if i in self.router]
        if trained:
            self.router.remove_items(trained)

    @_serialised
    def add_feedback(self, query_texts: list[str], item_ids: list[str], weights=None, threads: int = -1) -> None:
        """As `XRMetaModel.add_feedback`: each clicked item's classifier is refined on the shard that holds its
        best cluster and replaced on every shard holding it. Clicks are not kept for a retrain (retrain the source
        model and cut it again)."""
        queries, ids, weights = feedback_arguments(query_texts, item_ids, weights)
        resolve(threads)
        homes = self._homes(ids) if ids else np.zeros((0, self.n_shards), dtype=bool)
        unknown = [i for i, h in zip(ids, homes.any(axis=1)) if not h]
        if unknown:
            raise ModelError(f"add_feedback: unknown or removed item ids {preview(unknown)}")
        check_texts("add_feedback", ids, queries, "query")
        if not ids:
            return
        X = self.featurizer.transform(queries, threads=threads)
        known = np.diff(X.indptr) > 0
        home = homes.argmax(axis=1)
        refs = {}
        for s in range(self.n_shards):
            rows = np.flatnonzero(known & (home == s))
            if len(rows):
                refs[s] = (rows, self.workers[s][0].refine.remote(X[rows], [ids[j] for j in rows], weights[rows]))
        if not refs:
            return
        moved = {s: ray.get(ref, timeout=self.write_timeout) for s, (rows, ref) in refs.items()}
        # the whole catalogue's order: moved items by first click over the batch, stored by best cluster
        first_click = {}
        for j, i in enumerate(ids):
            first_click.setdefault(i, j)
        items = [(first_click[i], s, n) for s, (m_ids, *_ ) in moved.items() for n, i in enumerate(m_ids)]
        items.sort()
        if not items:
            return
        moved_ids = [moved[s][0][n] for _, s, n in items]
        W = smat.vstack([moved[s][1][n] for _, s, n in items]).tocsr()
        biases = np.array([moved[s][2][n] for _, s, n in items], dtype=np.float32)
        best = np.array([moved[s][3][n] for _, s, n in items], dtype=np.int64)
        keys = np.empty(len(items), dtype=np.int64)
        keys[np.argsort(best, kind="stable")] = self._next_key + np.arange(len(items))
        self._next_key += len(items)
        held = self._holders(moved_ids)
        records = {}
        for s in range(self.n_shards):
            rows = np.flatnonzero(held[:, s])
            if len(rows):
                records[s] = lambda seq, rows=rows: replace_record(seq, [moved_ids[j] for j in rows], keys[rows],
                                                                   W[rows], biases[rows])
        self._write(records)

    @_serialised
    def save(self) -> None:
        """Checkpoint: every shard's primary writes a snapshot of its directory (its log starts empty), and the
        router's model directory is saved in place."""
        ray.get([replicas[0].save.remote() for replicas in self.workers], timeout=self.write_timeout)
        self.router.save(self.router.workdir)

    def _write(self, records: dict) -> None:
        """Send each shard its write (a function of the write's number) to every replica, and wait for them all.
        A shard that refuses it (its log cannot be written, say) keeps its state; the error names the shards that
        applied the write and those that did not, and the write numbers are read back from the shards."""
        refs = []
        for s, make in records.items():
            self._seq[s] += 1
            record = make(self._seq[s])
            refs += [(s, w.apply.remote(record)) for w in self.workers[s]]
        _, waiting = ray.wait([r for _, r in refs], num_returns=len(refs), timeout=self.write_timeout)
        if waiting:
            late = sorted({s for s, r in refs if r in waiting})
            raise ModelError(f"shards {late} did not confirm the write within {self.write_timeout} s; it is queued "
                             f"and applies when they are back")
        failed = {}
        for s, ref in refs:
            try:
                ray.get(ref)
            except ray.exceptions.RayError as e:
                failed.setdefault(s, e)
        if failed:
            self._seq = [status["seq"] for status in self._all(lambda w: w.ping.remote())]
            applied = sorted(set(records) - set(failed))
            s, e = next(iter(failed.items()))
            raise ModelError(f"the write failed on shards {sorted(failed)} (applied on {applied}); shard {s}: "
                             f"{getattr(e, 'cause', e)}") from None

    def _all(self, call) -> list:
        """One call per shard (to its primary), the answers in shard order."""
        refs = [call(replicas[0]) for replicas in self.workers]
        return ray.get(refs, timeout=self.write_timeout)

    def _holders(self, ids: list[str]) -> np.ndarray:
        """(n, shards) bool: which shards hold each id live."""
        return np.stack(self._all(lambda w: w.holds.remote(ids)), axis=1).reshape(len(ids), self.n_shards)

    def _homes(self, ids: list[str]) -> np.ndarray:
        """(n, shards) bool: the shard holding each id's best cluster."""
        return np.stack(self._all(lambda w: w.homes.remote(ids)), axis=1).reshape(len(ids), self.n_shards)

    def _held_anywhere(self, ids: list[str]) -> np.ndarray:
        return self._holders(ids).any(axis=1)

    # ------------------------------------------------------------ inspection
    def __len__(self) -> int:
        """Live items: trained and inserted, not removed (an item held by two shards counts once)."""
        return sum(self._all(lambda w: w.n_homes.remote()))

    def __contains__(self, item_id) -> bool:
        """Whether item_id names a live item."""
        return isinstance(item_id, str) and bool(self._holders([item_id]).any())

    def status(self) -> list[list[dict]]:
        """Per shard, per replica: its process id, last write applied, live items (a dead replica: None)."""
        out = []
        for replicas in self.workers:
            row = []
            for w in replicas:
                try:
                    row.append(ray.get(w.ping.remote(), timeout=self.timeout))
                except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
                    row.append(None)
            out.append(row)
        return out


NAMESPACE = "xrmeta"  # the workers' Ray namespace: routers in any job find them by name


def _worker_name(folder: Path, shard: int, replica: int) -> str:
    tag = hashlib.sha256(str(Path(folder).resolve()).encode("utf-8")).hexdigest()[:12]
    return f"xrmeta-{tag}-{shard}-{replica}"


def start_workers(folder: str | Path, replicas: int = 1, cpus: float = 0.0) -> list[list]:
    """The shard workers of a sharded directory, named after it: started where missing (dealt over the
    cluster's nodes; detached, so they outlive the process that started them), attached where running. They
    restart when their process dies. Returns [shard][replica] actor handles."""
    _need_ray()
    folder = Path(folder).resolve()
    info = read_sharding(folder)
    actor = ray.remote(ShardWorker)
    # dealt over the alive nodes in turn (Ray's SPREAD placed every 0-CPU worker on one node of two); soft: a
    # worker restarts elsewhere if its node is gone. Ray ignores a soft affinity that asks for no resource
    # (measured: 2 workers on 2 nodes landed at random), so every worker asks for at least MIN_CPUS.
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    return [[actor.options(name=_worker_name(folder, s, r), namespace=NAMESPACE, get_if_exists=True,
                           lifetime="detached", max_restarts=-1, max_task_retries=-1, num_cpus=max(cpus, MIN_CPUS),
                           scheduling_strategy=NodeAffinitySchedulingStrategy(
                               nodes[(s * replicas + r) % len(nodes)], soft=True)
                           ).remote(str(folder / name), r == 0)
             for r in range(replicas)] for s, name in enumerate(info["shards"])]


def stop_workers(folder: str | Path) -> int:
    """End every worker of a sharded directory (all replicas) on the current Ray cluster; returns how many."""
    _need_ray()
    folder = Path(folder).resolve()
    prefix = _worker_name(folder, 0, 0).rsplit("-", 2)[0] + "-"
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == NAMESPACE and a["name"].startswith(prefix)]
    for name in names:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    return len(names)


def read_sharding(folder: Path) -> dict:
    """sharding.json of a sharded directory, checked."""
    path = Path(folder) / sharding.SHARDING
    if not path.exists():
        raise ModelError(f"{folder}: no {sharding.SHARDING}: not a sharded directory (make one with "
                         f"`python -m xrmeta.shard`)")
    info = json.loads(path.read_text(encoding="utf-8"))
    if info.get("format") != sharding.FORMAT:
        raise ModelError(f"{path}: format {info.get('format')!r}, this xrmeta reads {sharding.FORMAT}")
    return info


def _merge(answers: dict, asked: dict, failed: set, n: int, k: int) -> ShardedResults:
    """Each query's top-k over its shards' answers: by score, then key (the whole catalogue's slot order); an item
    held by two shards counts once, with its best score."""
    per_query = [[] for _ in range(n)]
    partial = np.zeros(n, dtype=bool)
    for s, (rows, _) in asked.items():
        if s in failed or s not in answers:
            partial[rows] = True
            continue
        found, scores, keys = answers[s]
        for j, row in enumerate(rows.tolist()):
            per_query[row].extend(zip((-scores[j, : len(found[j])]).tolist(), keys[j].tolist(), found[j]))
    ids = np.full((n, k), "", dtype=object)
    out_scores = np.full((n, k), -np.inf, dtype=np.float32)
    for i, cands in enumerate(per_query):
        cands.sort()
        seen, t = set(), 0
        for neg, _, item in cands:
            if item in seen:
                continue
            seen.add(item)
            ids[i, t], out_scores[i, t] = item, -neg
            t += 1
            if t == k:
                break
    return ShardedResults(ids.astype(str), out_scores, partial)
