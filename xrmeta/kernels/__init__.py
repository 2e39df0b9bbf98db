"""Numba kernels for the hot paths, by stage: `search` (beam search, leaf scoring, the whole search in one call),
`coldstart` (neighbour search, cluster vote, sparse mixing, the learned generator's features), `meta` (the
learned generator's forward pass). `coldstart` and `meta` are the reference implementations of the compiled
`xrmeta._core` kernels serving runs (and `coldstart.block_dots` a training helper). Every kernel takes plain
arrays or `xrmeta.layout` structures, so the Python side stays thin."""
