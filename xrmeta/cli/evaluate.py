"""`xrmeta-evaluate` (`python -m xrmeta.evaluate`): a model's quality on the zero-shot split it was trained on.
The evaluation itself is `xrmeta.evaluation`."""

from __future__ import annotations

import sys

from ..data import dataset_and_split
from ..evaluation import PECOS, baselines, evaluate_model, format_table, insert_novel
from ..model import XRMetaModel
from .common import add_data_home_arg, add_threads_arg, check_search_args, check_threads, fail, parser


def build_parser():
    p = parser(
        "xrmeta-evaluate",
        description="Evaluate a model on the zero-shot split it was trained on: P@1, P@5, R@10, R@100 and nDCG@10 "
        "(percent) on the observed, zero-shot and generalized test sets, next to PECOS's own predict on the same "
        "tree (if the model was trained with --keep-pecos) and to BM25 and brute-force title TF-IDF.",
    )
    p.add_argument("--model-dir", required=True, help="model directory written by xrmeta-train")
    p.add_argument("--dataset", help="dataset name or XC-repo directory (default: the one the model was trained on)")
    add_data_home_arg(p)
    p.add_argument("--beam-size", type=int, help="beam size (default: the model's)")
    p.add_argument("--no-insert-novel", action="store_true",
                   help="do not insert the split's novel items that the model lacks (they stay unreachable); "
                   "by default they are inserted in memory only, the model directory is not changed")
    add_threads_arg(p, 1, "featurizing and search")
    p.add_argument("--no-baselines", action="store_true",
                   help="leave out the BM25 and brute-force title TF-IDF rows (computed on the same test sets)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_search_args(beam_size=args.beam_size)
        check_threads(args.threads)
        model = XRMetaModel.load(args.model_dir)
        data, split = dataset_and_split(model, args.dataset, args.data_home)
        if not args.no_insert_novel:
            n = insert_novel(model, data, split)
            if n:
                print(f"inserted {n} novel items of the split (in memory only)", file=sys.stderr)
        results = evaluate_model(model, data, split, args.beam_size, args.threads)
        if PECOS not in results:
            print("no PECOS row: the model was trained without --keep-pecos", file=sys.stderr)
        if not args.no_baselines:
            results.update(baselines(model, data, split))
    except (ValueError, OSError) as e:
        return fail(e)
    beam = args.beam_size or model.configs.tree.beam_size
    print(f"dataset {data.name}: {len(split.observed)} observed / {len(split.novel)} novel items, beam {beam}")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
