"""Memory of insertion, single thread, on the synthetic model: growth from 10^4 to 10^6 inserted items, and
insert/remove cycles.

1. Growth: made-up titles (`scale.title_batches`: words of the observed titles recombined, seeded) inserted
   cumulatively with `add_items` in batches of 10^4. At each checkpoint, after gc: inserted items and weight
   non-zeros (nnz), the catalogue arrays' live bytes and allocated capacity (growable buffers double, so capacity
   runs up to 2x ahead), the id list and id -> slot map, and the process RSS. Memory is linear in the inserted
   nnz when RSS growth per nnz stays flat from decade to decade. Peak RSS is sampled every 20 ms.
2. Cycles: insert 10^4 items, then remove them, with the same ids every cycle (a churning catalogue). tracemalloc
   traces every allocation, numpy's buffers included. A removed item's slot stays as a tombstone (slots are never
   reused, so a slot number always means one item), so the catalogue keeps the removed items' weights: it grows
   by their bytes every cycle, by design. A leak would be traced growth beyond the catalogue's own growth
   ("unaccounted").

Run: .venv/bin/python -m benchmarks.memory   (about a minute; up to ~4 GB RSS at 10^6 items)
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc


from xrmeta.catalog import Catalog

from . import common as C
from .resources import PeakRSS, rss_bytes
from .scale import title_batches

MB = 2**20
CHECKPOINTS = (10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6)


def catalogue_bytes(c: Catalog) -> dict[str, int]:
    """Bytes held by a catalogue: its arrays (live part and allocated capacity) and its ids (list, strings, map)."""
    ch = c._chunks  # the inserted items' search layout (chunks and tails)
    grown = (c.w_ptr, c.w_idx, c.w_val, c.slot_bias, c.slot_alive, c.slot_cluster, c.entry_slot, c.entry_cluster,
             ch.feats, ch.row_ptr, ch.local, ch.val, ch.slots, ch.entry_next)
    fixed = sum(a.nbytes for a in (c.chunk_feat_ptr, c.chunk_feats, c.chunk_row_ptr, c.chunk_slot, c.chunk_val,
                                   c.base_slot_ptr, ch.row_lo, ch.row_hi, ch.slot_lo, ch.slot_hi, ch.head))
    ids = sys.getsizeof(c.ids) + sum(map(sys.getsizeof, c.ids)) + sys.getsizeof(c.slot_of)
    return {"live": fixed + sum(g.view.nbytes for g in grown), "allocated": fixed + sum(g.buf.nbytes for g in grown),
            "ids": ids}


def inserted_nnz(c: Catalog) -> int:
    return int(c.w_ptr.view[-1] - c.w_ptr.view[c.n_base])


def settled_rss() -> int:
    gc.collect()
    return rss_bytes()


def growth(seed: int, batch: int) -> str:
    model, data, split, _ = C.load("synthetic", seed)
    titles = [data.item_texts[j] for j in split.observed]
    model.add_items(*next(title_batches(titles, 20, 20, seed + 1)), threads=1)  # warm the JIT and the featurizer
    model.remove_items(model.catalog.ids[model.catalog.n_base:])
    base_rss, base_bytes, base_nnz, base_items = settled_rss(), catalogue_bytes(model.catalog), \
        inserted_nnz(model.catalog), model.catalog.n_slots - model.catalog.n_base
    rows, done, seconds, last = [], 0, 0.0, (0, 0)  # last: (nnz, RSS growth) at the previous checkpoint
    with PeakRSS(interval=0.02) as peak:
        for titles_b, ids in title_batches(titles, CHECKPOINTS[-1], batch, seed):
            s, _ = C.clock(model.add_items, titles_b, ids, threads=1)
            seconds += s
            done += len(ids)
            if done in CHECKPOINTS:
                c = model.catalog
                nnz, items, b, rss = inserted_nnz(c) - base_nnz, c.n_slots - c.n_base - base_items, \
                    catalogue_bytes(c), settled_rss()
                grew = rss - base_rss
                rows.append([f"{done:,}", f"{nnz:,}", f"{nnz / items:.0f}", f"{b['live'] / MB:,.0f}",
                             f"{b['allocated'] / MB:,.0f}", f"{b['ids'] / MB:,.0f}", f"{rss / MB:,.0f}",
                             f"{grew / MB:,.0f}", f"{grew / nnz:.1f}", f"{(grew - last[1]) / (nnz - last[0]):.1f}",
                             f"{(b['live'] - base_bytes['live']) / nnz:.2f}", f"{seconds:.1f}"])
                last = (nnz, grew)
                C.log(f"growth: {done:,} items, RSS {rss / MB:,.0f} MB")
    return (
        f"## Growth: 10^4 .. 10^6 made-up items inserted into the synthetic model (seed {seed})\n\n"
        f"`add_items` in batches of {batch:,}, cumulative. Before: {model.catalog.n_base} trained items, RSS "
        f"{base_rss / MB:,.0f} MB (model loaded, JIT warm). 'RSS growth' is measured from there, after gc; "
        f"'marginal' is the RSS growth since the previous checkpoint over the nnz inserted since then. 'arrays / "
        f"nnz' counts the live part of the catalogue arrays only (8 bytes per non-zero plus ~25 per item); the rest "
        f"of the growth is the buffers' spare capacity and the ids (list, strings, map: per item). Peak RSS during "
        f"the run: {(peak.peak + base_rss) / MB:,.0f} MB (a buffer that doubles is briefly held twice).\n\n"
        + C.md_table(["items inserted", "nnz inserted", "nnz / item", "arrays live MB", "arrays allocated MB",
                      "ids + map MB", "RSS MB", "RSS growth MB", "RSS growth / nnz (B)", "marginal RSS / nnz (B)",
                      "arrays / nnz (B)", "insert seconds (cum.)"], rows)
        + "\n"
    )


def cycles(seed: int, n_cycles: int, batch: int) -> str:
    model, data, split, _ = C.load("synthetic", seed)
    titles = [data.item_texts[j] for j in split.observed]
    model.add_items(*next(title_batches(titles, 20, 20, seed + 1)), threads=1)  # warm up, as above
    model.remove_items(model.catalog.ids[model.catalog.n_base:])
    gc.collect()
    tracemalloc.start()
    start_traced, start = tracemalloc.get_traced_memory()[0], catalogue_bytes(model.catalog)
    start_rss = rss_bytes()
    rows, first = [], None
    for cycle in range(1, n_cycles + 1):
        titles_b, ids = next(title_batches(titles, batch, batch, seed + cycle))  # same ids every cycle
        model.add_items(titles_b, ids, threads=1)
        model.remove_items(ids)
        gc.collect()
        traced, b = tracemalloc.get_traced_memory()[0] - start_traced, catalogue_bytes(model.catalog)
        held = b["allocated"] + b["ids"] - start["allocated"] - start["ids"]
        first = traced - held if first is None else first
        if cycle in (1, 2, 5) or cycle % 5 == 0:
            rows.append([cycle, f"{len(model.catalog):,}", f"{model.catalog.n_slots - model.catalog.n_base:,}",
                         f"{(b['live'] - start['live']) / MB:.1f}", f"{held / MB:.1f}", f"{traced / MB:.1f}",
                         f"{(traced - held) / 1024:,.0f}", f"{(rss_bytes() - start_rss) / MB:.0f}"])
    tracemalloc.stop()
    leaked = (traced - held - first) / (n_cycles - 1)
    return (
        f"## Insert/remove cycles: {batch:,} items inserted then removed, {n_cycles} times, same ids\n\n"
        f"Growth since before the first cycle. 'catalogue held' = catalogue arrays' allocated capacity + ids "
        f"(list, strings, map); 'traced' = every allocation tracemalloc sees (Python objects and numpy buffers). "
        f"'unaccounted' = traced - catalogue held: what a leak would show. Live items stay at the trained "
        f"catalogue's size; tombstones (removed slots) accumulate by design.\n\n"
        + C.md_table(["cycle", "live items", "slots inserted (live + tombstones)", "arrays live MB",
                      "catalogue held MB", "traced MB", "unaccounted KB", "RSS growth MB"], rows)
        + f"\n\nUnaccounted: {first / 1024:,.0f} KB after the first cycle (one-time: caches filled by the first "
          f"inserts), then {leaked / 1024:,.2f} KB per cycle, against {held / n_cycles / MB:.1f} MB per cycle held "
          f"by the catalogue's tombstones (their capacity included).\n"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="seed of the cached synthetic model and of the titles")
    p.add_argument("--batch", type=int, default=10**4, help="items per add_items call")
    p.add_argument("--cycles", type=int, default=20, help="insert/remove cycles")
    args = p.parse_args(argv)
    started = time.perf_counter()
    C.single_thread()
    body = growth(args.seed, args.batch)
    gc.collect()
    body += "\n" + cycles(args.seed, args.cycles, args.batch)
    C.report("memory", "synthetic", body, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
