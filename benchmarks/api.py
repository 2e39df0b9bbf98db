"""The library calls the benchmark sections make beyond the public API (slots, catalogue internals, cold-start
steps), in one place: the sections call these, never the model's internals, so a library change is one line here.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as smat

# the library's other names the sections use: each import is the one line to change when its module moves
from xrmeta.catalog import memory
from xrmeta.coldstart import Selector  # noqa: F401
from xrmeta import LearnedConfig
from xrmeta.data import EvalSet, data_home, new_ids_problem, split_for  # noqa: F401
from xrmeta.cli.train import main as train_cli  # noqa: F401  (`python -m xrmeta.train`)
from xrmeta.evaluation import (bm25, evaluate_model, evaluate_set, evaluate_sets, id_columns,  # noqa: F401
                               slot_columns, slots_to_scores, title_tfidf)

DATA_DIR = data_home()

# `python -m xrmeta.train` flags / `XRMetaModel.train` keywords that keep the PECOS copy (`pecos_model()`),
# which the latency comparisons need: the copy is opt-in.
TRAIN_FLAGS: list[str] = ["--keep-pecos"]
TRAIN_KWARGS: dict = {"keep_pecos": True}


def search(model, X, k: int = 10, beam: int | None = None, subset: str = "all", threads: int = 1):
    """(slots (n, k) int, -1 padded; scores (n, k)) from TF-IDF rows: search alone, featurizing excluded. The
    slots are the catalogue's as it is: sections map them with `slot_columns` and never compact in between."""
    return model._search(X, k, beam, subset, threads)[:2]


def numba_search(model, X, k: int = 10, beam: int | None = None, threads: int = 1):
    """`search` (subset all, the model's settings) through the numba kernel that the C++ core replaced
    (`xrmeta.kernels.search.search_topk`, now the tests' oracle), given the same arguments: the C++ core's peer."""
    from xrmeta import threads as thread_rule
    from xrmeta.kernels.search import search_topk

    p = model._state
    beam = model._beam_size(beam, p.configs)
    args, _ = p.catalog._kernel_arguments(smat.csr_matrix(X, dtype=np.float32), p.upper, beam, k, "all", threads,
                                          beam * p.configs.coldstart.inserted_beam_factor,
                                          p.configs.coldstart.split_probe)
    return thread_rule.run(search_topk, threads, *args)


def pecos_search(model, X, k: int = 10, beam: int | None = None):
    """PECOS's top-k on the same model, as slots of the catalogue (same shape as `search`)."""
    return model._pecos_search(X, k, beam, 1)


def pecos(model):
    """The PECOS XLinearModel the tree was trained as (predict-only)."""
    return model.pecos_model()


def add(model, titles: list[str], ids: list[str], threads: int = 1) -> None:
    """Insert items."""
    model.add_items(titles, ids, threads=threads)


def check_new_ids(model, ids: list[str]) -> None:
    if problem := new_ids_problem(ids, model):
        raise ValueError(problem)


def beams(model, X, beam: int, last_beam: int | None = None):
    """Queries x leaf clusters of the beam search alone (upper layers)."""
    return model.upper.beams(X, beam, threads=1, last_beam=last_beam)


def leaf_topk(model, X, beams_csr, k: int, subset: str = "all"):
    """Leaf scoring alone given precomputed beams: the tests' reference driver over the production kernel
    (`Catalog.search` is the library's one search path)."""
    from tests.reference import leaf_topk as reference

    return reference(model.catalog, X, beams_csr, k, subset)


def catalog_sizes(model) -> dict:
    """Observed (trained) items, all slots (tombstones included), leaf clusters."""
    c = model.catalog
    return dict(base=c.n_base, slots=c.n_slots, clusters=c.n_clusters)


def same_tree(a, b) -> bool:
    """Two trainings built the same leaf clusters, every item in the same cluster."""
    return a.catalog.n_clusters == b.catalog.n_clusters and np.array_equal(a.catalog.slot_cluster.view,
                                                                           b.catalog.slot_cluster.view)


def nnz(model, lo: int, hi: int) -> int:
    """Classifier non-zeros of slots lo..hi (a query's cost per scored item is its item's non-zeros)."""
    ptr = model.catalog.w_ptr.view
    return int(ptr[hi] - ptr[lo])


def nnz_per_item(model, lo: int, hi: int) -> float:
    return float(nnz(model, lo, hi) / max(hi - lo, 1))


def catalog_bytes(model) -> dict[str, int]:
    """Bytes the catalogue holds (`catalog.memory`): its arrays' live part, their allocated capacity, its ids."""
    return memory(model.catalog)


def holds(model, item_id: str) -> bool:
    return item_id in model


def slots_of(model, ids) -> np.ndarray:
    return np.array([model.catalog.slot_of[i] for i in ids], dtype=np.int64)


def item_clusters(model, slots):
    """(n, m) leaf clusters of the given slots, -1 padded."""
    return model.catalog.item_clusters(slots)


def inserted_ids(model) -> list[str]:
    """The live items served from inserted slots, in slot order (an id repeats in `ids` once a click replaced it)."""
    c = model.catalog
    return [i for s, i in enumerate(c.ids) if s >= c.n_base and c.slot_of.get(i) == s]


# ---------------------------------------------------------------- cold start (`model.coldstart`)
def neighbour_index(model):
    """The observed items' title TF-IDF rows that new items' neighbours are searched in."""
    return model.selector.Z


def add_items_steps(model, titles: list[str], ids: list[str], lap) -> None:
    """`model.add_items` step by step (same calls, same order), `lap(step name)` after each step."""
    assert all(isinstance(x, str) and x.strip() for x in titles)
    check_new_ids(model, ids)
    lap("checks")
    S = model.featurizer.transform(titles, threads=1)
    assert (np.diff(S.indptr) > 0).all()
    lap("featurize")
    nbrs, sims = model.coldstart.selector.search(S, model.configs.coldstart.k, 1)
    lap("select")
    clusters = model.coldstart.assign(S, nbrs, sims, 1)
    lap("assign")
    weights, biases = model.coldstart.generate(S, nbrs, sims, 1)
    lap("generate")
    model.catalog.add(ids, clusters, weights, biases)
    lap("catalog add")


def same_catalogue(a, b) -> bool:
    x, y = a.catalog.arrays(), b.catalog.arrays()
    return a.catalog.ids == b.catalog.ids and all(np.array_equal(x[key], y[key]) for key in x)


def set_spread(model, clusters_per_item: int, inserted_beam_factor: int) -> None:
    """New items go into m clusters; queries look for them in beam x f clusters (set on a loaded model)."""
    cs = model.configs.coldstart
    cs.clusters_per_item, cs.inserted_beam_factor = clusters_per_item, inserted_beam_factor


def set_neighbours(model, k: int) -> None:
    """K nearest observed items per new item (the selector rebuilt for it)."""
    from xrmeta.coldstart import make_selector

    cs = model.configs.coldstart
    cs.k = k
    cs.n_candidates = max(cs.n_candidates, 2 * k + 16)  # the learned training asks for k + 16
    model.coldstart.selector = make_selector(model.selector.Z, cs)


def set_generator(model, name: str, X=None, Y=None, config=None) -> None:
    """A hand-made generator by name, or "learned" trained on (X, Y) with a LearnedConfig (threads=2, seeded)."""
    if name == "learned":
        model.fit_generator(X, Y, config or LearnedConfig(), threads=2, verbose=False)
    else:
        model.use_generator(name)

