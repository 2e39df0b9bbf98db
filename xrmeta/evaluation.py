"""Stage 5: evaluation on the zero-shot split (`xrmeta-evaluate` prints it).

Three test sets (see `data.make_zero_shot_split`): observed (trained items only), zero-shot (novel items only,
ranked among novel items) and generalized (every item). Rows compare xrmeta with PECOS's own predict on the same
trained model (when the model kept PECOS's copy), for which novel items are unreachable, and with what the words
alone find on the same sets: BM25 (bm25s, if installed) and brute-force cosine of the model's own title TF-IDF
vectors.

A system is a `predict(texts, subset, k) -> (slots, scores)` function, (n, k) arrays best first with slot -1 as
padding, and `slot_col` maps its slots to the dataset's item columns (None: its slots are the columns).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import scipy.sparse as smat

from .data import EvalSet, XMCData, ZeroShotSplit
from .metrics import evaluate_scores
from .model import ModelError, XRMetaModel

SUBSET_OF_SET = {"observed": "observed", "zero_shot": "inserted", "generalized": "all"}
METRICS = ("P@1", "P@5", "R@10", "R@100", "nDCG@10")
PECOS = "XR-Linear (PECOS)"


def slots_to_scores(slots: np.ndarray, scores: np.ndarray, slot_col: np.ndarray | None,
                    n_cols: int) -> smat.csr_matrix:
    """(n, k) slot/score arrays -> (n, n_cols) sparse scores in the dataset's item columns."""
    cols = slots if slot_col is None else np.where(slots >= 0, slot_col[np.maximum(slots, 0)], -1)
    keep = cols >= 0
    rows = np.repeat(np.arange(len(slots)), slots.shape[1])[keep.ravel()]
    return smat.csr_matrix((scores[keep], (rows, cols[keep])), shape=(len(slots), n_cols))


def slot_columns(model: XRMetaModel, data: XMCData) -> np.ndarray:
    """The dataset column of each catalogue slot of the model (-1: not in the dataset)."""
    col = {item_id: j for j, item_id in enumerate(data.item_ids)}
    return np.array([col.get(i, -1) for i in model.catalog.ids], dtype=np.int64)


def id_columns(ids: np.ndarray, data: XMCData) -> np.ndarray:
    """(n, k) item ids (None or "" as padding) -> (n, k) dataset columns (-1 for padding and unknown ids)."""
    col = {item_id: j for j, item_id in enumerate(data.item_ids)}
    return np.array([col.get(i, -1) for i in ids.ravel().tolist()], dtype=np.int64).reshape(ids.shape)


def insert_novel(model: XRMetaModel, data: XMCData, split: ZeroShotSplit, threads: int = -1) -> int:
    """Insert the split's novel items that the model does not hold yet; returns how many."""
    missing = [j for j in split.novel if data.item_ids[j] not in model]
    if missing:
        model.add_items([data.item_texts[j] for j in missing], [data.item_ids[j] for j in missing], threads=threads)
    return len(missing)


def evaluate_sets(predict, data: XMCData, split: ZeroShotSplit, slot_col: np.ndarray | None = None,
                  k: int = 100) -> dict:
    """{set name: metrics} for a predict(texts, subset, k) -> (slots, scores) function."""
    return {es.name: evaluate_set(predict, data, es, SUBSET_OF_SET[es.name], slot_col, k) for es in split.eval_sets()}


def evaluate_set(predict, data: XMCData, es: EvalSet, subset: str, slot_col: np.ndarray | None = None,
                 k: int = 100) -> dict:
    """Metrics of a predict function on one test set, searching `subset` and ranking the set's candidates only."""
    slots, scores = predict([data.query_texts[i] for i in es.queries], subset, k)
    return evaluate_scores(es.Y, _restrict(slots_to_scores(slots, scores, slot_col, data.n_items), es))


def _restrict(S: smat.csr_matrix, es: EvalSet) -> smat.csr_matrix:
    mask = np.zeros(S.shape[1], dtype=np.float32)
    mask[es.candidates] = 1.0
    S = S @ smat.diags(mask)
    S.eliminate_zeros()
    return S.tocsr()


def evaluate_model(model: XRMetaModel, data: XMCData, split: ZeroShotSplit, beam_size: int | None = None,
                   threads: int = 1, k: int = 100) -> dict[str, dict]:
    """{system: {set: metrics}} for xrmeta and, if the model kept PECOS's copy, for PECOS's predict on the same
    trained model."""
    def xrmeta(texts, subset, k):
        ids, scores = model.predict(texts, k=k, beam_size=beam_size, subset=subset, threads=threads)
        return id_columns(ids, data), scores

    out = {}
    try:
        pecos = model.pecos_model()
    except ModelError:  # trained without keeping it
        pecos = None
    if pecos is not None:
        beam = beam_size or model.configs.tree.beam_size

        def pecos_predict(texts, subset, k):  # PECOS label j is the j-th trained item: split.observed[j]
            X = model.featurizer.transform(texts, threads=threads)
            P = pecos.predict(smat.csr_matrix(X, dtype=np.float32), beam_size=beam, only_topk=k, threads=threads)
            return csr_topk(P.tocsr(), k)

        out[PECOS] = evaluate_sets(pecos_predict, data, split, split.observed, k)
    out[f"xrmeta ({model.configs.coldstart.generator})"] = evaluate_sets(xrmeta, data, split, None, k)
    return out


def csr_topk(P: smat.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense (n, k) top-k (columns, scores) of a CSR score matrix, best first (ties: lower column), -1 padded."""
    cols = np.full((P.shape[0], k), -1, dtype=np.int64)
    scores = np.zeros((P.shape[0], k), dtype=np.float32)
    for i in range(P.shape[0]):
        a, b = P.indptr[i], P.indptr[i + 1]
        order = np.lexsort((P.indices[a:b], -P.data[a:b]))[:k]
        cols[i, : len(order)] = P.indices[a:b][order]
        scores[i, : len(order)] = P.data[a:b][order]
    return cols, scores


def topk_csr(cols: np.ndarray, scores: np.ndarray, n_cols: int) -> smat.csr_matrix:
    """(n, k) candidate columns and scores -> (n, n_cols) CSR; zero scores (no shared term) are dropped."""
    keep = scores > 0
    rows = np.repeat(np.arange(len(cols)), cols.shape[1])[keep.ravel()]
    return smat.csr_matrix((scores[keep], (rows, cols[keep])), shape=(len(cols), n_cols))


def bm25(data: XMCData, es: EvalSet, k: int = 100) -> dict:
    """BM25 (bm25s defaults: Lucene, k1=1.5, b=0.75; English stopwords, its own tokenizer) over the set's
    candidate titles. Needs bm25s (`pip install bm25s`, in the dev extras)."""
    import bm25s

    tok = dict(stopwords="en", show_progress=False)
    index = bm25s.BM25()
    index.index(bm25s.tokenize([data.item_texts[j] for j in es.candidates], **tok), show_progress=False)
    q = bm25s.tokenize([data.query_texts[i] for i in es.queries], return_ids=False, **tok)
    docs, scores = index.retrieve(q, k=min(k, len(es.candidates)), show_progress=False, n_threads=1)
    return evaluate_scores(es.Y, topk_csr(es.candidates[docs], scores, data.n_items))


def title_tfidf(model: XRMetaModel, data: XMCData, es: EvalSet, k: int = 100, block: int = 512) -> dict:
    """Cosine of the model's featurizer vectors of query and title (normalised text, xrmeta's own feature space),
    brute force over the set's candidates: what the tree must find through its beam."""
    from sklearn.preprocessing import normalize

    Z = normalize(model.featurizer.transform([data.item_texts[j] for j in es.candidates], threads=1)).T.tocsc()
    X = normalize(model.featurizer.transform([data.query_texts[i] for i in es.queries], threads=1))
    k = min(k, Z.shape[1])
    cols, vals = [], []
    for a in range(0, X.shape[0], block):
        D = (X[a : a + block] @ Z).toarray()
        top = np.argsort(-D, axis=1, kind="stable")[:, :k]
        cols.append(es.candidates[top])
        vals.append(np.take_along_axis(D, top, axis=1))
    return evaluate_scores(es.Y, topk_csr(np.vstack(cols), np.vstack(vals), data.n_items))


def baselines(model: XRMetaModel, data: XMCData, split: ZeroShotSplit) -> dict[str, dict]:
    """{system: {set: metrics}} for BM25 (when bm25s is installed) and brute-force title TF-IDF."""
    out = {}
    if importlib.util.find_spec("bm25s") is not None:
        out["BM25 (bm25s, titles)"] = {es.name: bm25(data, es) for es in split.eval_sets()}
    out["title TF-IDF, brute force"] = {es.name: title_tfidf(model, data, es) for es in split.eval_sets()}
    return out


def format_table(results: dict[str, dict], sets=("observed", "zero_shot", "generalized")) -> str:
    lines = [f"{'system':<28s} {'test set':<12s} " + " ".join(f"{m:>8s}" for m in METRICS)]
    for system, by_set in results.items():
        for name in sets:
            if name in by_set:
                lines.append(f"{system:<28s} {name:<12s} " + " ".join(f"{by_set[name][m]:8.2f}" for m in METRICS))
        lines.append("")
    return "\n".join(lines)
