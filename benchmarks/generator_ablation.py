"""The learned generator and its ablations vs the hand-made generators, over 3 seeds of the split.

Zero-shot P@1 / R@10 / R@100 and observed P@1 with every item ranked (a new item above a relevant observed one
is a miss), mean ± sd (min..max) over the seeds' cached models, next to PECOS; ablations on seed 0: K in {1, 3, 6},
depth 2. Each variant: a fresh copy from disk (learned ones retrain the generator, seeded), every novel item
inserted, the model's beam, top 100. Generator costs: `train_cost`, `insertion`.
"""

from __future__ import annotations

import time

import numpy as np

from xrmeta.metrics import evaluate_scores
from xrmeta.model import XRMetaModel

from . import api, harness as H
from . import common as C

# name -> (generator, LearnedConfig overrides for the learned ones)
VARIANTS = {
    "mean": ("mean", None), "self": ("self", None), "mean_self": ("mean_self", None),
    "learned": ("learned", {}),  # the default: the title, one weight per n-gram block
    "learned, neighbours and self": ("learned", {"parts": "both"}),
    "learned, neighbours only": ("learned", {"parts": "neighbours"}),
    "learned, one self weight for all blocks": ("learned", {"self_weights": "shared"}),
}
HAND_MADE = ("mean", "self", "mean_self")
COLUMNS = ("zero-shot P@1", "zero-shot R@10", "zero-shot R@100", "observed P@1, all items ranked")


class Seed:
    """One cached model (split seed) with its data, training rows and PECOS's observed P@1."""

    def __init__(self, dataset: str, seed: int):
        model, self.data, self.split, self.folder = C.load(dataset, seed)
        self.beam = model.configs.tree.beam_size
        self.X = model.featurizer.transform(C.texts(self.data, self.split.train_queries), threads=2)
        self.pecos_observed = self.observed_p1(model, api.pecos_search)

    def observed_p1(self, model, search) -> float:
        """P@1 of the observed test queries, every item ranked: relevant new items do not count."""
        es = self.split.observed_set
        X = model.featurizer.transform(C.texts(self.data, es.queries), threads=1)
        slots, scores = search(model, X, 100, self.beam)
        cols = api.slot_columns(model, self.data)
        return evaluate_scores(es.Y, api.slots_to_scores(slots, scores, cols, self.data.n_items))["P@1"]

    def variant(self, generator: str, config=None, k: int | None = None) -> dict:
        """The metrics of a fresh model with the variant's generator and every novel item inserted."""
        model = XRMetaModel.load(self.folder)
        if k is not None:
            api.set_neighbours(model, k)
        api.set_generator(model, generator, self.X, self.split.Y_train, config)
        H.insert_novel(model, self.data, self.split)

        def predict(texts, subset, k):
            return api.search(model, model.featurizer.transform(texts, threads=1), k, self.beam, subset)

        zs = api.evaluate_sets(predict, self.data, self.split, api.slot_columns(model, self.data))["zero_shot"]
        return dict(zip(COLUMNS, (zs["P@1"], zs["R@10"], zs["R@100"], self.observed_p1(model, api.search))))


def spread(values: list[float]) -> str:
    v = np.asarray(values)
    return f"{v.mean():.2f} ± {v.std():.2f} ({v.min():.2f}..{v.max():.2f})"


def seeds_table(seeds: list[Seed]) -> tuple[str, str]:
    rows, per_seed = [], {}
    for name, (generator, overrides) in VARIANTS.items():
        for s in seeds:
            C.log(f"seed {s.split.seed}: {name}")
        per_seed[name] = [s.variant(generator, None if overrides is None else api.LearnedConfig(**overrides))
                          for s in seeds]
        rows.append([name] + [spread([r[c] for r in per_seed[name]]) for c in COLUMNS])
    rows.append(["XR-Linear (PECOS)", "0 (unreachable)", "0", "0", spread([s.pecos_observed for s in seeds])])
    verdict = []
    for c in COLUMNS[:2]:
        best = max(HAND_MADE, key=lambda g: np.mean([r[c] for r in per_seed[g]]))
        wins = [a[c] > b[c] for a, b in zip(per_seed["learned"], per_seed[best])]
        verdict.append(f"{c}: learned beats the best hand-made generator ({best}) on {sum(wins)} of {len(wins)} seeds")
        for name in [v for v in VARIANTS if v.startswith("learned,")]:
            diff = [a[c] - b[c] for a, b in zip(per_seed["learned"], per_seed[name])]
            verdict.append(f"{c}: learned minus '{name}' per seed: " + ", ".join(f"{d:+.2f}" for d in diff))
    gap = [r[COLUMNS[3]] - s.pecos_observed for r, s in zip(per_seed["learned"], seeds)]
    verdict.append("observed P@1 with every item ranked, learned minus XR-Linear per seed: "
                   + ", ".join(f"{g:+.2f}" for g in gap))
    return C.table(["generator", *COLUMNS], rows), C.bullets(verdict)


def ablation_table(s: Seed) -> str:
    variants = [(f"K={k}", dict(k=k)) for k in (1, 3, 6)] + [("depth 2", dict(config=api.LearnedConfig(depth=2)))]
    rows = []
    for name, kw in variants:
        C.log(f"ablation {name}")
        rows.append([name, "learned"] + [s.variant("learned", **kw)[c] for c in COLUMNS])
    return C.table(["variant (K=3, depth 1 unless named)", "generator", *COLUMNS], rows)


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="split seeds (cached models)")
    p.add_argument("--skip-ablations", action="store_true", help="only the seeds table")
    args = C.parse(p, argv, seeds=[0])
    started = time.perf_counter()
    seeds = [Seed(args.dataset, seed) for seed in args.seeds]
    table, verdict = seeds_table(seeds)
    ablations = "" if args.skip_ablations else C.text("generator_ablation.ablations", seed=args.seeds[0],
                                                      table=ablation_table(seeds[0]))
    body = C.text("generator_ablation", seeds=args.seeds, beam=seeds[0].beam, table=table, verdict=verdict,
                  ablations=ablations)
    C.report("generator_ablation", args.dataset, body, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
