"""A fresh process's first query and first insert: how long a restarted service waits before it answers.

The cached model, with the split's novel items but the last 50 inserted, is saved to a scratch directory. Each
repeat starts a new Python process (an empty numba cache directory of its own, so nothing compiled earlier is
reused) that imports xrmeta, loads the model, answers one query, then another, inserts one held-back item, then
another; each step is timed inside the process. Beside it, the C++ example (`cpp/examples/query_model.cpp`,
built with cmake) loads the same directory and answers one query in a process without Python.
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

from xrmeta.model import XRMetaModel

from . import common as C

ROOT = Path(__file__).resolve().parent.parent

# runs in the fresh process: argv = model dir, two queries, two (title, id) pairs; prints the step times as JSON
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from xrmeta.model import XRMetaModel
t = {"import_s": time.perf_counter() - t0}
def lap(name, fn):
    s = time.perf_counter(); fn(); t[name] = time.perf_counter() - s
d, q1, q2, a1, i1, a2, i2 = sys.argv[1:]
box = {}
lap("load_s", lambda: box.setdefault("m", XRMetaModel.load(d)))
m = box["m"]
lap("first_query_s", lambda: m.predict([q1]))
lap("second_query_s", lambda: m.predict([q2]))
lap("first_add_s", lambda: m.add_items([a1], [i1], threads=1))
lap("second_add_s", lambda: m.add_items([a2], [i2], threads=1))
print(json.dumps(t))
"""


def fresh_process(folder: Path, queries: list[str], items: list[tuple[str, str]]) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, OMP_NUM_THREADS="1")
        out = subprocess.run([sys.executable, "-c", CHILD, str(folder), *queries, *items[0], *items[1]], env=env,
                             capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_example(build: Path) -> Path:
    """cmake the C++ core and its example (Release); returns the example's path."""
    subprocess.run(["cmake", "-S", str(ROOT / "cpp"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"], check=True,
                   capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "query_model", "-j", "2"], check=True,
                   capture_output=True)
    return build / "query_model"


def example_run(exe: Path, folder: Path, line: str) -> float:
    started = time.perf_counter()
    subprocess.run([str(exe), str(folder), "10"], input=line, text=True, check=True, capture_output=True)
    return time.perf_counter() - started


def features_line(model: XRMetaModel, query: str) -> str:
    x = model.featurizer.transform([query]).tocsr()
    x.sort_indices()
    return " ".join(f"{j}:{v:.9g}" for j, v in zip(x.indices, x.data)) + "\n"


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--repeats", type=int, default=5, help="fresh processes (median)")
    args = C.parse(p, argv, repeats=2)
    started = time.perf_counter()
    model, data, split, folder = C.load(args.dataset, args.seed)
    titles, ids = C.titles_ids(data, split.novel)
    model.add_items(titles[:-50], ids[:-50], threads=1)
    queries = C.texts(data, split.generalized_set.queries[:2])
    held = list(zip(titles[-2:], ids[-2:]))
    work = Path(tempfile.mkdtemp(prefix="xrmeta-startup-"))
    try:
        model_dir = work / "model"
        model.save(model_dir)
        runs = [fresh_process(model_dir, queries, held) for _ in range(args.repeats)]
        C.log(f"fresh processes: {runs}")
        exe = build_example(work / "build")
        line = features_line(model, queries[0])
        example = [example_run(exe, model_dir, line) for _ in range(args.repeats)]
        size_mb = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file()) / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
    rows = [["import xrmeta.model", med["import_s"], ""], ["XRMetaModel.load", med["load_s"], ""],
            ["first predict (1 query)", med["first_query_s"], "target ≤ 1 s after load"],
            ["second predict", med["second_query_s"], ""],
            ["first add_items (1 item, threads=1)", med["first_add_s"], ""],
            ["second add_items", med["second_add_s"], ""],
            ["C++ example: load + 1 query + exit (whole process, no Python)", float(np.median(example)), ""]]
    table = C.table(["step (fresh process, median)", "seconds", ""], rows, ["", ".4f", ""])
    body = C.text("startup", repeats=args.repeats, n_items=len(model.catalog), n_inserted=len(titles) - 50,
                  size_mb=size_mb, table=table, load=" ".join(f"{v:.2f}" for v in os.getloadavg()))
    C.report("startup", args.dataset, body, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
