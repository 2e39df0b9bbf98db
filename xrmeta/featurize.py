"""Stage 1: text -> n-gram TF-IDF features (PECOS's C++ vectorizer).

The product-search XR-Linear recipe: word unigrams + word bigrams + character trigrams inside word boundaries,
each block TF-IDF weighted, concatenated and L2-normalised. Queries and item titles share one feature space,
so an item's own title vector can stand in for (or be mixed into) its classifier.

Every text is normalised here, and only here, before PECOS sees it (`normalize_text`): PECOS's tokenizer is
case-sensitive and splits on whitespace only, so "Apple iPhone" and "apple iphone" share no n-gram and
"drill," is not "drill". Training, `add_items`, `predict` and every command go through `Featurizer.transform`.
"""

from __future__ import annotations

import json
import tempfile
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as smat
from pecos.core import clib
from pecos.utils.featurization.text.vectorizers import Tfidf, Vectorizer

# (analyzer, ngram) of the feature blocks, in the order PECOS concatenates them.
BLOCKS = (("word", 1), ("word", 2), ("char_wb", 3))

# "fold": Unicode NFKC (full-width and compatibility forms to their plain letters), case folding, punctuation,
# symbols and control characters to spaces, runs of whitespace to one space. "none": texts as given (models saved
# before normalisation existed load with it, so they featurize as they were trained).
NORMALIZATIONS = ("fold", "none")
# ASCII characters that "fold" turns into spaces (categories P, S, Z, C): a bytes table for the common case
_ASCII_SEPARATORS = bytes(c for c in range(128) if unicodedata.category(chr(c))[0] in "PSZC")
_ASCII_TABLE = bytes.maketrans(_ASCII_SEPARATORS, b" " * len(_ASCII_SEPARATORS))


class _Separators(dict):
    """str.translate table: code point -> " " for punctuation, symbols, separators and controls, else itself.
    Filled as characters are first seen, so it holds only the alphabet of the data."""

    def __missing__(self, code_point: int) -> str:
        char = chr(code_point)
        category = unicodedata.category(char)
        # a lone surrogate (an undecodable byte) stays, so that featurizing fails loudly instead of guessing
        self[code_point] = value = " " if category[0] in "PSZC" and category != "Cs" else char
        return value


_SEPARATORS = _Separators()


def normalize_text(text: str) -> str:
    """The "fold" normalisation: 'DeWALT  20-Volt MAX (Tool-Only)' -> 'dewalt 20 volt max tool only'. Letters,
    digits and combining marks are kept (accents too: 'Café' -> 'café'); everything else separates words."""
    if text.isascii():  # most product text: about 1 us instead of 6
        return " ".join(text.lower().encode("ascii").translate(_ASCII_TABLE).decode("ascii").split())
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.translate(_SEPARATORS).split())


@dataclass
class FeaturizerConfig:
    """How texts become TF-IDF rows: vocabulary size and pruning per n-gram block, idf, and normalisation."""

    max_feature: int = 0  # per block; 0 keeps every term
    min_df: int = 1  # a term must appear in this many training texts
    # PECOS's idf ln(N/(1+df)) is <= 0 for terms in (nearly) every text, which deletes them on small corpora;
    # adding one keeps every term with a positive weight.
    add_one_idf: bool = True
    sublinear_tf: bool = False
    normalization: str = "fold"  # see NORMALIZATIONS

    def validate(self) -> None:
        """Raise ValueError on a setting out of range or an unknown name."""
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.min_df < 1 or self.max_feature < 0:
            raise ValueError("min_df must be >= 1 and max_feature >= 0")

    @classmethod
    def from_saved(cls, settings: dict) -> FeaturizerConfig:
        """A config as saved with a model; one saved before normalisation existed reads as "none"."""
        return cls(**{"normalization": "none", **settings})

    def pecos_config(self, threads: int = -1) -> dict:
        """PECOS's vectorizer config of the three n-gram blocks (`Vectorizer.train`); threads: -1 = all cores."""
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


class _Tfidf(Tfidf):
    """PECOS's Tfidf frees its C++ model in `__del__` through its module's global `clib`, which is None when the
    interpreter exits: every script ended with an "Exception ignored in Tfidf.__del__" traceback. This one keeps
    its own reference to the library and frees the model once."""

    _clib = clib

    def __del__(self):
        if self.model is not None:
            self._clib.tfidf_destruct(self.model)
            self.model = None


class Featurizer:
    """A trained TF-IDF vectorizer with its config and per-block feature offsets."""

    def __init__(self, vectorizer: Vectorizer, config: FeaturizerConfig, block_sizes: list[int]):
        if type(vectorizer.model) is Tfidf:
            vectorizer.model.__class__ = _Tfidf  # same object and fields: only its destructor changes
        self.vectorizer = vectorizer
        self.config = config
        self.block_sizes = list(block_sizes)
        # feature -> n-gram block, for per-block statistics and weights of the learned generator
        self.feature_block = np.repeat(np.arange(len(self.block_sizes)), self.block_sizes).astype(np.int8)

    @property
    def n_features(self) -> int:
        """Columns of every TF-IDF row: the three blocks' vocabularies together."""
        return int(sum(self.block_sizes))

    @classmethod
    def train(cls, texts: list[str], config: FeaturizerConfig | None = None, threads: int = -1) -> Featurizer:
        if not texts:
            raise ValueError("cannot train a featurizer on an empty corpus")
        config = config or FeaturizerConfig()
        config.validate()
        vectorizer = Vectorizer.train(cls._normalize(config, texts), config.pecos_config(threads))
        block_sizes = _block_sizes(vectorizer, len(BLOCKS))
        return cls(vectorizer, config, block_sizes)

    @staticmethod
    def _normalize(config: FeaturizerConfig, texts) -> list[str]:
        return [normalize_text(t) for t in texts] if config.normalization == "fold" else list(texts)

    def transform(self, texts: list[str], threads: int = -1) -> smat.csr_matrix:
        """TF-IDF rows (float32 CSR, sorted indices) of the normalised texts. Out-of-vocabulary terms are dropped;
        a text with no known term gives an empty row."""
        if len(texts) == 0:
            return smat.csr_matrix((0, self.n_features), dtype=np.float32)
        X = self.vectorizer.predict(self._normalize(self.config, texts), threads=threads)
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
        return cls(vectorizer, FeaturizerConfig.from_saved(meta["config"]), meta["block_sizes"])


def _block_sizes(vectorizer: Vectorizer, n_blocks: int) -> list[int]:
    """Sizes of the word-1, word-2 and char-3 blocks.

    PECOS does not expose them in Python; each block's saved model starts with its feature count.
    """
    with tempfile.TemporaryDirectory() as tmp:
        vectorizer.save(tmp)
        return [int(Path(tmp, f"{i}.base", "vectorizer", "tfidf-model.txt").open().readline()) for i in range(n_blocks)]
