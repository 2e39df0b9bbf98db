"""The README's Python snippet runs as written, on a small synthetic catalogue."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_python_snippet_runs(data, split, tmp_path, monkeypatch):
    (snippet,) = python_snippets()
    monkeypatch.chdir(tmp_path)  # it saves a model directory under runs/
    names = {
        "query_texts": [data.query_texts[i] for i in split.train_queries],
        "Y": split.Y_train,
        "item_texts": [data.item_texts[j] for j in split.observed],
        "item_ids": [data.item_ids[j] for j in split.observed],
    }
    exec(compile(snippet, str(README), "exec"), names)
    model = names["model"]
    assert (tmp_path / "runs" / "my-model" / "config.json").exists()
    assert len(model) == len(split.observed)  # the snippet removed what it inserted
    assert "sku-123" not in model
