"""Training cost and quality of the XR-Linear base: train time per stage, model size on disk, and P@k / R@k of
PECOS's predict on the observed, zero-shot and generalized test sets (novel items not inserted: zero-shot is 0).

Run: .venv/bin/python -m benchmarks.train_cost --dataset homedepot
"""

from __future__ import annotations

import time

from xrmeta.data import load_dataset, make_zero_shot_split
from xrmeta.evaluate import evaluate_model
from xrmeta.model import XRMetaModel

from .common import md_table, parser, report
from .resources import path_bytes


def main(argv=None) -> None:
    args = parser(__doc__).parse_args(argv)
    started = time.perf_counter()
    data = load_dataset(args.dataset)
    split = make_zero_shot_split(data, seed=args.seed)
    rows = []
    model = XRMetaModel.train([data.query_texts[i] for i in split.train_queries], split.Y_train,
                              [data.item_texts[j] for j in split.observed], [data.item_ids[j] for j in split.observed],
                              threads=-1, verbose=False, info={"split": {"novel_frac": 0.1, "test_frac": 0.2,
                                                                         "seed": args.seed}})
    for stage, seconds in model.info["train_seconds"].items():
        rows.append([stage, f"{seconds:.2f}"])
    rows.append(["total", f"{sum(model.info['train_seconds'].values()):.2f}"])
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        parts = {p.name: path_bytes(p) for p in Path(tmp).iterdir()}
    size_rows = [[name, f"{b / 2**20:.1f}"] for name, b in sorted(parts.items())]
    size_rows.append(["total", f"{sum(parts.values()) / 2**20:.1f}"])
    results = evaluate_model(model, data, split, threads=1)["XR-Linear (PECOS)"]
    metric_rows = [[name] + [f"{m[k]:.2f}" for k in ("P@1", "P@5", "R@10", "R@100", "nDCG@10")]
                   for name, m in results.items()]
    body = (f"{len(split.train_queries)} training queries, {len(split.observed)} observed items, "
            f"{model.catalog.n_clusters} leaf clusters, {model.featurizer.n_features} features; train threads: all "
            f"({__import__('os').cpu_count()} cores); defaults of `python -m xrmeta.train`.\n\n"
            "## Train time (s)\n\n" + md_table(["stage", "seconds"], rows) +
            "\n\n## Model size on disk (MiB)\n\n" + md_table(["part", "MiB"], size_rows) +
            "\n\n## PECOS predict on the trained model, beam 10 (percent)\n\n" +
            md_table(["test set", "P@1", "P@5", "R@10", "R@100", "nDCG@10"], metric_rows))
    report("train_cost", args.dataset, body, started)


if __name__ == "__main__":
    main()
