"""Numba kernels for the hot paths, by stage: `search` (beam search, leaf scoring, the whole search in one call),
`coldstart` (neighbour search, cluster vote, sparse mixing, the learned generator's features), `meta` (the
learned generator's forward pass). Every kernel takes plain arrays or `xrmeta.layout` structures, so the Python
side stays thin."""
