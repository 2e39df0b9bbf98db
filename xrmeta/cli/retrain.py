"""`xrmeta-retrain` (`python -m xrmeta.retrain`): retrain a saved model on its training clicks plus new ones, and
replace it without stopping the process that serves it (see `xrmeta.retraining`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .. import persist, retraining, trainset
from ..data import dataset_and_split
from ..model import XRMetaModel
from .common import add_data_home_arg, add_threads_arg, check_threads, fail, parser, read_clicks


def build_parser():
    p = parser(
        "xrmeta-retrain", usage="%(prog)s --model-dir MODEL_DIR --clicks FILE [options]  (--help lists them)",
        description="Retrain a model with the same settings on its training clicks plus new ones, over the titles "
        "of every live item (inserted items become trained items; see xrmeta/retraining.py), then fold in what "
        "was inserted or removed meanwhile. If no process logs to the model directory it is replaced atomically; "
        "if one does (it serves the model), the new model goes to MODEL_DIR.next and that process's "
        "XRMetaModel.reload() swaps it in without stopping queries. A bad line, or a click on an unknown or "
        "removed id, aborts with nothing written.",
    )
    p.add_argument("--model-dir", required=True, type=Path, help="model directory (it keeps its training clicks)")
    p.add_argument("--clicks", required=True, type=Path,
                   help="UTF-8 file, one 'query<TAB>item_id' per line: new clicks on live items")
    p.add_argument("--out", type=Path, help="write the retrained model here instead (the model directory is "
                   "left as it is; its config records the snapshot it follows)")
    p.add_argument("--dataset", help="for a model directory saved before xrmeta kept its training clicks: rebuild "
                   "them from the dataset and split it was trained on (name or XC-repo directory)")
    add_data_home_arg(p)
    add_threads_arg(p, -1, "training")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_threads(args.threads)
        if args.out is not None:
            persist.check_target(args.out)
        clicks = read_clicks(args.clicks)
        training = None
        if args.dataset and not (args.model_dir / trainset.DIR).is_dir():
            data, split = dataset_and_split(XRMetaModel.load(args.model_dir), args.dataset, args.data_home)
            training = trainset.TrainingSet([data.query_texts[i] for i in split.train_queries], split.Y_train,
                                            [data.item_ids[j] for j in split.observed],
                                            [data.item_texts[j] for j in split.observed])
        t0 = time.perf_counter()
        model, follows = retraining.retrain(args.model_dir, clicks, args.threads, not args.quiet, training)
        seconds = time.perf_counter() - t0
        where = retraining.write(model, args.model_dir, follows, args.out)
    except (ValueError, OSError) as e:
        return fail(e)
    if not args.quiet:
        staged = where != args.model_dir.resolve() and args.out is None
        print(f"retrained in {seconds:.1f} s on {len(clicks)} new clicks: {len(model)} items "
              f"({model.catalog.n_base} trained); saved {where}"
              + (" (a process serves the model: its reload() installs it)" if staged else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
