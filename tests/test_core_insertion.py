"""The C++ insertion kernels (`xrmeta._core`) against their numba references (`xrmeta.kernels.insertion`): the
same outputs, dtype and value, bit for bit, on random inputs; and the bindings' argument checks."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from xrmeta import _core, parts
from xrmeta.kernels import insertion as oracle


def assert_same(ours, theirs):
    """Equal outputs, tuples element-wise: same dtype, shape and values (floats bitwise)."""
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b)
        return
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if ours.dtype.kind == "f":
        np.testing.assert_array_equal(ours.view(f"u{ours.itemsize}"), theirs.view(f"u{theirs.itemsize}"))
    else:
        np.testing.assert_array_equal(ours, theirs)


def random_weights(rng, n_slots, n_features, max_nnz, sorted_rows=True):
    """Item-major CSR (w_ptr int64, w_idx int32, w_val float32): some rows empty, each feature once per row."""
    lengths = rng.integers(0, max_nnz + 1, size=n_slots)
    lengths[rng.random(n_slots) < 0.1] = 0
    lengths = np.minimum(lengths, n_features)
    rows = [rng.choice(n_features, size=k, replace=False) for k in lengths]
    idx = np.concatenate([np.sort(r) if sorted_rows else r for r in rows] + [np.zeros(0, np.int64)])
    ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return ptr, idx.astype(np.int32), rng.standard_normal(len(idx)).astype(np.float32)


# ---------------------------------------------------------------- inserted: tails and chunks
@pytest.mark.parametrize("seed", range(5))
def test_link(seed):
    rng = np.random.default_rng(seed)
    n_parts = int(rng.integers(1, 8))
    head = rng.integers(-1, 50, size=n_parts).astype(np.int32)
    tail_count = rng.integers(0, 5, size=n_parts).astype(np.int64)
    part = rng.integers(0, n_parts, size=int(rng.integers(0, 30))).astype(np.int64)  # parts repeat
    ours_head, ours_count, theirs_head, theirs_count = head.copy(), tail_count.copy(), head.copy(), tail_count.copy()
    assert_same(_core.link(ours_head, ours_count, part, 50), oracle._link(theirs_head, theirs_count, part, 50))
    assert_same((ours_head, ours_count), (theirs_head, theirs_count))


def random_parts(rng, n_parts, n_entries, n_slots):
    """Entries in chunks and tails of parts (some parts empty, some chunk-only or tail-only), on slots some of
    which are dead: (slot_lo, slot_hi, chunk_entries, head, entry_next, entry_slot, alive)."""
    entry_slot = rng.integers(0, n_slots, size=n_entries).astype(np.int32)
    alive = rng.random(n_slots) < 0.7
    entry_part = rng.integers(0, n_parts, size=n_entries)
    in_chunk = rng.random(n_entries) < 0.5
    chunk_entries, slot_lo, slot_hi = [], np.zeros(n_parts, np.int64), np.zeros(n_parts, np.int64)
    for p in rng.permutation(n_parts):  # chunks in any order in the buffer, as rebuilds leave them
        mine = np.flatnonzero(in_chunk & (entry_part == p))
        slot_lo[p] = sum(len(c) for c in chunk_entries)
        chunk_entries.append(rng.permutation(mine))
        slot_hi[p] = slot_lo[p] + len(mine)
    head = np.full(n_parts, -1, np.int32)
    entry_next = np.full(n_entries, -1, np.int32)
    for e in np.flatnonzero(~in_chunk):  # tails: linked newest first
        entry_next[e], head[entry_part[e]] = head[entry_part[e]], e
    chunk_entries = np.concatenate(chunk_entries + [np.zeros(0, np.int64)]).astype(np.int32)
    return slot_lo, slot_hi, chunk_entries, head, entry_next, entry_slot, alive


@pytest.mark.parametrize("seed", range(8))
def test_live_entries(seed):
    rng = np.random.default_rng(seed)
    n_parts = int(rng.integers(1, 10))
    layout = random_parts(rng, n_parts, int(rng.integers(0, 80)), int(rng.integers(1, 40)))
    for parts_asked in (np.arange(n_parts), rng.permutation(n_parts)[: n_parts // 2 + 1], np.zeros(0)):
        parts_asked = parts_asked.astype(np.int64)
        assert_same(_core.live_entries(parts_asked, *layout), oracle._live_entries(parts_asked, *layout))


@pytest.mark.parametrize("seed", range(8))
def test_feature_major(seed):
    rng = np.random.default_rng(seed)
    n_slots = 60
    # few features: clusters share them; unsorted rows: the kernel sorts
    weights = random_weights(rng, n_slots, int(rng.integers(3, 40)), 12, sorted_rows=seed % 2 == 0)
    count = rng.integers(0, 8, size=int(rng.integers(1, 10))).astype(np.int64)
    count[rng.random(len(count)) < 0.2] = 1  # clusters with one item (and some with none)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    slots = np.concatenate([rng.choice(n_slots, size=k, replace=False) for k in count]).astype(np.int64)
    assert_same(_core.feature_major_chunks(slots, start, count, *weights),
                oracle._feature_major(slots, start, count, *weights))


def test_feature_major_no_clusters():
    weights = random_weights(np.random.default_rng(0), 5, 10, 4)
    none = np.zeros(0, np.int64)
    assert_same(_core.feature_major_chunks(none, none, none, *weights),
                oracle._feature_major(none, none, none, *weights))


# ---------------------------------------------------------------- parts: two-means split, routing
def local_rows(rng, n, n_cols, max_nnz):
    """CSR rows over local columns, as `parts.two_means` passes them (int64 ptr and idx, float64 values)."""
    ptr, idx, val = random_weights(rng, n, n_cols, max_nnz)
    return ptr, idx.astype(np.int64), val.astype(np.float64), n_cols


def two_means_both(rows, first):
    args = (*rows, first, parts.ITERATIONS, parts.MIN_SHARE)
    ours, theirs = _core.two_means(*args), oracle._two_means(*args)
    assert_same(ours, theirs)
    return ours


@pytest.mark.parametrize("seed", range(10))
def test_two_means(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 2, 3, 7, 40, 200]))
    rows = local_rows(rng, n, int(rng.integers(1, 60)), 15)
    for first in {0, n - 1, int(rng.integers(n))}:
        two_means_both(rows, first)


def test_two_means_lopsided_falls_back_to_the_median():
    """Twenty rows alike and one outlier: 2-means puts the outlier alone, which the median split replaces."""
    rng = np.random.default_rng(3)
    n, n_cols = 21, 6
    dense = np.tile(np.array([1.0, 1.0, 0.5, 0.0, 0.0, 0.0]), (n, 1)) + 0.01 * rng.random((n, n_cols))
    dense[7] = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    ptr = np.arange(0, n * n_cols + 1, n_cols, dtype=np.int64)
    idx = np.tile(np.arange(n_cols, dtype=np.int64), n)
    side, _ = two_means_both((ptr, idx, dense.ravel(), n_cols), first=0)
    assert side.sum() == n - n // 2


def test_two_means_identical_rows():
    """Every similarity ties: the stable median split decides."""
    ptr = np.arange(0, 25, 3, dtype=np.int64)
    idx = np.tile(np.array([0, 2, 3], dtype=np.int64), 8)
    val = np.tile(np.array([0.5, -1.0, 2.0]), 8)
    two_means_both((ptr, idx, val, 4), first=5)


def random_routers(rng, n_clusters, n_features, ties):
    """Parts of each cluster (some clusters without a part, some with one) and sparse routers; with `ties`, every
    part of a cluster has the same router."""
    n_parts_of = rng.integers(0, 5, size=n_clusters)
    cluster_part_ptr = np.concatenate([[0], np.cumsum(n_parts_of)]).astype(np.int64)
    n_parts = int(cluster_part_ptr[-1])
    cluster_parts = rng.permutation(n_parts).astype(np.int32)
    r_ptr, r_idx, r_val = random_weights(rng, n_parts, n_features, 8)
    lo, hi = r_ptr[:-1].copy(), r_ptr[1:].copy()
    if ties:
        for c in range(n_clusters):
            mine = cluster_parts[cluster_part_ptr[c] : cluster_part_ptr[c + 1]]
            lo[mine], hi[mine] = lo[mine[:1]], hi[mine[:1]]
    return cluster_part_ptr, cluster_parts, lo, hi, r_idx, r_val


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [False, True])
def test_best_parts(seed, ties):
    rng = np.random.default_rng(seed)
    n_features, n_clusters = int(rng.integers(2, 30)), 6
    weights = random_weights(rng, 40, n_features, 10)
    routers = random_routers(rng, n_clusters, n_features, ties)
    slots = rng.integers(0, 40, size=int(rng.integers(0, 50))).astype(np.int64)
    clusters = rng.integers(0, n_clusters, size=len(slots)).astype(np.int64)
    ours_dense, theirs_dense = np.zeros(n_features, np.float32), np.zeros(n_features, np.float32)
    assert_same(_core.best_parts(slots, clusters, *weights, *routers, ours_dense),
                oracle._best_parts(slots, clusters, *weights, *routers, theirs_dense))
    assert not ours_dense.any()


# ---------------------------------------------------------------- the bindings' checks
def test_wrong_dtypes_are_refused():
    head, count, part = np.full(3, -1, np.int32), np.zeros(3, np.int64), np.zeros(2, np.int64)
    with pytest.raises(TypeError, match="head: expected dtype int32"):
        _core.link(head.astype(np.int64), count, part, 0)
    with pytest.raises(TypeError, match="part: expected dtype int64"):
        _core.link(head, count, part.astype(np.int32), 0)
    rows = local_rows(np.random.default_rng(0), 4, 5, 3)
    with pytest.raises(TypeError, match="val: expected dtype float64"):
        _core.two_means(rows[0], rows[1], rows[2].astype(np.float32), rows[3], 0, 10, 4)
    weights = random_weights(np.random.default_rng(0), 4, 5, 3)
    none = np.zeros(0, np.int64)
    with pytest.raises(TypeError, match="w_val: expected dtype float32"):
        _core.feature_major_chunks(none, none, none, weights[0], weights[1], weights[2].astype(np.float64))
    with pytest.raises(TypeError, match="expected a numpy array"):
        _core.feature_major_chunks([], none, none, *weights)


def test_layout_errors_are_refused():
    head, count, part = np.full(3, -1, np.int32), np.zeros(3, np.int64), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.link(head, count, part[::2], 0)
    head.flags.writeable = False
    with pytest.raises(ValueError, match="head: expected a writeable array"):
        _core.link(head, count, part, 0)
    with pytest.raises(ValueError, match="differ in length"):
        _core.link(np.full(2, -1, np.int32), count, part, 0)
    rows = local_rows(np.random.default_rng(0), 4, 5, 3)
    with pytest.raises(ValueError, match="first is not a row"):
        _core.two_means(*rows, 4, 10, 4)
    with pytest.raises(ValueError, match="no rows"):
        _core.two_means(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0), 0, 0, 10, 4)


def test_production_modules_do_not_import_numba():
    for module in ("inserted.py", "parts.py"):
        tree = ast.parse((Path(parts.__file__).parent / module).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(name.split(".")[0] == "numba" for name in imported), module
