"""The C++ core without Python: `cpp/examples/query_model` (built with cmake) loads a saved model directory and
answers queries as `XRMetaModel.predict_features` does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .conftest import clone

CPP = Path(__file__).resolve().parent.parent / "cpp"

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("cpp-build")
    subprocess.run(["cmake", "-S", str(CPP), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"], check=True,
                   capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "query_model", "-j", "2"], check=True,
                   capture_output=True)
    return build / "query_model"


@pytest.fixture(scope="module")
def saved(with_novel, tmp_path_factory):
    """`with_novel` with some trained and inserted items removed, saved: dead slots, tails and chunks."""
    model = clone(with_novel)
    c = model.catalog
    model.remove_items([c.ids[s] for s in (0, 5, c.n_base + 1, c.n_slots - 1)])
    folder = tmp_path_factory.mktemp("saved") / "model"
    model.save(folder)
    return model, folder


def lines(X) -> str:
    X = X.tocsr()
    X.sort_indices()
    return "".join(" ".join(f"{j}:{v:.9g}" for j, v in zip(X.indices[a:b], X.data[a:b])) + "\n"
                   for a, b in zip(X.indptr[:-1], X.indptr[1:]))


def run(example: Path, folder: Path, stdin: str, k: int = 10) -> subprocess.CompletedProcess:
    return subprocess.run([str(example), str(folder), str(k)], input=stdin, text=True, capture_output=True,
                          timeout=60)


def test_answers_like_predict(example, saved, test_queries, novel):
    model, folder = saved
    texts = test_queries[:40] + novel[0][:20] + ["ÉCRAN Tactile, 4K!!", "zzzz qqqq"]  # the last: no known word
    X = model.featurizer.transform(texts)
    out = run(example, folder, lines(X))
    assert out.returncode == 0, out.stderr
    got = out.stdout.split("\n")[:-1]
    assert len(got) == len(texts)
    want = model.predict_features(X, k=10)
    n_found = 0
    for i, line in enumerate(got):
        fields = line.split("\t") if line else []
        ids, scores = fields[0::2], np.array([float(v) for v in fields[1::2]])
        found = [x for x in want.ids[i] if x != ""]
        assert ids == found, f"query {i}: {ids} != {found}"
        np.testing.assert_allclose(scores, want.scores[i][: len(found)], rtol=1e-6)
        n_found += len(found)
    assert n_found > 400  # the test compares real results, not empty lines
    assert got[-1] == ""  # no known word: nothing found, as in Python


def test_bad_input_is_named(example, saved):
    model, folder = saved
    out = run(example, folder, f"3:0.5 {model.featurizer.n_features}:1.0\n")
    assert out.returncode == 1 and "line 1: bad feature" in out.stderr
    out = run(example, folder, "7-0.5\n")
    assert out.returncode == 1 and "bad feature" in out.stderr


def test_missing_or_old_directory_is_named(example, saved, tmp_path):
    _, folder = saved
    out = run(example, tmp_path / "nowhere", "1:1\n")
    assert out.returncode == 1 and "cannot open" in out.stderr
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    (old / "layouts.npz").unlink()
    out = run(example, old, "1:1\n")
    assert out.returncode == 1 and "layouts.npz" in out.stderr
