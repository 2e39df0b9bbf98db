"""Training cost: `python -m xrmeta.train` with its defaults, stage by stage, and the model's size on disk; with
--baseline REV, the same command of an earlier revision of xrmeta (a temporary git worktree) in the same run,
runs alternating, so the ratio compares like with like on a shared machine.

Stage times are the ones training records (`info["train_seconds"]`); process wall time adds loading the data,
importing and saving. Each side first runs once untimed (numba fills its cache for that source tree).

Run: .venv/bin/python -m benchmarks.train_cost --dataset homedepot --baseline 1e4f727
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

from xrmeta.data import SHARED_DATA

from . import common as C
from .resources import path_bytes

ROOT = Path(__file__).resolve().parents[1]


def train_once(source: Path, dataset: str, seed: int, out: Path) -> tuple[float, dict]:
    """(process wall seconds, stage seconds) of one `python -m xrmeta.train` run of the code in `source`."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(source), XRMETA_DATA_DIR=str(SHARED_DATA))  # a worktree has no ../shared
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "xrmeta.train", "--dataset", dataset, "--model-dir", str(out), "--seed",
                    str(seed), "--quiet"], cwd=source, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    return wall, json.loads((out / "config.json").read_text())["info"]["train_seconds"]


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--baseline", help="a git revision of xrmeta to time beside this checkout")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per side (after one untimed)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sides = {"this checkout": ROOT}
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "baseline"),
                            args.baseline], check=True, capture_output=True)
            sides[f"baseline {args.baseline}"] = tmp / "baseline"
        try:
            runs = {name: [] for name in sides}
            for name, source in sides.items():
                C.log(f"{name}: untimed run")
                train_once(source, args.dataset, args.seed, tmp / "model")
            for r in range(args.repeats):
                for name, source in sides.items():
                    C.log(f"{name}: run {r + 1}")
                    runs[name].append(train_once(source, args.dataset, args.seed, tmp / f"model-{len(runs[name])}"))
            sizes = {part.name: path_bytes(part) for part in (tmp / "model-0").iterdir()}
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "baseline")],
                               capture_output=True)
    stages = list(dict.fromkeys(s for name in sides for _, st in runs[name] for s in st))
    median = {name: {s: float(np.median([st.get(s, 0.0) for _, st in runs[name]])) for s in stages}
              for name in sides}
    wall = {name: float(np.median([w for w, _ in runs[name]])) for name in sides}
    names = list(sides)
    header = ["stage"] + [f"{n}, s" for n in names] + (["ratio"] if len(names) == 2 else [])
    rows = []
    for s in stages + ["total (stages)", "process wall time"]:
        vals = [sum(median[n].values()) if s == "total (stages)" else wall[n] if s == "process wall time"
                else median[n][s] for n in names]
        rows.append([s] + [f"{v:.2f}" for v in vals] + ([f"{vals[0] / vals[1]:.2f}" if vals[1] else ""]
                                                         if len(names) == 2 else []))
    size_rows = [[name, f"{b / 2**20:.1f}"] for name, b in sorted(sizes.items())]
    size_rows.append(["total", f"{sum(sizes.values()) / 2**20:.1f}"])
    body = (f"`python -m xrmeta.train --dataset {args.dataset} --seed {args.seed}` (all cores: {os.cpu_count()}); "
            f"medians of {args.repeats} timed runs per side, alternating" +
            (f"; baseline: revision `{args.baseline}` of this repository" if args.baseline else "") + ".\n\n"
            "### Train time (s)\n\n" + C.md_table(header, rows) +
            "\n\n### Model size on disk (MiB, this checkout)\n\n" + C.md_table(["part", "MiB"], size_rows) + "\n")
    C.report("train_cost", args.dataset, body, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
