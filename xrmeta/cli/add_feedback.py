"""`xrmeta-add-feedback` (`python -m xrmeta.add_feedback`): take clicks (query, item id) on a saved model's items."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from ..data.xmc import preview
from ..model import XRMetaModel
from .common import add_model_update_args, add_threads_arg, check_update_args, fail, parser, read_clicks


def build_parser():
    p = parser(
        "xrmeta-add-feedback",
        description="Take clicks on a saved model's items (new or trained): each clicked item's classifier moves "
        "toward its clicks' queries, by the smallest step that lets it outscore the other items of its leaf "
        "cluster for them (capped per click; see xrmeta/coldstart/feedback.py). No retraining; the clicks are kept "
        "for xrmeta-retrain. The model is saved in place unless --output-dir is given, atomically: an interrupted "
        "run leaves the previous model. A bad line or a click on an unknown or removed id aborts with nothing "
        "changed.",
    )
    add_model_update_args(p, "--clicks", "UTF-8 file, one 'query<TAB>item_id' per line", "clicks taken")
    add_threads_arg(p, -1, "featurizing")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_update_args(args)
        clicks = read_clicks(args.clicks)
        model = XRMetaModel.load(args.model_dir)
        unknown = sorted({i for _, i in clicks if i not in model})
        if unknown:  # fail before taking any click
            raise ValueError(f"{args.clicks}: {len(unknown)} clicked ids are not live items of {args.model_dir} "
                             f"(unknown or removed): {preview(unknown)}")
        t0 = time.perf_counter()
        with tqdm(total=len(clicks), unit="click", desc="feedback", disable=None) as bar:
            for start in range(0, len(clicks), args.batch_size):
                batch = clicks[start : start + args.batch_size]
                model.add_feedback([q for q, _ in batch], [i for _, i in batch], threads=args.threads)
                bar.update(len(batch))
        seconds = time.perf_counter() - t0
        model.save(args.output_dir or args.model_dir)
    except (ValueError, OSError) as e:
        return fail(e)
    print(f"took {len(clicks)} clicks in {seconds:.2f} s; "
          f"saved {args.output_dir or args.model_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
