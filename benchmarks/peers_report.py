"""Tables, plots and raw JSON of `benchmarks.peers` (everything here is derived from measured results)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from . import common as C
from . import harness as H
from . import plotting

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
             f"{b.insert_items / b.insert_s:,.0f} items/s ({b.insert_s:.2f} s for {b.insert_items})"]
            for b in run.builds]
    return C.table(["system", "featurize / encode s", "train / index s", "peak memory MiB", "size on disk MiB",
                    "novel items made searchable"], rows)


def main_table(run: Run) -> str:
    ref = run.default_point(PECOS)[0]
    rows = [[p.system, p.setting] + [r[s][m] for s in SETS for m in METRICS] +
            [run.ms(p), run.lat[key(p)].p99_ms, run.ms(p) / run.ms(ref),
             f"{run.n_queries / run.lat[key(p)].batch_s:,.0f}"]
            for p, r in zip(run.points, run.results)]
    return C.table(["system", "setting"] + [f"{s} {m}" for s in SETS for m in METRICS] +
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
    notes = [C.text("peers.below", beams=_beams(below), mismatch=sum(c["mismatch"] for c in run.checks.values()))]
    flat = [b for b in below if b["x_rec"] == b["p_rec"] < b["at"]]
    if flat:
        notes.append(C.text("peers.below.flat", beams=_beams(flat), more=max(b["at"] - b["p_rec"] for b in flat)))
    noise = [b for b in below if b["ratio"][1] <= 1.0 <= b["ratio"][2]]
    if noise:
        notes.append(C.text("peers.below.noise", beams=_beams(noise)))
    slow = [b for b in below if H.verdict(*b["ratio_t"][1:]) == "slower"]
    if slow:
        (name, up), = ((k, v) for k, v in run.lat.items() if k.startswith("xrmeta upper layers only"))
        ub = int(name.split()[-1])
        p_ms, t_ms = run.ms(run.find(PECOS, f"beam {ub}")[0]), run.ms(run.find(XR_PLAIN, f"beam {ub}")[0])
        r = [b["ratio_t"][0] for b in slow]
        notes.append(C.text("peers.below.search", beams=_beams(slow), lo=min(r), hi=max(r), beam=ub, p_ms=p_ms,
                            up_ms=up.median_ms, share=up.median_ms / p_ms, leaf_ms=t_ms - up.median_ms))
    extra = [b["ratio"][0] / b["ratio_t"][0] for b in below]
    if max(extra) > 1.02:
        xb = next(b for b in run.builds if b.system == XR)
        notes.append(C.text("peers.below.inserted", n_inserted=xb.insert_items, lo=min(extra), hi=max(extra),
                            more=xb.insert_items / len(run.split.observed), **xb.facts))
    batch = [run.lat[key(run.find(PECOS, f"beam {b['beam']}")[0])].batch_s /
             run.lat[key(run.find(XR, f"beam {b['beam']}")[0])].batch_s for b in below]
    return "\n".join(notes + [C.text("peers.below.batch", lo=min(batch), hi=max(batch))])


def insertion_rows(run: Run) -> list[dict]:
    out = []
    for b in run.builds:
        p, r = run.default_point(b.system)
        seconds = b.insert_s if b.insert_s is not None else b.featurize_s + b.train_s
        out.append(dict(system=b.system, label=f"{b.system} ({p.setting})", can_add=b.insert_s is not None,
                        us_per_item=seconds / len(run.split.novel) * 1e6,
                        **{m: r["zero_shot"][m] for m in ("R@10", "R@100")}))
    return out


def render(run: Run) -> str:
    ds, sp, a = run.dataset, run.split, run.args
    by_system = {s: [(run.ms(p), r, p.setting) for p, r in zip(run.points, run.results) if p.system == s]
                 for s in dict.fromkeys(p.system for p in run.points)}
    overview = plotting.recall_vs_latency(by_system, f"peers_recall_latency_{ds}.png",
                                          f"{ds}: recall@100 vs latency (single thread, text in, top-100)")
    zoom = plotting.xrmeta_vs_pecos(by_system, f"peers_xrmeta_vs_pecos_{ds}.png",
                                    f"{ds}: observed items, xrmeta vs PECOS predict-only")
    ins = insertion_rows(run)
    ins_plot = plotting.recall_vs_insertion(ins, f"peers_zeroshot_insertion_{ds}.png",
                                            f"{ds}: zero-shot recall vs cost of making novel items searchable")
    crit, below = criterion_rows(run)
    return C.text(
        "peers", seed=sp.seed, n_observed=len(sp.observed), n_novel=len(sp.novel), n_train=len(sp.train_queries),
        n_test_observed=len(sp.observed_set.queries), n_test_zero_shot=len(sp.zero_shot_set.queries),
        n_test_generalized=len(sp.generalized_set.queries), cores=os.cpu_count(), k=a.k, n_queries=run.n_queries,
        n_calls=len(run.lat), block=a.block, repeats=a.repeats, builds=build_table(run),
        build_notes=C.bullets(f"{b.system}: {n}" for b in run.builds for n in b.notes),
        overview=C.figure(overview), points=main_table(run), zoom=C.figure(zoom),
        criterion=C.table(["beam", "PECOS ms", "xrmeta ms", "xrmeta / PECOS [95%]", "xrmeta as trained / PECOS [95%]",
                           "batch throughput xrmeta / PECOS", "top-100 vs PECOS: identical / tied only / mismatching",
                           "PECOS R@100", "xrmeta R@100", "PECOS R@100 at xrmeta's latency", "xrmeta − PECOS",
                           "xrmeta's curve"], crit),
        n_on=len(crit) - len(below), n_beams=len(crit), shortfall=shortfall_notes(below, run),
        featurize_ms=run.lat["TF-IDF featurize only | -"].median_ms, insertion_plot=C.figure(ins_plot),
        insertion=C.table(["system (setting)", "can add items", "µs per novel item", "zero-shot R@10",
                           "zero-shot R@100"], [[r["label"], "yes" if r["can_add"] else "no (x = full retraining)",
                                                  r["us_per_item"], r["R@10"], r["R@100"]] for r in ins],
                          ["", "", ".1f", ".2f", ".2f"]))


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
