"""A shard: the items of the leaf clusters one worker serves, with their own directory and insert log.

A shard's catalogue (`catalog.Catalog`) keeps the tree's cluster numbering but holds only the trained items of
its clusters and the inserted items with an entry in one of them (an inserted item in clusters of two shards is
held by both, each with its own clusters). The router (`router.ShardedModel`) runs the beam search and the cold
start; a shard scores the beam's clusters it owns (`search`) and applies the writes the router sends it (`add`,
`replace`, `remove`), each logged to its `items.log` first and numbered (`seq`): a write already applied is skipped,
so a retried one is harmless and a restarted worker catches up by replaying the log over its snapshot.

Every item carries a key: its slot in the whole catalogue when it was written (trained items: their slot). Keys
order items as the whole catalogue's slots do, so merging shards' results by (score, key) breaks ties as one
catalogue would. The items of a cluster are stored in the same order, and split into the same parts
(`xrmeta.parts`), as in the whole catalogue, so a shard scores each of them exactly as it would.

Shard directory (written atomically by `save`, like a model directory: `persist.write_dir`):
  config.json                    the shard's settings and last applied write (`seq`); manifest of the files
  catalog.npz, catalog_ids.txt   its catalogue (`Catalog.save`)
  shard.npz                      owned clusters; each live item's key; the inserted items whose best cluster
                                 another shard holds ("guests": feedback on them is computed elsewhere); the
                                 whole catalogue's slot of each trained slot
  items.log                      writes since the snapshot
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as smat

from .. import persist
from ..catalog import Catalog
from ..coldstart.feedback import refine
from ..errors import ModelError

FORMAT = "xrmeta-shard-1"
ARRAYS = "shard.npz"


@dataclass
class ShardConfig:
    """What a shard needs besides its items: its place, the leaf layer's scoring and the cold start's settings
    that act inside a shard (splits, compaction, feedback)."""

    index: int
    n_shards: int
    n_features: int
    post_processor: str
    path_exponent: float
    split_size: int
    compact_at: float | None
    feedback_step: float
    threshold: float  # pruning of refined classifiers
    max_nnz: int


class Shard:
    """One shard's catalogue and keys. Not thread-safe: its Ray actor runs one call at a time (`workers`)."""

    def __init__(self, catalog: Catalog, clusters: np.ndarray, key_of: dict, guests: set, base_keys: np.ndarray,
                 config: ShardConfig, seq: int = 0):
        self.catalog = catalog
        self.config = config
        self.clusters = np.asarray(clusters, dtype=np.int64)  # the leaf clusters it owns, increasing
        self.owns = np.zeros(catalog.n_clusters, dtype=bool)
        self.owns[self.clusters] = True
        self.key_of = key_of  # live id -> key
        self.guests = guests  # live inserted ids whose best cluster is another shard's
        self.base_keys = np.asarray(base_keys, dtype=np.int64)  # trained slot -> its slot in the whole catalogue
        self.seq = int(seq)  # the last write applied
        self.log: persist.ItemLog | None = None  # set by load(log=True): every write is logged here first

    # ------------------------------------------------------------ queries
    def search(self, X: smat.csr_matrix, clusters: np.ndarray, paths: np.ndarray, beam: int, k: int,
               subset: str = "all", split_probe: int = 1) -> tuple[list, np.ndarray, np.ndarray]:
        """Top-k (ids: n lists, scores float32 (n, k), keys int64 (n, k)) among this shard's items of the beams:
        clusters / paths (n, b) each query's top leaf clusters and path scores, best first, -1 padded, as
        `UpperLayers.top_clusters` gives them; observed items count in the first `beam` of them only. Padded with
        id "" (score 0, key -1) where fewer are found."""
        clusters = np.asarray(clusters, dtype=np.int64)
        keep = clusters >= 0
        keep[keep] = self.owns[clusters[keep]]
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
        beams = smat.csr_matrix((np.asarray(paths, np.float32)[keep], clusters[keep].astype(np.int32), indptr),
                                shape=(len(clusters), self.catalog.n_clusters))
        n_observed = keep[:, :beam].sum(axis=1).astype(np.int64)
        slots, scores = self.catalog.search_clusters(X, beams, k, subset, split_probe, n_observed)
        ids = self.catalog.ids
        found = [[ids[s] for s in row if s >= 0] for row in slots.tolist()]
        keys = np.full(slots.shape, -1, dtype=np.int64)
        for i, row in enumerate(found):
            keys[i, : len(row)] = [self.key_of[j] for j in row]
        return found, scores, keys

    def holds(self, ids: list[str]) -> np.ndarray:
        """(n,) bool: which ids are live items here."""
        return np.array([i in self.key_of for i in ids], dtype=bool)

    def homes(self, ids: list[str]) -> np.ndarray:
        """(n,) bool: which ids are live here with their best cluster here (feedback on them is computed here)."""
        return np.array([i in self.key_of and i not in self.guests for i in ids], dtype=bool)

    def max_key(self) -> int:
        """The largest key of a live item (-1: none)."""
        return max(self.key_of.values(), default=-1)

    def trained_rows(self, slots: np.ndarray) -> tuple[np.ndarray, smat.csr_matrix, np.ndarray]:
        """The classifiers of the trained items held here among `slots` (whole-catalogue slots, increasing), as
        stored (a removed item's too, until a compaction empties it, as the whole catalogue keeps them): (which
        of slots are here (bool), their weights CSR, biases). New items' neighbours are read from them."""
        slots = np.asarray(slots, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.base_keys, slots), max(len(self.base_keys) - 1, 0))
        found = (self.base_keys[pos] == slots) if len(self.base_keys) else np.zeros(len(slots), dtype=bool)
        local = pos[found]
        return found, self.catalog.weights(local), self.catalog.slot_bias.view[local].copy()

    def refine(self, X: smat.csr_matrix, ids: list[str], weights: np.ndarray):
        """Feedback on items whose best cluster is here (`coldstart.feedback.refine`): (moved ids, in first-click
        order; their new weights CSR (u, F); biases (u,); best clusters (u,)). Changes nothing."""
        cat = self.catalog
        slots = np.array([cat.slot_of[i] for i in ids], dtype=np.int64)
        moved, W, biases = refine(cat, X, slots, np.asarray(weights, dtype=np.float64), self.config.feedback_step,
                                  self.config.threshold, self.config.max_nnz)
        return [cat.ids[s] for s in moved.tolist()], W, biases, cat.slot_cluster.view[moved].astype(np.int64)

    def __len__(self) -> int:
        return len(self.key_of)

    # ------------------------------------------------------------ writes (each logged, numbered, idempotent)
    def apply(self, record: dict) -> bool:
        """Apply one write (`add_record`, `replace_record` or `remove_record`) unless it was applied already
        (seq <= self.seq); logged first when the shard logs. Returns whether it was applied. A bad write raises
        and changes nothing."""
        seq = int(record["seq"])
        if seq <= self.seq:
            return False
        if seq != self.seq + 1:
            raise ModelError(f"shard {self.config.index}: write {seq} after {self.seq}: a write is missing")
        op = record["op"]
        before = None if self.log is None else (lambda: self.log.append(record))
        if op == "add":
            self._add(record, before)
        elif op == "replace":
            self._replace(record, before)
        elif op == "remove":
            self._remove(record["ids"], before)
        else:
            raise ModelError(f"shard {self.config.index}: unknown write {op!r}")
        self.seq = seq
        return True

    def _add(self, record: dict, before) -> None:
        ids, keys = record["ids"], record["keys"]
        W, biases = _decode_rows(record, self.config.n_features)
        clusters = np.asarray(record["clusters"], dtype=np.int64).reshape(len(ids), -1)
        mine = np.zeros(clusters.shape, dtype=bool)
        mine[clusters >= 0] = self.owns[clusters[clusters >= 0]]
        if len(ids) and not mine.any(axis=1).all():
            raise ModelError(f"shard {self.config.index}: items without a cluster of this shard")
        # each item's clusters of this shard, in their order (its best one first, where it is here)
        order = np.argsort(~mine, axis=1, kind="stable")
        own = np.where(np.take_along_axis(mine, order, axis=1), np.take_along_axis(clusters, order, axis=1), -1)
        self.catalog.add(ids, own, W, biases, before, self.config.split_size, np.argsort(keys, kind="stable"))
        self.key_of.update(zip(ids, keys))
        self.guests.update(i for i, m in zip(ids, mine[:, 0].tolist()) if not m)

    def _replace(self, record: dict, before) -> None:
        W, biases = _decode_rows(record, self.config.n_features)
        self.catalog.replace(record["ids"], W, biases, before, self.config.split_size,
                             np.argsort(record["keys"], kind="stable"))
        self.key_of.update(zip(record["ids"], record["keys"]))

    def _remove(self, ids: list[str], before) -> None:
        held = [i for i in ids if i in self.key_of]
        if not held:  # logged all the same: the write numbers stay consecutive
            if before is not None:
                before()
            return
        self.catalog.remove(held, before)
        for i in held:
            del self.key_of[i]
            self.guests.discard(i)
        at = self.config.compact_at
        if at and self.catalog.tombstones > at * self.catalog.n_slots:  # replay compacts at the same writes
            self.catalog.compact()

    # ------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> None:
        """Write the shard directory atomically; a shard logging to folder goes on logging to the new, empty log
        (the snapshot holds every write so far)."""
        folder = Path(folder)
        logging_here = self.log is not None and self.log.folder.resolve() == folder.resolve()
        if logging_here:
            self.log.close()
        try:
            config = {"format": FORMAT, "seq": self.seq, **asdict(self.config)}
            with persist.write_dir(folder, config) as tmp:
                self.catalog.save(tmp)
                live = list(self.key_of)
                np.savez(tmp / ARRAYS, clusters=self.clusters, ids=np.array(live, dtype=str),
                         keys=np.array([self.key_of[i] for i in live], dtype=np.int64),
                         guests=np.array(sorted(self.guests), dtype=str), base_keys=self.base_keys)
        finally:
            if logging_here:
                self.log, _ = persist.ItemLog.open(folder)

    @classmethod
    def load(cls, folder: str | Path, log: bool = False) -> Shard:
        """Read a shard directory and replay its log (a restarted worker catches up here). log=True: this process
        becomes its one writer (`persist.ItemLog`)."""
        folder = Path(folder)
        config = persist.read_config(folder)
        if config.get("format") != FORMAT:
            raise ModelError(f"{folder}: not a shard directory (format {config.get('format')!r})")
        persist.verify(folder, config.get("files"))
        settings = ShardConfig(**{f: config[f] for f in ShardConfig.__dataclass_fields__})
        catalog = Catalog.load(folder, settings.n_features, settings.post_processor, settings.path_exponent)
        with np.load(folder / ARRAYS) as z:
            missing = sorted({"clusters", "ids", "keys", "guests", "base_keys"} - set(z.files))
            if missing:
                raise ModelError(f"{folder / ARRAYS}: no {missing} (cut by an older xrmeta? cut the model again)")
            key_of = dict(zip(z["ids"].tolist(), z["keys"].tolist()))
            shard = cls(catalog, z["clusters"], key_of, set(z["guests"].tolist()), z["base_keys"], settings,
                        config["seq"])
        item_log, records = persist.ItemLog.open(folder.resolve()) if log else (None, persist.read_log(folder))
        try:
            for n, record in enumerate(records, 1):
                try:
                    shard.apply(record)
                except (KeyError, ValueError, TypeError) as e:
                    raise persist.PersistError(f"{folder / persist.LOG} record {n}: cannot replay ({e})") from None
        except BaseException:
            if item_log is not None:
                item_log.close()
            raise
        shard.log = item_log
        return shard


# ---------------------------------------------------------------- write records (JSON lines of `persist.ItemLog`)
def add_record(seq: int, ids: list[str], keys: list[int], clusters: np.ndarray, W: smat.csr_matrix,
               biases: np.ndarray) -> dict:
    """New items: ids, keys, clusters (n, m) best first, -1 padded, and their classifiers."""
    return {"op": "add", "seq": seq, "ids": list(ids), "keys": [int(k) for k in keys],
            "clusters": np.asarray(clusters, dtype=np.int64).tolist(), **_encode_rows(W, biases)}


def replace_record(seq: int, ids: list[str], keys: list[int], W: smat.csr_matrix, biases: np.ndarray) -> dict:
    """New classifiers (feedback) for live items, under new keys."""
    return {"op": "replace", "seq": seq, "ids": list(ids), "keys": [int(k) for k in keys],
            **_encode_rows(W, biases)}


def remove_record(seq: int, ids: list[str]) -> dict:
    return {"op": "remove", "seq": seq, "ids": list(ids)}


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _encode_rows(W: smat.csr_matrix, biases: np.ndarray) -> dict:
    """Classifier rows as base64 of their raw arrays: exact, and a third of the size of JSON numbers."""
    W = smat.csr_matrix(W, dtype=np.float32)
    return {"ptr": _b64(W.indptr.astype(np.int64)), "idx": _b64(W.indices.astype(np.int32)),
            "val": _b64(W.data.astype(np.float32)), "bias": _b64(np.asarray(biases, dtype=np.float32))}


def _decode_rows(record: dict, n_features: int) -> tuple[smat.csr_matrix, np.ndarray]:
    def array(name, dtype):
        return np.frombuffer(base64.b64decode(record[name]), dtype=dtype).copy()

    ptr, idx = array("ptr", np.int64), array("idx", np.int32)
    val, bias = array("val", np.float32), array("bias", np.float32)
    n = len(record["ids"])
    if len(ptr) != n + 1 or len(bias) != n or ptr[-1] != len(idx) or len(idx) != len(val):
        raise ModelError("write record: classifier arrays do not fit its ids")
    return smat.csr_matrix((val, idx, ptr), shape=(len(bias), n_features)), bias
