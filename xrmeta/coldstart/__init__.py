"""Stage 3: cold start. A new item, known only by its title, gets a classifier without retraining:
select its nearest observed items, assign it to a leaf cluster, generate its weight vector."""

from .assign import assign_centroid, assign_vote, leaf_centroids
from .generate import GENERATORS, Generator, make_generator
from .select import Selector

__all__ = ["GENERATORS", "Generator", "Selector", "assign_centroid", "assign_vote", "leaf_centroids", "make_generator"]
