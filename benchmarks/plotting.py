"""matplotlib figures of the benchmark results (PNG, committed in benchmarks/plots/ so BENCHMARKS.md can link
them). Every function takes measured results only and draws them; nothing here computes a figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from . import common

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SET_TITLES = {"observed": "observed items", "zero_shot": "zero-shot (novel items only)",
              "generalized": "generalized (all items)"}
STYLE = {  # one look per system across figures
    "xrmeta": dict(color="tab:red", marker="o"),
    "xrmeta (as trained)": dict(color="tab:red", marker="o", linestyle="--", mfc="none"),
    "PECOS XR-Linear": dict(color="tab:blue", marker="s"),
    "omikuji": dict(color="tab:green", marker="^"),
    "napkinXC PLT": dict(color="tab:olive", marker="v"),
    "BM25 (bm25s)": dict(color="tab:purple", marker="D"),
    "MiniLM + hnswlib": dict(color="tab:orange", marker="P"),
    "MiniLM exact": dict(color="tab:brown", marker="X"),
}


def _save(fig, name: str) -> Path:
    common.PLOTS.mkdir(parents=True, exist_ok=True)  # benchmarks/plots/, or out/quick/ in quick mode
    path = common.PLOTS / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def recall_vs_latency(curves: dict, name: str, title: str, metric: str = "R@100") -> Path:
    """curves: {system: [(latency_ms, {set: {metric: value}}, setting), ...]}; one panel per test set."""
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), sharex=True)
    for ax, (set_name, set_title) in zip(axes, SET_TITLES.items()):
        for system, pts in curves.items():
            if system == "xrmeta (as trained)" and set_name != "observed":
                continue
            pts = sorted(pts, key=lambda p: p[0])
            xs, ys = [p[0] for p in pts], [p[1][set_name][metric] for p in pts]
            ax.plot(xs, ys, label=system, markersize=6, **STYLE.get(system, {}))
            if system in ("xrmeta", "MiniLM + hnswlib"):
                for x, y, p in zip(xs, ys, pts):
                    ax.annotate(p[2].split()[-1], (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7,
                                color=STYLE[system]["color"])
        ax.set_xscale("log")
        ax.set_xlabel("ms per query (median, one query per call, single thread, text in)")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(set_title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return _save(fig, name)


def xrmeta_vs_pecos(curves: dict, name: str, title: str, metric: str = "R@100") -> Path:
    """Observed-items panel of `recall_vs_latency` for xrmeta and PECOS only, zoomed to their range."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for system in ("PECOS XR-Linear", "xrmeta (as trained)", "xrmeta"):
        pts = sorted(curves[system], key=lambda p: p[0])
        xs, ys = [p[0] for p in pts], [p[1]["observed"][metric] for p in pts]
        ax.plot(xs, ys, label=system, markersize=6, **STYLE[system])
        for x, y, p in zip(xs, ys, pts):
            below = "PECOS" in system  # labels under PECOS's points, above xrmeta's
            ax.annotate(p[2].split()[-1], (x, y), textcoords="offset points", xytext=(3, -10 if below else 4),
                        fontsize=7, color=STYLE[system]["color"])
    ax.set_xscale("log")
    ax.set_xlabel("ms per query (median, one query per call, single thread, text in); labels: beam")
    ax.set_ylabel(f"observed {metric} (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, name)


def recall_vs_insertion(rows: list[dict], name: str, title: str) -> Path:
    """rows: {system, us_per_item, R@10, R@100, can_add}; systems that cannot add items are drawn hollow."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, metric in zip(axes, ("R@10", "R@100")):
        for r in rows:
            style = dict(STYLE.get(r["system"], {}))
            style.pop("linestyle", None)
            if not r["can_add"]:
                style["mfc"] = "none"
            ax.plot([r["us_per_item"]], [r[metric]], linestyle="none", markersize=9, label=r["label"], **style)
        ax.set_xscale("log")
        ax.set_xlabel("µs per novel item to make it searchable")
        ax.set_ylabel(f"zero-shot {metric} (%)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title + "\nhollow: cannot add labels (placed at full retraining time per novel item)", fontsize=11)
    return _save(fig, name)


def scale_curves(grown: list[dict], trained: list[dict], name: str, title: str) -> Path:
    """grown / trained: {labels, online_median_ms, online_p99_ms, insert_us}; log-log panels."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    n = [r["labels"] for r in grown]
    ax1.plot(n, [r["online_median_ms"] for r in grown], marker="o", color="tab:red",
             label="xrmeta, tree trained at 10^4, grown by insertion: median")
    ax1.plot(n, [r["online_p99_ms"] for r in grown], marker="o", color="tab:red", linestyle=":", label="same: p99")
    if trained:
        nt = [r["labels"] for r in trained]
        ax1.plot(nt, [r["online_median_ms"] for r in trained], marker="s", color="tab:green",
                 label="xrmeta, tree trained at that size: median")
        ax1.plot(nt, [r["pecos_median_ms"] for r in trained], marker="s", color="tab:blue", linestyle="--",
                 label="PECOS predict-only, same trained tree: median")
        ax2.plot(nt, [r["insert_us"] for r in trained], marker="s", color="tab:green",
                 label="into a tree trained at that size")
    ax2.plot([r["labels"] for r in grown if r.get("insert_us")], [r["insert_us"] for r in grown if r.get("insert_us")],
             marker="o", color="tab:red", label="into the 10^4 tree, as it grows")
    ax1.set_ylabel("ms per query (one query per call, single thread)")
    ax2.set_ylabel("µs per inserted item (add_items, single thread)")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("labels (items) in the catalogue")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, name)
