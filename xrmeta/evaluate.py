"""Stage 5: evaluation on the zero-shot split, and the `python -m xrmeta.evaluate` command.

Three test sets (see `data.make_zero_shot_split`): observed (trained items only), zero-shot (novel items only,
ranked among novel items) and generalized (every item). Rows compare xrmeta with PECOS's own predict on the same
trained model, for which novel items are unreachable, and with what the words alone find on the same sets: BM25
(bm25s, if installed) and brute-force cosine of the model's own title TF-IDF vectors.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import scipy.sparse as smat

from .data import EvalSet, XMCData, ZeroShotSplit, load_dataset, make_zero_shot_split
from .metrics import evaluate_scores
from .model import ModelError, XRMetaModel
from .predict import check_search_args

SUBSET_OF_SET = {"observed": "observed", "zero_shot": "inserted", "generalized": "all"}
METRICS = ("P@1", "P@5", "R@10", "R@100", "nDCG@10")


def slots_to_scores(slots: np.ndarray, scores: np.ndarray, slot_col: np.ndarray, n_cols: int) -> smat.csr_matrix:
    """(n, k) slot/score arrays -> (n, n_cols) sparse scores in the dataset's item columns."""
    cols = np.where(slots >= 0, slot_col[np.maximum(slots, 0)], -1)
    keep = cols >= 0
    rows = np.repeat(np.arange(len(slots)), slots.shape[1])[keep.ravel()]
    return smat.csr_matrix((scores[keep], (rows, cols[keep])), shape=(len(slots), n_cols))


def slot_columns(model: XRMetaModel, data: XMCData) -> np.ndarray:
    col = {item_id: j for j, item_id in enumerate(data.item_ids)}
    return np.array([col.get(i, -1) for i in model.catalog.ids], dtype=np.int64)


def split_for(model: XRMetaModel, data: XMCData) -> ZeroShotSplit:
    """Rebuild the split the model was trained on, and check that it is that split."""
    s = model.info.get("split")
    if s is None:
        raise ModelError("the model was not trained by `xrmeta.train` on a dataset split; nothing to evaluate on")
    split = make_zero_shot_split(data, novel_frac=s["novel_frac"], test_frac=s["test_frac"], seed=s["seed"])
    trained = set(model.catalog.ids[: model.catalog.n_base])
    if trained != {data.item_ids[j] for j in split.observed}:
        raise ModelError("the model's trained items differ from this dataset's split: wrong dataset or seed?")
    return split


def dataset_and_split(model: XRMetaModel, name: str | None = None) -> tuple[XMCData, ZeroShotSplit]:
    """The dataset a model was trained on (or `name`) and the split it was trained on."""
    name = name or model.info.get("dataset")
    if not name:
        raise ModelError("the model does not record its dataset; pass --dataset")
    data = load_dataset(name)
    return data, split_for(model, data)


def insert_novel(model: XRMetaModel, data: XMCData, split: ZeroShotSplit) -> int:
    """Insert the split's novel items that the model does not hold yet; returns how many."""
    missing = [j for j in split.novel if data.item_ids[j] not in model.catalog.slot_of]
    model.add_items([data.item_texts[j] for j in missing], [data.item_ids[j] for j in missing])
    return len(missing)


def evaluate_sets(predict, data: XMCData, split: ZeroShotSplit, slot_col: np.ndarray, k: int = 100) -> dict:
    """{set name: metrics} for a predict(X_texts, subset, k) -> (slots, scores) function."""
    out = {}
    for es in split.eval_sets():
        slots, scores = predict([data.query_texts[i] for i in es.queries], SUBSET_OF_SET[es.name], k)
        out[es.name] = evaluate_scores(es.Y, _restrict(slots_to_scores(slots, scores, slot_col, data.n_items), es))
    return out


def _restrict(S: smat.csr_matrix, es: EvalSet) -> smat.csr_matrix:
    mask = np.zeros(S.shape[1], dtype=np.float32)
    mask[es.candidates] = 1.0
    S = S @ smat.diags(mask)
    S.eliminate_zeros()
    return S.tocsr()


def evaluate_model(model: XRMetaModel, data: XMCData, split: ZeroShotSplit, beam_size: int | None = None,
                   threads: int = 1, k: int = 100) -> dict[str, dict]:
    """{system: {set: metrics}} for xrmeta and for PECOS predict on the same trained model."""
    slot_col = slot_columns(model, data)

    def xrmeta(texts, subset, k):
        X = model.featurizer.transform(texts, threads=threads)
        return model.predict_slots(X, k=k, beam_size=beam_size, subset=subset, threads=threads)

    def pecos(texts, subset, k):
        X = model.featurizer.transform(texts, threads=threads)
        return model.pecos_predict_slots(X, k=k, beam_size=beam_size, threads=threads)

    return {
        "XR-Linear (PECOS)": evaluate_sets(pecos, data, split, slot_col, k),
        f"xrmeta ({model.configs.coldstart.generator})": evaluate_sets(xrmeta, data, split, slot_col, k),
    }


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
    try:
        import bm25s  # noqa: F401
        out["BM25 (bm25s, titles)"] = {es.name: bm25(data, es) for es in split.eval_sets()}
    except ImportError:
        pass
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m xrmeta.evaluate",
        description="Evaluate a model on the zero-shot split it was trained on: P@1, P@5, R@10, R@100 and nDCG@10 "
        "(percent) on the observed, zero-shot and generalized test sets, next to PECOS's own predict.",
    )
    p.add_argument("--model-dir", required=True, help="model directory written by xrmeta.train")
    p.add_argument("--dataset", help="dataset name or XC-repo directory (default: the one the model was trained on)")
    p.add_argument("--beam-size", type=int, help="beam size (default: the model's)")
    p.add_argument("--no-insert-novel", action="store_true",
                   help="do not insert the split's novel items that the model lacks (they stay unreachable)")
    p.add_argument("--threads", type=int, default=1, help="threads for featurizing and search (default 1)")
    p.add_argument("--no-baselines", action="store_true",
                   help="leave out the BM25 and brute-force title TF-IDF rows (computed on the same test sets)")
    args = p.parse_args(argv)
    try:
        check_search_args(beam_size=args.beam_size, threads=args.threads)
        model = XRMetaModel.load(args.model_dir)
        data, split = dataset_and_split(model, args.dataset)
        if not args.no_insert_novel:
            n = insert_novel(model, data, split)
            if n:
                print(f"inserted {n} novel items of the split (in memory only)", file=sys.stderr)
        results = evaluate_model(model, data, split, args.beam_size, args.threads)
        if not args.no_baselines:
            results.update(baselines(model, data, split))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    beam = args.beam_size or model.configs.tree.beam_size
    print(f"dataset {data.name}: {len(split.observed)} observed / {len(split.novel)} novel items, beam {beam}")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
