"""UpperLayers: our beam search over the layers above the leaves, against a brute-force reference and PECOS."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as smat
from pecos.xmc.xlinear.model import XLinearModel

from xrmeta.model import ColdStartConfig
from xrmeta.tree import UpperLayers

from .conftest import assert_topk_match
from .reference import leaf_topk

N_FEATURES = 40


def random_chain(rng, sizes, post):
    """A PECOS-like model chain: layer d has sizes[d] nodes, each with a random parent in layer d-1 (every parent
    keeps a child), sparse weights and a bias weight in the last row of W."""
    chain, n_parents = [], 1
    for n in sizes:
        parent = np.concatenate([np.arange(n_parents), rng.integers(0, n_parents, n - n_parents)])
        rng.shuffle(parent)
        W = smat.random(N_FEATURES + 1, n, density=0.3, random_state=rng, dtype=np.float32,
                        data_rvs=lambda k: rng.normal(0, 1, k)).tocsc()
        C = smat.csc_matrix((np.ones(n, np.float32), (np.arange(n), parent)), shape=(n, n_parents))
        chain.append(SimpleNamespace(W=W, C=C, bias=0.7, pred_params=SimpleNamespace(post_processor=post)))
        n_parents = n
    return chain


def transform(v, post):
    return 1 / (1 + np.exp(-v)) if post == "sigmoid" else np.exp(-np.maximum(1 - v, 0) ** int(post[1]))


def reference_beams(chain, X, beam, post, last_beam=None):
    """Level by level in float64: each layer keeps the `beam` best children of the kept nodes (the last layer
    `last_beam`) by transform(w . [x, bias]) * parent score; ties go to the smaller node number."""
    last_beam = last_beam or beam
    Xb = smat.hstack([X, np.full((X.shape[0], 1), 1.0)]).tocsr()
    out_nodes, out_scores = [], []
    for i in range(X.shape[0]):
        nodes, scores = np.array([0]), np.array([1.0])
        for d, layer in enumerate(chain):
            raw = (Xb[i].toarray() @ (layer.W.toarray() * np.r_[np.ones(N_FEATURES), layer.bias][:, None])).ravel()
            parent = layer.C.tocsr().indices if d else np.zeros(layer.W.shape[1], dtype=int)
            cand = np.flatnonzero(np.isin(parent, nodes))
            pscore = dict(zip(nodes, scores))
            s = transform(raw[cand], post) * np.array([pscore[p] for p in parent[cand]])
            keep = np.lexsort((cand, -s))[: last_beam if d == len(chain) - 1 else beam]
            nodes, scores = cand[keep], s[keep]
        out_nodes.append(np.pad(nodes, (0, last_beam - len(nodes)), constant_values=-1))
        out_scores.append(np.pad(scores, (0, last_beam - len(scores))))
    return np.array(out_nodes), np.array(out_scores)


def as_topk(B: smat.csr_matrix, beam: int):
    """(clusters, scores) best first, padded with -1 / 0, from a queries x clusters beam matrix."""
    nodes, scores = np.full((B.shape[0], beam), -1), np.zeros((B.shape[0], beam))
    for i in range(B.shape[0]):
        row = B[i]
        o = np.lexsort((row.indices, -row.data))
        nodes[i, : len(o)], scores[i, : len(o)] = row.indices[o], row.data[o]
    return nodes, scores


@pytest.mark.parametrize("post", ["l3-hinge", "sigmoid"])
@pytest.mark.parametrize("sizes,beam", [([3, 12, 40], 1), ([3, 12, 40], 4), ([5, 30], 7), ([4, 9], 20), ([25], 5)])
def test_beams_match_brute_force(sizes, beam, post):
    rng = np.random.default_rng(len(sizes) * 100 + beam)
    chain = random_chain(rng, sizes, post)
    X = smat.random(30, N_FEATURES, density=0.15, random_state=rng, dtype=np.float32).tocsr()
    X = smat.vstack([X, smat.csr_matrix((1, N_FEATURES), dtype=np.float32)]).tocsr()  # no feature: bias only
    upper = UpperLayers.from_chain(chain, sizes[-1], post)
    got = as_topk(upper.beams(X, beam), beam)
    assert_topk_match(*got, *reference_beams(chain, X, beam, post), rtol=1e-5, atol=1e-6)
    assert (got[0][:, : min(beam, sizes[-1])] >= 0).all()  # a full beam whenever the tree has enough nodes
    wide = 3 * beam  # only the last layer keeps more; its first `beam` clusters are the narrow beam's
    got_wide = as_topk(upper.beams(X, beam, last_beam=wide), wide)
    assert_topk_match(*got_wide, *reference_beams(chain, X, beam, post, wide), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got_wide[0][:, :beam], got[0])


@pytest.mark.parametrize("beam", [1, 3, 10])
def test_beams_match_pecos_upper_layers(trained, test_queries, beam):
    """The same clusters as PECOS's predict-only model of the upper layers, scores equal up to float rounding."""
    X = trained.featurizer.transform(test_queries)
    pecos = XLinearModel.load(str(trained.workdir / "upper"), is_predict_only=True)
    want = as_topk(pecos.predict(X, beam_size=beam, only_topk=beam, threads=1).tocsr(), beam)
    got = as_topk(trained.upper.beams(X, beam), beam)
    assert_topk_match(*got, *want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[0], want[0])  # both break exact ties by the smaller node number


@pytest.mark.parametrize("subset", ["all", "observed", "inserted"])
def test_search_equals_leaf_scoring_of_upper_beams(with_novel, test_queries, subset):
    """The fused kernel (beam search + leaf) returns exactly what the two stages return one after the other."""
    X = with_novel.featurizer.transform(test_queries)
    for beam in (1, 6):
        want = leaf_topk(with_novel.catalog, X, with_novel.upper.beams(X, beam), 15, subset)
        got = with_novel.catalog.search(X, with_novel.upper, beam, 15, subset)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_wider_inserted_beam_scores_inserted_items_in_more_clusters(with_novel, test_queries):
    """inserted_beam: inserted items are scored in the wider list of clusters, observed items in the narrow beam;
    the merged top-k is the better of the two, ties to the smaller slot."""
    X = with_novel.featurizer.transform(test_queries)
    cat, upper, k = with_novel.catalog, with_novel.upper, 15
    for beam, wide in ((1, 3), (4, 12)):
        inserted = leaf_topk(cat, X, upper.beams(X, beam, last_beam=wide), k, "inserted")
        observed = cat.search(X, upper, beam, k, "observed")
        np.testing.assert_array_equal(cat.search(X, upper, beam, k, "inserted", inserted_beam=wide)[0], inserted[0])
        np.testing.assert_array_equal(cat.search(X, upper, beam, k, "observed", inserted_beam=wide)[0], observed[0])
        got = cat.search(X, upper, beam, k, "all", inserted_beam=wide)
        for i in range(X.shape[0]):
            slots = np.r_[observed[0][i], inserted[0][i]]
            scores = np.r_[observed[1][i], inserted[1][i]]
            o = np.lexsort((slots, -scores))
            o = o[slots[o] >= 0][:k]
            np.testing.assert_array_equal(got[0][i][: len(o)], slots[o])
            np.testing.assert_array_equal(got[1][i][: len(o)], scores[o])
        narrow = cat.search(X, upper, beam, k, "inserted")
        # more clusters, more candidates: every rank scores at least as high, and some queries find better items
        assert (inserted[1] >= narrow[1]).all() and (inserted[1] > narrow[1]).any()


def test_search_threads_agree(with_novel, test_queries):
    """The serial build (threads=1) and the parallel one return the same, bit for bit."""
    X = with_novel.featurizer.transform(test_queries)
    upper = with_novel.upper
    one = with_novel.catalog.search(X, upper, 5, 10, threads=1) + upper.top_clusters(X, 5, threads=1, last_beam=9)
    for threads in (2, -1):
        many = with_novel.catalog.search(X, upper, 5, 10, threads=threads) + upper.top_clusters(X, 5, threads, 9)
        for a, b in zip(one, many):
            np.testing.assert_array_equal(a, b)


def test_single_cluster_every_query_reaches_it_with_score_1():
    upper = UpperLayers.from_chain([], 1, "l3-hinge")
    B = upper.beams(smat.csr_matrix(np.eye(3, N_FEATURES, dtype=np.float32)), 10)
    assert B.shape == (3, 1) and B.indices.tolist() == [0, 0, 0] and B.data.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("beam", [0, -3, 2.5])
def test_bad_beam_size_is_rejected(trained, beam):
    X = trained.featurizer.transform(["anything"])
    with pytest.raises(ValueError, match="beam_size"):
        trained.upper.beams(X, beam)
    with pytest.raises(ValueError, match="beam_size"):
        trained.catalog.search(X, trained.upper, beam, 5)
    with pytest.raises(ValueError, match="inserted_beam"):
        trained.catalog.search(X, trained.upper, 3, 5, inserted_beam=2)
    with pytest.raises(ValueError, match="last_beam"):
        trained.upper.beams(X, 3, last_beam=2)


def test_inconsistent_chain_is_rejected():
    chain = random_chain(np.random.default_rng(0), [3, 12], "l3-hinge")
    with pytest.raises(ValueError, match="12 nodes, the catalogue has 11"):
        UpperLayers.from_chain(chain, 11, "l3-hinge")
    with pytest.raises(ValueError, match="post-processor"):
        UpperLayers.from_chain(chain, 12, "sigmoid")
    chain[1].C = smat.csc_matrix(np.ones((12, 3), np.float32))  # every node under every parent
    with pytest.raises(ValueError, match="one parent"):
        UpperLayers.from_chain(chain, 12, "l3-hinge")


@pytest.mark.parametrize("factor", [0, -1, 1.5])
def test_bad_inserted_beam_factor_is_rejected(factor):
    with pytest.raises(ValueError, match="inserted_beam_factor"):
        ColdStartConfig(inserted_beam_factor=factor).validate()


def test_tree_catalog_and_coldstart_keep_to_their_floors():
    """tree and catalog both read `layout` and never import each other; nothing in coldstart imports the facade."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "xrmeta"

    def modules(path: Path) -> set[str]:
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                found |= {node.module or ""} | {f"{node.module or ''}.{a.name}".lstrip(".") for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        return {m.split(".")[-1] for m in found} | {m.split(".")[0] for m in found}

    assert "catalog" not in modules(root / "tree.py") and "tree" not in modules(root / "catalog.py")
    assert "layout" in modules(root / "tree.py") and "layout" in modules(root / "catalog.py")
    for path in (root / "coldstart").glob("*.py"):
        assert "model" not in modules(path), path.name
