"""`xrmeta-predict` (`python -m xrmeta.predict`): top-k items for query texts."""

from __future__ import annotations

import sys
from pathlib import Path

from ..catalog import MAX_K, SUBSETS
from ..model import XRMetaModel
from .common import add_threads_arg, check_search_args, check_threads, fail, parser, read_lines


def build_parser():
    p = parser(
        "xrmeta-predict",
        description="Print the top-k items for each query (one query per line of a UTF-8 file) as "
        "'query_line<TAB>rank<TAB>item_id<TAB>score' lines, best first. A query may find fewer than k items "
        "(none if it shares no n-gram with the model's vocabulary): it then has fewer lines.",
    )
    p.add_argument("--model-dir", required=True, type=Path, help="model directory")
    p.add_argument("--queries", required=True, help="UTF-8 file with one query per line, or - for stdin")
    p.add_argument("--k", type=int, default=10, help=f"items per query (1 to {MAX_K})")
    p.add_argument("--beam-size", type=int, help="beam size (default: the model's)")
    p.add_argument("--subset", choices=sorted(SUBSETS), default="all",
                   help="rank all items, only trained (observed) ones, or only inserted ones")
    add_threads_arg(p, 1, "featurizing and search")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_search_args(k=args.k, beam_size=args.beam_size)
        check_threads(args.threads)
        lines = read_lines(args.queries)
        model = XRMetaModel.load(args.model_dir)
        ids, scores = model.predict(lines, k=args.k, beam_size=args.beam_size, subset=args.subset,
                                    threads=args.threads)
    except (ValueError, OSError) as e:
        return fail(e)
    out = sys.stdout
    for q in range(len(lines)):
        for r in range(args.k):
            if ids[q, r] is not None and ids[q, r] != "":  # padding where fewer than k items are found
                out.write(f"{q + 1}\t{r + 1}\t{ids[q, r]}\t{scores[q, r]:.6g}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
