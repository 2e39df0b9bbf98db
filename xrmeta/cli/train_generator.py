"""`xrmeta-train-generator` (`python -m xrmeta.train_generator`): train the learned cold-start generator of an
existing model, in place.

The tree and its classifiers stay as they are; the command adds `generator.npz` and makes "learned" the model's
generator for every later `add_items`. Items already inserted keep the classifiers they were given.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .. import threads
from ..data import dataset_and_split
from ..model import XRMetaModel
from .common import add_data_home_arg, add_generator_args, add_threads_arg, check_threads, fail, learned_config, parser


def build_parser():
    p = parser(
        "xrmeta-train-generator", usage="%(prog)s --model-dir MODEL_DIR [options]  (--help lists them)",
        description="Train the learned cold-start generator of a model saved by xrmeta-train, on the training "
        "queries of the split it was trained on, and save it into the model directory (in place).",
    )
    p.add_argument("--model-dir", required=True, type=Path, help="model directory written by xrmeta-train")
    p.add_argument("--dataset", help="dataset name or XC-repo directory (default: the one the model was trained on)")
    add_data_home_arg(p)
    add_generator_args(p)
    add_threads_arg(p, -1, "featurizing and training")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = learned_config(args)
        check_threads(args.threads)
        model = XRMetaModel.load(args.model_dir)
        data, split = dataset_and_split(model, args.dataset, args.data_home)
        X = model.featurizer.transform([data.query_texts[i] for i in split.train_queries], threads=args.threads)
        t0 = time.perf_counter()
        model.fit_generator(X, split.Y_train, config, threads=threads.resolve(args.threads), verbose=not args.quiet)
        seconds = time.perf_counter() - t0
        model.save(args.model_dir)
    except (ValueError, OSError) as e:
        return fail(e)
    if not args.quiet:
        print(f"trained the learned generator in {seconds:.2f} s and saved it into {args.model_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
