"""Datasets for product search framed as extreme multi-label classification (XMC).

A query is an input, each catalogue product is a label ("item"). Every loader
returns an :class:`XMCData`: query texts, item texts and ids, and a binary
query-by-item relevance matrix ``Y``.

Sources:

* Home Depot search relevance (Kaggle, ``train.csv.zip``): human-rated
  (search term, product) pairs; a pair is positive when its mean rating
  reaches ``min_relevance``.
* PriceRunner offers (UCI): each merchant offer title is a query for the
  product (cluster) it was matched to.
* The Extreme Classification Repository text format (``trn_X.txt`` etc.).
* :func:`make_synthetic`: a small, seeded catalogue for tests.

:func:`make_zero_shot_split` hides a random set of items from training so that
cold-start ("zero-shot") ranking can be evaluated next to ordinary ranking.

Loaders only read; bad input raises :class:`DataError` naming the file and,
where there is one, the 1-based line number.
"""

from __future__ import annotations

import csv
import io
import math
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

SHARED_DATA = Path(
    os.environ.get("XRMETA_DATA_DIR")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)

# Means of decimal ratings are inexact in binary floating point, e.g.
# (3.0 + 2.94) / 2 == 2.9699999999999998; without slack a pair whose mean equals
# the threshold could miss it.
_REL_EPS = 1e-9


class DataError(ValueError):
    """Malformed or missing input data."""


def _err(file: object, msg: str, line: int | None = None) -> DataError:
    where = f"{file} line {line}" if line is not None else f"{file}"
    return DataError(f"{where}: {msg}")


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


def _binary_csr(rows, cols, shape) -> sp.csr_matrix:
    Y = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
        shape=shape,
    )
    Y.sum_duplicates()
    Y.data[:] = 1.0
    return Y


@dataclass
class XMCData:
    """A query-by-item relevance dataset.

    ``Y`` is normalised on construction to a binary float32 CSR matrix with
    sorted, unique indices (any stored non-zero counts as a positive).
    """

    name: str
    query_texts: list[str]
    item_texts: list[str]
    item_ids: list[str]
    Y: sp.csr_matrix
    test_queries: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not sp.issparse(self.Y):
            raise DataError(f"{self.name}: Y must be a scipy sparse matrix, got {type(self.Y).__name__}")
        Y = sp.csr_matrix(self.Y, dtype=np.float32, copy=True)
        Y.sum_duplicates()
        Y.eliminate_zeros()
        Y.data[:] = 1.0
        self.Y = Y

        n_q, n_i = Y.shape
        if len(self.query_texts) != n_q:
            raise DataError(f"{self.name}: {len(self.query_texts)} query texts but Y has {n_q} rows")
        if len(self.item_texts) != n_i:
            raise DataError(f"{self.name}: {len(self.item_texts)} item texts but Y has {n_i} columns")
        if len(self.item_ids) != n_i:
            raise DataError(f"{self.name}: {len(self.item_ids)} item ids but Y has {n_i} columns")
        if len(set(self.item_ids)) != n_i:
            seen: set[str] = set()
            for item_id in self.item_ids:
                if item_id in seen:
                    raise DataError(f"{self.name}: duplicate item id {item_id!r}")
                seen.add(item_id)
        for kind, texts in (("query", self.query_texts), ("item", self.item_texts)):
            for i, t in enumerate(texts):
                if not isinstance(t, str) or not t.strip():
                    raise DataError(f"{self.name}: empty or non-string {kind} text at index {i}")

        if self.test_queries is not None:
            tq = np.asarray(self.test_queries)
            if tq.ndim != 1 or (tq.size and not np.issubdtype(tq.dtype, np.integer)):
                raise DataError(f"{self.name}: test_queries must be a 1-d integer array")
            tq = np.sort(tq.astype(np.int64))
            if tq.size and (tq[0] < 0 or tq[-1] >= n_q):
                raise DataError(f"{self.name}: test_queries out of range [0, {n_q})")
            if np.any(np.diff(tq) == 0):
                raise DataError(f"{self.name}: duplicate entries in test_queries")
            self.test_queries = tq

    @property
    def n_queries(self) -> int:
        return self.Y.shape[0]

    @property
    def n_items(self) -> int:
        return self.Y.shape[1]


# ---------------------------------------------------------------- CSV helpers


def _csv_rows(
    lines: Iterable[str], file: str, required: tuple[str, ...]
) -> tuple[dict[str, int], Iterator[tuple[int, list[str]]]]:
    """Check the header and return column positions plus (line number, row) pairs."""
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise _err(file, "empty file (no header)") from None
    except csv.Error as e:
        raise _err(file, f"malformed CSV header: {e}", 1) from None
    missing = [c for c in required if c not in header]
    if missing:
        raise _err(file, f"missing columns {missing}; found {header}")
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
                raise _err(file, f"malformed CSV: {e}", line) from None
            if row:
                if len(row) != len(header):
                    raise _err(file, f"expected {len(header)} fields, got {len(row)}", line)
                yield line, row
            line = reader.line_num + 1

    return cols, rows()


def _open_text(path: Path, encoding: str):
    try:
        return open(path, encoding=encoding, newline="")
    except FileNotFoundError:
        raise _err(path, "file not found") from None
    except OSError as e:
        raise _err(path, f"cannot open: {e.strerror}") from None


# ---------------------------------------------------------------- Home Depot


def load_homedepot(path: str | Path | None = None, min_relevance: float = 2.33) -> XMCData:
    """Home Depot search relevance: queries = distinct search terms, items = products.

    ``path`` is ``train.csv.zip`` (member ``train.csv``), a plain ``train.csv``, or
    a directory holding ``train.csv.zip``. Products without any positive query stay
    in the catalogue; queries without a positive are dropped.
    """
    path = Path(path) if path is not None else SHARED_DATA / "homedepot" / "train.csv.zip"
    if path.is_dir():
        path = path / "train.csv.zip"
    if not path.exists():
        raise _err(path, "file not found")

    if path.suffix.lower() == ".zip":
        if not zipfile.is_zipfile(path):
            raise _err(path, "not a zip file")
        member = "train.csv"
        try:
            with zipfile.ZipFile(path) as zf:
                if member not in zf.namelist():
                    raise _err(path, f"no member {member!r}; found {zf.namelist()}")
                with zf.open(member) as raw:
                    text = io.TextIOWrapper(raw, encoding="latin-1", newline="")
                    return _parse_homedepot(text, f"{path}:{member}", min_relevance)
        except zipfile.BadZipFile as e:  # e.g. a CRC error while reading the member
            raise _err(f"{path}:{member}", f"corrupt zip: {e}") from None
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
            raise _err(file, "empty product_uid", line)
        if not title:
            raise _err(file, "empty product_title", line)
        if not term:
            raise _err(file, "empty search_term", line)
        try:
            r = float(rel)
        except ValueError:
            raise _err(file, f"non-numeric relevance {rel!r}", line) from None
        if not math.isfinite(r):
            raise _err(file, f"non-finite relevance {rel!r}", line)

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
    Y = _binary_csr(new_q[q_pos], i_pos, (int(keep.sum()), len(items.keys)))
    texts = [t for t, k in zip(queries.texts, keep) if k]
    return XMCData("homedepot", texts, items.texts, items.keys, Y)


# ---------------------------------------------------------------- PriceRunner


def load_pricerunner(path: str | Path | None = None) -> XMCData:
    """PriceRunner: queries = merchant offer titles, items = products (clusters).

    Offer titles that are identical after normalisation become one query whose
    positives are the union of their products.
    """
    path = Path(path) if path is not None else SHARED_DATA / "pricerunner" / "pricerunner_aggregate.csv"
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
                    raise _err(file, "empty Product Title", line)
                if not cid:
                    raise _err(file, "empty Cluster ID", line)
                if not label:
                    raise _err(file, "empty Cluster Label", line)
                q = queries.add(_norm(title), title)
                i = items.add(cid, label)
                q_pos.append(q)
                i_pos.append(i)
        except UnicodeDecodeError as e:
            raise _err(file, f"not valid UTF-8: {e.reason}") from None

    Y = _binary_csr(q_pos, i_pos, (len(queries.texts), len(items.keys)))
    return XMCData("pricerunner", queries.texts, items.texts, items.keys, Y)


# ---------------------------------------------------------------- XC repository


def _read_lines(path: Path) -> tuple[list[str], list[str] | None]:
    """One text per line; if every line is ``id<TAB>text`` also return the ids."""
    with _open_text(path, "utf-8") as f:
        try:
            lines = f.read().split("\n")
        except UnicodeDecodeError as e:
            raise _err(path, f"not valid UTF-8: {e.reason}") from None
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln.rstrip("\r") for ln in lines]
    ids = None
    if lines and all("\t" in ln for ln in lines):
        ids, lines = zip(*(ln.split("\t", 1) for ln in lines))
        ids, lines = [i.strip() for i in ids], list(lines)
    for n, text in enumerate(lines, 1):
        if not text.strip():
            raise _err(path, "empty text", n)
        if ids is not None and not ids[n - 1]:
            raise _err(path, "empty id", n)
    return [t.strip() for t in lines], ids


def _read_label_matrix(
    path: Path, n_rows: int, rows_file: Path, n_labels: int, labels_file: Path
) -> sp.csr_matrix:
    try:
        m = sp.load_npz(path)
    except FileNotFoundError:
        raise _err(path, "file not found") from None
    except Exception as e:  # load_npz raises many types on corrupt input
        raise _err(path, f"cannot read sparse matrix: {e}") from None
    if m.shape[0] != n_rows:
        raise _err(path, f"has {m.shape[0]} rows but {rows_file.name} has {n_rows} lines")

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
        raise _err(path, f"label id {bad} out of range: {labels_file.name} has {n_labels} labels")
    if rows is not None and rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        bad = rows.max() if rows.max() >= n_rows else rows.min()
        raise _err(path, f"row index {bad} out of range: {rows_file.name} has {n_rows} lines")
    if m.shape[1] != n_labels:
        raise _err(path, f"has {m.shape[1]} columns but {labels_file.name} has {n_labels} labels")
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
        raise _err(d, "not a directory")
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
                raise _err(y_txt, f"duplicate id {i!r} (first on line {seen[i]})", n)
            seen[i] = n

    Y_trn = _read_label_matrix(d / "Y.trn.npz", len(trn), trn_x, len(labels), y_txt)
    Y_tst = _read_label_matrix(d / "Y.tst.npz", len(tst), tst_x, len(labels), y_txt)
    test = np.arange(len(trn), len(trn) + len(tst), dtype=np.int64)
    return XMCData(d.name, trn + tst, labels, ids, sp.vstack([Y_trn, Y_tst], format="csr"), test)


# ---------------------------------------------------------------- Synthetic


_CONSONANTS = "bdfghklmnprstvz"
_VOWELS = "aeiou"
_FILLERS = ["pro", "mini", "max", "plus", "set", "kit", "black", "white", "steel", "lite"]


def _made_up_words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """``n`` distinct consonant-vowel words of 2-3 syllables, none in ``taken``."""
    words: list[str] = []
    while len(words) < n:
        m = 2 * (n - len(words)) + 16
        cons = rng.integers(0, len(_CONSONANTS), size=(m, 3))
        vows = rng.integers(0, len(_VOWELS), size=(m, 3))
        n_syl = rng.integers(2, 4, size=m)
        for c, v, k in zip(cons, vows, n_syl):
            w = "".join(_CONSONANTS[c[j]] + _VOWELS[v[j]] for j in range(k))
            if w not in taken:
                taken.add(w)
                words.append(w)
                if len(words) == n:
                    break
    return words


def _pick(rng: np.random.Generator, seq: list, k: int) -> list:
    return [seq[j] for j in rng.permutation(len(seq))[:k]]


def make_synthetic(n_items: int = 2000, n_queries: int = 6000, seed: int = 0) -> XMCData:
    """A small learnable catalogue, fully determined by ``seed``.

    Items fall into topics (~20 items each). A title holds 1-2 topic words, a
    brand, 1-2 words unique to the item, a model code and 0-2 generic fillers
    (4-8 words). Queries are 2-4 title words of one item, shuffled, sometimes with
    a typo and sometimes also positive for a second item of the same topic. Topic
    words make a new item's title informative; unique words make queries learnable.
    """
    if n_items < 1 or n_queries < 0:
        raise ValueError("need n_items >= 1 and n_queries >= 0")
    rng = np.random.default_rng(seed)
    taken = set(_FILLERS)

    n_topics = max(1, round(n_items / 20))
    topic_words = [_made_up_words(rng, int(rng.integers(3, 6)), taken) for _ in range(n_topics)]
    brands = _made_up_words(rng, max(2, n_topics // 2), taken)
    item_topic = rng.integers(0, n_topics, size=n_items)
    n_unique = rng.integers(1, 3, size=n_items)
    unique_words = iter(_made_up_words(rng, int(n_unique.sum()), taken))

    titles: list[list[str]] = []
    for t, n_u in zip(item_topic, n_unique):
        words = _pick(rng, topic_words[t], int(rng.integers(1, 3)))
        words.append(brands[rng.integers(len(brands))])
        words += [next(unique_words) for _ in range(n_u)]
        words.append(f"{'abcxyz'[rng.integers(6)]}{rng.integers(10, 1000)}")
        words += _pick(rng, _FILLERS, int(rng.integers(0, 3)))
        titles.append(words)

    by_topic = [np.flatnonzero(item_topic == t) for t in range(n_topics)]
    # Uneven popularity, as in real catalogues; a few items get no query.
    popularity = rng.gamma(2.0, 1.0, size=n_items)
    popularity /= popularity.sum()

    queries: list[str] = []
    seen: set[str] = set()
    q_pos: list[int] = []
    i_pos: list[int] = []
    for _ in range(50):
        if len(queries) == n_queries:
            break
        m = n_queries - len(queries) + 16
        items = rng.choice(n_items, size=m, p=popularity)
        n_words = rng.integers(2, 5, size=m)
        u = rng.random(size=(m, 5))
        for item, k, (u_typo, u_word, u_pos, u_pair, u_other) in zip(items, n_words, u):
            words = _pick(rng, titles[item], k)
            if u_typo < 0.15:
                w_idx = int(u_word * len(words))
                w = words[w_idx]
                if len(w) >= 3:
                    j = int(u_pos * (len(w) - 1))
                    words[w_idx] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
            text = " ".join(words)
            # Duplicate texts would be ambiguous inputs; draw again instead.
            if text in seen:
                continue
            seen.add(text)
            q = len(queries)
            queries.append(text)
            q_pos.append(q)
            i_pos.append(int(item))
            siblings = by_topic[item_topic[item]]
            if u_pair < 0.1 and len(siblings) > 1:
                others = siblings[siblings != item]
                q_pos.append(q)
                i_pos.append(int(others[int(u_other * len(others))]))
            if len(queries) == n_queries:
                break
    else:
        raise RuntimeError("could not generate enough distinct synthetic queries")

    Y = _binary_csr(q_pos, i_pos, (n_queries, n_items))
    item_texts = [" ".join(w) for w in titles]
    item_ids = [f"syn{i:06d}" for i in range(n_items)]
    return XMCData("synthetic", queries, item_texts, item_ids, Y)


def load_dataset(name_or_path: str) -> XMCData:
    """``homedepot``, ``pricerunner``, ``synthetic`` or an XC-repository directory."""
    key = str(name_or_path).strip().lower()
    if key == "homedepot":
        return load_homedepot()
    if key == "pricerunner":
        return load_pricerunner()
    if key == "synthetic":
        return make_synthetic()
    if Path(name_or_path).is_dir():
        return load_xc_repo(name_or_path)
    raise DataError(
        f"{name_or_path}: unknown dataset "
        "(expected homedepot, pricerunner, synthetic or an XC-repository directory)"
    )


# ---------------------------------------------------------------- Zero-shot split


@dataclass
class EvalSet:
    """Test queries, their truth (global item columns) and the items eligible for ranking."""

    name: str
    queries: np.ndarray
    Y: sp.csr_matrix
    candidates: np.ndarray


@dataclass
class ZeroShotSplit:
    seed: int
    novel_frac: float
    test_frac: float
    observed: np.ndarray
    novel: np.ndarray
    train_queries: np.ndarray
    Y_train: sp.csr_matrix
    observed_set: EvalSet
    zero_shot_set: EvalSet
    generalized_set: EvalSet

    def eval_sets(self) -> list[EvalSet]:
        return [self.observed_set, self.zero_shot_set, self.generalized_set]


def _keep_columns(Y: sp.csr_matrix, mask: np.ndarray) -> sp.csr_matrix:
    """Drop the entries in columns where ``mask`` is False, keeping the shape."""
    keep = mask[Y.indices]
    rows = np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=Y.shape[0]))])
    return sp.csr_matrix((Y.data[keep], Y.indices[keep], indptr), shape=Y.shape)


def _eval_set(name: str, queries: np.ndarray, Y_test: sp.csr_matrix, candidates: np.ndarray) -> EvalSet:
    has_pos = np.diff(Y_test.indptr) > 0
    return EvalSet(name, queries[has_pos], Y_test[has_pos], candidates)


def make_zero_shot_split(
    data: XMCData, novel_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0
) -> ZeroShotSplit:
    """Hide ``round(novel_frac * n_items)`` items from training and hold out test queries.

    Only items with at least one positive query can become novel (an item without
    positives could never be evaluated). Test queries are ``data.test_queries`` if
    set, else a random ``test_frac`` of all queries.
    """
    if not 0.0 <= novel_frac <= 1.0 or not 0.0 <= test_frac <= 1.0:
        raise ValueError("novel_frac and test_frac must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    n_q, n_i = data.Y.shape

    eligible = np.flatnonzero(data.Y.getnnz(axis=0) > 0)
    n_novel = min(round(novel_frac * n_i), eligible.size)
    novel = np.sort(rng.choice(eligible, size=n_novel, replace=False)).astype(np.int64)
    is_novel = np.zeros(n_i, dtype=bool)
    is_novel[novel] = True
    observed = np.flatnonzero(~is_novel).astype(np.int64)

    if data.test_queries is not None:
        test = data.test_queries.astype(np.int64)
    else:
        test = np.sort(rng.permutation(n_q)[: round(test_frac * n_q)]).astype(np.int64)
    is_test = np.zeros(n_q, dtype=bool)
    is_test[test] = True
    train = np.flatnonzero(~is_test).astype(np.int64)

    Y_train = data.Y[train][:, observed]
    has_pos = np.diff(Y_train.indptr) > 0
    Y_train = Y_train[has_pos]
    Y_train.sort_indices()
    train_queries = train[has_pos]

    Y_test = data.Y[test]
    all_items = np.arange(n_i, dtype=np.int64)
    return ZeroShotSplit(
        seed=seed,
        novel_frac=novel_frac,
        test_frac=test_frac,
        observed=observed,
        novel=novel,
        train_queries=train_queries,
        Y_train=Y_train,
        observed_set=_eval_set("observed", test, _keep_columns(Y_test, ~is_novel), observed),
        zero_shot_set=_eval_set("zero_shot", test, _keep_columns(Y_test, is_novel), novel),
        generalized_set=_eval_set("generalized", test, Y_test, all_items),
    )
