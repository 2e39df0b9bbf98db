"""Where the datasets live: the data home, a directory holding one subdirectory per dataset
(``homedepot/train.csv.zip``, ``pricerunner/pricerunner_aggregate.csv``).

It is, first found: the ``data_home`` argument (``--data-home`` on the command line), the environment variable
``XRMETA_DATA``, or ``shared/data`` beside the checkout (``../shared/data`` from the repository root, where
`make demo` finds it). It is read at each call, so setting ``XRMETA_DATA`` after import works.
"""

from __future__ import annotations

import os
from pathlib import Path

from .xmc import DataError

ENV = "XRMETA_DATA"
DEFAULT = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # xrmeta/data/home.py -> ../shared/data
HOMEDEPOT = ("homedepot", "train.csv.zip")
PRICERUNNER = ("pricerunner", "pricerunner_aggregate.csv")


def data_home(path: str | Path | None = None) -> Path:
    """The data home: `path` if given, else $XRMETA_DATA if set, else the default beside the checkout."""
    return _home_and_source(path)[0]


def dataset_file(dataset: tuple[str, str], home: str | Path | None = None) -> Path:
    """The file of a named dataset under the data home; a clear error, saying where it looked and how to point
    elsewhere, if it is not there."""
    folder, name = dataset
    root, source = _home_and_source(home)
    path = root / folder / name
    if not path.exists():
        raise DataError(
            f"{folder}: dataset not found: no {path} (data home {root}, {source}). Put {folder}/{name} there "
            f"(see the dataset's SOURCE.md), or point to the directory that holds {folder}/ with --data-home, "
            f"data_home=... or the environment variable {ENV}"
        )
    return path


def _home_and_source(path) -> tuple[Path, str]:
    if path is not None and str(path) != "":
        return Path(path).expanduser(), "given as data_home / --data-home"
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser(), f"from ${ENV}"
    return DEFAULT, f"the default beside the checkout; ${ENV} is not set"
