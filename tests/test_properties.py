"""Property-based tests (hypothesis): random sequences of inserts, removals, queries, saves and crashes, checked
against simple reference models. Derandomized (a fixed seed per test) and without an example database, so every
run tries the same sequences."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as smat
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from xrmeta.catalog import SUBSETS, Catalog, CatalogError
from xrmeta.model import ModelError, XRMetaModel

from .conftest import assert_topk_match, assert_unchanged, dense_topk, snapshot
from .reference import leaf_topk

SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=False)
N_FEATURES, N_CLUSTERS = 6, 3
WEIGHTS = st.sampled_from([0.0, 0.0, 0.0, 0.25, -0.5, 1.0, 2.0])  # sparse rows, with ties among scores


def base_catalog() -> Catalog:
    rng = np.random.default_rng(0)
    W = (rng.normal(size=(N_FEATURES + 1, 6)) * (rng.random((N_FEATURES + 1, 6)) < 0.6)).astype(np.float32)
    C = np.zeros((6, N_CLUSTERS))
    C[np.arange(6), [0, 1, 2, 0, 1, 2]] = 1
    return Catalog.from_leaf_layer(smat.csc_matrix(W), smat.csc_matrix(C), 1.0, [f"t{j}" for j in range(6)],
                                   "l3-hinge")


class CatalogMachine(RuleBasedStateMachine):
    """Catalog.add / remove / topk / save+load against a dictionary of dense weight vectors scored with numpy."""

    def __init__(self):
        super().__init__()
        self.catalog = base_catalog()
        c = self.catalog
        W = c.weights(np.arange(c.n_slots)).toarray()
        self.ref = {c.ids[s]: (s, [int(c.slot_cluster.view[s])], W[s], float(c.slot_bias.view[s]))
                    for s in range(c.n_slots)}  # id -> (slot, clusters, weights, bias)
        self.alive = set(self.ref)
        self.made = 0

    @rule(data=st.data(), n=st.integers(1, 4))
    def add(self, data, n):
        W = data.draw(arrays(np.float32, (n, N_FEATURES), elements=WEIGHTS))
        # each item into 1 or 2 distinct clusters (a batch is padded to its widest item with -1)
        clusters = [data.draw(st.lists(st.integers(0, N_CLUSTERS - 1), min_size=1, max_size=2, unique=True))
                    for _ in range(n)]
        width = max(len(c) for c in clusters)
        padded = np.array([c + [-1] * (width - len(c)) for c in clusters])
        biases = data.draw(arrays(np.float32, n, elements=st.sampled_from([-1.0, 0.0, 0.5])))
        ids = [f"n{self.made + i}" for i in range(n)]
        self.made += n
        first = self.catalog.n_slots
        slots = self.catalog.add(ids, padded if width > 1 else padded[:, 0], smat.csr_matrix(W), biases)
        assert sorted(slots.tolist()) == list(range(first, first + n))  # new slots, never reused ones
        for i, item in enumerate(ids):
            self.ref[item] = (int(slots[i]), clusters[i], W[i].astype(np.float64), float(biases[i]))
            got = self.catalog.item_clusters([slots[i]])[0]
            assert got[0] == clusters[i][0] and sorted(got[got >= 0]) == sorted(clusters[i])
        self.alive |= set(ids)

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def remove(self, data):
        victims = data.draw(st.lists(st.sampled_from(sorted(self.alive)), min_size=1, max_size=3, unique=True))
        self.catalog.remove(victims)
        self.alive -= set(victims)

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def replace(self, data):
        """New classifiers for live items (trained or inserted): new slots in the same clusters, old ones gone."""
        items = data.draw(st.lists(st.sampled_from(sorted(self.alive)), min_size=1, max_size=3, unique=True))
        W = data.draw(arrays(np.float32, (len(items), N_FEATURES), elements=WEIGHTS))
        biases = data.draw(arrays(np.float32, len(items), elements=st.sampled_from([-1.0, 0.0, 0.5])))
        first = self.catalog.n_slots
        slots = self.catalog.replace(items, smat.csr_matrix(W), biases)
        assert sorted(slots.tolist()) == list(range(first, first + len(items)))
        for i, item in enumerate(items):
            _, clusters, _, _ = self.ref[item]
            self.ref[item] = (int(slots[i]), clusters, W[i].astype(np.float64), float(biases[i]))

    @rule(data=st.data(), remove=st.booleans())
    def bad_request(self, data, remove):
        """A request with one bad id next to a good one changes nothing (the invariant checks)."""
        taken = sorted(self.alive)[:1]
        bad = data.draw(st.sampled_from(["", "a\tb", "fresh"] + taken))
        with pytest.raises(CatalogError):
            if remove:
                self.catalog.remove(taken + [bad, bad])  # unknown, or repeated
            else:  # invalid, repeated or taken
                self.catalog.add(["fresh", bad], [0, 0], smat.csr_matrix((2, N_FEATURES), dtype=np.float32),
                                 np.zeros(2))

    @rule(data=st.data(), k=st.integers(1, 8), subset=st.sampled_from(sorted(SUBSETS)))
    def query(self, data, k, subset):
        n = 2
        X = data.draw(arrays(np.float32, (n, N_FEATURES), elements=st.sampled_from([0.0, 0.0, 0.25, 1.0, 0.75])))
        in_beam = data.draw(arrays(np.bool_, (n, N_CLUSTERS)))  # each row's beam clusters (maybe none)
        path = data.draw(arrays(np.float32, (n, N_CLUSTERS), elements=st.sampled_from([0.25, 0.5, 1.0])))
        B = np.where(in_beam, path, np.float32(0))
        slots, scores = leaf_topk(self.catalog, smat.csr_matrix(X), smat.csr_matrix(B), k, subset)
        R = np.full((n, self.catalog.n_slots), -np.inf)
        n_base = self.catalog.n_base
        for item in self.alive:
            s, cs, w, b = self.ref[item]
            if subset == "all" or (subset == "observed") == (s < n_base):
                raw = X.astype(np.float64) @ w + b
                path = B[:, cs].max(axis=1)  # an item in several clusters counts once, at its best path
                score = np.exp(-np.maximum(1.0 - raw, 0.0) ** 3) * path
                R[:, s] = np.where(path > 0, score, -np.inf)
        assert_topk_match(slots, scores, *dense_topk(R, k), dense=R, rtol=1e-5, atol=1e-6)

    @rule()
    def save_and_load(self):
        with tempfile.TemporaryDirectory() as tmp:
            self.catalog.save(tmp)
            loaded = Catalog.load(tmp, N_FEATURES, "l3-hinge")
        assert_unchanged(loaded, snapshot(self.catalog))
        self.catalog = loaded

    @invariant()
    def ids_are_the_reference(self):
        c = self.catalog
        assert set(c.slot_of) == self.alive and len(c) == len(self.alive)
        assert all(c.ids[self.ref[i][0]] == i and c.slot_of[i] == self.ref[i][0] for i in self.alive)
        assert c.slot_alive.view.sum() == len(self.alive)


def test_catalog_matches_a_dense_reference():
    run_state_machine_as_test(CatalogMachine, settings=settings(max_examples=60, stateful_step_count=25,
                                                                **SETTINGS))


def test_model_with_log_matches_a_reference(saved_dir, trained, novel):
    """XRMetaModel with a log: add_items / remove_items / predict / save / crash-and-reload against a reference
    that is a set of live ids plus, per inserted item, the classifier the untouched trained model synthesizes for
    its title alone (an item's classifier depends on its title only, not on the batch or the history)."""
    words = sorted({w for t in novel[0] for w in t.split()})
    synthesized = {}
    untouched = XRMetaModel.load(saved_dir)  # not `trained`: saving rounds the idf values (PECOS, 6 decimals)

    def expected(title):
        if title not in synthesized:
            W, b, c = untouched.coldstart.synthesize(untouched.featurizer.transform([title]), threads=1)
            synthesized[title] = (smat.csr_matrix(W).toarray()[0], float(b[0]), sorted(int(x) for x in c[0] if x >= 0))
        return synthesized[title]

    titles = st.lists(st.sampled_from(words), min_size=2, max_size=6).map(" ".join)

    class ModelMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.tmp = Path(tempfile.mkdtemp())
            self.folder = self.tmp / "model"
            shutil.copytree(saved_dir, self.folder)
            self.model = XRMetaModel.load(self.folder, log=True)
            self.trained = set(self.model.catalog.slot_of)
            self.inserted = {}  # live inserted id -> title
            self.made = 0

        def teardown(self):
            self.model.log.close()
            shutil.rmtree(self.tmp)

        @rule(batch=st.lists(titles, min_size=1, max_size=5))
        def add(self, batch):
            ids = [f"p{self.made + i}" for i in range(len(batch))]
            self.made += len(batch)
            self.model.add_items(batch, ids)
            self.inserted.update(zip(ids, batch))

        @rule(title=titles, bad=st.sampled_from(["", "x" * 5000, "caf\udce9"]))
        def add_bad(self, title, bad):
            with pytest.raises(ModelError):
                self.model.add_items([title, bad], [f"p{self.made}", f"p{self.made + 1}"])

        @precondition(lambda self: self.inserted)
        @rule(data=st.data(), n_trained=st.integers(0, 2))
        def remove(self, data, n_trained):
            ids = data.draw(st.lists(st.sampled_from(sorted(self.inserted)), min_size=1, max_size=3, unique=True))
            ids += data.draw(st.lists(st.sampled_from(sorted(self.trained)), max_size=n_trained, unique=True))
            self.model.remove_items(ids)
            for i in ids:
                self.inserted.pop(i, None)
                self.trained.discard(i)

        @precondition(lambda self: self.inserted)
        @rule(data=st.data())
        def query(self, data):
            item = data.draw(st.sampled_from(sorted(self.inserted)))
            ids, _ = self.model.predict([self.inserted[item]], k=20, subset="inserted")
            assert set(ids[0]) - {""} <= set(self.inserted)

        @rule()
        def save(self):
            self.model.save(self.folder)
            assert (self.folder / "items.log").stat().st_size == 0

        @rule()
        def crash_and_reload(self):
            """Drop the process's state without saving: what the log acknowledged is all there, bit for bit."""
            state = snapshot(self.model.catalog)
            self.model.log.close()
            self.model = XRMetaModel.load(self.folder, log=True)
            assert_unchanged(self.model.catalog, state)

        @invariant()
        def matches_reference(self):
            c = self.model.catalog
            assert set(c.slot_of) == self.trained | set(self.inserted)
            for item, title in self.inserted.items():
                s = c.slot_of[item]
                w, b, clusters = expected(title)
                np.testing.assert_array_equal(c.weights([s]).toarray()[0], w)
                got = c.item_clusters([s])[0]
                assert (c.slot_bias.view[s], sorted(got[got >= 0].tolist())) == (np.float32(b), clusters)

    run_state_machine_as_test(ModelMachine, settings=settings(max_examples=10, stateful_step_count=12, **SETTINGS))
