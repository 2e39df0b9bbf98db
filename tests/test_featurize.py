"""Featurizer: n-gram blocks, normalisation, vocabulary pruning, persistence."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from xrmeta.featurize import Featurizer, FeaturizerConfig, normalize_text

TEXTS = ["red kettle steel", "blue kettle", "red lamp mini", "steel lamp pro max", "Blue Lamp"]


def ngram_counts(texts, min_df=1):
    """Distinct word 1-grams, word 2-grams and space-padded in-word char 3-grams with df >= min_df
    (case-sensitive, whitespace tokens)."""
    df = [Counter(), Counter(), Counter()]
    for t in texts:
        w = t.split()
        df[0].update(set(w))
        df[1].update(set(zip(w, w[1:])))
        df[2].update({f" {x} "[i : i + 3] for x in w for i in range(len(x))})
    return [sum(c >= min_df for c in d.values()) for d in df]


@pytest.fixture(scope="module")
def feat():
    return Featurizer.train(TEXTS, FeaturizerConfig(normalization="none"))  # the counts above are case-sensitive


def block_offsets(f: Featurizer) -> np.ndarray:
    """Feature index where each n-gram block starts, plus the total at the end."""
    return np.concatenate([[0], np.cumsum(f.block_sizes)])


def block_nnz(f: Featurizer, text: str) -> list[int]:
    row = f.transform([text])
    return np.diff(np.searchsorted(row.indices, block_offsets(f))).tolist()


@pytest.mark.parametrize("min_df", [1, 2])
def test_block_sizes_count_the_ngrams_and_add_up(min_df):
    f = Featurizer.train(TEXTS, FeaturizerConfig(min_df=min_df, normalization="none"))
    assert f.block_sizes == ngram_counts(TEXTS, min_df)
    folded = Featurizer.train(TEXTS, FeaturizerConfig(min_df=min_df))
    assert folded.block_sizes == ngram_counts([normalize_text(t) for t in TEXTS], min_df)
    assert f.n_features == sum(f.block_sizes) == block_offsets(f)[-1]
    assert f.transform(TEXTS).shape == (len(TEXTS), f.n_features)


def test_blocks_are_word1_word2_char3_in_order(feat):
    assert block_nnz(feat, "kettle")[:2] == [1, 0]
    one, two, three = block_nnz(feat, "red kettle")
    assert (one, two) == (2, 1) and three > 0


def test_rows_are_l2_normalised_float32_sorted(feat):
    X = feat.transform(TEXTS + ["kettle lamp"])
    assert X.dtype == np.float32 and X.has_sorted_indices
    np.testing.assert_allclose(np.sqrt(X.multiply(X).sum(axis=1)).A1, 1.0, rtol=1e-6)


def test_out_of_vocabulary_text_gives_an_empty_row(feat):
    X = feat.transform(["qjqj", "red kettle", "wqw qjq"])
    assert np.diff(X.indptr).tolist()[0] == 0 and np.diff(X.indptr)[2] == 0 and X[1].nnz > 0


def test_min_df_drops_rare_terms():
    rare = "mini"  # in one text only, and none of its 3-grams occurs elsewhere
    assert Featurizer.train(TEXTS).transform([rare]).nnz > 0
    f2 = Featurizer.train(TEXTS, FeaturizerConfig(min_df=2))
    assert f2.transform([rare]).nnz == 0
    assert block_nnz(f2, "red")[0] == 1  # "red" is in two texts: kept


def test_max_feature_caps_each_block():
    f = Featurizer.train(TEXTS, FeaturizerConfig(max_feature=3))
    assert f.block_sizes == [3, 3, 3]


def test_save_load_gives_the_same_vectors(feat, tmp_path):
    feat.save(tmp_path / "a")
    loaded = Featurizer.load(tmp_path / "a")
    assert loaded.block_sizes == feat.block_sizes and loaded.config == feat.config
    texts = TEXTS + ["kettle lamp", "Red steel max", "qjqj"]
    A, B = feat.transform(texts), loaded.transform(texts)
    assert (A != 0).toarray().tolist() == (B != 0).toarray().tolist()
    np.testing.assert_allclose(B.toarray(), A.toarray(), rtol=1e-6)  # PECOS stores idf with 6 decimals
    loaded.save(tmp_path / "b")
    again = Featurizer.load(tmp_path / "b").transform(texts)
    assert (again != B).nnz == 0  # a loaded featurizer round-trips exactly


def test_empty_inputs():
    with pytest.raises(ValueError, match="empty corpus"):
        Featurizer.train([])
    f = Featurizer.train(TEXTS)
    assert f.transform([]).shape == (0, f.n_features)


# ---------------------------------------------------------------- text normalisation
@pytest.mark.parametrize("raw,folded", [
    ("DeWALT  20-Volt MAX (Tool-Only)", "dewalt 20 volt max tool only"),
    ("Ｃｏｒｄｌｅｓｓ\tDRILL\n", "cordless drill"),  # full-width letters, tab, newline
    ("Café Crème Brûlée", "café crème brûlée"),  # accents kept, composed (NFKC)
    ("Cafe\u0301", "café"),  # a combining accent composes with its letter
    ("STRASSE Straße", "strasse strasse"),  # case folding, not just lower()
    ("3/4 in. x 10 ft.", "3 4 in x 10 ft"),
    ("hi_there—it's ½", "hi there it s 1 2"),  # underscore, dash, apostrophe; ½ -> 1⁄2
    ("हिन्दी शब्द", "हिन्दी शब्द"),  # combining vowel signs of other scripts stay inside their words
    ("  \u00a0 ", ""),
])
def test_normalize_text(raw, folded):
    assert normalize_text(raw) == folded


def test_case_width_punctuation_and_whitespace_variants_featurize_identically():
    f = Featurizer.train(["Apple iPhone 8 Plus, 64GB", "Cordless Drill/Driver Kit", "café crème"])
    variants = ["apple iphone 64gb", "APPLE iPhone 64GB", "  Apple\tiPhone   64GB ", "Ａｐｐｌｅ ｉＰｈｏｎｅ 64GB!",
                "apple, iphone (64GB)"]
    X = f.transform(variants)
    for i in range(1, len(variants)):
        assert (X[i] != X[0]).nnz == 0, variants[i]
    assert X[0].nnz > 0
    assert f.transform(["drill/driver"]).nnz == f.transform(["drill driver"]).nnz > 0


def test_a_featurizer_saved_before_normalisation_keeps_its_texts_as_given(tmp_path):
    """featurizer.json written before the setting existed has no "normalization": it reads as "none", so the
    model featurizes as it was trained (case-sensitive)."""
    f = Featurizer.train(TEXTS, FeaturizerConfig(normalization="none"))
    f.save(tmp_path)
    meta = json.loads((tmp_path / "featurizer.json").read_text())
    del meta["config"]["normalization"]
    (tmp_path / "featurizer.json").write_text(json.dumps(meta))
    old = Featurizer.load(tmp_path)
    assert old.config.normalization == "none"
    assert (old.transform(["Blue Lamp"]) != old.transform(["blue lamp"])).nnz > 0
    assert Featurizer.load(tmp_path).transform(["Blue Lamp"]).nnz == f.transform(["Blue Lamp"]).nnz


def test_unknown_normalization_is_refused():
    with pytest.raises(ValueError, match="normalization must be one of"):
        Featurizer.train(TEXTS, FeaturizerConfig(normalization="lower"))


def test_a_script_exits_without_a_destructor_traceback(tmp_path):
    """PECOS's Tfidf.__del__ used to raise at interpreter exit (its module global `clib` is None by then)."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    script = ("import torch\n"  # torch's teardown is what made PECOS's module globals None first
              "from xrmeta.featurize import Featurizer\n"
              f"f = Featurizer.train({TEXTS!r})\n"
              f"f.save({str(tmp_path / 'f')!r})\n"
              f"g = Featurizer.load({str(tmp_path / 'f')!r})\n"
              "print(g.transform(['Red Kettle']).nnz)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) > 0
    assert "Exception ignored" not in run.stderr and "Traceback" not in run.stderr, run.stderr
