"""`python -m xrmeta.predict`: top-k items for query texts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .catalog import MAX_K, SUBSETS
from .model import XRMetaModel


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m xrmeta.predict",
        description="Print the top-k items for each query (one query per line) as "
        "'query_line<TAB>rank<TAB>item_id<TAB>score'.",
    )
    p.add_argument("--model-dir", required=True, type=Path, help="model directory")
    p.add_argument("--queries", required=True, help="UTF-8 file with one query per line, or - for stdin")
    p.add_argument("--k", type=int, default=10, help=f"items per query (1 to {MAX_K})")
    p.add_argument("--beam-size", type=int, help="beam size (default: the model's)")
    p.add_argument("--subset", choices=sorted(SUBSETS), default="all",
                   help="rank all items, only trained (observed) ones, or only inserted ones")
    p.add_argument("--threads", type=int, default=1, help="threads for featurizing and search")
    args = p.parse_args(argv)
    try:
        check_search_args(k=args.k, beam_size=args.beam_size, threads=args.threads)
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


def check_search_args(k: int | None = None, beam_size: int | None = None, threads: int | None = None) -> None:
    """Reject search flags out of range before loading anything. All must be >= 1: the API reads a beam size
    of 0 as "the model's default", which on a command line would hide a mistake."""
    for flag, value, top in (("--k", k, MAX_K), ("--beam-size", beam_size, None), ("--threads", threads, None)):
        if value is not None and not 1 <= value <= (top or value):
            raise ValueError(f"{flag} must be >= 1{f' and <= {top}' if top else ''}, got {value}")


if __name__ == "__main__":
    sys.exit(main())
