"""Readers of the dataset files: each returns an `XMCData`; bad input raises `DataError` naming the file and,
where there is one, the 1-based line number. Readers only read.

* Home Depot search relevance (Kaggle, ``train.csv.zip``): human-rated (search term, product) pairs; a pair is
  positive when its mean rating reaches ``min_relevance``.
* PriceRunner offers (UCI): each merchant offer title is a query for the product (cluster) it was matched to.
* The Extreme Classification Repository text format (``trn_X.txt`` etc.).

`load_homedepot` and `load_pricerunner` without a path read the file under the data home (`data_home`).
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import home
from .home import HOMEDEPOT, PRICERUNNER, dataset_file
from .synthetic import make_synthetic
from .xmc import DataError, XMCData, binary_csr, data_error

# Means of decimal ratings are inexact in binary floating point, e.g.
# (3.0 + 2.94) / 2 == 2.9699999999999998; without slack a pair whose mean equals
# the threshold could miss it.
_REL_EPS = 1e-9


def _norm(text: str) -> str:
    """Dedup key for query texts: case- and whitespace-insensitive."""
    return " ".join(text.split()).lower()


class _Interner:
    """Dense indices for keys in first-seen order, with the text given on first sight."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.keys: list[str] = []
        self.texts: list[str] = []

    def add(self, key: str, text: str) -> int:
        i = self.index.setdefault(key, len(self.keys))
        if i == len(self.keys):
            self.keys.append(key)
            self.texts.append(text)
        return i


# ---------------------------------------------------------------- CSV helpers


def _csv_rows(
    lines: Iterable[str], file: str, required: tuple[str, ...]
) -> tuple[dict[str, int], Iterator[tuple[int, list[str]]]]:
    """Check the header and return column positions plus (line number, row) pairs."""
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise data_error(file, "empty file (no header)") from None
    except csv.Error as e:
        raise data_error(file, f"malformed CSV header: {e}", 1) from None
    missing = [c for c in required if c not in header]
    if missing:
        raise data_error(file, f"missing columns {missing}; found {header}")
    cols = {c: header.index(c) for c in required}

    def rows() -> Iterator[tuple[int, list[str]]]:
        # A quoted field may span lines, so report where the record starts.
        line = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise data_error(file, f"malformed CSV: {e}", line) from None
            if row:
                if len(row) != len(header):
                    raise data_error(file, f"expected {len(header)} fields, got {len(row)}", line)
                yield line, row
            line = reader.line_num + 1

    return cols, rows()


def _open_text(path: Path, encoding: str):
    try:
        return open(path, encoding=encoding, newline="")
    except FileNotFoundError:
        raise data_error(path, "file not found") from None
    except OSError as e:
        raise data_error(path, f"cannot open: {e.strerror}") from None


# ---------------------------------------------------------------- Home Depot


def load_homedepot(path: str | Path | None = None, min_relevance: float = 2.33,
                   data_home: str | Path | None = None) -> XMCData:
    """Home Depot search relevance: queries = distinct search terms, items = products.

    ``path`` is ``train.csv.zip`` (member ``train.csv``), a plain ``train.csv``, or
    a directory holding ``train.csv.zip``; by default ``homedepot/train.csv.zip`` under
    the data home (``data_home``, see `xrmeta.data.home`). Products without any
    positive query stay in the catalogue; queries without a positive are dropped.
    """
    path = Path(path) if path is not None else dataset_file(HOMEDEPOT, data_home)
    if path.is_dir():
        path = path / "train.csv.zip"
    if not path.exists():
        raise data_error(path, "file not found")

    if path.suffix.lower() == ".zip":
        if not zipfile.is_zipfile(path):
            raise data_error(path, "not a zip file")
        member = "train.csv"
        try:
            with zipfile.ZipFile(path) as zf:
                if member not in zf.namelist():
                    raise data_error(path, f"no member {member!r}; found {zf.namelist()}")
                with zf.open(member) as raw:
                    text = io.TextIOWrapper(raw, encoding="latin-1", newline="")
                    return _parse_homedepot(text, f"{path}:{member}", min_relevance)
        except zipfile.BadZipFile as e:  # e.g. a CRC error while reading the member
            raise data_error(f"{path}:{member}", f"corrupt zip: {e}") from None
    with _open_text(path, "latin-1") as text:
        return _parse_homedepot(text, str(path), min_relevance)


def _parse_homedepot(lines: Iterable[str], file: str, min_relevance: float) -> XMCData:
    names = ("product_uid", "product_title", "search_term", "relevance")
    cols, rows = _csv_rows(lines, file, names)
    c_uid, c_title, c_term, c_rel = (cols[c] for c in names)

    queries = _Interner()  # normalised query text -> index; keeps the first-seen text
    items = _Interner()  # item id -> index; keeps the item's text
    # (query, item) -> [sum of ratings, number of rows]; a pair can be rated on several rows.
    ratings: dict[tuple[int, int], list[float]] = {}

    for line, row in rows:
        uid, title, term, rel = (row[c].strip() for c in (c_uid, c_title, c_term, c_rel))
        if not uid:
            raise data_error(file, "empty product_uid", line)
        if not title:
            raise data_error(file, "empty product_title", line)
        if not term:
            raise data_error(file, "empty search_term", line)
        try:
            r = float(rel)
        except ValueError:
            raise data_error(file, f"non-numeric relevance {rel!r}", line) from None
        if not math.isfinite(r):
            raise data_error(file, f"non-finite relevance {rel!r}", line)

        q = queries.add(_norm(term), term)
        i = items.add(uid, title)
        acc = ratings.setdefault((q, i), [0.0, 0])
        acc[0] += r
        acc[1] += 1

    pos = [qi for qi, (s, n) in ratings.items() if s / n >= min_relevance - _REL_EPS]
    q_pos = np.array([q for q, _ in pos], dtype=np.int64)
    i_pos = np.array([i for _, i in pos], dtype=np.int64)

    # Renumber queries so that only those with a positive remain, in first-seen order.
    keep = np.zeros(len(queries.texts), dtype=bool)
    keep[q_pos] = True
    new_q = np.cumsum(keep) - 1
    Y = binary_csr(new_q[q_pos], i_pos, (int(keep.sum()), len(items.keys)))
    texts = [t for t, k in zip(queries.texts, keep) if k]
    return XMCData("homedepot", texts, items.texts, items.keys, Y)


# ---------------------------------------------------------------- PriceRunner


def load_pricerunner(path: str | Path | None = None, data_home: str | Path | None = None) -> XMCData:
    """PriceRunner: queries = merchant offer titles, items = products (clusters).

    ``path`` is the CSV or a directory holding ``pricerunner_aggregate.csv``; by default
    ``pricerunner/pricerunner_aggregate.csv`` under the data home (``data_home``).
    Offer titles that are identical after normalisation become one query whose
    positives are the union of their products.
    """
    path = Path(path) if path is not None else dataset_file(PRICERUNNER, data_home)
    if path.is_dir():
        path = path / "pricerunner_aggregate.csv"
    file = str(path)

    queries = _Interner()  # normalised query text -> index; keeps the first-seen text
    items = _Interner()  # item id -> index; keeps the item's text
    q_pos: list[int] = []
    i_pos: list[int] = []

    with _open_text(path, "utf-8-sig") as f:
        try:
            cols, rows = _csv_rows(f, file, ("Product Title", "Cluster ID", "Cluster Label"))
            c_title, c_cid, c_label = cols["Product Title"], cols["Cluster ID"], cols["Cluster Label"]
            for line, row in rows:
                title, cid, label = row[c_title].strip(), row[c_cid].strip(), row[c_label].strip()
                if not title:
                    raise data_error(file, "empty Product Title", line)
                if not cid:
                    raise data_error(file, "empty Cluster ID", line)
                if not label:
                    raise data_error(file, "empty Cluster Label", line)
                q = queries.add(_norm(title), title)
                i = items.add(cid, label)
                q_pos.append(q)
                i_pos.append(i)
        except UnicodeDecodeError as e:
            raise data_error(file, f"not valid UTF-8: {e.reason}") from None

    Y = binary_csr(q_pos, i_pos, (len(queries.texts), len(items.keys)))
    return XMCData("pricerunner", queries.texts, items.texts, items.keys, Y)


# ---------------------------------------------------------------- XC repository


def _read_lines(path: Path) -> tuple[list[str], list[str] | None]:
    """One text per line; if every line is ``id<TAB>text`` also return the ids."""
    with _open_text(path, "utf-8") as f:
        try:
            lines = f.read().split("\n")
        except UnicodeDecodeError as e:
            raise data_error(path, f"not valid UTF-8: {e.reason}") from None
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln.rstrip("\r") for ln in lines]
    ids = None
    if lines and all("\t" in ln for ln in lines):
        ids, lines = zip(*(ln.split("\t", 1) for ln in lines))
        ids, lines = [i.strip() for i in ids], list(lines)
    for n, text in enumerate(lines, 1):
        if not text.strip():
            raise data_error(path, "empty text", n)
        if ids is not None and not ids[n - 1]:
            raise data_error(path, "empty id", n)
    return [t.strip() for t in lines], ids


def _read_label_matrix(
    path: Path, n_rows: int, rows_file: Path, n_labels: int, labels_file: Path
) -> sp.csr_matrix:
    try:
        m = sp.load_npz(path)
    except FileNotFoundError:
        raise data_error(path, "file not found") from None
    except Exception as e:  # load_npz raises many types on corrupt input
        raise data_error(path, f"cannot read sparse matrix: {e}") from None
    if m.shape[0] != n_rows:
        raise data_error(path, f"has {m.shape[0]} rows but {rows_file.name} has {n_rows} lines")

    # Check raw indices before any conversion: scipy does not bound-check them on
    # load, and converting a matrix with bad indices can fail obscurely.
    if m.format == "csr":
        rows, cols = None, m.indices
    elif m.format == "csc":
        rows, cols = m.indices, None
    elif m.format == "coo":
        rows, cols = m.row, m.col
    else:
        m = m.tocsr()
        rows, cols = None, m.indices
    if cols is not None and cols.size and (cols.min() < 0 or cols.max() >= n_labels):
        bad = cols.max() if cols.max() >= n_labels else cols.min()
        raise data_error(path, f"label id {bad} out of range: {labels_file.name} has {n_labels} labels")
    if rows is not None and rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        bad = rows.max() if rows.max() >= n_rows else rows.min()
        raise data_error(path, f"row index {bad} out of range: {rows_file.name} has {n_rows} lines")
    if m.shape[1] != n_labels:
        raise data_error(path, f"has {m.shape[1]} columns but {labels_file.name} has {n_labels} labels")
    return sp.csr_matrix(m)


def load_xc_repo(directory: str | Path) -> XMCData:
    """Extreme Classification Repository text format.

    Reads ``trn_X.txt``, ``tst_X.txt`` (query texts), ``Y.txt`` (label texts) and
    ``Y.trn.npz``, ``Y.tst.npz`` (label matrices). Queries are train then test;
    ``test_queries`` marks the test rows. Item ids are the ids before a tab in
    ``Y.txt`` if every line has one, else the 0-based line index (= column of Y).
    """
    d = Path(directory)
    if not d.is_dir():
        raise data_error(d, "not a directory")
    trn_x, tst_x, y_txt = d / "trn_X.txt", d / "tst_X.txt", d / "Y.txt"
    trn, _ = _read_lines(trn_x)
    tst, _ = _read_lines(tst_x)
    labels, ids = _read_lines(y_txt)
    if ids is None:
        ids = [str(i) for i in range(len(labels))]
    else:
        seen: dict[str, int] = {}
        for n, i in enumerate(ids, 1):
            if i in seen:
                raise data_error(y_txt, f"duplicate id {i!r} (first on line {seen[i]})", n)
            seen[i] = n

    Y_trn = _read_label_matrix(d / "Y.trn.npz", len(trn), trn_x, len(labels), y_txt)
    Y_tst = _read_label_matrix(d / "Y.tst.npz", len(tst), tst_x, len(labels), y_txt)
    test = np.arange(len(trn), len(trn) + len(tst), dtype=np.int64)
    return XMCData(d.name, trn + tst, labels, ids, sp.vstack([Y_trn, Y_tst], format="csr"), test)


def load_dataset(name_or_path: str | Path, data_home: str | Path | None = None) -> XMCData:
    """``homedepot``, ``pricerunner`` (read under the data home), ``synthetic``, or a directory in XC-repository
    format: a path, or the name of a directory in the data home."""
    key = str(name_or_path).strip().lower()
    if key == "homedepot":
        return load_homedepot(data_home=data_home)
    if key == "pricerunner":
        return load_pricerunner(data_home=data_home)
    if key == "synthetic":
        return make_synthetic()
    if Path(name_or_path).is_dir():
        return load_xc_repo(name_or_path)
    if key and (home.data_home(data_home) / str(name_or_path)).is_dir():
        return load_xc_repo(home.data_home(data_home) / str(name_or_path))
    raise DataError(
        f"{name_or_path}: unknown dataset (expected homedepot, pricerunner, synthetic or an XC-repository "
        f"directory, as a path or in the data home {home.data_home(data_home)})"
    )
