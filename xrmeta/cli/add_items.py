"""`xrmeta-add-items` (`python -m xrmeta.add_items`): insert cold-start items (id and title) into a saved model."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..data import MAX_ID_CHARS, new_ids_problem, valid_id
from ..model import XRMetaModel, title_problem
from .common import add_model_update_args, add_threads_arg, check_update_args, fail, parser, read_lines


def read_items(path: Path) -> tuple[list[str], list[str]]:
    """Read 'id<TAB>title' lines (UTF-8; blank lines skipped). Every line is checked before anything is inserted;
    an error names the file and the line."""
    ids, titles, first_line = [], [], {}
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ValueError(f"{path} line {n}: expected 'id<TAB>title', found {len(parts)} field(s)")
        item_id, title = parts[0].strip(), parts[1].strip()
        if not item_id or not title:
            raise ValueError(f"{path} line {n}: empty {'id' if not item_id else 'title'}")
        if not valid_id(item_id):
            raise ValueError(f"{path} line {n}: invalid id (at most {MAX_ID_CHARS} characters, no line breaks)")
        problem = title_problem(title)
        if problem:
            raise ValueError(f"{path} line {n}: {problem}")
        if item_id in first_line:
            raise ValueError(f"{path} line {n}: duplicate id {item_id!r} (first on line {first_line[item_id]})")
        first_line[item_id] = n
        ids.append(item_id)
        titles.append(title)
    if not ids:
        raise ValueError(f"{path}: no items")
    return ids, titles


def build_parser():
    p = parser(
        "xrmeta-add-items",
        description="Insert new items, known only by their titles, into a saved model: each gets a classifier "
        "synthesized from its nearest observed items and joins leaf clusters. No retraining. The model is saved in "
        "place unless --output-dir is given, atomically: an interrupted run leaves the previous model. A bad line "
        "or a duplicate id aborts with nothing changed. The time reported for insertion leaves out the first item, "
        "inserted alone: it also pays for loading what insertion reads on first use.",
    )
    add_model_update_args(p, "--items", "UTF-8 file, one 'id<TAB>title' per line", "items inserted")
    add_threads_arg(p, -1, "featurizing and synthesizing")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_update_args(args)
        ids, titles = read_items(args.items)
        model = XRMetaModel.load(args.model_dir)
        problem = new_ids_problem(ids, model)  # fail before inserting anything
        if problem:
            raise ValueError(f"{args.items}: {problem}")
        with tqdm(total=len(ids), unit="item", desc="inserting", disable=None) as bar:
            # the first item alone: its time includes first-use costs (the neighbour index, the generator's
            # parameters), which must not pass for insertion speed
            t0 = time.perf_counter()
            model.add_items(titles[:1], ids[:1], threads=args.threads)
            first = time.perf_counter() - t0
            bar.update(1)
            for start in range(1, len(ids), args.batch_size):
                end = min(start + args.batch_size, len(ids))
                model.add_items(titles[start:end], ids[start:end], threads=args.threads)
                bar.update(end - start)
        seconds = time.perf_counter() - t0 - first
        model.save(args.output_dir or args.model_dir)
    except (ValueError, OSError) as e:
        return fail(e)
    rest = len(ids) - 1
    speed = f"; the other {rest} in {seconds:.2f} s ({rest / max(seconds, 1e-9):,.0f} items/s)" if rest else ""
    print(f"inserted {len(ids)} item{'s' if rest else ''}: the first alone in {first:.2f} s (with its first-use costs)"
          f"{speed}; catalogue now holds {len(model.catalog)} items", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
