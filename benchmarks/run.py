"""One command for every benchmark: runs each section as its own process (`python -m benchmarks.<section>`),
then writes the report from their outputs (benchmarks/out/<section>_<dataset>.md, plots in benchmarks/plots/)
with a header that states the machine, the versions, the commands and the wall time. The report of homedepot
is BENCHMARKS.md, of any other dataset BENCHMARKS-<dataset>.md; --quick: every section on tiny synthetic data,
report and outputs in benchmarks/out/quick/ (checks that every section runs; its figures mean nothing).

Run: .venv/bin/python -m benchmarks.run --dataset homedepot        (or: make bench DATASET=homedepot)
--only SECTION ...: run just those sections and splice their outputs into the existing report (each replaces its
section, or joins in run order; the commands table and a dated note say which sections were re-run).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import common as C

ROOT = Path(__file__).resolve().parents[1]
# per dataset, in the order the report shows them; after the first dataset's peers, the synthetic scale, lifecycle
# and compaction checks; after its last section, the synthetic memory check.
SECTIONS = ("grounding", "peers", "train_cost", "latency", "startup", "distributed", "insertion", "feedback", "swap",
            "selector", "generator_ablation")
SYNTHETIC_ONLY = ("scale", "lifecycle", "compaction", "memory")
ABOUT = {
    "peers": "recall vs latency against PECOS, omikuji, napkinXC, BM25 and MiniLM + hnswlib; build cost; zero-shot "
             "recall vs insertion cost",
    "scale": "query latency and insertion cost from 10^4 to 10^6 labels (synthetic)",
    "lifecycle": "query latency as inserted items outgrow the trained leaf clusters, with and without the leaf split; "
                 "its zero-shot accuracy on the real datasets",
    "compaction": "compact() after removing half of 10^6 inserted items: time, RSS against a model that never held "
                  "them, latency (synthetic)",
    "swap": "retrain time, and the longest query in 4 threads while reload() swaps the retrained model in",
    "train_cost": "train time, model size, quality of the XR-Linear base",
    "latency": "xrmeta vs PECOS predict-only at beams 1, 10, 50, with a top-k equality check",
    "startup": "a fresh process's first query and first insert after loading a model (and the C++ example's)",
    "distributed": "ShardedModel on Ray: equality with XRMetaModel under the same writes, latency and throughput at "
                   "1-2 shards and 2 replicas, two local nodes, memory per shard, bulk cold start, killing a shard",
    "insertion": "items/s from title to searchable item, step breakdown",
    "feedback": "one revealed click per new item: add_feedback vs no feedback vs retrained, 3 split seeds; events/s; "
                "latency before and after",
    "selector": "neighbour search for new items: exact, pruned, HNSW",
    "grounding": "xrmeta through the tree vs BM25 and brute-force title TF-IDF over 3 split seeds, with the tree's "
                 "reach, insertion and training cost",
    "generator_ablation": "the learned generator and its ablations vs the hand-made generators over 3 split seeds",
    "memory": "memory of insertion up to 10^6 items, and insert / remove cycles (synthetic)",
}
# training time is compared with the last revision before title grounding, in the same run
EXTRA = {"train_cost": ["--baseline", "1e4f727"]}


def report_path(dataset: str, quick: bool) -> Path:
    """BENCHMARKS.md for homedepot (the README links it), BENCHMARKS-<dataset>.md for the others."""
    name = "BENCHMARKS.md" if dataset == "homedepot" else f"BENCHMARKS-{dataset}.md"
    return C.OUT / "quick" / name if quick else ROOT / name


def section_cmd(section: str, dataset: str, seed: int, quick: bool) -> list[str]:
    cmd = [sys.executable, "-m", f"benchmarks.{section}", "--seed", str(seed)]
    cmd += [] if section in SYNTHETIC_ONLY else ["--dataset", dataset]
    return cmd + (["--quick"] if quick else EXTRA.get(section, []))


def run_section(section: str, dataset: str, args, logs: Path) -> dict:
    """Run one section in its own process (its own memory and thread settings); stdout/stderr to a log file."""
    cmd = section_cmd(section, dataset, args.seed, args.quick)
    out = C.OUT / ("quick" if args.quick else "") / f"{section}_{'synthetic' if args.quick else dataset}.md"
    log_path = logs / f"{section}_{dataset}.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    started = time.time()
    C.log(f"[{datetime.datetime.now():%H:%M:%S}] {section} {dataset} ...")
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.time() - started
    fresh = out.exists() and out.stat().st_mtime >= started
    C.log(f"    {'done' if rc == 0 else f'FAILED (exit {rc}, log {log_path})'} in {seconds:.0f} s")
    return dict(section=section, dataset=dataset, cmd=cmd, rc=rc, seconds=seconds, out=out if fresh else None)


def shift_headings(md: str) -> str:
    """Demote every markdown heading one level (outside code fences): sections nest under the file's title."""
    lines, fenced = [], False
    for line in md.splitlines():
        fenced ^= line.startswith("```")
        lines.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(lines)


def anchor(r: dict) -> str:
    """GitHub's anchor of the heading '## <section> — <dataset>'."""
    text = f"{r['section']} — {r['dataset']}".lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def header(args, runs: list[dict], wall: float, load: str) -> str:
    cmds = [[r["section"], r["dataset"], "`" + " ".join([".venv/bin/python"] + r["cmd"][1:]) + "`",
             f"{r['seconds']:.0f}", "ok" if r["rc"] == 0 else f"FAILED (exit {r['rc']})"] for r in runs]
    failed = [f"{r['section']} ({r['dataset']})" for r in runs if r["rc"] != 0 or r["out"] is None]
    machine = [[k, v] for k, v in C.machine_facts().items()] + [["load average at start", load]]
    return C.text(
        "run", command="python -m benchmarks.run " + " ".join(sys.argv[1:]), minutes=wall / 60, seed=args.seed,
        date=f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}", fresh=", models retrained" * args.fresh,
        dataset=(args.dataset[0] if len(args.dataset) == 1 else "homedepot") + " QUICK=1" * args.quick, machine=C.table(["machine", ""], machine),
        versions=C.table(["package", "version"], [[k, v] for k, v in C.versions().items()]),
        commands=C.table(["section", "dataset", "command", "wall s", "status"], cmds),
        failed=C.text("run.failed", failed=", ".join(failed)) if failed else "",
        sections=C.bullets(f"[{r['section']} — {r['dataset']}](#{anchor(r)}): {ABOUT.get(r['section'], '')}"
                           for r in runs if r["out"] is not None)) + "\n"


def plan(datasets: list[str], scale: bool) -> list[tuple[str, str]]:
    """(section, dataset) in run order, which is also the order of the report."""
    steps = []
    for i, ds in enumerate(datasets):
        steps += [("grounding", ds), ("peers", ds)]
        steps += [(s, "synthetic") for s in ("scale", "lifecycle", "compaction")] if i == 0 and scale else []
        steps += [(s, ds) for s in SECTIONS[2:]] + ([("memory", "synthetic")] if i == 0 else [])
    return steps


SECTION_HEADING = re.compile(r"^## (\w+) — (\w+)$", re.M)


def splice(report: str, runs: list[dict], order: list[tuple[str, str]], note: str) -> str:
    """The existing report with the re-run sections' bodies (replacing theirs, or inserted in run order), their rows
    of the commands table and of the sections list, and a note saying what was re-run."""
    starts = [m.start() for m in SECTION_HEADING.finditer(report)]
    head = report[: starts[0]] if starts else report
    blocks = {}  # (section, dataset) -> body, in report order
    for a, b in zip(starts, starts[1:] + [len(report)]):
        m = SECTION_HEADING.match(report, a)
        blocks[(m.group(1), m.group(2))] = report[a:b].rstrip("\n")
    for r in runs:
        if r["out"] is not None:
            blocks[(r["section"], r["dataset"])] = shift_headings(r["out"].read_text()).rstrip("\n")
    rank = {step: i for i, step in enumerate(order)}
    keys = sorted(blocks, key=lambda key: rank.get(key, len(rank)))
    for r in runs:  # commands table: replace the section's row, or add one
        status = "ok" if r["rc"] == 0 else f"FAILED (exit {r['rc']})"
        row = (f"| {r['section']} | {r['dataset']} | `{' '.join(['.venv/bin/python'] + r['cmd'][1:])}` | "
               f"{r['seconds']:.0f} | {status}, re-run alone (--only) |")
        old = re.search(rf"^\| {r['section']} \| {r['dataset']} \|.*$", head, re.M)
        if old:
            head = head[: old.start()] + row + head[old.end():]
        else:
            last = list(re.finditer(r"^\| .* \| (ok|FAILED).*\|$", head, re.M))[-1]
            head = head[: last.end()] + "\n" + row + head[last.end():]
        item = f"- [{r['section']} — {r['dataset']}](#{anchor(r)}): {ABOUT.get(r['section'], '')}"
        if f"(#{anchor(r)})" not in head:
            head = head.rstrip("\n") + "\n" + item + "\n\n"
    marker = "\n## Machine and versions"
    head = head.replace(marker, f"\n{note}\n{marker}", 1)
    return head.rstrip("\n") + "\n\n" + "\n\n".join(blocks[key] for key in keys) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", nargs="+", default=["homedepot"],
                   choices=("homedepot", "pricerunner", "synthetic", "all"),
                   help="real datasets to run every section on (the scale check runs once, on synthetic data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true",
                   help="delete the cached models first (time a run from nothing); to leave a shared cache alone, "
                   "point XRMETA_BENCH_OUT at an empty directory instead")
    p.add_argument("--no-scale", action="store_true", help="skip the synthetic scale check")
    p.add_argument("--quick", action="store_true", help="every section on tiny synthetic data (does it run?)")
    p.add_argument("--only", nargs="+", metavar="SECTION", choices=SECTIONS + SYNTHETIC_ONLY,
                   help="run only these sections and splice them into the existing report")
    p.add_argument("--out", type=Path, help="the markdown file to write (default: BENCHMARKS.md for homedepot, "
                   "BENCHMARKS-<dataset>.md otherwise; under benchmarks/out/quick/ with --quick)")
    args = p.parse_args(argv)
    if "all" in args.dataset:
        args.dataset = ["homedepot", "pricerunner"]
    if args.quick:
        args.dataset = ["synthetic"]
    args.out = args.out or report_path(args.dataset[0], args.quick)
    started, load = time.time(), " ".join(f"{x:.2f}" for x in os.getloadavg())
    logs = C.OUT / ("quick" if args.quick else "") / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        shutil.rmtree(C.OUT / "models", ignore_errors=True)
    order = plan(args.dataset, not args.no_scale)
    steps = [step for step in order if not args.only or step[0] in args.only]
    runs = [run_section(s, ds, args, logs) for s, ds in steps]
    wall = time.time() - started
    if args.only:
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                  text=True).stdout.strip() or "unknown"
        note = C.text("run.only", command="python -m benchmarks.run " + " ".join(sys.argv[1:]), minutes=wall / 60,
                      revision=revision,
                      date=f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}", load=load,
                      sections=", ".join(f"{s} ({ds})" for s, ds in steps))
        args.out.write_text(splice(args.out.read_text(), runs, order, note))
        C.log(f"spliced {len(runs)} sections into {args.out}; wall time {wall:.0f} s")
        return 0 if all(r["rc"] == 0 and r["out"] is not None for r in runs) else 1
    bodies = [shift_headings(r["out"].read_text()) for r in runs if r["out"] is not None]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header(args, runs, wall, load) + "\n" + "\n\n".join(bodies) + "\n")
    C.log(f"wrote {args.out}; total wall time {wall:.0f} s ({wall / 60:.1f} min)")
    return 0 if all(r["rc"] == 0 and r["out"] is not None for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
