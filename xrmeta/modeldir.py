"""The model directory: what `XRMetaModel.save` writes and `XRMetaModel.load` reads.

Every file is written by `write`, atomically (see `persist`):
  config.json        format version, all configs, counts (readable); manifest: size and sha256 of every file
  featurizer/        TF-IDF vectorizer
  upper/             PECOS model of the layers above the leaves (read into `UpperLayers` at load)
  catalog.npz, catalog_ids.txt   leaf layer: trained and inserted items
  layouts.npz        the upper layers' and the inserted items' search layouts and the search settings, as the
                     kernels read them: with catalog.npz, all that the C++ core's `SavedModel` (cpp/) needs to
                     answer a query without Python (`xrmeta.Catalog.search_layouts`; not read by Python)
  selector.npz       observed items' representations for neighbour search
  generator.npz      the learned generator's parameters (when it is the model's generator)
  titles.json        {id: title} of the live inserted items (a retrain trains on them; the log has them until a save)
  clicks.json        [query, id, weight] of the feedback clicks on live items since training (`add_feedback`;
                     a retrain trains on them)
  train/             the training queries, clicks and trained items' titles (`trainset`), for `xrmeta-retrain`
  xlinear/           only with `train(..., keep_pecos=True)`: the trained PECOS model, the peer to compare with
                     (a directory saved by an older xrmeta has it, and keeps it on every later save)
  items.log          inserts, feedback, removals and compactions since the last save, replayed on load (written
                     under `load(log=True)`). Every compaction is logged, remove_items' automatic ones too, and
                     replay compacts exactly where the log says (never on its own): the slots it gives do not
                     depend on the compaction setting of the process that wrote the log

config.json also names the snapshot (`snapshot`, a random id per save) and, in a snapshot written by a retrain
while a process served the directory, which snapshot it follows and how many of its log records it folded in
(`follows`); `reload` installs such a staging snapshot (`<dir>.next`) in its place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as smat

from . import persist, trainset
from .catalog import Catalog
from .coldstart import ColdStartConfig, make_selector
from .coldstart.generate import Calibration
from .errors import ModelError
from .featurize import Featurizer, FeaturizerConfig
from .ground import TitleTrust
from .tree import TreeConfig, UpperLayers

FORMAT_VERSION = 2  # 2: config.json carries a manifest (size, sha256 of every file); 1 is still read, unverified
PECOS_DIR = "xlinear"
UNCHANGING = ("featurizer", PECOS_DIR, "upper", trainset.DIR)  # parts that never change after training
TITLES = "titles.json"
CLICKS = "clicks.json"
LAYOUTS = "layouts.npz"
STAGING = ".next"  # suffix of the staging sibling a retrain writes while a process serves the directory


@dataclass
class Configs:
    """A model's configs, saved in config.json."""

    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    tree: TreeConfig = field(default_factory=TreeConfig)
    coldstart: ColdStartConfig = field(default_factory=ColdStartConfig)


def write(model, folder: str | Path, follows: dict | None = None) -> None:
    """`XRMetaModel.save`: model into folder, atomically (the method's docstring says how). follows: a retrain's
    staging snapshot records which snapshot of the served directory it follows (`reload` checks it)."""
    folder = Path(folder).resolve()
    with model._writes:  # one consistent state on disk, of one model (a reload waits)
        p = model._state
        own_log = model.log is not None and model.log.folder == folder
        if not own_log:
            persist.check_no_writer(folder)  # replacing folder would cut a logging process off its log
        snapshot = uuid.uuid4().hex
        config = {
            "format_version": FORMAT_VERSION,
            "snapshot": snapshot,
            **({"follows": follows} if follows else {}),
            "featurizer": asdict(p.configs.featurizer),
            "tree": asdict(p.configs.tree),
            "coldstart": asdict(p.configs.coldstart),
            "calibration": asdict(p.coldstart.calibration),
            "title_trust": p.title_trust.to_dict(),
            "info": dict(p.info, n_items=len(p.catalog), n_inserted=p.catalog.n_slots - p.catalog.n_base),
        }
        in_place = folder == p.workdir.resolve()
        with persist.write_dir(folder, config) as out:
            for part in UNCHANGING:
                if (p.workdir / part).exists():
                    persist.copy_tree(p.workdir / part, out / part, link=in_place)
            if not (out / "featurizer").exists():  # fresh from training: only in memory
                p.featurizer.save(out / "featurizer")
            p.catalog.save(out)
            search = p.catalog.search_layouts(p.upper)  # the C++ core's SavedModel reads these with catalog.npz
            c = p.configs
            np.savez(out / LAYOUTS, **search, beam_size=np.int64(c.tree.beam_size), split_probe=np.int64(
                c.coldstart.split_probe), inserted_beam_factor=np.int64(c.coldstart.inserted_beam_factor))
            live = {i: t for i, t in p.titles.items() if i in p.catalog.slot_of}
            (out / TITLES).write_text(json.dumps(live, ensure_ascii=False), encoding="utf-8")
            (out / CLICKS).write_text(json.dumps(p.clicks, ensure_ascii=False), encoding="utf-8")
            Z = p.coldstart.selector.Z
            np.savez(out / "selector.npz", indptr=Z.indptr, indices=Z.indices, data=Z.data,
                     shape=np.array(Z.shape), label_slot=p.label_slot)
            p.coldstart.generator.save(out)
        if own_log:  # the old log went away with the old snapshot, which the new one supersedes
            model.log.close()
            model.log = persist.ItemLog.open(folder)[0]
        if own_log or folder == (p.source and p.source.resolve()):  # the model is now that snapshot
            model._state = p._replace(snapshot=snapshot, source=folder)


def snapshot_id(config: dict, folder: Path) -> str:
    """A snapshot's id: the one its save drew, or (saved before ids existed) the hash of its config.json."""
    return config.get("snapshot") or hashlib.sha256((Path(folder) / persist.CONFIG).read_bytes()).hexdigest()


def read(cls, folder: str | Path, log: bool = False):
    """`XRMetaModel.load`: the model (of class cls) saved in folder, its log replayed (the method's docstring
    says how)."""
    folder = Path(folder)
    config, configs, calibration, trust = read_settings(folder)
    featurizer = Featurizer.load(folder / "featurizer")
    catalog = Catalog.load(folder, featurizer.n_features, trust.post_processor, trust.path_exponent)
    upper = UpperLayers.load(folder / "upper", catalog.n_clusters, configs.tree.post_processor)
    with np.load(folder / "selector.npz") as z:
        Z = smat.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        label_slot = z["label_slot"]
    selector = make_selector(Z, configs.coldstart, normalized=True)
    model = cls(folder, featurizer, upper, catalog, selector, label_slot, configs, calibration, config["info"],
                title_trust=trust, titles=_read_json(folder / TITLES, {}), source=folder,
                snapshot=snapshot_id(config, folder), clicks=_read_json(folder / CLICKS, []))
    _replay_log(model, folder, log)
    if persist.read_config(folder) != config:  # a save replaced the directory while we read it: files of two
        if model.log is not None:               # snapshots (and maybe the new one's empty log) were mixed
            model.log.close()
        raise persist.PersistError(f"{folder}: replaced by a concurrent save while loading; load it again")
    return model


def read_search(folder: str | Path, n_clusters: int) -> tuple[Featurizer, UpperLayers, Configs]:
    """What a query reads above the leaves (featurizer, upper layers over n_clusters leaf clusters, configs) from
    a model directory, without its catalogue or cold start: a router that does not insert (`xrmeta.distributed`)."""
    folder = Path(folder)
    _, configs, _, _ = read_settings(folder)
    upper = UpperLayers.load(folder / "upper", n_clusters, configs.tree.post_processor)
    return Featurizer.load(folder / "featurizer"), upper, configs


def read_settings(folder: Path) -> tuple[dict, Configs, Calibration, TitleTrust]:
    """config.json of a model directory, its files checked against its manifest: (the raw config, the configs,
    the calibration, the title trust)."""
    config = persist.read_config(folder)
    version = config.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise ModelError(f"{folder / 'config.json'}: format version {version!r}, this xrmeta reads 1 and "
                         f"{FORMAT_VERSION}")
    if version != 1:
        persist.verify(folder, config.get("files"))
    try:
        # a setting missing from a model saved before it existed reads as what that model did: no titles in
        # training or in the served classifiers, new items in one cluster (compact_at, which changes no result,
        # takes its default: that model's log holds no compaction, and replay compacts only where the log says)
        configs = Configs(FeaturizerConfig.from_saved(config["featurizer"]),
                          TreeConfig(**{"title_weight": 0.0, "observed_titles": False, **config["tree"]}),
                          ColdStartConfig(**{"clusters_per_item": 1, **config["coldstart"]}))
        calibration = Calibration(**config["calibration"])
        trust = (TitleTrust.from_dict(config["title_trust"]) if "title_trust" in config
                 else TitleTrust.pecos(configs.tree.post_processor))  # saved before items carried titles
    except (KeyError, TypeError) as e:
        raise ModelError(f"{folder / 'config.json'}: missing or unknown setting {e}") from None
    return config, configs, calibration, trust


def _read_json(path: Path, missing):
    """A JSON file of the directory; `missing` when absent (saved before xrmeta kept it: a retrain will say so)."""
    if not path.exists():
        return missing
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: unreadable ({e})") from None


def journal(log: persist.ItemLog | None, record: dict):
    """The catalogue's before_change hook: log the batch once it is known to be valid, before it is visible."""
    return None if log is None else (lambda: log.append(record))


def _replay_log(model, folder: Path, log: bool) -> None:
    """Replay folder's log into a freshly loaded model; with log, also lock it and make it the model's log."""
    item_log, records = persist.ItemLog.open(folder.resolve()) if log else (None, persist.read_log(folder))
    try:
        replay(model, records, folder / persist.LOG)
    except BaseException:
        if item_log is not None:
            item_log.close()
        raise
    model.log = item_log
    model.replayed = len(records)


def replay(model, records: list[dict], where: Path, exact: bool = True) -> list[dict]:
    """Apply log records to model. exact: they were written on top of this very snapshot (an add must land at
    the slot it was logged at). Otherwise a semantic replay onto another model (a retrain's): an add of an id the
    model already has, or a remove of one it does not have, is skipped. Returns the records as applied to model
    (adds at their new slots): a log of the same changes for model's snapshot."""
    applied = []
    for n, rec in enumerate(records, 1):
        try:
            op = rec.get("op")
            if op == "add":
                if exact and rec.get("slot") != model.catalog.n_slots:  # a log of another snapshot
                    raise ModelError(f"written at slot {rec.get('slot')}, the snapshot has "
                                     f"{model.catalog.n_slots} slots")
                keep = [j for j, i in enumerate(rec["ids"]) if exact or i not in model]
                rec = dict(rec, slot=model.catalog.n_slots, ids=[rec["ids"][j] for j in keep],
                           titles=[rec["titles"][j] for j in keep])
                model.add_items(rec["titles"], rec["ids"])
            elif op == "remove":  # an exact replay compacts only where the log says (the next record)
                rec = dict(rec, ids=[i for i in rec["ids"] if exact or i in model])
                model._remove(rec["ids"], auto_compact=not exact)
            elif op == "feedback":
                if exact and rec.get("slot") != model.catalog.n_slots:
                    raise ModelError(f"feedback at slot {rec.get('slot')}, the replay has {model.catalog.n_slots} "
                                     f"slots")
                keep = [j for j, i in enumerate(rec["ids"]) if exact or i in model]
                rec = dict(rec, slot=model.catalog.n_slots, **{f: [rec[f][j] for j in keep]
                                                               for f in ("ids", "queries", "weights")})
                model.add_feedback(rec["queries"], rec["ids"], rec["weights"])
            elif op == "compact":  # another snapshot's slots mean nothing to a semantic replay
                if exact:
                    if rec.get("slot") != model.catalog.n_slots:
                        raise ModelError(f"compaction at slot {rec.get('slot')}, the replay has "
                                         f"{model.catalog.n_slots} slots")
                    model.compact()
                    applied.append(rec)
                continue
            else:
                raise ModelError(f"unknown operation {op!r}")
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise persist.PersistError(f"{where} record {n}: cannot replay ({e})") from None
        if rec["ids"]:
            applied.append(rec)
    return applied


# ---------------------------------------------------------------- reload (a retrained model, without downtime)
def staging_dir(folder: Path) -> Path:
    """Where a retrain leaves its snapshot while a process serves folder: the sibling `<folder>.next`."""
    folder = Path(folder).resolve()
    return folder.with_name(folder.name + STAGING)


def reload(model) -> bool:
    """`XRMetaModel.reload` (its docstring says what)."""
    with model._writes:  # writers wait; queries go on with the parts they read
        p = model._state
        if p.source is None:
            raise ModelError("reload: the model was not loaded from a model directory")
        folder = p.source.resolve()
        holds = model.log is not None and model.log.folder == folder
        staging = staging_dir(folder)
        persist.recover(staging)
        if holds and (staging / persist.CONFIG).exists():
            fresh, log = _install(type(model), folder, staging, p.snapshot)
        else:
            config = persist.read_config(folder)
            if snapshot_id(config, folder) == p.snapshot:
                return False
            if holds:  # nobody else may replace a directory whose log we hold
                raise ModelError(f"{folder}: replaced by another process while this one held its log")
            fresh, log = read(type(model), folder), None
        model._pecos = None
        model._state = fresh._state  # the swap: one assignment
        if holds:
            old, model.log = model.log, log
            old.close()
        return True


def _install(cls, folder: Path, staging: Path, serving: str):
    """Load the staging snapshot, replay onto it what was logged in folder after its cut, and move it into place
    (two renames, see `persist`). Returns (the model, its new log). Until the second rename nothing of folder
    changes, so an error or a crash before it leaves the served model as it was."""
    config = persist.read_config(staging)
    follows = config.get("follows")
    if not isinstance(follows, dict) or follows.get("snapshot") != serving:
        raise ModelError(f"{staging}: does not follow the snapshot this model serves ({serving}); it follows "
                         f"{follows.get('snapshot') if isinstance(follows, dict) else 'no snapshot'}: retrain again")
    with contextlib.suppress(FileNotFoundError):  # written by an install that crashed before its swap
        os.unlink(staging / persist.LOG)
    fresh = read(cls, staging)
    records = persist.read_log(folder)
    cut = follows.get("log_records")
    if not isinstance(cut, int) or not 0 <= cut <= len(records):
        raise ModelError(f"{staging}: folded {cut!r} log records, {folder / persist.LOG} has {len(records)}")
    applied = replay(fresh, records[cut:], folder / persist.LOG, exact=False)
    log = persist.ItemLog.open(staging)[0]  # the new snapshot's log, in it before it moves into place
    try:
        for rec in applied:
            log.append(rec)
        log.close()
        persist.swap(staging, folder)  # the commit point
        log = persist.ItemLog.open(folder)[0]
    except BaseException:
        log.close()
        raise
    fresh._state = fresh._state._replace(workdir=folder, source=folder)
    return fresh, log
