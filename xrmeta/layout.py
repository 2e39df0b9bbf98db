"""The arrays the search kernels read, as small structures beneath `tree` and `catalog` (neither imports the other).

Each structure is a flat NamedTuple of arrays (and a few scalars), passed to a kernel as one argument: the C++
core (`cpp/include/xrmeta/layout.hpp`) reads the same fields in the same order, without a copy, and so does
its numba oracle (`xrmeta.kernels`; flat: numba's parallel loops cannot take a tuple nested in another):

- `Rows`: CSR rows (a batch of queries, or of beams);
- `FeatureMajor`: weights of slots in groups, stored per group feature-major (PECOS's "chunks"), so scoring a
  group costs one lookup per query feature; the upper layers' groups are a node's children, the leaf layer's
  the observed items of a cluster. Its fields open both layouts below, which the kernels score alike;
- `UpperLayout`: the layers above the leaves (`tree.UpperLayers`), read by the beam search;
- `LeafLayout`: the leaf layer's observed items and every slot's item-major weights (`catalog.Catalog`);
- `InsertedLayout`: the inserted items per part of a cluster, and the parts' routers (`inserted.Chunks`,
  `parts.Parts`).

Also here: the post-processor codes, the check of a beam size, and the check of a catalogue's saved arrays.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse as smat

# Post-processors, as in PECOS: a transform of the raw score, multiplied along the tree path. The kernels read
# the code (`transform` in cpp/src/search.cpp): the hinge's exponent, or 0 for the sigmoid.
POST_PROCESSORS = {"l1-hinge": 1, "l2-hinge": 2, "l3-hinge": 3, "l4-hinge": 4, "sigmoid": 0}

# A group (the children of one node) whose chunk holds at least this share of all features gets a dense
# feature -> row map: near the root a chunk holds most features, and a binary search over them per query
# feature was a third of a beam search. The maps of all groups together take at most DENSE_MAP_BYTES.
DENSE_MIN_SHARE = 1 / 64
DENSE_MAP_BYTES = 32 << 20


class Rows(NamedTuple):
    """CSR rows: row i holds columns idx[ptr[i] : ptr[i + 1]] (sorted) with values val[...]."""

    ptr: np.ndarray  # int64
    idx: np.ndarray
    val: np.ndarray  # float32


def rows(X: smat.spmatrix) -> Rows:
    """The CSR triple of X with the dtypes the C++ core checks, copied only where they differ (scipy gives some
    products and stacks int64 indices); indices as they are: sort them first where a kernel searches them."""
    if not smat.isspmatrix_csr(X):
        X = smat.csr_matrix(X)
    return Rows(X.indptr.astype(np.int64, copy=False), X.indices.astype(np.int32, copy=False),
                X.data.astype(np.float32, copy=False))


class FeatureMajor(NamedTuple):
    """Weights of slots in groups; group g is stored as rows feat_ptr[g] .. feat_ptr[g + 1], one per feature its
    slots use, in increasing feature order; row r lists its non-zeros (slot offset inside the group, weight)."""

    feat_ptr: np.ndarray  # (groups + 1,) int64
    feats: np.ndarray  # per row: its feature, int32
    row_ptr: np.ndarray  # (rows + 1,) int64: postings of row r: row_ptr[r] .. row_ptr[r + 1]
    slot: np.ndarray  # per posting: slot offset inside its group, int32
    val: np.ndarray  # per posting: weight, float32


def feature_major(W: smat.csc_matrix, slot_group: np.ndarray, group_slot_ptr: np.ndarray) -> FeatureMajor:
    """Features x slots weights W, whose slots (columns) are sorted by group (slot_group; group g holds slots
    group_slot_ptr[g] .. group_slot_ptr[g + 1]), laid out feature-major per group."""
    W = smat.csc_matrix(W, dtype=np.float32)
    W.sort_indices()
    n_groups = len(group_slot_ptr) - 1
    slots = np.repeat(np.arange(W.shape[1]), np.diff(W.indptr))
    feats = W.indices.astype(np.int64)
    groups = slot_group[slots]
    o = np.lexsort((slots, feats, groups))  # the non-zeros by (group, feature, slot)
    slots, feats, groups, vals = slots[o], feats[o], groups[o], W.data[o]
    new_row = np.ones(len(o), dtype=bool)
    new_row[1:] = (feats[1:] != feats[:-1]) | (groups[1:] != groups[:-1])
    row_start = np.flatnonzero(new_row)
    return FeatureMajor(
        feat_ptr=np.searchsorted(groups[row_start], np.arange(n_groups + 1)).astype(np.int64),
        feats=feats[row_start].astype(np.int32),
        row_ptr=np.append(row_start, len(o)).astype(np.int64),
        slot=(slots - group_slot_ptr[groups]).astype(np.int32),
        val=vals.astype(np.float32),
    )


class UpperLayout(NamedTuple):
    """The layers above the leaves. Slots number the nodes of every layer, layer by layer, each layer ordered by
    group; group 0 holds the root's children and group 1 + s the children of slot s. slot_node maps a slot to its
    node number in its layer (PECOS's), node_slot back (indexed by layer_slot_ptr[d] + node). No layer: a single
    leaf cluster under the root."""

    feat_ptr: np.ndarray  # the groups, feature-major: the fields of `FeatureMajor`
    feats: np.ndarray
    row_ptr: np.ndarray
    slot: np.ndarray
    val: np.ndarray
    slot_bias: np.ndarray  # float32: bias weight * PECOS's bias
    slot_node: np.ndarray  # int64
    node_slot: np.ndarray  # int64
    dense_of_group: np.ndarray  # (groups,) int32: row of dense_rows for the group, -1: binary search instead
    dense_rows: np.ndarray  # (maps, features) int32: feature -> chunk row of the group, -1 where absent
    layer_slot_ptr: np.ndarray  # (layers + 1,) int64: slots of layer d: layer_slot_ptr[d] .. [d + 1]
    group_slot_ptr: np.ndarray  # (groups + 1,) int64
    post: int  # POST_PROCESSORS code


def upper_layout(layer_slot_ptr, group_slot_ptr, groups: FeatureMajor, slot_bias, slot_node, node_slot,
                 n_features: int, post: int) -> UpperLayout:
    """The layout of the upper layers, with dense row maps for the widest groups (`dense_row_maps`)."""
    dense_of_group, dense_rows = dense_row_maps(groups, n_features)
    return UpperLayout(*groups, np.asarray(slot_bias, np.float32), np.asarray(slot_node, np.int64),
                       np.asarray(node_slot, np.int64), dense_of_group, dense_rows,
                       np.asarray(layer_slot_ptr, np.int64), np.asarray(group_slot_ptr, np.int64), int(post))


def dense_row_maps(groups: FeatureMajor, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """(dense_of_group: group -> row of maps or -1, maps: (n_maps, n_features) int32 chunk row, -1 if absent)."""
    feat_ptr, feats = groups.feat_ptr, groups.feats
    n_groups = len(feat_ptr) - 1
    dense_of_group = np.full(max(n_groups, 0), -1, dtype=np.int32)
    maps = np.full((1, 1), -1, dtype=np.int32)
    if n_features <= 0 or n_groups <= 0 or len(feats) >= 2**31:
        return dense_of_group, maps
    width = np.diff(feat_ptr)
    budget = max(DENSE_MAP_BYTES // (4 * n_features), 1)
    chosen = sorted(g for g in np.argsort(-width, kind="stable")[:budget] if width[g] >= DENSE_MIN_SHARE * n_features)
    if chosen:
        maps = np.full((len(chosen), n_features), -1, dtype=np.int32)
    for i, g in enumerate(chosen):
        dense_of_group[g] = i
        lo, hi = feat_ptr[g], feat_ptr[g + 1]
        maps[i, feats[lo:hi]] = np.arange(lo, hi, dtype=np.int32)
    return dense_of_group, maps


class LeafLayout(NamedTuple):
    """The leaf layer as one published snapshot: observed items (slots 0 .. n_base - 1, by cluster) feature-major
    per cluster, and every slot item-major (inserted items' tails are scored from these)."""

    feat_ptr: np.ndarray  # the observed items of each cluster, feature-major: the fields of `FeatureMajor`
    feats: np.ndarray
    row_ptr: np.ndarray
    slot: np.ndarray
    val: np.ndarray
    base_slot_ptr: np.ndarray  # (clusters + 1,) int64: observed slots of cluster c; its last value is n_base
    w_ptr: np.ndarray  # item-major weights of every slot (CSR rows, sorted features)
    w_idx: np.ndarray
    w_val: np.ndarray
    slot_bias: np.ndarray  # float32
    slot_alive: np.ndarray  # bool
    post: int  # POST_PROCESSORS code
    path_exponent: float  # score = transform(raw) * path ** path_exponent


class InsertedLayout(NamedTuple):
    """The inserted items per *part* (`xrmeta.inserted`): a feature-major chunk and an item-major tail. Each
    cluster's inserted entries are split into parts (`xrmeta.parts`); part c < clusters is cluster c's first.
    A query scores every part of a cluster with at most `probe` parts, else the `probe` parts whose routers
    (sparse rows) score highest against it."""

    row_lo: np.ndarray  # (parts,) chunk rows of part p: row_lo[p] .. row_hi[p]
    row_hi: np.ndarray
    slot_lo: np.ndarray  # (parts,) its slots: slots[slot_lo[p] .. slot_hi[p]]
    slot_hi: np.ndarray
    feats: np.ndarray  # per row: its feature
    row_ptr: np.ndarray  # per row r: postings row_ptr[r] .. row_ptr[r + 1]
    local: np.ndarray  # per posting: position in the part's slot list
    val: np.ndarray  # per posting: weight
    slots: np.ndarray
    head: np.ndarray  # (parts,) first tail entry, -1: none
    entry_slot: np.ndarray  # per entry: its slot
    entry_next: np.ndarray  # per entry: the next (older) tail entry of its part, -1: none
    cluster_part_ptr: np.ndarray  # (clusters + 1,) int64: parts of cluster c: cluster_parts[ptr[c] .. ptr[c + 1]]
    cluster_parts: np.ndarray  # int32, increasing within a cluster
    router_lo: np.ndarray  # (parts,) int64: router of part p: router_idx/val[router_lo[p] .. router_hi[p]]
    router_hi: np.ndarray
    router_idx: np.ndarray  # int32 features
    router_val: np.ndarray  # float32


def check_beams(beam_size, wide, wide_name: str) -> int:
    """Check a beam size and a wider list of leaf clusters (None: the beam itself); returns the wider one."""
    wide = beam_size if wide is None else wide
    for name, v in (("beam_size", beam_size), (wide_name, wide)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if wide < beam_size:
        raise ValueError(f"{wide_name} ({wide}) must be >= beam_size ({beam_size})")
    return wide


# A catalogue's persisted arrays (`Catalog.arrays`), each with the dtype the kernels are compiled for: the chunks
# (observed items, `FeatureMajor` with the prefix "chunk_"), the slots and the inserted items' entries.
LEAF_ARRAYS = {
    "chunk_feat_ptr": np.int64, "chunk_feats": np.int32, "chunk_row_ptr": np.int64, "chunk_slot": np.int32,
    "chunk_val": np.float32, "base_slot_ptr": np.int64, "w_ptr": np.int64, "w_idx": np.int32,
    "w_val": np.float32, "slot_bias": np.float32, "slot_alive": np.bool_, "slot_cluster": np.int32,
    "entry_slot": np.int32, "entry_cluster": np.int32, "entry_part": np.int32, "part_cluster": np.int32,
    "router_ptr": np.int64, "router_idx": np.int32, "router_val": np.float32,
}


def leaf_arrays_problem(a: dict, n_features: int) -> str | None:
    """What is wrong with a catalogue's arrays, or None. Checks what the kernels rely on: every pointer stays
    inside its array. In order: each check may assume the ones before it passed."""
    n = len(a["slot_alive"])
    base_ptr, entry = a["base_slot_ptr"], a["entry_slot"]
    n_clusters, n_base = len(base_ptr) - 1, int(base_ptr[-1]) if len(base_ptr) else -1
    checks = [
        (lambda: all(a[k].dtype == t and a[k].ndim == 1 for k, t in LEAF_ARRAYS.items()), "dtypes"),
        (lambda: n_clusters >= 1 and len(a["chunk_feat_ptr"]) == n_clusters + 1, "cluster counts"),
        (lambda: all(len(a[k]) == n for k in ("slot_bias", "slot_cluster")) and len(a["w_ptr"]) == n + 1
         and len(a["entry_cluster"]) == len(entry), "slot counts"),
        (lambda: _pointers(base_ptr, n_base) and n_base <= n, "base_slot_ptr"),
        (lambda: _pointers(a["w_ptr"], len(a["w_idx"])) and len(a["w_idx"]) == len(a["w_val"]), "w_ptr"),
        (lambda: _pointers(a["chunk_feat_ptr"], len(a["chunk_feats"])), "chunk_feat_ptr"),
        (lambda: _pointers(a["chunk_row_ptr"], len(a["chunk_slot"])) and len(a["chunk_slot"]) == len(a["chunk_val"])
         and len(a["chunk_row_ptr"]) == len(a["chunk_feats"]) + 1, "chunk_row_ptr"),
        (lambda: _in_range(a["w_idx"], n_features) and _in_range(a["chunk_feats"], n_features), "feature indices"),
        (lambda: _in_range(a["chunk_slot"], max(int(np.diff(base_ptr).max(initial=0)), 1)), "chunk_slot"),
        (lambda: _in_range(a["slot_cluster"], n_clusters), "slot_cluster"),
        (lambda: ((entry >= n_base) & (entry < n)).all(), "entry_slot"),
        (lambda: _in_range(a["entry_cluster"], n_clusters), "entry_cluster"),
        (lambda: not _repeated_entries(entry, a["entry_cluster"]), "entries repeated"),
        (lambda: len(a["entry_part"]) == len(entry) and len(a["part_cluster"]) >= n_clusters
         and (a["part_cluster"][:n_clusters] == np.arange(n_clusters)).all()
         and _in_range(a["part_cluster"], n_clusters), "part_cluster"),
        (lambda: _parts_of_entries(a["entry_part"], a["entry_cluster"], a["part_cluster"]), "entry_part"),
        (lambda: len(a["router_ptr"]) == len(a["part_cluster"]) + 1 and _pointers(a["router_ptr"], len(a["router_idx"]))
         and len(a["router_idx"]) == len(a["router_val"]) and _in_range(a["router_idx"], n_features), "router_ptr"),
        (lambda: _finite(a["w_val"]) and _finite(a["slot_bias"]) and _finite(a["chunk_val"])
         and _finite(a["router_val"]), "non-finite weights"),
    ]
    return next((what for ok, what in checks if not ok()), None)


def _repeated_entries(entry_slot: np.ndarray, entry_cluster: np.ndarray) -> bool:
    """Whether some item has two entries in the same cluster (it would be scored twice there)."""
    key = entry_slot.astype(np.int64) * (int(entry_cluster.max(initial=0)) + 1) + entry_cluster
    return len(np.unique(key)) != len(key)


def _parts_of_entries(entry_part: np.ndarray, entry_cluster: np.ndarray, part_cluster: np.ndarray) -> bool:
    """Each entry is in a part of its own cluster, or in none (-1: its item was removed before its part split)."""
    held = entry_part >= 0
    return (entry_part.size == 0 or (entry_part.min() >= -1 and entry_part.max() < len(part_cluster))) and bool(
        (part_cluster[entry_part[held]] == entry_cluster[held]).all())


def _pointers(ptr: np.ndarray, end: int) -> bool:
    """A CSR-style pointer array: starts at 0, never decreases, ends at end."""
    return len(ptr) >= 1 and ptr[0] == 0 and ptr[-1] == end and (np.diff(ptr) >= 0).all()


def _in_range(idx: np.ndarray, n: int) -> bool:
    """0 <= idx < n for an integer array, in one pass: negative values wrap to huge unsigned ones."""
    if idx.dtype.kind not in "iu":
        return False
    return idx.size == 0 or int(idx.view(f"u{idx.dtype.itemsize}").max()) < n


def _finite(values: np.ndarray) -> bool:
    """No NaN or inf, in one pass: any of them makes the float64 sum non-finite, and finite float32 values
    cannot overflow it."""
    return values.size == 0 or math.isfinite(values.sum(dtype=np.float64))
