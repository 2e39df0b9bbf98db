"""Tests for xrmeta.data: loaders, validation, synthetic data and the zero-shot split."""

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from xrmeta import data as D
from xrmeta.data import (
    DataError,
    XMCData,
    load_dataset,
    load_homedepot,
    load_pricerunner,
    load_xc_repo,
    make_synthetic,
    make_zero_shot_split,
)

# ---------------------------------------------------------------- helpers

HD_HEADER = ["id", "product_uid", "product_title", "search_term", "relevance"]


def write_homedepot(path: Path, rows, header=HD_HEADER, member="train.csv") -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC if header == HD_HEADER else csv.QUOTE_MINIMAL)
    w.writerow(header)
    w.writerows(rows)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, buf.getvalue().encode("latin-1"))
    return path


def positives(d: XMCData) -> set[tuple[str, str]]:
    """(query text, item id) pairs marked positive."""
    Y = d.Y.tocoo()
    return {(d.query_texts[q], d.item_ids[i]) for q, i in zip(Y.row, Y.col)}


def as_sets(Y) -> list[set[int]]:
    Y = sp.csr_matrix(Y)
    return [set(Y.indices[Y.indptr[r] : Y.indptr[r + 1]].tolist()) for r in range(Y.shape[0])]


# ---------------------------------------------------------------- Home Depot

HD_ROWS = [
    [1, "100001", "Simpson Angle", "angle bracket", 3],
    [2, "100001", "Simpson Angle", "l bracket", 2.5],
    [3, "100002", "BEHR DeckOver", "deck over", 3],
    [4, "100002", "BEHR DeckOver", "Angle  Bracket ", 1],  # same query as row 1 after normalising
    [5, "100003", "Delta Shower Trim", "rain shower head", 2.33],
    [6, "100004", "Lonely Widget Caf\u00e9", "widget", 1.67],  # product and query without positive
    [7, "100003", "Delta Shower Trim", "shower", 3],  # pair rated twice: mean 2.0
    [8, "100003", "Delta Shower Trim", "shower", 1],
]


def test_homedepot_queries_items_and_threshold(tmp_path):
    path = write_homedepot(tmp_path / "train.csv.zip", HD_ROWS)
    d = load_homedepot(path)
    assert d.name == "homedepot"
    # Every product is a catalogue item, in first-seen order, even without a positive.
    assert d.item_ids == ["100001", "100002", "100003", "100004"]
    assert d.item_texts[3] == "Lonely Widget Caf\u00e9"
    # "widget" and "shower" (mean 2.0) have no positive and are dropped.
    assert d.query_texts == ["angle bracket", "l bracket", "deck over", "rain shower head"]
    assert positives(d) == {
        ("angle bracket", "100001"),
        ("l bracket", "100001"),
        ("deck over", "100002"),
        ("rain shower head", "100003"),  # 2.33 >= 2.33 exactly
    }
    assert d.Y.dtype == np.float32 and d.Y.shape == (4, 4)
    assert np.all(d.Y.data == 1.0)
    assert d.test_queries is None


def test_homedepot_threshold_and_pair_mean(tmp_path):
    path = write_homedepot(tmp_path / "train.csv.zip", HD_ROWS)
    strict = load_homedepot(path, min_relevance=2.9)
    assert positives(strict) == {("angle bracket", "100001"), ("deck over", "100002")}
    loose = load_homedepot(path, min_relevance=2.0)
    # The pair ("shower", 100003) has ratings 3 and 1: its mean of 2.0 now passes.
    assert ("shower", "100003") in positives(loose)
    assert ("widget", "100004") not in positives(loose)
    # Normalised dedup: "Angle  Bracket " is the same query, kept with its first-seen text.
    everything = load_homedepot(path, min_relevance=0.0)
    assert everything.query_texts.count("angle bracket") == 1
    assert ("angle bracket", "100002") in positives(everything)
    assert len(everything.query_texts) == 6


def test_homedepot_plain_csv_and_directory(tmp_path):
    write_homedepot(tmp_path / "train.csv.zip", HD_ROWS)
    assert positives(load_homedepot(tmp_path)) == positives(load_homedepot(tmp_path / "train.csv.zip"))
    with zipfile.ZipFile(tmp_path / "train.csv.zip") as zf:
        (tmp_path / "train.csv").write_bytes(zf.read("train.csv"))
    assert positives(load_homedepot(tmp_path / "train.csv")) == positives(load_homedepot(tmp_path))


def test_homedepot_errors(tmp_path):
    with pytest.raises(DataError, match="nothere.csv.zip: file not found"):
        load_homedepot(tmp_path / "nothere.csv.zip")

    bad = write_homedepot(tmp_path / "cols.zip", [[1, "1", "t", "q"]], header=HD_HEADER[:4])
    msg = r"cols\.zip:train\.csv: missing columns \['relevance'\]; found \[.*'search_term'\]"
    with pytest.raises(DataError, match=msg):
        load_homedepot(bad)

    rows = HD_ROWS[:2] + [[9, "100009", "  ", "some query", 3]]
    with pytest.raises(DataError, match=r"title\.zip:train\.csv line 4: empty product_title"):
        load_homedepot(write_homedepot(tmp_path / "title.zip", rows))

    rows = HD_ROWS[:1] + [[9, "100009", "Thing", "", 3]]
    with pytest.raises(DataError, match=r"term\.zip:train\.csv line 3: empty search_term"):
        load_homedepot(write_homedepot(tmp_path / "term.zip", rows))

    rows = HD_ROWS[:3] + [[9, "100009", "Thing", "q", "high"]]
    with pytest.raises(DataError, match=r"rel\.zip:train\.csv line 5: non-numeric relevance 'high'"):
        load_homedepot(write_homedepot(tmp_path / "rel.zip", rows))

    with pytest.raises(DataError, match=r"member\.zip: no member 'train\.csv'"):
        load_homedepot(write_homedepot(tmp_path / "member.zip", HD_ROWS, member="other.csv"))

    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(DataError, match=r"fake\.zip: not a zip file"):
        load_homedepot(tmp_path / "fake.zip")


# ---------------------------------------------------------------- PriceRunner

PR_TEXT = """Product ID,Product Title,Merchant ID,Cluster ID,Cluster Label,Category ID,Category Label
1,apple iphone 8 plus 64gb silver,1,1,Apple iPhone 8 Plus 64GB,2612,Mobile Phones
2,Apple  iPhone 8 Plus 64GB Silver ,2,7,Apple iPhone 8 Plus 64GB (alt),2612,Mobile Phones
3,loewe connect 55 uhd,3,5,Loewe Connect UHD 55" DR+,2614,TVs
4,apple iphone 8 plus 64gb gold,4,1,Apple iPhone 8 Plus 64GB,2612,Mobile Phones
"""


def test_pricerunner(tmp_path):
    path = tmp_path / "pr.csv"
    path.write_text(PR_TEXT, encoding="utf-8")
    d = load_pricerunner(path)
    assert d.name == "pricerunner"
    assert d.item_ids == ["1", "7", "5"]
    # A bare quote inside an unquoted field is kept as text.
    assert d.item_texts == [
        "Apple iPhone 8 Plus 64GB",
        "Apple iPhone 8 Plus 64GB (alt)",
        'Loewe Connect UHD 55" DR+',
    ]
    # Rows 1 and 2 normalise to the same title: one query, positives merged.
    assert d.query_texts == [
        "apple iphone 8 plus 64gb silver",
        "loewe connect 55 uhd",
        "apple iphone 8 plus 64gb gold",
    ]
    assert as_sets(d.Y) == [{0, 1}, {2}, {0}]
    assert d.Y.shape == (3, 3) and d.Y.dtype == np.float32


def test_pricerunner_errors(tmp_path):
    with pytest.raises(DataError, match=r"missing\.csv: file not found"):
        load_pricerunner(tmp_path / "missing.csv")

    path = tmp_path / "cols.csv"
    path.write_text("Product ID,Product Title,Merchant ID\n1,x,2\n", encoding="utf-8")
    msg = r"cols\.csv: missing columns \['Cluster ID', 'Cluster Label'\]; found \['Product ID'"
    with pytest.raises(DataError, match=msg):
        load_pricerunner(path)

    lines = PR_TEXT.splitlines()
    path = tmp_path / "empty.csv"
    path.write_text("\n".join(lines[:3] + ["9,  ,3,5,Label,1,Cat"]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.csv line 4: empty Product Title"):
        load_pricerunner(path)

    path = tmp_path / "label.csv"
    path.write_text("\n".join(lines[:2] + ["9,title,3,5,,1,Cat"]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"label\.csv line 3: empty Cluster Label"):
        load_pricerunner(path)

    path = tmp_path / "fields.csv"
    path.write_text("\n".join(lines[:2] + ["9,title,3,5"]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"fields\.csv line 3: expected 7 fields, got 4"):
        load_pricerunner(path)


# ---------------------------------------------------------------- XC repository


def write_xc(d: Path, trn=("red shoe", "blue hat", "green sock"), tst=("red hat",),
             labels=("shoe", "hat", "sock"), Y_trn=None, Y_tst=None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "trn_X.txt").write_text("".join(t + "\n" for t in trn), encoding="utf-8")
    (d / "tst_X.txt").write_text("".join(t + "\n" for t in tst), encoding="utf-8")
    (d / "Y.txt").write_text("".join(t + "\n" for t in labels), encoding="utf-8")
    if Y_trn is None:
        Y_trn = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32))
    if Y_tst is None:
        Y_tst = sp.csr_matrix(np.array([[0, 1, 0]], dtype=np.float32))
    sp.save_npz(d / "Y.trn.npz", Y_trn)
    sp.save_npz(d / "Y.tst.npz", Y_tst)
    return d


def test_xc_repo(tmp_path):
    d = load_xc_repo(write_xc(tmp_path / "tiny"))
    assert d.name == "tiny"
    assert d.query_texts == ["red shoe", "blue hat", "green sock", "red hat"]
    assert d.item_texts == ["shoe", "hat", "sock"]
    assert d.item_ids == ["0", "1", "2"]
    assert as_sets(d.Y) == [{0}, {1}, {2}, {1}]
    assert d.test_queries.dtype == np.int64 and d.test_queries.tolist() == [3]
    assert load_dataset(str(tmp_path / "tiny")).query_texts == d.query_texts


def test_xc_repo_tab_ids_and_weighted_labels(tmp_path):
    Y_trn = sp.csr_matrix(np.array([[0.5, 0, 2.0], [0, 1, 0], [0, 0, 1]], dtype=np.float64))
    d = load_xc_repo(write_xc(tmp_path / "ids", labels=("a1\tshoe", "b2\that", "c3\tsock"), Y_trn=Y_trn))
    assert d.item_ids == ["a1", "b2", "c3"] and d.item_texts == ["shoe", "hat", "sock"]
    assert d.Y.dtype == np.float32 and np.all(d.Y.data == 1.0)
    assert as_sets(d.Y)[0] == {0, 2}


def test_xc_repo_errors(tmp_path):
    with pytest.raises(DataError, match=r"Y\.trn\.npz: file not found"):
        d = write_xc(tmp_path / "missing")
        (d / "Y.trn.npz").unlink()
        load_xc_repo(d)

    # A label id beyond Y.txt, written without scipy noticing.
    indices, indptr = np.array([0, 1, 7]), np.array([0, 1, 2, 3])
    bad = sp.csr_matrix((np.ones(3, np.float32), indices, indptr), shape=(3, 3))
    with pytest.raises(DataError, match=r"Y\.trn\.npz: label id 7 out of range: Y\.txt has 3 labels"):
        load_xc_repo(write_xc(tmp_path / "range", Y_trn=bad))

    with pytest.raises(DataError, match=r"Y\.tst\.npz: has 1 rows but tst_X\.txt has 2 lines"):
        load_xc_repo(write_xc(tmp_path / "rows", tst=("red hat", "blue shoe")))

    wide = sp.csr_matrix(np.eye(3, 4, dtype=np.float32))
    with pytest.raises(DataError, match=r"Y\.trn\.npz: has 4 columns but Y\.txt has 3 labels"):
        load_xc_repo(write_xc(tmp_path / "cols", Y_trn=wide))

    with pytest.raises(DataError, match=r"trn_X\.txt line 2: empty text"):
        load_xc_repo(write_xc(tmp_path / "empty", trn=("red shoe", " ", "green sock")))

    with pytest.raises(DataError, match=r"Y\.txt line 3: duplicate id 'a'"):
        load_xc_repo(write_xc(tmp_path / "dup", labels=("a\tx", "b\ty", "a\tz")))

    with pytest.raises(DataError, match="not a directory"):
        load_xc_repo(tmp_path / "nope")


def test_load_dataset_unknown():
    with pytest.raises(DataError, match="no-such-set: unknown dataset"):
        load_dataset("no-such-set")


# ---------------------------------------------------------------- XMCData validation


def test_xmcdata_validates_and_normalises():
    rows, cols = np.array([0, 0, 1]), np.array([1, 1, 0])
    Y = sp.coo_matrix((np.array([2.0, 1.0, 0.0]), (rows, cols)), shape=(2, 2))
    d = XMCData("t", ["q1", "q2"], ["a", "b"], ["x", "y"], Y, test_queries=np.array([1]))
    assert isinstance(d.Y, sp.csr_matrix) and d.Y.dtype == np.float32
    assert d.Y.nnz == 1 and d.Y[0, 1] == 1.0  # duplicates summed, binarised; explicit zero gone
    assert d.Y.has_sorted_indices
    Y = sp.csr_matrix((2, 2), dtype=np.float32)
    with pytest.raises(DataError, match="3 query texts but Y has 2 rows"):
        XMCData("t", ["a", "b", "c"], ["a", "b"], ["x", "y"], Y)
    with pytest.raises(DataError, match="1 item ids but Y has 2 columns"):
        XMCData("t", ["a", "b"], ["a", "b"], ["x"], Y)
    with pytest.raises(DataError, match="duplicate item id 'x'"):
        XMCData("t", ["a", "b"], ["a", "b"], ["x", "x"], Y)
    with pytest.raises(DataError, match="empty or non-string item text at index 1"):
        XMCData("t", ["a", "b"], ["a", ""], ["x", "y"], Y)
    with pytest.raises(DataError, match="test_queries out of range"):
        XMCData("t", ["a", "b"], ["a", "b"], ["x", "y"], Y, test_queries=np.array([2]))


# ---------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_shaped():
    a, b = make_synthetic(300, 900, seed=3), make_synthetic(300, 900, seed=3)
    assert a.query_texts == b.query_texts and a.item_texts == b.item_texts
    assert (a.Y != b.Y).nnz == 0
    assert make_synthetic(300, 900, seed=4).query_texts != a.query_texts
    assert a.Y.shape == (900, 300) and len(a.item_ids) == 300
    assert len(set(a.query_texts)) == 900
    assert np.all(a.Y.getnnz(axis=1) >= 1)
    assert all(4 <= len(t.split()) <= 8 for t in a.item_texts)
    assert all(2 <= len(q.split()) <= 4 for q in a.query_texts)
    # Most items get a query; some second-item positives exist.
    assert (a.Y.getnnz(axis=0) > 0).mean() > 0.8
    assert (a.Y.getnnz(axis=1) == 2).sum() > 0
    # Query words come from the positive item's title (allowing for one typo).
    Y = a.Y.tocsr()
    q = 0
    title = set(a.item_texts[Y.indices[Y.indptr[q]]].split())
    assert sum(w not in title for w in a.query_texts[q].split()) <= 1


def test_synthetic_default_shape():
    d = load_dataset("synthetic")
    assert d.Y.shape == (6000, 2000)


# ---------------------------------------------------------------- zero-shot split


@pytest.fixture(scope="module")
def synth():
    return make_synthetic(500, 1500, seed=1)


def check_split(data: XMCData, s) -> None:
    n_q, n_i = data.Y.shape
    # observed / novel partition the items
    assert np.array_equal(np.sort(np.concatenate([s.observed, s.novel])), np.arange(n_i))
    assert np.all(np.diff(s.observed) > 0) and np.all(np.diff(s.novel) > 0)
    assert s.observed.dtype == np.int64 and s.novel.dtype == np.int64
    # training sees no novel item, and every training query has a positive
    assert s.Y_train.shape == (len(s.train_queries), len(s.observed))
    assert np.all(s.Y_train.getnnz(axis=1) > 0)
    seen_items = s.observed[np.unique(s.Y_train.indices)]
    assert not np.isin(seen_items, s.novel).any()
    # Y_train columns map back to the original labels
    assert (data.Y[s.train_queries][:, s.observed] != s.Y_train).nnz == 0
    test = set(range(n_q)) - set(s.train_queries.tolist())
    assert set(s.generalized_set.queries.tolist()) <= test

    obs, zs, gen = s.eval_sets()
    assert [e.name for e in (obs, zs, gen)] == ["observed", "zero_shot", "generalized"]
    for e in (obs, zs, gen):
        assert e.Y.shape == (len(e.queries), n_i)
        assert e.queries.dtype == np.int64 and e.candidates.dtype == np.int64
        assert np.all(e.Y.getnnz(axis=1) > 0)
        assert set(np.unique(e.Y.indices).tolist()) <= set(e.candidates.tolist())
        # truth is the original labels restricted to the candidates
        full = data.Y[e.queries][:, e.candidates]
        assert (full != e.Y[:, e.candidates]).nnz == 0
    assert np.array_equal(obs.candidates, s.observed)
    assert np.array_equal(zs.candidates, s.novel)
    assert np.array_equal(gen.candidates, np.arange(n_i))
    assert not np.isin(zs.Y.indices, s.observed).any()
    assert not np.isin(obs.Y.indices, s.novel).any()
    # generalized = all test queries with a positive; the other two are subsets of it
    assert set(obs.queries.tolist()) | set(zs.queries.tolist()) == set(gen.queries.tolist())
    assert gen.Y.nnz == obs.Y.nnz + zs.Y.nnz


def test_split_invariants_and_sizes(synth):
    s = make_zero_shot_split(synth, novel_frac=0.1, test_frac=0.2, seed=0)
    check_split(synth, s)
    assert len(s.novel) == 50
    # novel items all have a positive somewhere
    assert np.all(synth.Y.getnnz(axis=0)[s.novel] > 0)
    n_test = 1500 - len(set(range(1500)) - set(s.generalized_set.queries.tolist()))
    assert len(s.generalized_set.queries) == 300  # every synthetic query has a positive
    assert n_test == 300
    # A train query loses only labels on novel items, so most train queries survive.
    assert 0.8 * 1200 < len(s.train_queries) <= 1200
    assert len(s.zero_shot_set.queries) > 0 and len(s.observed_set.queries) > 200


def test_split_deterministic(synth):
    a = make_zero_shot_split(synth, seed=7)
    b = make_zero_shot_split(synth, seed=7)
    c = make_zero_shot_split(synth, seed=8)
    assert np.array_equal(a.novel, b.novel) and np.array_equal(a.train_queries, b.train_queries)
    assert (a.Y_train != b.Y_train).nnz == 0
    assert np.array_equal(a.zero_shot_set.queries, b.zero_shot_set.queries)
    assert not np.array_equal(a.novel, c.novel)
    assert not np.array_equal(a.train_queries, c.train_queries)


def test_split_items_without_positive_stay_observed():
    Y = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]], dtype=np.float32))
    d = XMCData("t", ["a", "b", "c"], list("wxyz"), list("wxyz"), Y)
    for seed in range(5):
        s = make_zero_shot_split(d, novel_frac=0.75, test_frac=0.34, seed=seed)
        # round(0.75 * 4) = 3 but only items 0 and 1 have positives
        assert set(s.novel.tolist()) == {0, 1}
        check_split(d, s)


def test_split_uses_predefined_test_queries(tmp_path):
    trn = [f"q{i}" for i in range(6)]
    Y_trn = sp.csr_matrix(np.eye(6, 3, dtype=np.float32) + np.eye(6, 3, k=-3, dtype=np.float32))
    data = load_xc_repo(write_xc(tmp_path / "xc", trn=trn, tst=("t0", "t1"), Y_trn=Y_trn,
                                 Y_tst=sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]], np.float32))))
    s = make_zero_shot_split(data, novel_frac=1 / 3, test_frac=0.9, seed=0)
    check_split(data, s)
    assert s.generalized_set.queries.tolist() == [6, 7]
    assert set(s.train_queries.tolist()) <= set(range(6))
    assert len(s.novel) == 1


# ---------------------------------------------------------------- data home: argument, $XRMETA_DATA, default


def make_data_home(root: Path) -> Path:
    """A data home with tiny Home Depot and PriceRunner files in their real formats and places."""
    (root / "homedepot").mkdir(parents=True)
    write_homedepot(root / "homedepot" / "train.csv.zip", HD_ROWS)
    (root / "pricerunner").mkdir()
    (root / "pricerunner" / "pricerunner_aggregate.csv").write_text(PR_TEXT, encoding="utf-8")
    return root


def test_data_home_argument_reads_named_datasets(tmp_path, monkeypatch):
    monkeypatch.delenv(D.DATA_HOME_ENV, raising=False)
    home = make_data_home(tmp_path / "home")
    assert D.DATA_HOME_ENV == "XRMETA_DATA"
    hd = load_dataset("homedepot", data_home=home)
    assert hd.item_ids == ["100001", "100002", "100003", "100004"]
    assert positives(hd) == positives(load_homedepot(home / "homedepot" / "train.csv.zip"))
    assert load_dataset("pricerunner", data_home=str(home)).n_items == 3
    assert load_homedepot(data_home=home).item_ids == hd.item_ids and load_pricerunner(data_home=home).n_items == 3
    write_xc(home / "tiny")  # an XC-repository directory is found by name in the data home too
    assert load_dataset("tiny", data_home=home).item_texts == ["shoe", "hat", "sock"]


def test_data_home_from_environment_read_at_each_call(tmp_path, monkeypatch):
    home = make_data_home(tmp_path / "env-home")
    monkeypatch.setenv("XRMETA_DATA", str(home))
    assert D.data_home() == home
    assert load_dataset("pricerunner").n_queries == 3
    assert load_homedepot().n_items == 4
    other = make_data_home(tmp_path / "arg-home")
    (other / "pricerunner" / "pricerunner_aggregate.csv").write_text(PR_TEXT.rsplit("\n", 2)[0] + "\n")
    assert load_dataset("pricerunner", data_home=other).n_queries == 2  # the argument wins over the variable
    assert D.data_home(other) == other
    monkeypatch.delenv("XRMETA_DATA")
    assert D.data_home() == Path(D.__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data


@pytest.mark.parametrize("name,file", [("homedepot", "train.csv.zip"), ("pricerunner", "pricerunner_aggregate.csv")])
def test_missing_dataset_says_where_it_looked_and_how_to_point_elsewhere(tmp_path, monkeypatch, name, file):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("XRMETA_DATA", str(empty))
    with pytest.raises(DataError) as e:
        load_dataset(name)
    msg = str(e.value)
    assert str(empty / name / file) in msg and "from $XRMETA_DATA" in msg
    assert "--data-home" in msg and "data_home=" in msg and "XRMETA_DATA" in msg
    monkeypatch.delenv("XRMETA_DATA")
    with pytest.raises(DataError, match=f"no {tmp_path / 'nope' / name / file} .*given as data_home"):
        load_dataset(name, data_home=tmp_path / "nope")
    with pytest.raises(DataError, match="unknown dataset.*in the data home"):
        load_dataset("no-such-data", data_home=empty)


def test_new_ids_problem():
    assert D.new_ids_problem(["a", "b"], {"c"}) is None
    assert "duplicate ids" in D.new_ids_problem(["a", "a"])
    assert D.new_ids_problem(["a", "c"], {"c": 0}) == "ids already in the catalogue ['c']"
    for bad in ["", " ", "a\tb", "a\nb", "x" * (D.MAX_ID_CHARS + 1), "\ud800", 7, None]:
        assert not D.valid_id(bad)
        assert "item ids must be non-empty strings" in D.new_ids_problem(["ok", bad])
    assert D.valid_id("x" * D.MAX_ID_CHARS) and D.valid_id("caf\u00e9 #1")


# ---------------------------------------------------------------- real data (skipped if absent)

HD_PATH = D.data_home() / "homedepot" / "train.csv.zip"
PR_PATH = D.data_home() / "pricerunner" / "pricerunner_aggregate.csv"


@pytest.mark.skipif(not PR_PATH.exists(), reason="PriceRunner data not available")
def test_real_pricerunner():
    d = load_dataset("pricerunner")
    assert d.n_items == 13233
    assert 30000 < d.n_queries <= 35311
    assert np.all(d.Y.getnnz(axis=1) >= 1) and np.all(d.Y.getnnz(axis=0) >= 1)
    assert any('"' in t for t in d.item_texts)
    check_split(d, make_zero_shot_split(d))


@pytest.mark.skipif(not HD_PATH.exists(), reason="Home Depot data not available")
def test_real_homedepot():
    d = load_dataset("homedepot")
    assert d.n_items == 54667
    assert 9000 < d.n_queries <= 11795
    assert np.all(d.Y.getnnz(axis=1) >= 1)
    assert 40000 < d.Y.nnz < 74067
    check_split(d, make_zero_shot_split(d))
