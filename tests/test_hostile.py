"""Hostile input at every entry point: empty strings, 1 MB titles, undecodable bytes, NaN / inf, wrong shapes,
ids out of range, damaged model directories and directories of another format version. Each must fail with a
clear error (naming the file where there is one) and write nothing.

Earlier cases live next to the code they test: tests/test_model.py::test_bad_input_raises_and_changes_nothing
(catalogue NaN weights, shapes, cluster ids) and tests/test_cli.py (malformed items files).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as smat

from xrmeta import add_items, evaluate, persist, predict, train
from xrmeta.catalog import CatalogError
from xrmeta.data import DataError, load_xc_repo
from xrmeta.model import XRMetaModel

from .conftest import assert_unchanged, dir_digest, snapshot
from .reference import leaf_topk
from .test_data import write_xc

TITLE = "vubo kettle steel b123"  # in the synthetic vocabulary
MB = 2**20


@pytest.fixture
def model_dir(saved_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved_dir, folder)
    return folder


@pytest.fixture(scope="module")
def with_items_dir(trained, novel, tmp_path_factory):
    """A saved model holding inserted items (so its catalogue has linked lists to damage)."""
    folder = tmp_path_factory.mktemp("with-items") / "model"
    trained.save(folder)
    model = XRMetaModel.load(folder)
    model.add_items(*novel)
    model.save(folder)
    return folder


# ---------------------------------------------------------------- API: writers change nothing
def too_long(n=MB):
    return "kettle " * (n // 7 + 1)


ADD = {  # (titles, ids) -> error
    "empty-title": (["", TITLE], ["h1", "h2"], "empty or non-string title"),
    "1MB-title": ([too_long()], ["h1"], "title longer than 4096 characters"),
    "undecodable-title": ([b"caf\xe9 kettle".decode("utf-8", "surrogateescape")], ["h1"], "not valid Unicode"),
    "bytes-title": ([TITLE.encode()], ["h1"], "empty or non-string title"),
    "title-as-string": (TITLE, "h1", "titles must be a list of strings"),
    "titles-not-iterable": (7, ["h1"], "titles must be a list of strings, got int"),
    "empty-id": ([TITLE], [""], "non-empty strings"),
    "1MB-id": ([TITLE], ["x" * MB], "at most 1024 characters"),
    "undecodable-id": ([TITLE], ["sku\udce9"], "valid Unicode"),
    "id-not-string": ([TITLE], [12], "non-empty strings"),
    "lengths": ([TITLE, TITLE], ["h1"], "2 titles for 1 ids"),
}
REMOVE = {
    "unknown": (["no-such-id"], "unknown item ids"),
    "as-string": ("syn000001", "ids must be a list of strings"),
    "not-string": ([7], "unknown item ids"),
    "1MB-id": (["x" * MB], "unknown item ids"),
}


@pytest.mark.parametrize("call", [("add", *v) for v in ADD.values()] + [("remove", *v) for v in REMOVE.values()],
                         ids=[f"add-{k}" for k in ADD] + [f"remove-{k}" for k in REMOVE])
def test_writer_rejects_and_changes_nothing(model_dir, call):
    """On a logging model: neither the catalogue nor any file of the directory (the log included) changes."""
    model = XRMetaModel.load(model_dir, log=True)
    state, files = snapshot(model.catalog), dir_digest(model_dir)
    kind, *args, match = call
    with pytest.raises(ValueError, match=match) as err:
        (model.add_items if kind == "add" else model.remove_items)(*args)
    assert len(str(err.value)) < 500  # a 1 MB input does not make a 1 MB message
    assert_unchanged(model.catalog, state)
    assert dir_digest(model_dir) == files
    model.add_items([TITLE], ["h1"])  # the model still works
    assert len(persist.read_log(model_dir)) == 1


# ---------------------------------------------------------------- API: search
def query(model, rows=1, data=None, indices=None):
    n = model.featurizer.n_features
    indices = np.array([1, 5] * rows if indices is None else indices, dtype=np.int32)
    data = np.ones(len(indices), np.float32) if data is None else np.asarray(data, np.float32)
    return smat.csr_matrix((data, indices, np.arange(0, len(indices) + 1, 2)), shape=(rows, n))


SEARCH = {
    "nan-query": (lambda m: m.predict_features(query(m, data=[np.nan, 1.0])), "must be finite"),
    "inf-query": (lambda m: m.predict_features(query(m, data=[1.0, -np.inf])), "must be finite"),
    "feature-too-large": (lambda m: m.predict_features(query(m, indices=[1, m.featurizer.n_features])),
                          "feature indices must be in"),
    "feature-negative": (lambda m: m.predict_features(query(m, indices=[-7, 1])), "feature indices must be in"),
    "feature-count": (lambda m: m.predict_features(smat.csr_matrix((1, 3), dtype=np.float32)), "features"),
    "k-zero": (lambda m: m.predict([TITLE], k=0), "k must be >= 1"),
    "k-huge": (lambda m: m.predict([TITLE], k=10**9), "k must be >= 1 and <= 10000"),
    "k-float": (lambda m: m.predict([TITLE], k=2.5), "k must be"),
    "subset": (lambda m: m.predict([TITLE], subset="novel"), "subset must be one of"),
    "undecodable-query": (lambda m: m.predict(["caf\udce9"]), "surrogates not allowed"),
    "beam-cluster-out-of-range": (lambda m: leaf_topk(m.catalog, query(m), smat.csr_matrix(
        (np.ones(1, np.float32), [m.catalog.n_clusters], [0, 1]), shape=(1, m.catalog.n_clusters + 1)), 5),
        "beam clusters in"),
    "beam-score-nan": (lambda m: leaf_topk(m.catalog, query(m), smat.csr_matrix(
        (np.array([np.nan], np.float32), [0], [0, 1]), shape=(1, m.catalog.n_clusters)), 5), "must be finite"),
    "beam-rows": (lambda m: leaf_topk(m.catalog, query(m, rows=2), smat.csr_matrix((1, m.catalog.n_clusters)), 5),
                  "do not fit"),
}


@pytest.mark.parametrize("call,match", list(SEARCH.values()), ids=list(SEARCH))
def test_search_rejects_bad_queries(with_novel, call, match):
    with pytest.raises(ValueError, match=match):
        call(with_novel)


def test_search_accepts_empty_and_huge_queries(with_novel):
    ids, scores = with_novel.predict(["", "   ", too_long()], k=5)
    assert ids.shape == (3, 5)
    assert (ids[:2] == "").all() and (scores[:2] == -np.inf).all()  # no words, no items: padding only
    assert (ids[2] != "").all() and np.isfinite(scores[2]).all()
    assert with_novel.predict([], k=5)[0].shape == (0, 5)
    assert with_novel.featurizer.transform([too_long()]).nnz > 0


# ---------------------------------------------------------------- API: save refuses to clobber
def test_save_refuses_what_is_not_a_model_directory(trained, tmp_path):
    victim = tmp_path / "home"
    victim.mkdir()
    (victim / "notes.txt").write_text("precious")
    before = dir_digest(victim)
    for target, match in [(victim, "not empty and not an xrmeta model directory"),
                          (victim / "notes.txt", "exists and is not a directory")]:
        with pytest.raises(persist.PersistError, match=match):
            trained.save(target)
    assert dir_digest(victim) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no temporary directory left behind


# ---------------------------------------------------------------- API: load names the damaged file
def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def first_file(folder: Path, part: str) -> str:
    return sorted(p.relative_to(folder).as_posix() for p in (folder / part).rglob("*") if p.is_file())[0]


def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


DAMAGE = {  # damage(folder), error pattern ({dir}: the model directory)
    "no-config": (lambda d: (d / "config.json").unlink(), r"{dir}: not an xrmeta model directory"),
    "config-truncated": (lambda d: truncate(d / "config.json", 40), r"{dir}/config.json: not valid JSON"),
    "config-not-utf8": (lambda d: (d / "config.json").write_bytes(b"\xff\xfe{"), r"{dir}/config.json: not valid JSON"),
    "config-not-object": (lambda d: (d / "config.json").write_text("[1, 2]"), "expected a JSON object"),
    "version-3": (lambda d: edit_config(d, lambda c: c.update(format_version=3)),
                  r"{dir}/config.json: format version 3, this xrmeta reads 1 and 2"),
    "version-string": (lambda d: edit_config(d, lambda c: c.update(format_version="2")), "format version '2'"),
    "version-missing": (lambda d: edit_config(d, lambda c: c.pop("format_version")), "format version None"),
    "setting-missing": (lambda d: edit_config(d, lambda c: c.pop("tree")),
                        r"config.json: missing or unknown setting 'tree'"),
    "setting-unknown": (lambda d: edit_config(d, lambda c: c["coldstart"].update(turbo=1)),
                        "missing or unknown setting"),
    "catalog-flipped": (lambda d: flip_byte(d / "catalog.npz"), r"{dir}/catalog.npz: checksum mismatch"),
    "selector-truncated": (lambda d: truncate(d / "selector.npz", 100),
                           r"{dir}/selector.npz: 100 bytes, config.json says \d+"),
    "ids-appended": (lambda d: (d / "catalog_ids.txt").write_text((d / "catalog_ids.txt").read_text() + "x\n"),
                     r"{dir}/catalog_ids.txt: \d+ bytes"),
    "featurizer-missing": (lambda d: (d / first_file(d, "featurizer")).unlink(),
                           r"{dir}/featurizer/.*: missing \(listed in config.json\)"),
    "upper-flipped": (lambda d: flip_byte(d / first_file(d, "upper")), r"{dir}/upper/.*: checksum"),
    "manifest-escapes": (lambda d: edit_config(d, lambda c: c["files"].update({"../x": {}})),
                         "bad manifest entry '../x'"),
}


@pytest.mark.parametrize("damage,pattern", list(DAMAGE.values()), ids=list(DAMAGE))
def test_load_names_the_damaged_file_and_writes_nothing(model_dir, damage, pattern):
    damage(model_dir)
    files = dir_digest(model_dir)
    with pytest.raises(ValueError, match=pattern.format(dir=re.escape(str(model_dir)))):
        XRMetaModel.load(model_dir)
    assert dir_digest(model_dir) == files


def rewrite_catalog(folder: Path, change) -> None:
    """Change catalog.npz and re-list it in the manifest: a well-formed file with bad content."""
    with np.load(folder / "catalog.npz") as z:
        arrays = dict(z)
    change(arrays)
    np.savez(folder / "catalog.npz", **arrays)
    edit_config(folder, lambda c: c["files"].update({"catalog.npz": {
        "size": (folder / "catalog.npz").stat().st_size, "sha256": persist.sha256_file(folder / "catalog.npz")}}))


LAYOUT = {  # out-of-range ids inside a checksummed catalogue: the search kernel would read outside its arrays
    "entry-of-trained-slot": (lambda a: a["entry_slot"].__setitem__(0, 0), "entry_slot"),
    "entry-beyond-slots": (lambda a: a["entry_slot"].__setitem__(0, len(a["slot_alive"])), "entry_slot"),
    "entry-cluster-beyond": (lambda a: a["entry_cluster"].__setitem__(0, len(a["base_slot_ptr"]) - 1),
                             "entry_cluster"),
    "entry-twice": (lambda a: a.update(entry_slot=np.append(a["entry_slot"], a["entry_slot"][0]),
                                       entry_cluster=np.append(a["entry_cluster"], a["entry_cluster"][0])),
                    "entries repeated"),
    "feature-beyond": (lambda a: a["w_idx"].__setitem__(-1, 10**8), "feature indices"),
    "cluster-negative": (lambda a: a["slot_cluster"].__setitem__(3, -1), "slot_cluster"),
    "pointer-decreasing": (lambda a: a["w_ptr"].__setitem__(len(a["w_ptr"]) // 2, 0), "w_ptr"),
    "nan-weight": (lambda a: a["w_val"].__setitem__(0, np.nan), "non-finite weights"),
    "wrong-dtype": (lambda a: a.update(entry_cluster=a["entry_cluster"].astype(np.int64)), "dtypes"),
    "slots-differ": (lambda a: a.update(slot_bias=a["slot_bias"][:-1]), "slot counts"),
    "array-missing": (lambda a: a.pop("chunk_val"), r"missing arrays \['chunk_val'\]"),
}


@pytest.mark.parametrize("change,match", list(LAYOUT.values()), ids=list(LAYOUT))
def test_load_rejects_a_catalogue_with_ids_out_of_range(with_items_dir, tmp_path, change, match):
    folder = tmp_path / "model"
    shutil.copytree(with_items_dir, folder)
    rewrite_catalog(folder, change)
    with pytest.raises(CatalogError, match=f"{re.escape(str(folder))}/catalog.npz: .*{match}"):
        XRMetaModel.load(folder)


def test_legacy_directory_with_a_garbled_file_names_it(model_dir):
    edit_config(model_dir, lambda c: (c.update(format_version=1), c.pop("files")))  # version 1: no manifest
    (model_dir / "catalog.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CatalogError, match=f"{re.escape(str(model_dir))}/catalog.npz: unreadable"):
        XRMetaModel.load(model_dir)


# ---------------------------------------------------------------- data loaders
def test_xc_loader_names_undecodable_file(tmp_path):
    d = write_xc(tmp_path / "xc")
    (d / "trn_X.txt").write_bytes(b"red shoe\ncaf\xe9 hat\ngreen sock\n")
    with pytest.raises(DataError, match=r"trn_X\.txt: not valid UTF-8"):
        load_xc_repo(d)
    long = load_xc_repo(write_xc(tmp_path / "long", trn=("red shoe", "k" * MB, "green sock")))
    assert len(long.query_texts[1]) == MB


# ---------------------------------------------------------------- command line: rc 2, a clear error, no output
def run(main, argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse rejects a malformed flag value itself
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def other_version(folder: Path) -> None:
    edit_config(folder, lambda c: c.update(format_version=99))


CLI = {  # (main, argv with {model}/{file}/{dir}, contents of {file} or None, damage to the model or None, error)
    "add-1MB-title": (add_items.main, ["--model-dir", "{model}", "--items", "{file}"],
                      b"n1\tkettle\nn2\t" + b"k" * MB + b"\n", None, "{file} line 2: title longer than 4096"),
    "add-long-id": (add_items.main, ["--model-dir", "{model}", "--items", "{file}"],
                    b"x" * 2000 + b"\tkettle\n", None, "{file} line 1: invalid id"),
    "add-empty-file": (add_items.main, ["--model-dir", "{model}", "--items", "{file}"], b"", None, "{file}: no items"),
    "add-batch-size": (add_items.main, ["--model-dir", "{model}", "--items", "{file}", "--batch-size", 0],
                       b"n1\tkettle\n", None, "--batch-size must be >= 1"),
    "add-other-version": (add_items.main, ["--model-dir", "{model}", "--items", "{file}"], b"n1\tkettle\n",
                          other_version, "format version 99"),
    "add-corrupt-model": (add_items.main, ["--model-dir", "{model}", "--items", "{file}"], b"n1\tkettle\n",
                          lambda d: flip_byte(d / "selector.npz"), "{model}/selector.npz: checksum mismatch"),
    "add-output-not-a-model": (add_items.main, ["--model-dir", "{model}", "--items", "{file}", "--output-dir", "{dir}"],
                               b"n1\tkettle\n", None, "{dir}: not empty and not an xrmeta model directory"),
    "predict-k-zero": (predict.main, ["--model-dir", "{model}", "--queries", "{file}", "--k", 0], b"kettle\n", None,
                       "--k must be >= 1 and <= 10000, got 0"),
    "predict-k-huge": (predict.main, ["--model-dir", "{model}", "--queries", "{file}", "--k", 10**9], b"kettle\n",
                       None, "--k must be >= 1 and <= 10000"),
    "predict-beam-zero": (predict.main, ["--model-dir", "{model}", "--queries", "{file}", "--beam-size", 0],
                          b"kettle\n", None, "--beam-size must be >= 1"),
    "predict-threads": (predict.main, ["--model-dir", "{model}", "--queries", "{file}", "--threads", -3],
                        b"kettle\n", None, "--threads must be >= 1"),
    "predict-undecodable": (predict.main, ["--model-dir", "{model}", "--queries", "{file}"],
                            b"kettle\n\xff\xfe kettle\n", None, "{file} line 2: not UTF-8"),
    "predict-other-version": (predict.main, ["--model-dir", "{model}", "--queries", "{file}"], b"kettle\n",
                              other_version, "format version 99"),
    "evaluate-beam": (evaluate.main, ["--model-dir", "{model}", "--beam-size", -1], None, None,
                      "--beam-size must be >= 1"),
    "evaluate-other-version": (evaluate.main, ["--model-dir", "{model}"], None, other_version, "format version 99"),
    "evaluate-blank-dataset": (evaluate.main, ["--model-dir", "{model}", "--dataset", " "], None, None,
                               "unknown dataset"),
    "train-nan": (train.main, ["--dataset", "synthetic", "--model-dir", "{dir}/new", "--novel-frac", "nan"], None,
                  None, "argument --novel-frac: must be a finite number, got 'nan'"),
    "train-inf-threshold": (train.main, ["--dataset", "synthetic", "--model-dir", "{dir}/new", "--threshold", "inf"],
                            None, None, "argument --threshold: must be a finite number"),
    "train-over-a-non-model": (train.main, ["--dataset", "synthetic", "--model-dir", "{dir}"], None, None,
                               "{dir}: not empty and not an xrmeta model directory"),
    "train-model-dir-is-file": (train.main, ["--dataset", "synthetic", "--model-dir", "{file}"], b"x", None,
                                "{file}: exists and is not a directory"),
    "train-export-is-dir": (train.main, ["--dataset", "synthetic", "--model-dir", "{dir}/new", "--export-novel",
                                         "{dir}"], None, None, "{dir}: is a directory"),
    "train-empty-dataset": (train.main, ["--dataset", "", "--model-dir", "{dir}/new"], None, None,
                            r"trn_X\.txt: file not found"),
    "train-min-df": (train.main, ["--dataset", "synthetic", "--model-dir", "{dir}/new", "--min-df", 0], None, None,
                     "--min-df >= 1"),
}


@pytest.mark.parametrize("main,argv,content,damage,error", list(CLI.values()), ids=list(CLI))
def test_cli_rejects_with_a_clear_error_and_writes_nothing(model_dir, tmp_path, capsys, main, argv, content, damage,
                                                           error):
    other = tmp_path / "other"  # a directory that must survive untouched
    other.mkdir()
    (other / "keep.txt").write_text("keep")
    file = tmp_path / "input.txt"
    if content is not None:
        file.write_bytes(content)
    if damage:
        damage(model_dir)
    names = {"model": model_dir, "file": file, "dir": other}
    before = dir_digest(tmp_path)
    rc, out, err = run(main, [str(a).format(**names) for a in argv], capsys)
    assert rc == 2 and out == ""
    assert re.search(error.format(**{k: re.escape(str(v)) for k, v in names.items()}), err), err
    assert len(err) < 2000
    assert dir_digest(tmp_path) == before


def test_predict_cli_answers_a_1MB_query_and_an_empty_file(model_dir, tmp_path, capsys):
    queries = tmp_path / "q.txt"
    queries.write_text(f"kettle\n{too_long()}\n", encoding="utf-8")
    rc, out, err = run(predict.main, ["--model-dir", model_dir, "--queries", queries, "--k", 3], capsys)
    assert rc == 0, err
    assert {line.split("\t")[0] for line in out.splitlines()} == {"1", "2"}
    queries.write_bytes(b"")
    assert run(predict.main, ["--model-dir", model_dir, "--queries", queries], capsys)[:2] == (0, "")

