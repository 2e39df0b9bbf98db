"""`python -m xrmeta.train_generator`: train the learned cold-start generator on an existing model, in place.

The tree and its classifiers stay as they are; the command adds `generator.npz` and makes "learned" the
model's generator for every later `add_items`. Items already inserted keep the classifiers they were given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba

from .coldstart.learned import LearnedConfig
from .evaluate import dataset_and_split
from .model import XRMetaModel


def add_generator_args(p: argparse.ArgumentParser) -> None:
    """The learned generator's settings (shared with `xrmeta.train --generator learned`)."""
    d = LearnedConfig()
    g = p.add_argument_group("learned generator (IRENE-style; see xrmeta/coldstart/learned.py)")
    g.add_argument("--gen-depth", type=int, default=d.depth, help="transformer layers")
    g.add_argument("--gen-width", type=int, default=d.d_model, help="token width (d_model)")
    g.add_argument("--gen-steps", type=int, default=d.steps, help="full-batch Adam steps")
    g.add_argument("--gen-lr", type=float, default=d.lr, help="Adam learning rate")
    g.add_argument("--gen-pos-weight", type=float, default=d.pos_weight, help="C: loss weight of a positive pair")
    g.add_argument("--gen-max-items", type=int, default=d.max_items,
                   help="observed items (whole leaf clusters) sampled to train on")
    g.add_argument("--gen-proxy-frac", type=float, default=d.proxy_frac,
                   help="share of the sampled clicked items held out as stand-ins for new items")
    g.add_argument("--gen-parts", choices=("self", "both", "neighbours"), default=d.parts,
                   help="what the generator mixes: the item's own title (weighted per n-gram block), also its "
                   "neighbours' classifiers, or only those")
    g.add_argument("--gen-seed", type=int, default=d.seed, help="seed of the sampling and of the initialization")


def learned_config(args) -> LearnedConfig:
    config = LearnedConfig(depth=args.gen_depth, d_model=args.gen_width, steps=args.gen_steps, lr=args.gen_lr,
                           pos_weight=args.gen_pos_weight, max_items=args.gen_max_items,
                           proxy_frac=args.gen_proxy_frac, seed=args.gen_seed, parts=args.gen_parts)
    config.validate()
    return config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m xrmeta.train_generator",
        usage="%(prog)s --model-dir MODEL_DIR [options]  (--help lists them)",
        description="Train the learned cold-start generator of a model saved by xrmeta.train, on the training "
        "queries of the split it was trained on, and save it into the model directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model-dir", required=True, type=Path, help="model directory written by xrmeta.train")
    p.add_argument("--dataset", help="dataset name or XC-repo directory (default: the one the model was trained on)")
    add_generator_args(p)
    p.add_argument("--threads", type=int, default=-1, help="threads (-1 = all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    try:
        config = learned_config(args)
        if args.threads == 0 or args.threads < -1:
            raise ValueError("--threads must be -1 or >= 1")
        threads = numba.config.NUMBA_NUM_THREADS if args.threads == -1 else args.threads
        model = XRMetaModel.load(args.model_dir)
        data, split = dataset_and_split(model, args.dataset)
        X = model.featurizer.transform([data.query_texts[i] for i in split.train_queries], threads=threads)
        t0 = time.perf_counter()
        model.fit_generator(X, split.Y_train, config, threads=threads, verbose=not args.quiet)
        seconds = time.perf_counter() - t0
        model.save(args.model_dir)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"trained the learned generator in {seconds:.2f} s and saved it into {args.model_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
