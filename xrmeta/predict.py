"""`python -m xrmeta.predict`: top-k items for query texts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .catalog import SUBSETS
from .model import XRMetaModel


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m xrmeta.predict",
        description="Print the top-k items for each query (one query per line) as "
        "'query_line<TAB>rank<TAB>item_id<TAB>score'.",
    )
    p.add_argument("--model-dir", required=True, type=Path, help="model directory")
    p.add_argument("--queries", required=True, help="UTF-8 file with one query per line, or - for stdin")
    p.add_argument("--k", type=int, default=10, help="items per query")
    p.add_argument("--beam-size", type=int, help="beam size (default: the model's)")
    p.add_argument("--subset", choices=sorted(SUBSETS), default="all",
                   help="rank all items, only trained (observed) ones, or only inserted ones")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    try:
        if args.k < 1:
            raise ValueError("--k must be >= 1")
        raw = sys.stdin.buffer.read() if args.queries == "-" else Path(args.queries).read_bytes()
        try:
            lines = [line.removesuffix("\r") for line in raw.decode("utf-8").split("\n")]
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise ValueError(f"{args.queries} line {line}: not UTF-8") from None
        if lines and lines[-1] == "":  # the final newline ends the last query; it is not an empty query
            lines.pop()
        model = XRMetaModel.load(args.model_dir)
        ids, scores = model.predict(lines, k=args.k, beam_size=args.beam_size, subset=args.subset,
                                    threads=args.threads)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = sys.stdout
    for q in range(len(lines)):
        for r in range(args.k):
            if ids[q, r] is not None:
                out.write(f"{q + 1}\t{r + 1}\t{ids[q, r]}\t{scores[q, r]:.6g}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
