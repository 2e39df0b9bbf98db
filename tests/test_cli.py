"""Command-line tools on the synthetic dataset, run in-process through their main(argv)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xrmeta import add_items, evaluate, predict, train

from .conftest import dir_digest

GOOD_LINE = b"new-1\tvubo kettle steel b123\n"


def run(main, argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").split("\n") if line]


@pytest.fixture
def model_copy(cli_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(cli_model[0], folder)
    return folder


def parse_table(out: str) -> dict[tuple[str, str], list[float]]:
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(.+?)\s+(observed|zero_shot|generalized)\s+((?:[\d.]+\s*){5})$", line)
        if m:
            rows[m[1], m[2]] = [float(v) for v in m[3].split()]
    return rows


def test_train_add_predict_evaluate(cli_model, model_copy, tmp_path, capsys):
    novel_file = cli_model[1]
    ids, titles = zip(*read_tsv(novel_file))
    assert len(ids) == 200 and not set(ids) & set((model_copy / "catalog_ids.txt").read_text().split())

    rc, _, err = run(add_items.main, ["--model-dir", model_copy, "--items", novel_file, "--batch-size", 64], capsys)
    assert rc == 0, err
    assert "inserted 200 items" in err and "catalogue now holds 2000 items" in err
    assert json.loads((model_copy / "config.json").read_text())["info"]["n_inserted"] == 200

    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(titles) + "\n", encoding="utf-8")
    rc, out, err = run(predict.main, ["--model-dir", model_copy, "--queries", queries, "--k", 5,
                                      "--subset", "inserted"], capsys)
    assert rc == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows and all(len(r) == 4 for r in rows)
    by_query: dict[int, list] = {}
    for q, rank, item, score in rows:
        assert item in ids
        by_query.setdefault(int(q), []).append((int(rank), float(score), item))
    assert set(by_query) == set(range(1, 201))
    for hits in by_query.values():
        assert [r for r, _, _ in hits] == list(range(1, len(hits) + 1))
        assert all(a[1] >= b[1] > 0 for a, b in zip(hits, hits[1:]))
    top1 = np.mean([by_query[q + 1][0][2] == ids[q] for q in range(200)])
    assert top1 >= 0.15, top1  # its own title finds a new item among 200 new ones (chance: 0.005)

    rc, out, err = run(evaluate.main, ["--model-dir", model_copy], capsys)
    assert rc == 0, err
    assert "inserted" not in err  # add_items already inserted every novel item
    table = parse_table(out)
    systems = {s for s, _ in table}
    words = {"BM25 (bm25s, titles)", "title TF-IDF, brute force"}  # the same test sets, ranked by the titles
    assert len(systems) == 4 and "XR-Linear (PECOS)" in systems and words <= systems
    ours = (systems - {"XR-Linear (PECOS)"} - words).pop()
    assert set(table) == {(s, t) for s in systems for t in ("observed", "zero_shot", "generalized")}
    assert all(min(table[w, t]) > 0 for w in words for t in ("observed", "zero_shot"))
    assert all(0 <= v <= 100 for v in np.concatenate(list(table.values())))
    assert table["XR-Linear (PECOS)", "zero_shot"] == [0.0] * 5  # novel items are unreachable for PECOS
    assert min(table[ours, "zero_shot"]) > 0
    # observed items carry their titles (title trust): better than PECOS's own leaf layer on the same tree
    assert table[ours, "observed"][0] > table["XR-Linear (PECOS)", "observed"][0]


def test_evaluate_inserts_novel_items_in_memory_only(cli_model, capsys):
    before = dir_digest(cli_model[0])
    rc, out, err = run(evaluate.main, ["--model-dir", cli_model[0], "--beam-size", 5], capsys)
    assert rc == 0, err
    assert "inserted 200 novel items of the split (in memory only)" in err
    assert "beam 5" in out and len(parse_table(out)) == 12  # 4 systems x 3 test sets
    assert dir_digest(cli_model[0]) == before


MALFORMED = {
    "field-count": GOOD_LINE + b"new-2\tsome kettle\textra\n",
    "empty-title": GOOD_LINE + b"new-2\t   \n",
    "non-utf8": GOOD_LINE + b"new-2\tcaf\xe9 kettle\n",
    "duplicate-id": GOOD_LINE + b"new-1\tanother kettle\n",
}


@pytest.mark.parametrize("content", [*MALFORMED.values(), GOOD_LINE + b"{trained}\tkettle\n"],
                         ids=[*MALFORMED, "id-in-model"])
def test_add_items_malformed_file_changes_nothing(model_copy, tmp_path, capsys, content):
    trained_id = (model_copy / "catalog_ids.txt").read_text().split("\n")[0]
    items = tmp_path / "items.tsv"
    items.write_bytes(content.replace(b"{trained}", trained_id.encode()))
    before = dir_digest(model_copy)
    rc, out, err = run(add_items.main, ["--model-dir", model_copy, "--items", items], capsys)
    assert rc == 2 and err.startswith("error: ") and out == ""
    assert dir_digest(model_copy) == before


@pytest.mark.parametrize("content", [
    MALFORMED["field-count"],
    MALFORMED["empty-title"],
    MALFORMED["non-utf8"],
    MALFORMED["duplicate-id"],
], ids=list(MALFORMED))
def test_add_items_error_names_file_and_line(model_copy, tmp_path, capsys, content):
    items = tmp_path / "items.tsv"
    items.write_bytes(content)
    rc, _, err = run(add_items.main, ["--model-dir", model_copy, "--items", items], capsys)
    assert rc == 2
    assert f"{items} line 2" in err


def test_add_items_title_with_unicode_line_separator(model_copy, tmp_path, capsys):
    items = tmp_path / "items.tsv"
    items.write_text("new-1\tvubo kettle\u2028steel b123\nnew-2\tzuvo lamp b77\n", encoding="utf-8")
    rc, _, err = run(add_items.main, ["--model-dir", model_copy, "--items", items], capsys)
    assert rc == 0, err
    assert "inserted 2 items" in err


def test_predict_missing_model_dir(tmp_path, capsys):
    queries = tmp_path / "q.txt"
    queries.write_text("kettle\n")
    rc, out, err = run(predict.main, ["--model-dir", tmp_path / "nope", "--queries", queries], capsys)
    assert rc == 2 and out == ""
    assert f"{tmp_path / 'nope'}: not an xrmeta model directory" in err


def test_evaluate_model_of_another_split_fails_clearly(model_copy, capsys):
    config = json.loads((model_copy / "config.json").read_text())
    config["info"]["split"]["seed"] = 1  # as if trained on the split of seed 1
    (model_copy / "config.json").write_text(json.dumps(config))
    rc, out, err = run(evaluate.main, ["--model-dir", model_copy], capsys)
    assert rc == 2 and out == ""
    assert "trained items differ from this dataset's split: wrong dataset or seed?" in err


def test_train_unknown_dataset(tmp_path, capsys):
    rc, _, err = run(train.main, ["--dataset", "no-such-data", "--model-dir", tmp_path / "m"], capsys)
    assert rc == 2 and "unknown dataset" in err and not (tmp_path / "m").exists()


def test_train_help_documents_every_flag():
    res = subprocess.run([sys.executable, "-m", "xrmeta.train", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parents[1])
    assert res.returncode == 0, res.stderr
    squashed = "".join(res.stdout.split())  # argparse re-wraps help text
    actions = [a for a in train.build_parser()._actions if a.option_strings and a.dest != "help"]
    assert len(actions) >= 20
    for a in actions:
        assert a.help and a.help.strip(), a.option_strings
        assert a.option_strings[0] in res.stdout
        for part in re.split(r"%\(\w+\)s", a.help):  # literal text around argparse placeholders
            assert "".join(part.split()) in squashed, a.option_strings
