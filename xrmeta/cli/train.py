"""`xrmeta-train` (`python -m xrmeta.train`): train an xrmeta model on a dataset's zero-shot split and save it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import persist
from ..coldstart import GENERATORS
from ..data import load_dataset, make_zero_shot_split
from ..featurize import NORMALIZATIONS, FeaturizerConfig
from ..layout import POST_PROCESSORS
from ..model import ASSIGNERS, AUTO, SELECTORS, ColdStartConfig, XRMetaModel
from ..tree import LABEL_EMBEDDINGS, TITLE_LAYERS, TreeConfig
from .common import (add_data_home_arg, add_generator_args, add_threads_arg, check_threads, fail, finite,
                     learned_config, parser)


def build_parser() -> argparse.ArgumentParser:
    p = parser(
        "xrmeta-train", usage="%(prog)s --dataset DATASET --model-dir MODEL_DIR [options]  (--help lists them)",
        description="Train XR-Linear on the observed items of a seeded zero-shot split (a random share of items is "
        "held out as novel, never seen in training) and save the model directory. Then: xrmeta-add-items inserts "
        "new items, xrmeta-predict answers queries, xrmeta-evaluate scores the model on the split's test queries.",
    )
    p.add_argument("--dataset", required=True,
                   help="homedepot | pricerunner | synthetic | a directory in Extreme Classification Repository format")
    add_data_home_arg(p)
    p.add_argument("--model-dir", required=True, type=Path, help="where to write the model")
    p.add_argument("--novel-frac", type=finite, default=0.1, help="share of items held out as novel (cold start)")
    p.add_argument("--test-frac", type=finite, default=0.2, help="share of queries held out for testing")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of the clustering")
    p.add_argument("--export-novel", type=Path,
                   help="write the novel items as an 'id<TAB>title' file for xrmeta-add-items")
    p.add_argument("--keep-pecos", action="store_true",
                   help="also save PECOS's own copy of the trained model (xlinear/), the reference that "
                   "xrmeta-evaluate and the benchmarks compare with")
    g = p.add_argument_group("features (TF-IDF: word 1-grams, word 2-grams, char 3-grams in word boundaries)")
    g.add_argument("--max-feature", type=int, default=0, help="max terms per n-gram block (0 = all)")
    g.add_argument("--min-df", type=int, default=1, help="min number of texts a term must appear in")
    g.add_argument("--normalization", choices=NORMALIZATIONS, default="fold",
                   help="text normalisation of every query and title: 'fold' = Unicode NFKC, case folding, "
                   "punctuation and symbols to spaces, whitespace collapsed; 'none' = as given")
    g = p.add_argument_group("tree (XR-Linear)")
    g.add_argument("--label-embedding", choices=LABEL_EMBEDDINGS, default="pifa",
                   help="item embedding for clustering: PIFA, own title TF-IDF, or alpha*PIFA + (1-alpha)*title")
    g.add_argument("--mix-alpha", type=finite, default=0.5, help="PIFA weight for --label-embedding mix")
    g.add_argument("--title-weight", type=finite, default=1.0,
                   help="each item's title joins the training instances, labelled with its item, with this weight "
                   "on its positive loss (0: clicks only)")
    g.add_argument("--title-layers", choices=TITLE_LAYERS, default="all",
                   help="which layers the titles train: all, or upper (the clustering and the layers above the "
                   "leaves; leaf classifiers then learn from clicks only and train as fast as without titles)")
    g.add_argument("--no-observed-titles", action="store_true",
                   help="serve the leaf layer exactly as PECOS trained it (its top-k then equals PECOS's predict); "
                   "by default each trained item's classifier mixes in its own title, trusted by how many clicks "
                   "the item has (fitted on held-out clicks)")
    g.add_argument("--branching", type=int, default=16, help="children per tree node")
    g.add_argument("--max-leaf-size", type=int, default=100, help="max items per leaf cluster")
    g.add_argument("--threshold", type=finite, default=0.1, help="weight pruning epsilon: drop |w| below it")
    g.add_argument("--beam-size", type=int, default=10, help="default beam size at query time")
    g.add_argument("--post-processor", choices=sorted(POST_PROCESSORS), default="l3-hinge",
                   help="score transform multiplied along the tree path")
    g = p.add_argument_group("cold start")
    g.add_argument("--k", type=int, default=3, help="nearest observed items per new item")
    g.add_argument("--selector", choices=SELECTORS, default="pruned",
                   help="neighbour search: exact inverted index, or pruned (posting lists truncated to "
                   "--max-postings largest weights, then --n-candidates rescored exactly; much faster insertion)")
    g.add_argument("--max-postings", type=int, default=16, help="pruned selector: postings kept per feature")
    g.add_argument("--n-candidates", type=int, default=32, help="pruned selector: candidates rescored exactly")
    g.add_argument("--assign", choices=ASSIGNERS + (AUTO,), default="route",
                   help="leaf clusters of a new item: where the tree routes its title (as if a query), its "
                   "neighbours' vote, the nearest centroids, or auto: whichever of them puts observed items "
                   "(treated as new) in their training queries' beams most often")
    g.add_argument("--clusters-per-item", type=int, default=3,
                   help="a new item joins its best this many leaf clusters: more queries' beams reach it, and "
                   "scoring inserted items costs about this many times more")
    g.add_argument("--inserted-beam-factor", type=int, default=2,
                   help="a query looks for inserted items in its top beam-size x this many leaf clusters (only "
                   "the last layer of the beam widens; trained items stay in the top beam-size, as in PECOS): "
                   "more queries reach new items, and scoring them costs about this many times more")
    g.add_argument("--split-size", type=int, default=ColdStartConfig.split_size,
                   help="a part of a leaf cluster's inserted items holding more than this many splits in two, each "
                   "with a router (0: never split): queries then score only the best parts of a crowded cluster")
    g.add_argument("--split-probe", type=int, default=ColdStartConfig.split_probe,
                   help="parts a query scores in each leaf cluster whose inserted items split (those whose "
                   "routers match it best; a cluster with at most this many parts is scored whole)")
    g.add_argument("--generator", choices=sorted(GENERATORS) + ["learned"], default="learned",
                   help="how a new classifier is made; 'learned' trains the generator after the tree")
    g.add_argument("--max-nnz", type=int, default=128, help="non-zero weights kept per synthesized classifier")
    add_generator_args(p)
    add_threads_arg(p, -1, "training")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def check_outputs(args) -> None:
    """Refuse unusable output paths before training, not after it."""
    persist.check_target(args.model_dir)
    if args.export_novel and args.export_novel.is_dir():
        raise ValueError(f"{args.export_novel}: is a directory (--export-novel names a file)")
    check_threads(args.threads)
    if args.min_df < 1 or args.max_feature < 0:
        raise ValueError("--min-df >= 1 and --max-feature >= 0 are required")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_outputs(args)
        generator_config = learned_config(args)
        data = load_dataset(args.dataset, args.data_home)
        split = make_zero_shot_split(data, novel_frac=args.novel_frac, test_frac=args.test_frac, seed=args.seed)
        model = XRMetaModel.train(
            [data.query_texts[i] for i in split.train_queries], split.Y_train,
            [data.item_texts[j] for j in split.observed], [data.item_ids[j] for j in split.observed],
            featurizer_config=FeaturizerConfig(max_feature=args.max_feature, min_df=args.min_df,
                                               normalization=args.normalization),
            tree_config=TreeConfig(
                label_embedding=args.label_embedding, mix_alpha=args.mix_alpha, branching=args.branching,
                max_leaf_size=args.max_leaf_size, threshold=args.threshold, beam_size=args.beam_size,
                post_processor=args.post_processor, seed=args.seed, title_weight=args.title_weight,
                title_layers=args.title_layers, observed_titles=not args.no_observed_titles),
            coldstart_config=ColdStartConfig(
                k=args.k, selector=args.selector, max_postings=args.max_postings, n_candidates=args.n_candidates,
                assign=args.assign, generator=args.generator, max_nnz=args.max_nnz,
                clusters_per_item=args.clusters_per_item, inserted_beam_factor=args.inserted_beam_factor,
                split_size=args.split_size, split_probe=args.split_probe),
            threads=args.threads, verbose=not args.quiet, generator_config=generator_config,
            info={"dataset": args.dataset,
                  "split": {"novel_frac": args.novel_frac, "test_frac": args.test_frac, "seed": args.seed}},
            keep_pecos=args.keep_pecos,
        )
        model.save(args.model_dir)  # atomic, like the export below: a failed run leaves no half-written output
        if args.export_novel:
            args.export_novel.parent.mkdir(parents=True, exist_ok=True)
            lines = "".join(f"{data.item_ids[j]}\t{' '.join(data.item_texts[j].split())}\n" for j in split.novel)
            persist.write_file(args.export_novel, lines.encode("utf-8"))
    except (ValueError, OSError) as e:
        return fail(e)
    if not args.quiet:
        print(f"saved {args.model_dir} ({len(split.observed)} observed items, {len(split.novel)} novel held out)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
