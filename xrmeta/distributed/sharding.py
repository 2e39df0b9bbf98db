"""Cut a model into shards: which leaf clusters each shard owns (`plan_shards`) and the directories (`cut`).

Shards own whole subtrees of the tree: the nodes of the shallowest layer above the leaves with SUBTREES_PER_SHARD
nodes per shard (else of the deepest with one per shard, else the leaf clusters themselves) are dealt, in the
tree's order, into n_shards runs of about equal classifier weights (non-zeros, the memory that sharding divides).
A query's beam stays inside few subtrees, so it reaches few shards.

Sharded directory (`cut` writes it; `ShardedModel.open` serves it):
  sharding.json     format, shard count, the source model's snapshot, the router and shard folders
  plan.npz          cluster_shard: the shard of each leaf cluster
  router/           a model directory of the trained items without their classifiers (`router_model`):
                    featurizer, tree, cold start (select, assign, generate); the router runs the beam search
                    and synthesizes new items' classifiers with it, reading their neighbours' from the shards
  shard-000/ ...    one directory per shard (`shard.Shard`)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as smat

from .. import persist
from ..catalog import Catalog
from ..errors import ModelError
from ..layout import feature_major, leaf_arrays_problem
from ..model import XRMetaModel
from .shard import Shard, ShardConfig

FORMAT = "xrmeta-sharded-1"
SHARDING = "sharding.json"
PLAN = "plan.npz"
ROUTER = "router"
SUBTREES_PER_SHARD = 8  # shards are dealt whole subtrees, at least this many each where the tree has them


def shard_dir(index: int) -> str:
    return f"shard-{index:03d}"


def plan_shards(upper, cluster_weight: np.ndarray, n_shards: int) -> np.ndarray:
    """(n_clusters,) int64: the shard of each leaf cluster. upper: the tree's `UpperLayers`; cluster_weight: what
    each cluster costs (classifier non-zeros); subtrees (see the module's doc) go, in the tree's order, to
    n_shards runs of about equal weight."""
    n_clusters = upper.n_clusters
    if not isinstance(n_shards, (int, np.integer)) or not 1 <= n_shards <= n_clusters:
        raise ModelError(f"n_shards must be an integer in [1, {n_clusters}] (the tree's leaf clusters), "
                         f"got {n_shards!r}")
    if n_shards == 1:
        return np.zeros(n_clusters, dtype=np.int64)
    lay = upper.layout
    layer_ptr, group_ptr = lay.layer_slot_ptr, lay.group_slot_ptr
    n_layers = len(layer_ptr) - 1
    # each leaf cluster's slot, then its ancestors' slots up to the chosen layer (group g >= 1: parent slot g - 1)
    slot = lay.node_slot[layer_ptr[n_layers - 1] + np.arange(n_clusters)]
    # the shallowest layer above the leaves with SUBTREES_PER_SHARD subtrees per shard (to balance), else the
    # deepest one with a subtree per shard, else single leaf clusters
    sizes = np.diff(layer_ptr)
    enough = [d for d in range(n_layers - 1) if sizes[d] >= n_shards]
    depth = next((d for d in enough if sizes[d] >= SUBTREES_PER_SHARD * n_shards),
                 enough[-1] if enough else n_layers - 1)
    for _ in range(n_layers - 1 - depth):
        slot = np.searchsorted(group_ptr, slot, side="right") - 2
    subtree = slot - layer_ptr[depth]  # the subtree's place in its layer: slots follow the tree's order
    weight = np.bincount(subtree, cluster_weight, minlength=layer_ptr[depth + 1] - layer_ptr[depth])
    ends = np.cumsum(weight)
    run = np.minimum((n_shards * (ends - weight / 2) / max(ends[-1], 1e-12)).astype(np.int64), n_shards - 1)
    if len(np.unique(run)) < n_shards:  # a heavy subtree left a run empty: as many subtrees per shard instead
        run = np.arange(len(weight)) * n_shards // len(weight)
    return run[subtree].astype(np.int64)


def slice_catalog(catalog: Catalog, owns: np.ndarray) -> tuple[dict, list[str], np.ndarray]:
    """The catalogue of the clusters `owns` (bool (n_clusters,)) marks: (arrays, ids, the kept slots, which are the
    items' keys). Trained items of those clusters keep their order (dead ones too); live inserted items with an
    entry there keep their order, those entries, their parts and routers; each one's first cluster is its
    catalogue's first if owned, else its first owned one."""
    a = catalog.arrays()
    n_base, n_clusters = catalog.n_base, catalog.n_clusters
    alive, slot_cluster = a["slot_alive"], a["slot_cluster"].astype(np.int64)
    e_slot, e_cluster = a["entry_slot"].astype(np.int64), a["entry_cluster"].astype(np.int64)
    e_keep = owns[e_cluster] & alive[e_slot]
    keep = np.zeros(len(alive), dtype=bool)
    keep[:n_base] = owns[slot_cluster[:n_base]]
    keep[e_slot[e_keep]] = True
    slots = np.flatnonzero(keep)
    new_slot = np.full(len(alive), -1, dtype=np.int64)
    new_slot[slots] = np.arange(len(slots))
    W = smat.csr_matrix((a["w_val"], a["w_idx"], a["w_ptr"]), shape=(len(alive), catalog.n_features))[slots]
    W.sort_indices()
    first = slot_cluster[slots].copy()
    elsewhere = np.flatnonzero(~owns[first])  # inserted items whose best cluster another shard holds
    if len(elsewhere):
        kept_slot, kept_cluster = new_slot[e_slot[e_keep]], e_cluster[e_keep]
        order = np.lexsort((kept_cluster, kept_slot))
        at = np.searchsorted(kept_slot[order], elsewhere)  # the smallest owned cluster of each
        first[elsewhere] = kept_cluster[order][at]
    trained = slots < n_base
    base_slot_ptr = np.searchsorted(first[trained], np.arange(n_clusters + 1)).astype(np.int64)
    chunks = feature_major(W[trained].T.tocsc(), first[trained], base_slot_ptr)
    # parts: every cluster's first part (part c is cluster c's), then the owned clusters' split parts in order
    part_cluster = a["part_cluster"].astype(np.int64)
    part_keep = np.arange(len(part_cluster)) < n_clusters
    part_keep |= owns[part_cluster]
    new_part = np.cumsum(part_keep) - 1
    r_ptr = a["router_ptr"]
    r_len = np.diff(r_ptr)[part_keep]
    r_take = np.concatenate([np.arange(r_ptr[p], r_ptr[p + 1]) for p in np.flatnonzero(part_keep)] + [[]])
    r_take = r_take.astype(np.int64)
    arrays = {
        **{"chunk_" + f: v for f, v in chunks._asdict().items()},
        "base_slot_ptr": base_slot_ptr,
        "w_ptr": W.indptr.astype(np.int64), "w_idx": W.indices.astype(np.int32), "w_val": W.data.astype(np.float32),
        "slot_bias": a["slot_bias"][slots], "slot_alive": alive[slots].copy(),
        "slot_cluster": first.astype(np.int32),
        "entry_slot": new_slot[e_slot[e_keep]].astype(np.int32), "entry_cluster": a["entry_cluster"][e_keep],
        "entry_part": new_part[a["entry_part"][e_keep]].astype(np.int32),
        "part_cluster": part_cluster[part_keep].astype(np.int32),
        "router_ptr": np.concatenate([[0], np.cumsum(r_len)]).astype(np.int64),
        "router_idx": a["router_idx"][r_take], "router_val": a["router_val"][r_take],
    }
    problem = leaf_arrays_problem(arrays, catalog.n_features)
    if problem:  # a bug here, not bad input: the source catalogue passed the same checks
        raise AssertionError(f"sliced catalogue: {problem}")
    return arrays, [catalog.ids[s] for s in slots.tolist()], slots


def router_model(model: XRMetaModel) -> XRMetaModel:
    """The router's model: the trained items only (inserted ones removed, then compacted), their classifiers left
    out (the shards hold them; the cold start reads a new item's neighbours' from there): the featurizer, the
    tree, and each trained item's title row, cluster and bias for select and assign."""
    copy = model.copy()
    copy.remove_items([i for i in copy.catalog.ids[copy.catalog.n_base:] if i in copy])
    copy.compact()
    c, p = copy.catalog, copy._state
    a = c.arrays()
    n = c.n_slots
    a.update(w_ptr=np.zeros(n + 1, dtype=np.int64), w_idx=np.zeros(0, dtype=np.int32),
             w_val=np.zeros(0, dtype=np.float32),
             **{"chunk_" + f: v for f, v in feature_major(smat.csc_matrix((c.n_features, n), dtype=np.float32),
                                                          a["slot_cluster"], a["base_slot_ptr"])._asdict().items()})
    weightless = Catalog(a, c.ids, c.n_features, c.post_processor, c.path_exponent)
    return XRMetaModel(p.workdir, p.featurizer, p.upper, weightless, copy.selector, p.label_slot, p.configs,
                       copy.calibration, dict(p.info), title_trust=p.title_trust, generator=copy.generator)


def cut(model: XRMetaModel | str | Path, n_shards: int, out: str | Path, verbose: bool = False) -> Path:
    """Write the sharded directory of `model` (an `XRMetaModel`, or its directory) into out (absent or empty):
    the router's model directory and n_shards shard directories, each holding its leaf clusters' trained and
    inserted items as they are now. Returns out."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelError(f"{out}: exists and is not an empty directory (a sharded directory is written whole)")
    if not isinstance(model, XRMetaModel):
        model = XRMetaModel.load(model)
    cat = model.catalog
    nnz = np.diff(cat.w_ptr.view[: cat.n_base + 1])
    cluster_shard = plan_shards(model.upper, np.bincount(cat.slot_cluster.view[: cat.n_base], nnz,
                                                         minlength=cat.n_clusters), n_shards)
    out.mkdir(parents=True, exist_ok=True)
    cs = model.configs.coldstart
    for index in range(n_shards):
        owns = cluster_shard == index
        arrays, ids, keys = slice_catalog(cat, owns)
        config = ShardConfig(index, n_shards, cat.n_features, cat.post_processor, cat.path_exponent, cs.split_size,
                             cs.compact_at, cs.feedback_step, model.coldstart.threshold, cs.max_nnz)
        live = [(i, int(k)) for i, k, alive in zip(ids, keys.tolist(), arrays["slot_alive"].tolist()) if alive]
        shard_cat = Catalog(arrays, ids, cat.n_features, cat.post_processor, cat.path_exponent)
        first = cat.slot_cluster.view[keys]  # the source catalogue's first cluster of each kept slot
        guests = {ids[j] for j in np.flatnonzero(~owns[first] & arrays["slot_alive"]).tolist()}
        base_keys = keys[keys < cat.n_base]
        Shard(shard_cat, np.flatnonzero(owns), dict(live), guests, base_keys, config).save(out / shard_dir(index))
        if verbose:
            print(f"  {shard_dir(index)}: {int(owns.sum())} clusters, {len(live)} items", flush=True)
    router_model(model).save(out / ROUTER)
    np.savez(out / PLAN, cluster_shard=cluster_shard)
    info = {"format": FORMAT, "n_shards": int(n_shards), "source": str(model._state.source or ""),
            "source_snapshot": model._state.snapshot, "router": ROUTER,
            "shards": [shard_dir(i) for i in range(n_shards)], "n_clusters": int(cat.n_clusters),
            "next_key": int(cat.n_slots)}
    persist.write_file(out / SHARDING, json.dumps(info, indent=1).encode("utf-8"))
    return out
