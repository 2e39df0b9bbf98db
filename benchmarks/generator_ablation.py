"""Learned generator vs the hand-made ones, over 3 seeds of the split, plus ablations and its costs.

1. Zero-shot P@1 / R@10 / R@100 (novel items ranked among novel items) and, in the generalized setting, P@1 of
   the observed test queries with every item ranked (a new item on top of a relevant observed one is a miss),
   next to plain XR-Linear (PECOS) on the same queries. Generators mean, weighted, self, mean_self and learned,
   each on the cached model of split seeds 0, 1, 2: mean +- sd (min..max) over the seeds.
2. Ablations on seed 0: K in {1, 2, 3, 6, 20}; generator depth 1 vs 2; neighbour search by title TF-IDF vs by
   PIFA (observed items indexed by the normalized sum of their training queries; unclicked items drop out,
   as their weak classifiers would otherwise win on title-to-title similarity).
3. Costs on seed 0: generator training vs XR-Linear training (same data, same threads, same process), insertion
   throughput (single thread) and query latency (single thread, one query per call) vs PECOS predict-only.

Every variant works on a fresh copy of the model loaded from disk, inserts every novel item of the split with
`add_items` and evaluates with beam 10, top 100.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import scipy.sparse as smat
from sklearn.preprocessing import normalize

from xrmeta.coldstart.learned import LearnedConfig
from xrmeta.evaluate import evaluate_sets, insert_novel, slot_columns, slots_to_scores
from xrmeta.metrics import evaluate_scores
from xrmeta.model import XRMetaModel, make_selector
from xrmeta.tree import train_xlinear

from . import common as C

GENERATORS = ("mean", "weighted", "self", "mean_self", "learned")
COLUMNS = ("zero-shot P@1", "zero-shot R@10", "zero-shot R@100", "observed P@1, all items ranked")
BEAM = 10


class PifaSearch:
    """Neighbour search over PIFA vectors of the observed items (the normalized sum of their training queries;
    items without one cannot be found); `Z` stays their titles (the generator's features)."""

    def __init__(self, model: XRMetaModel, X, Y):
        Ys = smat.csr_matrix(Y, dtype=np.float32)[:, np.argsort(model.label_slot)]
        self.index = make_selector(normalize(Ys.T.tocsr() @ X).tocsr(), model.configs.coldstart)
        self.Z = model.selector.Z
        self.n_items = self.Z.shape[0]

    def search(self, Q, k):
        return self.index.search(Q, k)


class Seed:
    """One cached model (split seed) with its data, training rows and PECOS's observed P@1."""

    def __init__(self, dataset: str, seed: int):
        model, self.data, self.split, self.folder = C.load(dataset, seed)
        self.assign = model.configs.coldstart.assign
        self.X = model.featurizer.transform([self.data.query_texts[i] for i in self.split.train_queries], threads=2)
        es = self.split.observed_set
        slots, scores = model.pecos_predict_slots(self._queries(model, es), k=100, beam_size=BEAM)
        self.pecos_observed = evaluate_scores(es.Y, slots_to_scores(slots, scores, slot_columns(model, self.data),
                                                                    self.data.n_items))["P@1"]

    def _queries(self, model, es):
        return model.featurizer.transform([self.data.query_texts[i] for i in es.queries], threads=1)

    def variant(self, generator: str, config: LearnedConfig | None = None, k: int | None = None,
                pifa: bool = False) -> tuple[XRMetaModel, dict]:
        """A fresh model with the variant's generator and every novel item inserted, and its metrics."""
        model = XRMetaModel.load(self.folder)
        cs = model.configs.coldstart
        if k is not None:
            cs.k = k
            cs.n_candidates = max(cs.n_candidates, 2 * k + 16)  # the learned training asks for k + 16
            model.selector = make_selector(model.selector.Z, cs)
        if pifa:
            model.selector = PifaSearch(model, self.X, self.split.Y_train)
        if generator == "learned":
            model.fit_generator(self.X, self.split.Y_train, config or LearnedConfig(), threads=2, verbose=False)
        else:
            model.use_generator(generator)
        insert_novel(model, self.data, self.split)
        return model, self.evaluate(model)

    def evaluate(self, model: XRMetaModel) -> dict:
        slot_col = slot_columns(model, self.data)

        def predict(texts, subset, k):
            X = model.featurizer.transform(texts, threads=1)
            return model.predict_slots(X, k=k, beam_size=BEAM, subset=subset, threads=1)

        zs = evaluate_sets(predict, self.data, self.split, slot_col)["zero_shot"]
        es = self.split.observed_set  # its queries, every item ranked: relevant new items do not count
        slots, scores = model.predict_slots(self._queries(model, es), k=100, beam_size=BEAM, subset="all")
        observed = evaluate_scores(es.Y, slots_to_scores(slots, scores, slot_col, self.data.n_items))["P@1"]
        return {COLUMNS[0]: zs["P@1"], COLUMNS[1]: zs["R@10"], COLUMNS[2]: zs["R@100"], COLUMNS[3]: observed}


def spread(values: list[float]) -> str:
    v = np.asarray(values)
    return f"{v.mean():.2f} ± {v.std():.2f} ({v.min():.2f}..{v.max():.2f})"


def seeds_table(seeds: list[Seed]) -> str:
    rows, per_seed = [], {}
    for name in GENERATORS:
        results = []
        for s in seeds:
            C.log(f"seed {s.split.seed}: {name}")
            results.append(s.variant(name)[1])
        per_seed[name] = results
        rows.append([name] + [spread([r[c] for r in results]) for c in COLUMNS])
    rows.append(["XR-Linear (PECOS)", "0 (unreachable)", "0", "0", spread([s.pecos_observed for s in seeds])])
    best = {c: max(("mean", "weighted", "self", "mean_self"), key=lambda g: np.mean([r[c] for r in per_seed[g]]))
            for c in COLUMNS[:2]}
    verdict = []
    for c, g in best.items():
        wins = [a[c] > b[c] for a, b in zip(per_seed["learned"], per_seed[g])]
        verdict.append(f"{c}: learned beats the best hand-made baseline ({g}) on {sum(wins)} of {len(wins)} seeds")
    verdict.append("assigner (the model's, the same for every generator) per seed: "
                   + ", ".join(f"{s.split.seed}: {s.assign}" for s in seeds))
    gap = [r[COLUMNS[3]] - s.pecos_observed for r, s in zip(per_seed["learned"], seeds)]
    verdict.append("observed P@1 with every item ranked, learned minus XR-Linear per seed: "
                   + ", ".join(f"{g:+.2f}" for g in gap))
    return (C.md_table(["generator"] + list(COLUMNS), rows) + "\n\n" + "\n".join(f"- {v}" for v in verdict) + "\n")


def ablation_table(s: Seed) -> str:
    rows = []
    for k in (1, 2, 3, 6, 20):
        for name in ("mean_self", "learned"):
            C.log(f"ablation K={k} {name}")
            rows.append([f"K={k}", name] + [s.variant(name, k=k)[1][c] for c in COLUMNS])
    C.log("ablation depth 2")
    rows.append(["depth 2", "learned"] + [s.variant("learned", LearnedConfig(depth=2))[1][c] for c in COLUMNS])
    for name in ("mean_self", "learned"):
        C.log(f"ablation PIFA selector {name}")
        rows.append(["selector on PIFA", name] + [s.variant(name, pifa=True)[1][c] for c in COLUMNS])
    return C.md_table(["variant (K=3, depth 1, title selector unless named)", "generator"] + list(COLUMNS), rows)


def costs_table(s: Seed, dataset: str) -> str:
    model = XRMetaModel.load(s.folder)
    t = model.configs.tree
    observed = [s.data.item_texts[j] for j in s.split.observed]
    Z = model.featurizer.transform(observed, threads=2)
    xlinear = C.clock(train_xlinear, s.X, s.split.Y_train, Z, t, 2)[0]
    times = []
    for _ in range(3):  # the first includes loading the compiled kernels and torch's first use
        times.append(C.clock(model.fit_generator, s.X, s.split.Y_train, LearnedConfig(), 2, False)[0])
    torch_import = float(subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); import torch; "
                                         "print(time.perf_counter() - t)"], capture_output=True, text=True,
                                        check=True).stdout)
    warm = float(np.median(times[1:]))
    rows = [["XR-Linear tree + classifiers (train_xlinear)", f"{xlinear:.2f}", "100%"],
            ["learned generator, warm (median of 2)", f"{warm:.2f}", f"{warm / xlinear:.0%}"],
            ["learned generator, first call in the process", f"{times[0]:.2f}", f"{times[0] / xlinear:.0%}"],
            ["`import torch` (fresh interpreter)", f"{torch_import:.2f}", f"{torch_import / xlinear:.0%}"]]
    train = C.md_table(["training step (2 threads)", "seconds", "vs XR-Linear"], rows)

    C.single_thread()
    titles = [s.data.item_texts[j] for j in s.split.novel]
    ids = [s.data.item_ids[j] for j in s.split.novel]
    rates = {}
    for name in ("mean_self", "learned"):
        runs = []
        for r in range(4):
            m = XRMetaModel.load(s.folder)
            if name == "learned":  # the generator trained above
                m.generator = model.generator
            m.configs.coldstart.generator = name
            if name != "learned":
                m.use_generator(name)
            runs.append(C.clock(m.add_items, titles, ids, threads=1)[0])
        rates[name] = len(ids) / float(np.median(runs[1:]))  # the first warms the kernels
    insert = C.md_table(["generator", "items/s (one add_items call, single thread, median of 3)"],
                        [[n, f"{v:,.0f}"] for n, v in rates.items()])

    es = s.split.generalized_set  # m: the last learned copy, holding every novel item
    X = m.featurizer.transform([s.data.query_texts[i] for i in es.queries[:1000]], threads=1)
    X.sort_indices()
    pecos = m.pecos_model()
    rows_x = [X[i] for i in range(X.shape[0])]
    samples = C.interleaved({
        "xrmeta": lambda x: m.predict_slots(x, k=10, beam_size=BEAM, threads=1),
        "PECOS": lambda x: pecos.predict(x, beam_size=BEAM, only_topk=10, threads=1),
    }, rows_x)
    batch = C.interleaved({
        "xrmeta": lambda x: m.predict_slots(x, k=10, beam_size=BEAM, threads=1),
        "PECOS": lambda x: pecos.predict(x, beam_size=BEAM, only_topk=10, threads=1),
    }, [X] * 5)
    med = {n: float(np.median(v)) * 1e3 for n, v in samples.items()}
    p99 = {n: float(np.percentile(v, 99)) * 1e3 for n, v in samples.items()}
    per_query = {n: float(np.median(v)) * 1e3 / X.shape[0] for n, v in batch.items()}
    latency = C.md_table(["system", "one per call: median ms/query", "p99 ms/query", "one batch call: ms/query"],
                         [[n, f"{med[n]:.3f}", f"{p99[n]:.3f}", f"{per_query[n]:.3f}"] for n in samples])
    return (f"{train}\n\nInsertion of the {len(ids)} novel items:\n\n{insert}\n\n"
            f"Query latency, {len(rows_x)} generalized test queries, beam {BEAM}, top 10, interleaved, single "
            f"thread; xrmeta holds every novel item (learned generator). Ratio xrmeta / PECOS predict-only: one "
            f"query per call median {med['xrmeta'] / med['PECOS']:.2f}, p99 {p99['xrmeta'] / p99['PECOS']:.2f}; "
            f"all queries in one call (median of 5) {per_query['xrmeta'] / per_query['PECOS']:.2f}.\n\n{latency}\n")


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="split seeds (cached models)")
    p.add_argument("--skip-ablations", action="store_true", help="only the seeds table and the costs")
    args = p.parse_args(argv)
    started = time.perf_counter()
    seeds = [Seed(args.dataset, seed) for seed in args.seeds]
    parts = [f"## Zero-shot and generalized quality over split seeds {args.seeds} (beam {BEAM})\n\n"
             + seeds_table(seeds)]
    if not args.skip_ablations:
        parts.append(f"## Ablations (split seed {args.seeds[0]})\n\n" + ablation_table(seeds[0]))
    parts.append(f"## Costs (split seed {args.seeds[0]})\n\n" + costs_table(seeds[0], args.dataset))
    C.report("generator_ablation", args.dataset, "\n\n".join(parts), started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
