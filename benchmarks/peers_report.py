"""Tables, plots and raw JSON of `benchmarks.peers` (everything here is derived from measured results)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from . import harness as H
from . import plotting
from .common import bullets, figure, prose, section, table

SETS = ("observed", "zero_shot", "generalized")
METRICS = ("P@1", "R@10", "R@100")
XR, XR_PLAIN, PECOS = "xrmeta", "xrmeta (as trained)", "PECOS XR-Linear"


def key(p) -> str:
    return f"{p.system} | {p.setting}"


@dataclass
class Run:
    dataset: str
    data: object
    split: object
    builds: list
    points: list
    results: list  # evaluate_sets output, aligned with points
    lat: dict  # "system | setting" -> harness.Latency (online per query, batch over all n_queries)
    checks: dict  # beam -> latency.check of xrmeta (as trained) vs PECOS top-k on the observed test queries
    n_queries: int  # timed queries
    default_beam: int
    args: object

    def ms(self, p) -> float:
        return self.lat[key(p)].median_ms

    def find(self, system: str, setting: str):
        return next(((p, r) for p, r in zip(self.points, self.results) if (p.system, p.setting) == (system, setting)),
                    (None, None))

    def default_point(self, system: str):
        """A system's configured setting: the model's beam for xrmeta / PECOS, the smallest ef, else its only one."""
        beam = self.find(system, f"beam {self.default_beam}")
        return beam if beam[0] is not None else next((p, r) for p, r in zip(self.points, self.results)
                                                     if p.system == system)


def build_table(run: Run) -> str:
    rows = [[b.system, f"{b.featurize_s:.1f}", f"{b.train_s:.1f}", f"{b.peak_bytes / 2**20:.1f}",
             f"{b.disk_bytes / 2**20:.1f}", "cannot add labels" if b.insert_s is None else
             f"{b.insert_items / b.insert_s:,.0f} items/s ({b.insert_s:.2f} s for {b.insert_items})"] for b in run.builds]
    return table(["system", "featurize / encode s", "train / index s", "peak memory MiB", "size on disk MiB",
                  "novel items made searchable"], rows) + "\n\n" + bullets(
        f"{b.system}: {n}" for b in run.builds for n in b.notes)


def main_table(run: Run) -> str:
    ref = run.default_point(PECOS)[0]
    rows = [[p.system, p.setting] + [r[s][m] for s in SETS for m in METRICS] +
            [run.ms(p), run.lat[key(p)].p99_ms, run.ms(p) / run.ms(ref), f"{run.n_queries / run.lat[key(p)].batch_s:,.0f}"]
            for p, r in zip(run.points, run.results)]
    return table(["system", "setting"] + [f"{s} {m}" for s in SETS for m in METRICS] +
                 ["median ms/query", "p99 ms/query", f"median / PECOS {ref.setting}", "batch queries/s"], rows,
                 ["", ""] + [".2f"] * len(SETS) * len(METRICS) + [".3f", ".3f", ".2f", ""])


def _ratio(r) -> str:
    return f"{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}] {H.verdict(r[1], r[2])}"


def criterion_rows(run: Run) -> tuple[list[list], list[dict]]:
    """Observed R@100 of xrmeta vs PECOS's curve at xrmeta's latency, per beam; and every shortfall."""
    pecos = [(p, r) for p, r in zip(run.points, run.results) if p.system == PECOS]
    lat = np.array([run.ms(p) for p, _ in pecos])
    rec = np.array([r["observed"]["R@100"] for _, r in pecos])
    rows, below = [], []
    for pp, pr in pecos:
        (xp, xr), tp = run.find(XR, pp.setting), run.find(XR_PLAIN, pp.setting)[0]
        beam, x_ms = int(pp.setting.split()[-1]), run.ms(xp)
        at = H.recall_at_latency(lat, rec, x_ms)
        gap = None if at is None else xr["observed"]["R@100"] - at
        ratio = H.ratio(run.lat[key(xp)].online, run.lat[key(pp)].online)
        ratio_t = H.ratio(run.lat[key(tp)].online, run.lat[key(pp)].online)
        c, on_above = run.checks[beam], gap is None or gap >= 0
        rows.append([pp.setting, f"{run.ms(pp):.3f}", f"{x_ms:.3f}", _ratio(ratio), _ratio(ratio_t),
                     f"{run.lat[key(pp)].batch_s / run.lat[key(xp)].batch_s:.2f}",
                     f"{c['identical']} / {c['tie']} / {c['mismatch']}", f"{pr['observed']['R@100']:.2f}",
                     f"{xr['observed']['R@100']:.2f}", "no PECOS setting this fast" if at is None else f"{at:.2f}",
                     "" if gap is None else f"{gap:+.2f}", "on / above" if on_above else "BELOW"])
        if not on_above:
            below.append(dict(beam=beam, gap=gap, ratio=ratio, ratio_t=ratio_t, x_ms=x_ms, p_ms=run.ms(pp), at=at,
                              x_rec=xr["observed"]["R@100"], p_rec=pr["observed"]["R@100"]))
    return rows, below


def _beams(rows) -> str:
    return ", ".join(str(b["beam"]) for b in rows)


def shortfall_notes(below: list[dict], run: Run) -> str:
    """Why xrmeta's points fall below PECOS's curve, from this run's own measurements only."""
    if not below:
        return ""
    mismatch = sum(c["mismatch"] for c in run.checks.values())
    head = prose(f"**Below PECOS's curve at beams {_beams(below)}.** At the same beam, xrmeta (as trained) returns "
                 "PECOS's top-100 for every observed test query up to exactly tied scores at the cut (mismatching "
                 f"queries over all beams: {mismatch}), so its observed recall is PECOS's up to which tied items make "
                 "the cut. Why:")
    notes = []
    flat = [b for b in below if b["x_rec"] == b["p_rec"] < b["at"]]
    if flat:
        notes.append(prose(
            f"At beams {_beams(flat)} xrmeta's observed R@100 equals PECOS's at the same beam; PECOS's curve lies above "
            "it there because a narrower PECOS beam, fast enough to count at xrmeta's latency, scores up to "
            f"{max(b['at'] - b['p_rec'] for b in flat):.3f} points more (a wider beam can push a relevant item out of "
            "the top 100, in both systems)."))
    noise = [b for b in below if b["ratio"][1] <= 1.0 <= b["ratio"][2]]
    if noise:
        notes.append(f"At beams {_beams(noise)} the latency difference is within measurement noise (the ratio's 95% "
                     "interval contains 1).")
    slow = [b for b in below if H.verdict(*b["ratio_t"][1:]) == "slower"]
    if slow:
        (name, up), = ((k, v) for k, v in run.lat.items() if k.startswith("xrmeta upper layers only"))
        ub = int(name.split()[-1])
        p_ms, t_ms = run.ms(run.find(PECOS, f"beam {ub}")[0]), run.ms(run.find(XR_PLAIN, f"beam {ub}")[0])
        up_ms, r = up.median_ms, [b["ratio_t"][0] for b in slow]
        notes.append(prose(
            f"Search itself (xrmeta as trained is slower at beams {_beams(slow)}, by x{min(r):.2f}–{max(r):.2f}):",
            f"per query xrmeta featurizes, then searches the upper layers and the leaves in one kernel call. At beam "
            f"{ub}, featurizing plus the upper layers' beam search alone takes {up_ms:.3f} ms ({up_ms / p_ms:.0%} of "
            f"PECOS's whole answer, {p_ms:.3f} ms); the leaf layer then adds {t_ms - up_ms:.3f} ms for xrmeta as "
            "trained."))
    extra = [b["ratio"][0] / b["ratio_t"][0] for b in below]
    if max(extra) > 1.02:
        xb = next(b for b in run.builds if b.system == XR)
        notes.append(prose(
            f"The inserted items: with the {xb.insert_items} novel items in the catalogue xrmeta takes "
            f"x{min(extra):.2f}–{max(extra):.2f} the time it takes as trained, for "
            f"{xb.insert_items / len(run.split.observed):.0%} more items; a query pays per non-zero weight of every "
            f"item it scores, and an inserted classifier has {xb.facts['nnz_inserted']:.1f} non-zeros on average "
            f"against {xb.facts['nnz_trained']:.1f} for a trained one (synthesized classifiers are capped at "
            "`max_nnz`, trained ones pruned at the tree's weight threshold)."))
    batch = [run.lat[key(run.find(PECOS, f"beam {b['beam']}")[0])].batch_s /
             run.lat[key(run.find(XR, f"beam {b['beam']}")[0])].batch_s for b in below]
    notes.append(f"In batch mode (one call for all queries) xrmeta's throughput is x{min(batch):.2f}–"
                 f"{max(batch):.2f} PECOS's at these beams.")
    return head + "\n" + bullets(notes)


def insertion_rows(run: Run) -> list[dict]:
    out = []
    for b in run.builds:
        p, r = run.default_point(b.system)
        seconds = b.insert_s if b.insert_s is not None else b.featurize_s + b.train_s
        out.append(dict(system=b.system, label=f"{b.system} ({p.setting})", can_add=b.insert_s is not None,
                        us_per_item=seconds / len(run.split.novel) * 1e6,
                        **{m: r["zero_shot"][m] for m in ("R@10", "R@100")}))
    return out


def method(run: Run) -> str:
    s, a = run.split, run.args
    return prose(
        f"Split: seed {s.seed}, {len(s.observed)} observed / {len(s.novel)} novel items, {len(s.train_queries)} "
        f"training queries; test queries: observed {len(s.observed_set.queries)}, zero-shot "
        f"{len(s.zero_shot_set.queries)}, generalized {len(s.generalized_set.queries)}. Every system built from "
        f"nothing in this run on this machine ({os.cpu_count()} cores).") + "\n\nHow it is measured:\n" + bullets([
        prose("Quality: `xrmeta.evaluate.evaluate_sets` for every system (top-100, percent). Observed: rank observed "
              "items only; zero-shot: novel items only; generalized: all items. Each system ranks a subset with its "
              "own filter (xrmeta's leaf subset, a bm25s weight mask, a mask in exact search; hnswlib gets a graph "
              "per set); PECOS, omikuji and napkinXC only know observed items, so their zero-shot recall is what they "
              "score there: 0."),
        prose(f"Latency: from query text to top-{a.k} (featurization, tokenization or encoding included), single "
              "thread (numba, PECOS, omikuji, napkinXC, hnswlib, torch and BLAS at one thread), one query per call "
              f"over {run.n_queries} sampled generalized test queries. The {len(run.lat)} timed calls are interleaved "
              f"in blocks: per block of {a.block} queries the systems run in a random order, each over the whole block "
              "after one untimed call (its own data in cache, as on a dedicated server). Batch: one call over the "
              f"same {run.n_queries} queries, median of {a.repeats} (omikuji's Python API has no batch call: a loop). "
              "Absolute times on a shared VM are noisy: compare the ratio column, measured side by side."),
        "Peak memory: highest RSS sampled every 5 ms during the build minus RSS before it, in this process.",
        prose("Size on disk: what answering a query from text needs (TF-IDF featurizer included for the four TF-IDF "
              "systems, the encoder's files for MiniLM).")]) + "\n"


def criterion_section(run: Run, plot) -> str:
    crit, below = criterion_rows(run)
    n_below = sum(r[-1] == "BELOW" for r in crit)
    featurize_ms = run.lat["TF-IDF featurize only | -"].median_ms
    return section(
        "Observed items: xrmeta vs PECOS at equal latency", figure(plot),
        prose("Per beam: median latency of each, the median-latency ratio with its 95% bootstrap interval (queries "
              "resampled in pairs) for xrmeta with the novel items inserted and as trained, observed R@100 of each, "
              "and PECOS's R@100 at xrmeta's latency (interpolated in log-latency along PECOS's measured beams). The "
              "top-100 check compares xrmeta as trained with PECOS on every observed test query "
              "(`benchmarks.latency.check`)."),
        table(["beam", "PECOS ms", "xrmeta ms", "xrmeta / PECOS [95%]", "xrmeta as trained / PECOS [95%]",
               "batch throughput xrmeta / PECOS", "top-100 vs PECOS: identical / tied only / mismatching",
               "PECOS R@100", "xrmeta R@100", "PECOS R@100 at xrmeta's latency", "xrmeta − PECOS", "xrmeta's curve"],
              crit),
        f"xrmeta (novel items inserted) is on or above PECOS's observed curve at {len(crit) - n_below} of "
        f"{len(crit)} beams.", shortfall_notes(below, run),
        f"Of the TF-IDF systems' time, featurizing one query alone takes {featurize_ms:.3f} ms (median, same sample).")


def insertion_section(run: Run, plot, rows: list[dict]) -> str:
    return section(
        "Zero-shot recall vs insertion cost", figure(plot),
        prose(f"Each system at its configured setting. x: seconds to make the {len(run.split.novel)} novel items "
              "searchable, per item (xrmeta `add_items` and hnswlib `add_items` after encoding: one thread; BM25: "
              "re-indexing every title). Systems that cannot add labels are placed at their full training time per "
              "novel item, for scale: retraining does not help them, as novel items have no training queries."),
        table(["system (setting)", "can add items", "µs per novel item", "zero-shot R@10", "zero-shot R@100"],
              [[r["label"], "yes" if r["can_add"] else "no (x = full retraining)", r["us_per_item"], r["R@10"],
                r["R@100"]] for r in rows], ["", "", ".1f", ".2f", ".2f"]))


def render(run: Run) -> str:
    ds = run.dataset
    by_system = {s: [(run.ms(p), r, p.setting) for p, r in zip(run.points, run.results) if p.system == s]
                 for s in dict.fromkeys(p.system for p in run.points)}
    overview = plotting.recall_vs_latency(by_system, f"peers_recall_latency_{ds}.png",
                                          f"{ds}: recall@100 vs latency (single thread, text in, top-100)")
    zoom = plotting.xrmeta_vs_pecos(by_system, f"peers_xrmeta_vs_pecos_{ds}.png",
                                    f"{ds}: observed items, xrmeta vs PECOS predict-only")
    ins = insertion_rows(run)
    ins_plot = plotting.recall_vs_insertion(ins, f"peers_zeroshot_insertion_{ds}.png",
                                            f"{ds}: zero-shot recall vs cost of making novel items searchable")
    return "\n".join([method(run), section("Build cost", build_table(run)),
                      section("Recall vs latency", figure(overview), main_table(run)),
                      criterion_section(run, zoom), insertion_section(run, ins_plot, ins)])


def raw(run: Run) -> dict:
    """Every measured number, for re-plotting or checking."""
    keys = {key(p) for p in run.points}
    return {
        "dataset": run.dataset, "builds": [asdict(b) for b in run.builds],
        "points": [{"system": p.system, "setting": p.setting, "quality": r,
                    "online_ms": {"median": run.ms(p), "p99": run.lat[key(p)].p99_ms},
                    "batch_queries_per_s": run.n_queries / run.lat[key(p)].batch_s}
                   for p, r in zip(run.points, run.results)],
        "top100_check_vs_pecos": {str(b): c for b, c in run.checks.items()},
        "online_ms_other": {k: v.median_ms for k, v in run.lat.items() if k not in keys},
    }
