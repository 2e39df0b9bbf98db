"""The model directory: what `XRMetaModel.save` writes and `XRMetaModel.load` reads.

Every file is written by `write`, atomically (see `persist`):
  config.json        format version, all configs, counts (readable); manifest: size and sha256 of every file
  featurizer/        TF-IDF vectorizer
  upper/             PECOS model of the layers above the leaves (read into `UpperLayers` at load)
  catalog.npz, catalog_ids.txt   leaf layer: trained and inserted items
  selector.npz       observed items' representations for neighbour search
  generator.npz      the learned generator's parameters (when it is the model's generator)
  xlinear/           only with `train(..., keep_pecos=True)`: the trained PECOS model, the peer to compare with
                     (a directory saved by an older xrmeta has it, and keeps it on every later save)
  items.log          inserts, removals and compactions since the last save, replayed on load (written under
                     `load(log=True)`). Every compaction is logged, remove_items' automatic ones too, and replay
                     compacts exactly where the log says (never on its own): the slots it gives do not depend on
                     the compaction setting of the process that wrote the log
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as smat

from . import persist
from .catalog import Catalog
from .coldstart import ColdStartConfig, make_selector
from .coldstart.generate import Calibration
from .errors import ModelError
from .featurize import Featurizer, FeaturizerConfig
from .ground import TitleTrust
from .tree import TreeConfig, UpperLayers

FORMAT_VERSION = 2  # 2: config.json carries a manifest (size, sha256 of every file); 1 is still read, unverified
PECOS_DIR = "xlinear"
UNCHANGING = ("featurizer", PECOS_DIR, "upper")  # parts that never change after training


@dataclass
class Configs:
    """A model's configs, saved in config.json."""

    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    tree: TreeConfig = field(default_factory=TreeConfig)
    coldstart: ColdStartConfig = field(default_factory=ColdStartConfig)


def write(model, folder: str | Path) -> None:
    """`XRMetaModel.save`: model into folder, atomically (the method's docstring says how)."""
    folder = Path(folder).resolve()
    with model.catalog.lock:  # one consistent state on disk
        own_log = model.log is not None and model.log.folder == folder
        if not own_log:
            persist.check_no_writer(folder)  # replacing folder would cut a logging process off its log
        config = {
            "format_version": FORMAT_VERSION,
            "featurizer": asdict(model.configs.featurizer),
            "tree": asdict(model.configs.tree),
            "coldstart": asdict(model.configs.coldstart),
            "calibration": asdict(model.calibration),
            "title_trust": model.title_trust.to_dict(),
            "info": dict(model.info, n_items=len(model.catalog),
                         n_inserted=model.catalog.n_slots - model.catalog.n_base),
        }
        in_place = folder == model.workdir.resolve()
        with persist.write_dir(folder, config) as out:
            for part in UNCHANGING:
                if (model.workdir / part).exists():
                    persist.copy_tree(model.workdir / part, out / part, link=in_place)
            if not (out / "featurizer").exists():  # fresh from training: only in memory
                model.featurizer.save(out / "featurizer")
            model.catalog.save(out)
            Z = model.selector.Z
            np.savez(out / "selector.npz", indptr=Z.indptr, indices=Z.indices, data=Z.data,
                     shape=np.array(Z.shape), label_slot=model.label_slot)
            model.generator.save(out)
        if own_log:  # the old log went away with the old snapshot, which the new one supersedes
            model.log.close()
            model.log = persist.ItemLog.open(folder)[0]


def read(cls, folder: str | Path, log: bool = False):
    """`XRMetaModel.load`: the model (of class cls) saved in folder, its log replayed (the method's docstring
    says how)."""
    folder = Path(folder)
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
    featurizer = Featurizer.load(folder / "featurizer")
    catalog = Catalog.load(folder, featurizer.n_features, trust.post_processor, trust.path_exponent)
    upper = UpperLayers.load(folder / "upper", catalog.n_clusters, configs.tree.post_processor)
    with np.load(folder / "selector.npz") as z:
        Z = smat.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        label_slot = z["label_slot"]
    model = cls(folder, featurizer, upper, catalog, make_selector(Z, configs.coldstart), label_slot, configs,
                calibration, config["info"], title_trust=trust)
    _replay_log(model, folder, log)
    if persist.read_config(folder) != config:  # a save replaced the directory while we read it: files of two
        if model.log is not None:               # snapshots (and maybe the new one's empty log) were mixed
            model.log.close()
        raise persist.PersistError(f"{folder}: replaced by a concurrent save while loading; load it again")
    return model


def journal(log: persist.ItemLog | None, record: dict):
    """The catalogue's before_change hook: log the batch once it is known to be valid, before it is visible."""
    return None if log is None else (lambda: log.append(record))


def _replay_log(model, folder: Path, log: bool) -> None:
    """Replay folder's log into a freshly loaded model; with log, also lock it and make it the model's log."""
    item_log, records = persist.ItemLog.open(folder.resolve()) if log else (None, persist.read_log(folder))
    try:
        for n, rec in enumerate(records, 1):
            try:
                if rec.get("op") == "add":
                    if rec.get("slot") != model.catalog.n_slots:  # a log of another snapshot
                        raise ModelError(f"written at slot {rec.get('slot')}, the snapshot has "
                                         f"{model.catalog.n_slots} slots")
                    model.add_items(rec["titles"], rec["ids"])
                elif rec.get("op") == "remove":
                    model.catalog.remove(rec["ids"])  # not remove_items: its compaction, if any, is logged next
                elif rec.get("op") == "compact":
                    if rec.get("slot") != model.catalog.n_slots:
                        raise ModelError(f"compaction at slot {rec.get('slot')}, the replay has "
                                         f"{model.catalog.n_slots} slots")
                    model.compact()
                else:
                    raise ModelError(f"unknown operation {rec.get('op')!r}")
            except (KeyError, ValueError) as e:
                raise persist.PersistError(f"{folder / persist.LOG} record {n}: cannot replay ({e})") from None
    except BaseException:
        if item_log is not None:
            item_log.close()
        raise
    model.log = item_log
