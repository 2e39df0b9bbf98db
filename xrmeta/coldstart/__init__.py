"""Stage 3: cold start. A new item, known only by its title, gets a classifier without retraining: select its
nearest observed items, assign it to leaf clusters, generate its weight vector (`ColdStart`). Importing this
package registers every generator, the learned one included; none of it imports torch until a fit."""

from .assign import assign_centroid, assign_vote, leaf_centroids
from .generate import GENERATORS, Calibration, Generator, make_generator, register
from .learned import GeneratorError, LearnedConfig, LearnedGenerator
from .pipeline import ASSIGNERS, AUTO, SELECTORS, ColdStart, ColdStartConfig, make_selector
from .select import Selector

__all__ = ["ASSIGNERS", "AUTO", "GENERATORS", "SELECTORS", "Calibration", "ColdStart", "ColdStartConfig",
           "Generator", "GeneratorError", "LearnedConfig", "LearnedGenerator", "Selector", "assign_centroid",
           "assign_vote", "leaf_centroids", "make_generator", "make_selector", "register"]
