"""Datasets for product search framed as extreme multi-label classification (XMC).

A query is an input, each catalogue product is a label ("item"). Every loader returns an `XMCData`: query texts,
item texts and ids, and a binary query-by-item relevance matrix ``Y``. `load_dataset(name, data_home=None)` reads
a named dataset from the data home (`data_home()`: the argument, $XRMETA_DATA, or ../shared/data beside the
checkout). `make_zero_shot_split` hides a random set of items from training so that cold-start ("zero-shot")
ranking can be evaluated next to ordinary ranking. Bad input raises `DataError` naming the file and, where there
is one, the 1-based line number.

Modules: `xmc` (the data model and item ids), `home` (where the data lives), `readers` (file formats),
`synthetic`, `split`.
"""

from .home import ENV as DATA_HOME_ENV
from .home import data_home
from .readers import load_dataset, load_homedepot, load_pricerunner, load_xc_repo
from .split import EvalSet, ZeroShotSplit, dataset_and_split, make_zero_shot_split, split_for
from .synthetic import make_synthetic
from .xmc import MAX_ID_CHARS, DataError, XMCData, new_ids_problem, valid_id

__all__ = [
    "DATA_HOME_ENV", "MAX_ID_CHARS", "DataError", "EvalSet", "XMCData", "ZeroShotSplit", "data_home",
    "dataset_and_split", "load_dataset", "load_homedepot", "load_pricerunner", "load_xc_repo", "make_synthetic",
    "make_zero_shot_split", "new_ids_problem", "split_for", "valid_id",
]
