"""Shared fixtures and helpers: small models trained once per session on the seeded synthetic catalogue.

Session models are never mutated: a test that inserts or removes items works on `clone(model)`, which shares
the read-only parts (featurizer, PECOS upper layers, selector) and copies the mutable catalogue.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as smat

from xrmeta import train as train_cli
from xrmeta.catalog import Catalog
from xrmeta.data import make_synthetic, make_zero_shot_split
from xrmeta.model import ColdStartConfig, XRMetaModel
from xrmeta.tree import TreeConfig

MAX_LEAF = 50  # 1800 observed items -> 64 leaf clusters under a 3-layer tree: beams 1..10 really select


# ---------------------------------------------------------------- data and models
@pytest.fixture(scope="session")
def data():
    return make_synthetic(n_items=2000, n_queries=6000, seed=0)


@pytest.fixture(scope="session")
def split(data):
    return make_zero_shot_split(data, seed=0)


@pytest.fixture(scope="session")
def novel(data, split):
    """(titles, ids) of the split's held-out items, never seen in training."""
    return [data.item_texts[j] for j in split.novel], [data.item_ids[j] for j in split.novel]


@pytest.fixture(scope="session")
def test_queries(data, split):
    return [data.query_texts[i] for i in split.generalized_set.queries]


@pytest.fixture(scope="session")
def trained(data, split):
    """A model of the observed items only (default cold-start config: learned generator, vote assigner)."""
    return XRMetaModel.train(
        [data.query_texts[i] for i in split.train_queries], split.Y_train,
        [data.item_texts[j] for j in split.observed], [data.item_ids[j] for j in split.observed],
        tree_config=TreeConfig(max_leaf_size=MAX_LEAF), verbose=False,
    )


@pytest.fixture(scope="session")
def pecos_trained(data, split):
    """`trained` with the leaf layer served exactly as PECOS trained it (no title mixing): the pure-PECOS path."""
    return XRMetaModel.train(
        [data.query_texts[i] for i in split.train_queries], split.Y_train,
        [data.item_texts[j] for j in split.observed], [data.item_ids[j] for j in split.observed],
        tree_config=TreeConfig(max_leaf_size=MAX_LEAF, observed_titles=False),
        coldstart_config=ColdStartConfig(generator="mean_self"), verbose=False, keep_pecos=True,
    )


@pytest.fixture(scope="session")
def with_novel(trained, novel):
    """`trained` plus the novel items inserted by cold start."""
    model = clone(trained)
    model.add_items(*novel)
    return model


@pytest.fixture(scope="session")
def saved_dir(trained, tmp_path_factory):
    """`trained` saved to a model directory (copy it before mutating)."""
    folder = tmp_path_factory.mktemp("model")
    trained.save(folder)
    return folder


@pytest.fixture(scope="session")
def cli_model(tmp_path_factory):
    """(model dir, novel items file) written by `python -m xrmeta.train` on the synthetic dataset."""
    root = tmp_path_factory.mktemp("cli")
    rc = train_cli.main(["--dataset", "synthetic", "--model-dir", str(root / "model"), "--max-leaf-size",
                         str(MAX_LEAF), "--export-novel", str(root / "novel.tsv"), "--keep-pecos", "--quiet"])
    assert rc == 0
    return root / "model", root / "novel.tsv"


def clone(model: XRMetaModel, **coldstart) -> XRMetaModel:
    """An independent copy of the catalogue (and configs) of `model`; `coldstart` overrides its config."""
    return model.copy(**coldstart)


# ---------------------------------------------------------------- state snapshots
def snapshot(catalog: Catalog):
    """Copies of a catalogue's arrays, ids and id -> slot map."""
    return ({k: np.array(v, copy=True) for k, v in catalog.arrays().items()}, list(catalog.ids),
            dict(catalog.slot_of))


def assert_unchanged(catalog: Catalog, snap) -> None:
    arrays, ids, slot_of = snap
    now = catalog.arrays()
    assert now.keys() == arrays.keys()
    for key in arrays:
        np.testing.assert_array_equal(now[key], arrays[key], err_msg=key)
    assert catalog.ids == ids
    assert catalog.slot_of == slot_of


def dir_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under folder."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- search scores, recomputed
TRANSFORMS = {
    "l3-hinge": lambda v: np.exp(-np.maximum(1.0 - v, 0.0) ** 3),
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
}


def best_path(catalog: Catalog, beams) -> np.ndarray:
    """(queries x slots): the best path score among each item's clusters in the query's beam, 0 when none is
    (an inserted item may be in several clusters)."""
    B = np.hstack([smat.csr_matrix(beams).toarray(), np.zeros((beams.shape[0], 1))])  # column -1: no cluster
    return B[:, catalog.item_clusters(np.arange(catalog.n_slots))].max(axis=2).astype(np.float64)


def search_scores(catalog: Catalog, X, beams) -> np.ndarray:
    """Dense (queries x slots) scores as the search ranks them, from item-major weights with scipy:
    transform(w . x + bias) * best_path ** path_exponent."""
    W = catalog.weights(np.arange(catalog.n_slots))
    raw = (X @ W.T).toarray().astype(np.float64) + catalog.slot_bias.view
    return TRANSFORMS[catalog.post_processor](raw) * best_path(catalog, beams) ** catalog.path_exponent


# ---------------------------------------------------------------- top-k comparison
def dense_topk(R: np.ndarray, k: int):
    """Reference top-k (columns, scores) per row of a dense score matrix; -inf marks non-candidates.
    Missing entries are column -1, score 0 (the kernels' padding)."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape[1] < k:
        R = np.hstack([R, np.full((R.shape[0], k - R.shape[1]), -np.inf)])
    cols = np.argsort(-R, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(R, cols, axis=1)
    found = np.isfinite(scores)
    return np.where(found, cols, -1), np.where(found, scores, 0.0)


def assert_topk_match(slots, scores, ref_slots, ref_scores, dense=None, rtol=1e-5, atol=1e-7):
    """Same top-k up to ties: equal score lists (rtol, atol), the same items above the k-th score, only items
    tied with the k-th score (within the same tolerance: float32 vs float64 rounding) may differ. With `dense` (the full reference scores), every returned item must also
    carry its reference score, so a tied substitute is a real candidate."""
    slots, ref_slots = np.asarray(slots), np.asarray(ref_slots)
    assert slots.shape == ref_slots.shape
    np.testing.assert_array_equal(slots < 0, ref_slots < 0, err_msg="different numbers of results")
    np.testing.assert_allclose(scores, ref_scores, rtol=rtol, atol=atol)
    for i in range(len(slots)):
        got, want = slots[i][slots[i] >= 0], ref_slots[i][ref_slots[i] >= 0]
        if len(got) == 0:
            continue
        assert len(set(got.tolist())) == len(got), f"row {i}: an item is returned twice: {got}"
        kth = ref_scores[i][len(want) - 1]
        tol = rtol * abs(kth) + atol
        above = lambda s, v: set(s[np.asarray(v)[: len(s)] > kth + tol].tolist())  # noqa: E731
        assert above(got, scores[i]) == above(want, ref_scores[i]), f"row {i}: top-k differ beyond ties"
        if dense is not None:
            np.testing.assert_allclose(dense[i, got], scores[i][: len(got)], rtol=rtol, atol=atol,
                                       err_msg=f"row {i}")


def own_rank(slots: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """0-based rank of wanted[i] in slots[i], or a large number when absent."""
    hit = slots == np.asarray(wanted)[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), 10**9)


def csr(rows, n_cols) -> smat.csr_matrix:
    return smat.csr_matrix(np.asarray(rows, dtype=np.float32).reshape(-1, n_cols))
