"""Training cost: `python -m xrmeta.train` with its defaults, stage by stage, and the model's size on disk; with
--baseline REV, the same command of an earlier revision of xrmeta (a temporary git worktree) in the same run,
runs alternating, so the ratio compares like with like on a shared machine.

Stage times are the ones training records (`info["train_seconds"]`); process wall time adds loading the data,
importing and saving. Each side first runs once untimed (numba fills its cache for that source tree).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import api
from . import common as C
from .resources import path_bytes

ROOT = Path(__file__).resolve().parents[1]


def train_once(source: Path, dataset: str, seed: int, out: Path) -> tuple[float, dict]:
    """(process wall seconds, stage seconds) of one `python -m xrmeta.train` run of the code in `source`."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(source), XRMETA_DATA=str(api.DATA_DIR),  # a worktree has no ../shared
               XRMETA_DATA_DIR=str(api.DATA_DIR))  # the name older revisions read
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "xrmeta.train", "--dataset", dataset, "--model-dir", str(out), "--seed",
                    str(seed), "--quiet"], cwd=source, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0, json.loads((out / "config.json").read_text())["info"]["train_seconds"]


def measure(sides: dict, dataset: str, seed: int, repeats: int, tmp: Path) -> tuple[dict, dict]:
    """({side: [(wall, stages)] per timed run}, {part: bytes} of this checkout's model)."""
    runs = {name: [] for name in sides}
    for name, source in sides.items():
        C.log(f"{name}: untimed run")
        train_once(source, dataset, seed, tmp / "model")
    for r in range(repeats):
        for side, (name, source) in enumerate(sides.items()):  # each side its own folders: sizes are this checkout's
            C.log(f"{name}: run {r + 1}")
            runs[name].append(train_once(source, dataset, seed, tmp / f"model-{side}-{r}"))
    return runs, {part.name: path_bytes(part) for part in (tmp / "model-0-0").iterdir()}


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--baseline", help="a git revision of xrmeta to time beside this checkout")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per side (after one untimed)")
    args = C.parse(p, argv, repeats=1, baseline=None)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp, sides = Path(tmp), {"this checkout": ROOT}
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "baseline"),
                            args.baseline], check=True, capture_output=True)
            sides[f"baseline {args.baseline}"] = tmp / "baseline"
        try:
            runs, sizes = measure(sides, args.dataset, args.seed, args.repeats, tmp)
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "baseline")],
                               capture_output=True)
    names = list(sides)
    stages = list(dict.fromkeys(s for name in names for _, st in runs[name] for s in st))
    median = {n: {s: float(np.median([st.get(s, 0.0) for _, st in runs[n]])) for s in stages} for n in names}
    wall = {n: float(np.median([w for w, _ in runs[n]])) for n in names}
    rows = []
    for s in stages + ["total (stages)", "process wall time"]:
        vals = [sum(median[n].values()) if s == "total (stages)" else wall[n] if s == "process wall time"
                else median[n][s] for n in names]
        rows.append([s] + vals + ([f"{vals[0] / vals[1]:.2f}" if vals[1] else ""] if len(names) == 2 else []))
    header = ["stage"] + [f"{n}, s" for n in names] + (["ratio"] if len(names) == 2 else [])
    sizes = sorted(sizes.items()) + [("total", sum(sizes.values()))]
    body = C.text("train_cost", dataset=args.dataset, seed=args.seed, cores=os.cpu_count(), repeats=args.repeats,
                  baseline=f"; baseline: revision `{args.baseline}` of this repository" if args.baseline else "",
                  times=C.table(header, rows), sizes=C.table(["part", "MiB"], [[k, b / 2**20] for k, b in sizes],
                                                             ["", ".1f"]))
    C.report("train_cost", args.dataset, body, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
