"""The data model: a query-by-item relevance dataset (`XMCData`), its errors, and what makes an item id valid.

Product search framed as extreme multi-label classification (XMC): a query is an input, each catalogue product
is a label ("item").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

MAX_ID_CHARS = 1024


class DataError(ValueError):
    """Malformed or missing input data."""


def data_error(file: object, msg: str, line: int | None = None) -> DataError:
    where = f"{file} line {line}" if line is not None else f"{file}"
    return DataError(f"{where}: {msg}")


def binary_csr(rows, cols, shape) -> sp.csr_matrix:
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
        """Rows of Y."""
        return self.Y.shape[0]

    @property
    def n_items(self) -> int:
        """Columns of Y."""
        return self.Y.shape[1]


def valid_id(item_id) -> bool:
    """A non-empty string of valid Unicode, at most MAX_ID_CHARS characters, without tabs or line breaks (ids are
    written one per line, and as the first field of 'id<TAB>title' files)."""
    return (isinstance(item_id, str) and bool(item_id.strip()) and len(item_id) <= MAX_ID_CHARS
            and not any(c in item_id for c in "\r\n\t") and _encodable(item_id))


def new_ids_problem(ids: list, existing=()) -> str | None:
    """What is wrong with `ids` as new items next to `existing` (a container of ids, e.g. a model), or None.

    Returns the problem instead of raising it, so each caller raises its own error type with its own context."""
    bad = [i for i in ids if not valid_id(i)]
    if bad:
        return (f"item ids must be non-empty strings without tabs or line breaks, at most {MAX_ID_CHARS} "
                f"characters of valid Unicode, got {preview(bad)}")
    if len(set(ids)) != len(ids):
        return "duplicate ids in the request"
    taken = [i for i in ids if i in existing]
    if taken:
        return f"ids already in the catalogue {preview(taken)}"
    return None


def preview(values: list, n: int = 5, width: int = 40) -> str:
    """The first n values, each repr cut to width characters: an error message stays readable whatever the
    input (a 1 MB id, say)."""
    shown = [r if len(r) <= width else r[: width - 3] + "..." for r in map(repr, values[:n])]
    return "[" + ", ".join(shown) + (", ...]" if len(values) > n else "]")


def _encodable(text: str) -> bool:
    """Valid Unicode: no lone surrogate (what undecodable bytes become), so it can be written as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
