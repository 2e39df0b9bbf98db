"""Retrain a saved model on its training clicks plus new ones, and hand the result to the process serving it.

`retrain(folder, clicks)` reads the model directory (snapshot + log: the *cut*), trains a new model with the same
configs on the original clicks plus the new ones and the feedback clicks the model took (`add_feedback`), over the titles of every live item, then folds in what was
logged in the directory while it trained. Which items the new tree trains on:
- every live trained item, and every live inserted item that has a new click: they become trained items;
- an inserted item without clicks too, when the tree trains on titles (`TreeConfig.title_weight` > 0): its
  title is then a training instance labelled with it, so it gets a trained classifier and a place in the
  clustering like any item with few clicks (better than a classifier synthesized from its neighbours). With
  clicks only (title_weight 0) it would have no positive example: it is inserted again by cold start instead.
Removed items are left out, and so are their clicks (a query left without clicks is dropped).

`write` then puts the new model in place: over the directory when no process logs to it, else beside it as the
staging snapshot `<dir>.next`, whose config.json says which snapshot of the directory it follows and how many
log records it folded in; the serving process's `XRMetaModel.reload` installs it (`modeldir.reload`).
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import scipy.sparse as smat

from . import modeldir, persist, trainset
from .coldstart import LearnedConfig
from .data.xmc import preview
from .errors import ModelError
from .model import XRMetaModel


def retrain(folder: str | Path, clicks: list[tuple[str, str]], threads: int = -1, verbose: bool = True,
            training: trainset.TrainingSet | None = None) -> tuple[XRMetaModel, dict]:
    """(the retrained model, what it follows: {"snapshot": id, "log_records": n}). clicks: new (query text,
    item id) pairs, every id a live item of the model. training: the original training set when the directory
    does not keep one (`trainset.read` says so), e.g. rebuilt from the model's dataset."""
    folder = Path(folder).resolve()
    base = XRMetaModel.load(folder)
    p = base._state
    cut = {"snapshot": p.snapshot, "log_records": base.replayed}
    unknown = sorted({i for _, i in clicks if i not in base})
    if unknown:
        raise ModelError(f"{len(unknown)} clicked ids are not live items of {folder} (unknown or removed): "
                         f"{preview(unknown)}")
    ts = training or trainset.read(folder / trainset.DIR)
    clicks = list(clicks) + [(q, i) for q, i, _ in p.clicks]  # the feedback since training (`add_feedback`)
    queries, Y, ids, titles, later = _training_set(ts, base, clicks)
    info = {k: v for k, v in p.info.items() if k in ("dataset", "split")}
    info["retrain"] = {"from_snapshot": p.snapshot, "new_clicks": len(clicks),
                       "cold_started": len(later[0])}
    model = XRMetaModel.train(queries, Y, titles, ids, featurizer_config=p.configs.featurizer,
                              tree_config=p.configs.tree, coldstart_config=p.configs.coldstart,
                              generator_config=_generator_config(p.info), threads=threads,
                              verbose=verbose, keep_pecos=(p.workdir / modeldir.PECOS_DIR).exists(), info=info)
    if later[0]:
        model.add_items(*later, threads=threads)
    return model, fold(model, folder, cut)


def _generator_config(info: dict) -> LearnedConfig | None:
    """The learned generator's settings as the model recorded them (None: the defaults)."""
    saved = info.get("generator", {}).get("config") if isinstance(info.get("generator"), dict) else None
    if not isinstance(saved, dict):
        return None
    known = {f.name for f in dataclasses.fields(LearnedConfig)}
    return LearnedConfig(**{k: v for k, v in saved.items() if k in known})


def _training_set(ts: trainset.TrainingSet, base: XRMetaModel, clicks: list[tuple[str, str]]):
    """(query texts, Y, item ids, item titles, (titles, ids) to insert by cold start) of the retrain."""
    catalog, titles = base.catalog, base._state.titles
    clicked = {i for _, i in clicks}
    trained = set(ts.item_ids)
    # live items served from inserted slots, in slot order, less trained items a click moved there (`add_feedback`)
    inserted = [i for i, s in sorted(catalog.slot_of.items(), key=lambda kv: kv[1])
                if s >= catalog.n_base and i not in trained]
    missing = [i for i in inserted if i not in titles]
    if missing:
        raise ModelError(f"the titles of {len(missing)} inserted items are not kept (saved before xrmeta kept "
                         f"them in {modeldir.TITLES}): {preview(missing)}")
    with_titles = base.configs.tree.title_weight > 0
    new = [i for i in inserted if i in clicked or with_titles]
    ids = [i for i in ts.item_ids if i in base] + [i for i in new if i not in trained]
    col = {i: j for j, i in enumerate(ids)}
    text = dict(zip(ts.item_ids, ts.item_titles)) | titles
    # the original clicks on live items, then one row per new query text
    keep = np.array([col.get(i, -1) for i in ts.item_ids])
    Yo = smat.coo_matrix(ts.Y)
    rows, cols = Yo.row, Yo.col
    live = keep[cols] >= 0
    qtexts = list(dict.fromkeys(q for q, _ in clicks))
    qrow = {q: len(ts.query_texts) + r for r, q in enumerate(qtexts)}
    r = np.concatenate([rows[live], [qrow[q] for q, _ in clicks]]).astype(np.int64)
    c = np.concatenate([keep[cols[live]], [col[i] for _, i in clicks]]).astype(np.int64)
    v = np.concatenate([Yo.data[live], np.ones(len(clicks))])
    Y = smat.csr_matrix((v, (r, c)), shape=(len(ts.query_texts) + len(qtexts), len(ids)), dtype=np.float32)
    Y.sum_duplicates()
    Y.data = np.minimum(Y.data, 1.0)  # relevance stays binary: a repeated click is one click
    queries = np.array(ts.query_texts + qtexts, dtype=object)
    nonempty = np.flatnonzero(np.diff(Y.indptr))
    cold = [i for i in inserted if i not in col]
    return (queries[nonempty].tolist(), Y[nonempty], ids, [text[i] for i in ids],
            ([titles[i] for i in cold], cold))


def fold(model: XRMetaModel, folder: Path, cut: dict) -> dict:
    """Replay onto model what folder's log gained after the cut (inserts, removals). Returns the new cut."""
    config = persist.read_config(folder)
    if modeldir.snapshot_id(config, folder) != cut["snapshot"]:
        raise ModelError(f"{folder}: saved again while retraining (another snapshot); nothing written, run again")
    records = persist.read_log(folder)
    modeldir.replay(model, records[cut["log_records"]:], folder / persist.LOG, exact=False)
    return dict(cut, log_records=len(records))


def write(model: XRMetaModel, folder: str | Path, follows: dict, out: str | Path | None = None) -> Path:
    """Save the retrained model: to out if given (folder untouched), else over folder if no process logs to it,
    else as folder's staging snapshot for that process's `reload`. Returns where it went."""
    folder = Path(folder).resolve()
    if out is None:
        try:
            persist.check_no_writer(folder)
        except persist.PersistError:
            out = modeldir.staging_dir(folder)
        else:
            follows = fold(model, folder, follows)  # the last records, if an offline writer added some
            model.save(folder)
            return folder
    modeldir.write(model, Path(out).resolve(), follows=fold(model, folder, follows))
    return Path(out)


def watch(model: XRMetaModel, seconds: float, on_error=None) -> threading.Event:
    """Call `model.reload()` every `seconds` in a daemon thread until the returned event is set. An error (a
    broken staging snapshot, say) goes to on_error(exception) (default: ignored; the old model keeps serving)."""
    stop = threading.Event()

    def loop():
        while not stop.wait(seconds):
            try:
                model.reload()
            except (ValueError, OSError) as e:
                if on_error is not None:
                    on_error(e)

    threading.Thread(target=loop, name="xrmeta-reload", daemon=True).start()
    return stop
