"""`python -m xrmeta.add_items`: insert cold-start items (id and title) into a saved model."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from .catalog import MAX_ID_CHARS, valid_id
from .model import XRMetaModel, title_problem


class ItemsFileError(ValueError):
    pass


def read_items(path: Path) -> tuple[list[str], list[str]]:
    """Read 'id<TAB>title' lines (UTF-8). Every line is checked before anything is inserted; an error names the
    file and the line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ItemsFileError(f"{path} line {line}: not UTF-8") from None
    ids, titles, first_line = [], [], {}
    # split on \n only: str.splitlines would also break titles at U+2028, form feeds and the like
    for n, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ItemsFileError(f"{path} line {n}: expected 'id<TAB>title', found {len(parts)} field(s)")
        item_id, title = parts[0].strip(), parts[1].strip()
        if not item_id or not title:
            raise ItemsFileError(f"{path} line {n}: empty {'id' if not item_id else 'title'}")
        if not valid_id(item_id):
            raise ItemsFileError(f"{path} line {n}: invalid id (at most {MAX_ID_CHARS} characters, no line breaks)")
        problem = title_problem(title)
        if problem:
            raise ItemsFileError(f"{path} line {n}: {problem}")
        if item_id in first_line:
            raise ItemsFileError(f"{path} line {n}: duplicate id {item_id!r} (first on line {first_line[item_id]})")
        first_line[item_id] = n
        ids.append(item_id)
        titles.append(title)
    if not ids:
        raise ItemsFileError(f"{path}: no items")
    return ids, titles


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m xrmeta.add_items",
        description="Insert new items, known only by their titles, into a saved model: each gets a classifier "
        "synthesized from its nearest observed items and joins a leaf cluster. No retraining. The model is "
        "saved in place unless --output-dir is given, atomically: an interrupted run leaves the previous model. "
        "A bad line or a duplicate id aborts with nothing changed.",
    )
    p.add_argument("--model-dir", required=True, type=Path, help="model directory")
    p.add_argument("--items", required=True, type=Path, help="UTF-8 file, one 'id<TAB>title' per line")
    p.add_argument("--output-dir", type=Path, help="save the updated model here instead of in place")
    p.add_argument("--batch-size", type=int, default=10000, help="items per insertion batch")
    args = p.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise ValueError("--batch-size must be >= 1")
        ids, titles = read_items(args.items)
        model = XRMetaModel.load(args.model_dir)
        model.catalog._check_new_ids(ids)  # fail before inserting anything
        t0 = time.perf_counter()
        with tqdm(total=len(ids), unit="item", desc="inserting", disable=None) as bar:
            for start in range(0, len(ids), args.batch_size):
                model.add_items(titles[start : start + args.batch_size], ids[start : start + args.batch_size])
                bar.update(min(args.batch_size, len(ids) - start))
        seconds = time.perf_counter() - t0
        model.save(args.output_dir or args.model_dir)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"inserted {len(ids)} items in {seconds:.2f} s ({len(ids) / max(seconds, 1e-9):,.0f} items/s); "
          f"catalogue now holds {len(model.catalog)} items", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
