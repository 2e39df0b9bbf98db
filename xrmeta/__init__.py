"""xrmeta: product search over an XR-Linear tree (PECOS) whose catalogue grows without retraining.

`XRMetaModel.train` learns a TF-IDF featurizer and a tree over the items that have clicks; `add_items` inserts
items known only by their titles (cold start: nearest observed items, leaf clusters, a generated sparse
classifier) and they are searchable at once; `predict` returns `Results(ids, scores)`. `save` / `load` keep a
model directory, crash-safe. Serving needs numpy, scipy, libpecos and the compiled
core `xrmeta._core` (cpp/, built by `pip install`); training the title trust or the
learned generator also needs torch (`pip install 'xrmeta[train]'`). Configs: `FeaturizerConfig`, `TreeConfig`,
`ColdStartConfig`, `LearnedConfig`; data: `load_dataset`, `make_synthetic`, `make_zero_shot_split`.
"""

from .coldstart import ColdStartConfig, LearnedConfig
from .data import XMCData, load_dataset, make_synthetic, make_zero_shot_split
from .errors import ModelError
from .featurize import FeaturizerConfig
from .model import Results, XRMetaModel
from .tree import TreeConfig

__all__ = ["ColdStartConfig", "FeaturizerConfig", "LearnedConfig", "ModelError", "Results", "TreeConfig",
           "XMCData", "XRMetaModel", "load_dataset", "make_synthetic", "make_zero_shot_split"]
