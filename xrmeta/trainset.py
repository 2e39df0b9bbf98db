"""What a retrain starts from, kept in the model directory (`train/`): the training queries' texts, their clicks
and every trained item's id and title, in training order. Written once by `XRMetaModel.train` and never changed
after (a save hard-links it, like the other parts that never change).

  train/queries.jsonl.gz   one JSON string per line: the training queries' texts
  train/items.jsonl.gz     one JSON [id, title] per line: the trained items, in training (label) order
  train/clicks.npz         Y (n_queries, n_items) CSR: indptr, indices, data, shape

JSON lines keep any text intact (tabs, line breaks, accents); gzip makes them about a third of their size.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as smat

from .errors import ModelError

DIR = "train"


class TrainingSet(NamedTuple):
    query_texts: list[str]
    Y: smat.csr_matrix  # (n_queries, n_items) float32 relevance, columns in item order
    item_ids: list[str]
    item_titles: list[str]


def write(folder: Path, query_texts: list[str], Y: smat.spmatrix, item_ids: list[str],
          item_titles: list[str]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True)
    Y = smat.csr_matrix(Y, dtype=np.float32)
    _write_lines(folder / "queries.jsonl.gz", query_texts)
    _write_lines(folder / "items.jsonl.gz", [[i, t] for i, t in zip(item_ids, item_titles)])
    np.savez_compressed(folder / "clicks.npz", indptr=Y.indptr.astype(np.int64), indices=Y.indices.astype(np.int32),
                        data=Y.data, shape=np.array(Y.shape))


def _write_lines(path: Path, values: list) -> None:
    text = "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in values)
    path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))  # mtime 0: same content, same bytes


def read(folder: Path) -> TrainingSet:
    """The training set saved in a model directory's `train/`; ModelError if it has none (saved by an xrmeta
    before retraining existed) or if it does not hold together."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: missing: the model directory does not keep its training clicks and titles "
                         "(saved before xrmeta kept them); retrain from its dataset with --dataset, or train anew")
    try:
        queries = _read_lines(folder / "queries.jsonl.gz")
        items = _read_lines(folder / "items.jsonl.gz")
        with np.load(folder / "clicks.npz") as z:
            Y = smat.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{folder}: unreadable training set ({e})") from None
    if Y.shape != (len(queries), len(items)) or not all(isinstance(it, list) and len(it) == 2 for it in items):
        raise ModelError(f"{folder}: clicks {Y.shape} do not fit {len(queries)} queries and {len(items)} items")
    return TrainingSet(queries, Y, [i for i, _ in items], [t for _, t in items])


def _read_lines(path: Path) -> list:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[:-1]]
