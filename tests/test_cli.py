"""Command-line tools on the synthetic dataset, run in-process through their main(argv)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xrmeta.cli import add_feedback, add_items, evaluate, predict, retrain, shard, train, train_generator
from xrmeta.model import XRMetaModel

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
    # the first item, inserted alone, carries the first-use costs: the speed is that of the other 199
    assert re.search(r"inserted 200 items: the first alone in [\d.]+ s \(with its first-use costs\); "
                     r"the other 199 in [\d.]+ s \([\d,]+ items/s\); catalogue now holds 2000 items", err), err
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


def test_add_items_single_item_reports_no_speed(model_copy, tmp_path, capsys):
    items = tmp_path / "items.tsv"
    items.write_bytes(GOOD_LINE)
    rc, _, err = run(add_items.main, ["--model-dir", model_copy, "--items", items, "--threads", 1], capsys)
    assert rc == 0, err
    assert "inserted 1 item: the first alone in" in err and "items/s" not in err


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


COMMANDS = {"train": train, "train_generator": train_generator, "add_items": add_items, "predict": predict,
            "evaluate": evaluate, "retrain": retrain, "add_feedback": add_feedback, "shard": shard}
CLI_DIR = Path(__file__).parents[1] / "xrmeta" / "cli"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_documents_every_flag(name, capsys):
    module = COMMANDS[name]
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: xrmeta-{name.replace('_', '-')} ")
    squashed = "".join(out.split())  # argparse re-wraps help text
    parser = module.build_parser()
    assert len(parser.description) > 60
    actions = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(actions) >= (20 if name == "train" else 3)
    for a in actions:
        assert a.help and a.help.strip(), a.option_strings
        assert a.option_strings[0] in out
        for part in re.split(r"%\(\w+\)s", a.help):  # literal text around argparse placeholders
            assert "".join(part.split()) in squashed, a.option_strings


def test_python_m_runs_each_command():
    """`python -m xrmeta.<command> --help` (the old module paths, now shims), all in one interpreter."""
    script = (
        "import contextlib, io, runpy, sys\n"
        f"for name in {list(COMMANDS)}:\n"
        "    sys.argv = [name, '--help']\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            runpy.run_module('xrmeta.' + name, run_name='__main__', alter_sys=True)\n"
        "        except SystemExit as e:\n"
        "            code = e.code\n"
        "    print(name, code, out.getvalue().split()[1])\n"
    )
    res = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", script], capture_output=True,
                         text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:-1] == [f"{n} 0 xrmeta-{n.replace('_', '-')}" for n in COMMANDS]


def test_console_scripts_declared():
    tree = ast.parse((Path(__file__).parents[1] / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    entry_points = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "entry_points"))
    scripts = dict(s.replace(" ", "").split("=") for s in entry_points["console_scripts"])
    assert scripts == {f"xrmeta-{n.replace('_', '-')}": f"xrmeta.cli.{n}:main" for n in COMMANDS}
    assert {p.stem for p in CLI_DIR.glob("*.py")} == set(COMMANDS) | {"__init__", "common"}


def test_no_command_imports_another():
    """The commands are siblings: each imports the library and `cli.common`, never another command (nor does
    common or the library import a command)."""
    def imported(path: Path) -> set[str]:
        package = "xrmeta.cli" if path.parent == CLI_DIR else "xrmeta"
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                module = ".".join(p for p in (base, node.module) if p)
                names |= {module} | {f"{module}.{a.name}" for a in node.names}
        return names

    commands = {f"xrmeta.cli.{n}" for n in COMMANDS} | {f"xrmeta.{n}" for n in COMMANDS}
    for path in sorted(CLI_DIR.glob("*.py")):
        own = {f"xrmeta.cli.{path.stem}", f"xrmeta.{path.stem}"}
        assert not imported(path) & (commands - own), path.name
    for path in sorted(CLI_DIR.parent.glob("*.py")):
        found = imported(path) & commands
        if path.stem in COMMANDS:  # a `python -m` shim: the command it names, nothing else
            assert found == {f"xrmeta.cli.{path.stem}"}, path.name
        else:
            assert not found and not any(n.startswith("xrmeta.cli") for n in imported(path)), path.name


class _Padded:
    """A model stand-in whose predict pads as before (None) and after (\"\") the Results change."""

    def predict(self, queries, k=10, beam_size=None, subset="all", threads=1):
        ids = np.array([["a", "b", None], ["c", "", ""]], dtype=object)[: len(queries), :k]
        return ids, np.array([[0.9, 0.5, 0.0], [0.7, -np.inf, -np.inf]], dtype=np.float32)[: len(queries), :k]


def test_predict_prints_no_padding(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(XRMetaModel, "load", classmethod(lambda cls, folder: _Padded()))
    queries = tmp_path / "q.txt"
    queries.write_text("kettle\nlamp\n")
    rc, out, err = run(predict.main, ["--model-dir", tmp_path, "--queries", queries, "--k", 3], capsys)
    assert rc == 0, err
    assert out == "1\t1\ta\t0.9\n1\t2\tb\t0.5\n2\t1\tc\t0.7\n"


@pytest.mark.parametrize("main", [train.main, train_generator.main, evaluate.main])
def test_data_home_flag_and_environment(main, cli_model, tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = (["--dataset", "homedepot", "--model-dir", tmp_path / "new"] if main is train.main else
            ["--model-dir", cli_model[0], "--dataset", "pricerunner"])
    name = "homedepot/train.csv.zip" if main is train.main else "pricerunner/pricerunner_aggregate.csv"
    before = dir_digest(cli_model[0])
    rc, out, err = run(main, argv + ["--data-home", empty], capsys)
    assert rc == 2 and out == "" and f"no {empty}/{name} " in err and "given as data_home / --data-home" in err
    monkeypatch.setenv("XRMETA_DATA", str(empty))
    rc, out, err = run(main, argv, capsys)
    assert rc == 2 and f"no {empty}/{name} " in err and "from $XRMETA_DATA" in err
    assert not (tmp_path / "new").exists() and dir_digest(cli_model[0]) == before


@pytest.mark.parametrize("main,argv", [
    (predict.main, ["--queries", "-"]), (evaluate.main, []), (add_items.main, ["--items", "x"]),
    (train_generator.main, []),
])
@pytest.mark.parametrize("threads", [0, -2])
def test_threads_rule(main, argv, threads, tmp_path, capsys):
    rc, out, err = run(main, ["--model-dir", tmp_path / "m", *argv, "--threads", threads], capsys)
    assert rc == 2 and out == "" and f"--threads must be >= 1 (or -1 for all cores), got {threads}" in err
