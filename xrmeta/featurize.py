"""Stage 1: text -> n-gram TF-IDF features (PECOS's C++ vectorizer).

The product-search XR-Linear recipe: word unigrams + word bigrams + character trigrams inside word boundaries,
each block TF-IDF weighted, concatenated and L2-normalised. Queries and item titles share one feature space,
so an item's own title vector can stand in for (or be mixed into) its classifier.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as smat
from pecos.utils.featurization.text.vectorizers import Vectorizer

# (analyzer, ngram) of the feature blocks, in the order PECOS concatenates them.
BLOCKS = (("word", 1), ("word", 2), ("char_wb", 3))


@dataclass
class FeaturizerConfig:
    max_feature: int = 0  # per block; 0 keeps every term
    min_df: int = 1  # a term must appear in this many training texts
    # PECOS's idf ln(N/(1+df)) is <= 0 for terms in (nearly) every text, which deletes them on small corpora;
    # adding one keeps every term with a positive weight.
    add_one_idf: bool = True
    sublinear_tf: bool = False

    def pecos_config(self, threads: int = -1) -> dict:
        blocks = [
            {
                "analyzer": analyzer,
                "ngram_range": [n, n],
                "max_feature": self.max_feature,
                "min_df_cnt": self.min_df,  # PECOS keeps terms with df >= min_df_cnt
                "add_one_idf": self.add_one_idf,
                "sublinear_tf": self.sublinear_tf,
            }
            for analyzer, n in BLOCKS
        ]
        return {"type": "tfidf", "kwargs": {"base_vect_configs": blocks, "norm_p": 2, "threads": threads}}


class Featurizer:
    """A trained TF-IDF vectorizer with its config and per-block feature offsets."""

    def __init__(self, vectorizer: Vectorizer, config: FeaturizerConfig, block_sizes: list[int]):
        self.vectorizer = vectorizer
        self.config = config
        self.block_sizes = list(block_sizes)
        # feature -> n-gram block, for per-block statistics and weights of the learned generator
        self.feature_block = np.repeat(np.arange(len(self.block_sizes)), self.block_sizes).astype(np.int8)

    @property
    def n_features(self) -> int:
        return int(sum(self.block_sizes))

    @property
    def block_offsets(self) -> np.ndarray:
        """Feature index where each n-gram block starts, plus the total at the end."""
        return np.concatenate([[0], np.cumsum(self.block_sizes)]).astype(np.int64)

    @classmethod
    def train(cls, texts: list[str], config: FeaturizerConfig | None = None, threads: int = -1) -> Featurizer:
        if not texts:
            raise ValueError("cannot train a featurizer on an empty corpus")
        config = config or FeaturizerConfig()
        vectorizer = Vectorizer.train(list(texts), config.pecos_config(threads))
        block_sizes = _block_sizes(vectorizer, len(BLOCKS))
        return cls(vectorizer, config, block_sizes)

    def transform(self, texts: list[str], threads: int = -1) -> smat.csr_matrix:
        """TF-IDF rows (float32 CSR, sorted indices). Out-of-vocabulary terms are dropped."""
        if len(texts) == 0:
            return smat.csr_matrix((0, self.n_features), dtype=np.float32)
        X = self.vectorizer.predict(list(texts), threads=threads)
        X = smat.csr_matrix(X, dtype=np.float32)
        X.sort_indices()
        return X

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.vectorizer.save(str(folder / "vectorizer"))
        meta = {"config": asdict(self.config), "block_sizes": self.block_sizes}
        (folder / "featurizer.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> Featurizer:
        folder = Path(folder)
        meta = json.loads((folder / "featurizer.json").read_text())
        vectorizer = Vectorizer.load(str(folder / "vectorizer"))
        return cls(vectorizer, FeaturizerConfig(**meta["config"]), meta["block_sizes"])


def _block_sizes(vectorizer: Vectorizer, n_blocks: int) -> list[int]:
    """Sizes of the word-1, word-2 and char-3 blocks.

    PECOS does not expose them in Python; each block's saved model starts with its feature count.
    """
    with tempfile.TemporaryDirectory() as tmp:
        vectorizer.save(tmp)
        return [int(Path(tmp, f"{i}.base", "vectorizer", "tfidf-model.txt").open().readline()) for i in range(n_blocks)]
