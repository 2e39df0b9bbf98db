"""The numba kernels that served before the C++ core (cpp/, `xrmeta._core`), kept as its reference
implementations: the parity tests check every compiled kernel against them, and the benchmarks time them as
its peer. Serving never imports them. By stage: `search` (beam search, leaf scoring, the whole search in one
call), `coldstart` (neighbour search, cluster vote, sparse mixing, the learned generator's features), `meta`
(the learned generator's forward pass), `insertion` (the inserted items' chunks and the parts' two-means).
`coldstart.block_dots` is a training helper (the learned generator's and the title trust's training)."""
