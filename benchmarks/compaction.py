"""Compaction: what `XRMetaModel.compact` gives back after removals, and what it costs. A tree trained on --base
synthetic items (`scale.start`'s generator) grows by --inserted made-up titles (`scale.title_batches`); half of them,
drawn at random, are removed, then the model is compacted. Reported: RSS after inserting, after removing, after
compacting, beside a reference that never held the removed items (the same trained model, only the surviving titles
inserted, in the same batches); compaction time; query latency before and after. Then half of the trained items are
removed and compacted: array bytes before and after.

Every measured model lives in its own fresh process (this module with --step), so their RSS compare like with like;
RSS is VmRSS (/proc/self/status) after gc.collect(), and again after glibc's malloc_trim(0) (memory freed but kept
by the allocator for reuse). Single thread (`harness.single_thread`) for insertion and latency.
"""

from __future__ import annotations

import ctypes
import gc
import json
import shutil
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import scipy.sparse as smat

from . import api, harness as H
from . import common as C
from .resources import PeakRSS
from .scale import QUERIES_PER_ITEM, title_batches

MB = 2**20


def vm_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def settled() -> dict:
    """RSS after gc, then after returning the allocator's free memory to the system."""
    gc.collect()
    after_gc = vm_rss()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return {"rss_mb": after_gc / MB, "rss_trimmed_mb": vm_rss() / MB}


def removed_ids(n: int, seed: int) -> set[str]:
    """The inserted ids removed: half of them, drawn with seed (the same set in every step)."""
    pick = np.random.default_rng(seed + 7).choice(n, size=n // 2, replace=False)
    return {f"scale{i:07d}" for i in pick.tolist()}


def storage_mb(model) -> dict:
    """Allocated bytes of the catalogue's arrays (`api.catalog_bytes`, ids aside) and of the neighbour search."""
    b, s = api.catalog_bytes(model), model.selector
    sel = sum(a.nbytes for a in (s.Z.data, s.Z.indices, s.Z.indptr, s.inv_ptr, s.inv_item, s.inv_val, s.z_ptr))
    return {"arrays_mb": b["allocated"] / MB, "live_mb": b["live"] / MB, "ids_mb": b["ids"] / MB,
            "selector_mb": sel / MB}


def latency_ms(model, rows: list) -> float:
    lat = H.latency({"xrmeta": lambda X: api.search(model, X, 10, 10)}, rows, smat.vstack(rows).tocsr(), 3,
                    warm=rows[:1])["xrmeta"]
    return lat.median_ms


# ---------------------------------------------------------------- steps (each in its own process)
def step_train(folder: Path, base: int, n_queries: int, seed: int) -> dict:
    """Train on `base` synthetic items (all cores) into folder, with the titles and test queries the other steps
    use (inputs.json)."""
    from xrmeta.data import make_synthetic, make_zero_shot_split
    from xrmeta.model import XRMetaModel

    data = make_synthetic(n_items=base, n_queries=QUERIES_PER_ITEM * base, seed=seed)
    split = make_zero_shot_split(data, seed=seed)
    seconds, model = H.clock(XRMetaModel.train, C.texts(data, split.train_queries), split.Y_train,
                             *C.titles_ids(data, split.observed), threads=-1, verbose=False)
    model.save(folder)
    q = C.sample(len(split.generalized_set.queries), n_queries, seed)
    inputs = {"titles": C.titles_ids(data, split.observed)[0],
              "queries": C.texts(data, split.generalized_set.queries[q])}
    (folder.parent / f"{folder.name}.inputs.json").write_text(json.dumps(inputs))
    return {"train_s": seconds, "trained_items": len(model)}


def warm(model, titles: list[str], seed: int) -> None:
    """Insert, remove and compact 20 items: every process compiles the same kernels (numba's code is in RSS)."""
    model.configs.coldstart.compact_at = None  # compaction is measured where this benchmark calls it
    ids = [f"warm{i}" for i in range(20)]
    H.insert(model, next(title_batches(titles, 20, 20, seed + 1))[0], ids)
    model.remove_items(ids)
    model.compact()


def _grown(folder: Path, n: int, batch: int, seed: int, keep=lambda ids: ids):
    """(model loaded from folder with the made-up titles inserted, query rows, insert seconds); keep filters each
    batch's ids (the reference leaves the removed ones out)."""
    from xrmeta.model import XRMetaModel

    inputs = json.loads((folder.parent / f"{folder.name}.inputs.json").read_text())
    model = XRMetaModel.load(folder)
    X = model.featurizer.transform(inputs["queries"], threads=1)
    rows = [X[i : i + 1] for i in range(X.shape[0])]
    warm(model, inputs["titles"], seed)
    seconds = 0.0
    for titles, ids in title_batches(inputs["titles"], n, batch, seed):
        kept = set(keep(ids))
        titles, ids = [t for t, i in zip(titles, ids) if i in kept], [i for i in ids if i in kept]
        if ids:
            seconds += H.insert(model, titles, ids).seconds
    return model, rows, seconds


def step_grow(folder: Path, n: int, batch: int, seed: int) -> dict:
    """Insert n, remove half at random, compact; then remove half of the trained items and compact."""
    model, rows, insert_s = _grown(folder, n, batch, seed)
    out = {"insert_s": insert_s, "full": {**settled(), **storage_mb(model), "latency_ms": latency_ms(model, rows)}}
    gone = sorted(removed_ids(n, seed))
    seconds, _ = H.clock(model.remove_items, gone)
    out["remove_s"] = seconds
    out["removed"] = {**settled(), **storage_mb(model), "latency_ms": latency_ms(model, rows),
                      "slots": model.catalog.n_slots, "live": len(model)}
    old = weakref.ref(model.catalog.w_val.buf)  # the pre-compaction buffers must be freed once it returns
    with PeakRSS(interval=0.01) as peak:
        seconds, _ = H.clock(model.compact)
    out["compact_s"], out["compact_peak_mb"] = seconds, peak.peak / MB
    out["compacted"] = {**settled(), **storage_mb(model), "latency_ms": latency_ms(model, rows),
                        "slots": model.catalog.n_slots, "live": len(model), "old_buffers_freed": old() is None}
    cat = model.catalog
    observed = [i for i in cat.ids[: cat.n_base] if i in model]
    half = [str(i) for i in np.random.default_rng(seed + 11).choice(observed, size=len(observed) // 2, replace=False)]
    model.remove_items(half)
    out["observed_before"] = {**settled(), **storage_mb(model), "removed": len(half)}
    seconds, _ = H.clock(model.compact)
    out["observed_after"] = {**settled(), **storage_mb(model), "compact_s": seconds,
                             "latency_ms": latency_ms(model, rows)}
    return out


def step_reference(folder: Path, n: int, batch: int, seed: int) -> dict:
    """The same trained model holding only the surviving inserted items: what compaction aims at. Saved next to
    folder for `step_reloaded`."""
    gone = removed_ids(n, seed)
    model, rows, insert_s = _grown(folder, n, batch, seed, keep=lambda ids: [i for i in ids if i not in gone])
    out = {"insert_s": insert_s, **settled(), **storage_mb(model), "latency_ms": latency_ms(model, rows),
           "slots": model.catalog.n_slots, "live": len(model)}
    model.save(reference_dir(folder))
    return out


def step_reloaded(folder: Path, seed: int) -> dict:
    """The reference as `load` builds it (buffers sized to fit, every chunk built once, no tail): the layout a
    compaction builds, without the insertion's history."""
    from xrmeta.model import XRMetaModel

    inputs = json.loads((folder.parent / f"{folder.name}.inputs.json").read_text())
    model = XRMetaModel.load(reference_dir(folder))
    warm(model, inputs["titles"], seed)
    X = model.featurizer.transform(inputs["queries"], threads=1)
    out = {**settled(), **storage_mb(model), "latency_ms": latency_ms(model, [X[i : i + 1] for i in range(X.shape[0])]),
           "slots": model.catalog.n_slots, "live": len(model)}
    shutil.rmtree(reference_dir(folder))
    return out


def reference_dir(folder: Path) -> Path:
    return folder.with_name(f"{folder.name}.reference")


STEPS = {"train": step_train, "grow": step_grow, "reference": step_reference, "reloaded": step_reloaded}


def run_step(name: str, *args) -> dict:
    """Run a step in a fresh process; its last stdout line is its JSON result."""
    cmd = [sys.executable, "-m", "benchmarks.compaction", "--step", name, *map(str, args)]
    C.log(f"compaction: step {name} ...")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report
def render(r: dict, args) -> str:
    g, ref, rel = r["grow"], r["reference"], r["reloaded"]
    states = [("inserted, nothing removed", g["full"]), ("half of the inserted removed", g["removed"]),
              ("compacted", g["compacted"]), ("reference: never held the removed items", ref),
              ("reference saved, loaded in a fresh process", rel)]
    rows = [[name, f"{s.get('slots', '')}", f"{s.get('live', '')}", s["rss_mb"], s["rss_trimmed_mb"], s["arrays_mb"],
             s["ids_mb"], s["selector_mb"], s["latency_ms"]] for name, s in states]
    ob, oa = g["observed_before"], g["observed_after"]
    obs_rows = [["before compaction", ob["arrays_mb"], ob["selector_mb"], ob["rss_mb"], ob["rss_trimmed_mb"]],
                ["after compaction", oa["arrays_mb"], oa["selector_mb"], oa["rss_mb"], oa["rss_trimmed_mb"]]]
    c = g["compacted"]
    return C.text(
        "compaction", base=args.base, inserted=args.inserted, batch=args.batch, seed=args.seed,
        train_s=r["train"].get("train_s", float("nan")), insert_s=g["insert_s"], ref_insert_s=ref["insert_s"],
        remove_s=g["remove_s"], compact_s=g["compact_s"], peak_mb=g["compact_peak_mb"],
        freed="yes" if c["old_buffers_freed"] else "NO",
        rss_ratio=c["rss_mb"] / ref["rss_mb"], trimmed_ratio=c["rss_trimmed_mb"] / ref["rss_trimmed_mb"],
        rel_ratio=c["rss_mb"] / rel["rss_mb"], rel_trimmed_ratio=c["rss_trimmed_mb"] / rel["rss_trimmed_mb"],
        table=C.table(["state", "slots", "live items", "RSS MB", "RSS after malloc_trim MB", "catalogue arrays MB",
                       "ids + map MB", "selector MB", "online median ms"], rows,
                      ["", "", "", ",.0f", ",.0f", ",.1f", ",.1f", ",.1f", ".3f"]),
        observed_removed=ob["removed"], observed_compact_s=oa["compact_s"], observed_latency=oa["latency_ms"],
        observed=C.table(["trained items half removed", "catalogue arrays MB", "selector MB", "RSS MB",
                          "RSS after malloc_trim MB"], obs_rows, ["", ",.1f", ",.1f", ",.0f", ",.0f"]))


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--step":
        name, folder, *rest = sys.argv[2:]
        print(json.dumps(STEPS[name](Path(folder), *map(int, rest))))
        return 0
    p = C.parser(__doc__, dataset="synthetic")
    p.add_argument("--base", type=int, default=10**5, help="synthetic items generated (90%% trained)")
    p.add_argument("--inserted", type=int, default=10**6, help="made-up titles inserted")
    p.add_argument("--batch", type=int, default=10**4, help="items per add_items call")
    p.add_argument("--queries", type=int, default=200, help="test queries timed")
    args = C.parse(p, argv, base=2000, inserted=3000, batch=1000, queries=50)
    started = time.perf_counter()
    folder = C.OUT / "models" / f"compaction_{args.base}_s{args.seed}"
    r = {"train": {}}
    if not (folder / "config.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        r["train"] = run_step("train", folder, args.base, args.queries, args.seed)
    r["grow"] = run_step("grow", folder, args.inserted, args.batch, args.seed)
    r["reference"] = run_step("reference", folder, args.inserted, args.batch, args.seed)
    r["reloaded"] = run_step("reloaded", folder, args.seed)
    C.OUT.mkdir(parents=True, exist_ok=True)
    (C.OUT / "compaction_synthetic.json").write_text(json.dumps(r, indent=1))
    C.report("compaction", "synthetic", render(r, args), started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
