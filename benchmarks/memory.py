"""Memory of insertion, single thread, on the synthetic model: growth from 10^4 to 10^6 inserted items (made-up
titles, `scale.title_batches`; RSS, catalogue bytes per non-zero) and insert/remove cycles with the same ids
(tracemalloc: growth beyond the catalogue's own tombstones would be a leak). About a minute; ~4 GB RSS at 10^6.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

from . import api, harness as H
from . import common as C
from .resources import PeakRSS, rss_bytes
from .scale import title_batches

MB = 2**20
CHECKPOINTS = (10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6)


def inserted(model) -> tuple[int, int]:
    """(nnz, slots) inserted so far, tombstones included."""
    s = api.catalog_sizes(model)
    return api.nnz(model, s["base"], s["slots"]), s["slots"] - s["base"]


def settled_rss() -> int:
    gc.collect()
    return rss_bytes()


def warm_model(seed: int):
    """The cached synthetic model, the JIT and featurizer warmed by 20 items inserted and removed."""
    model, data, split, _ = C.load("synthetic", seed)
    titles = C.titles_ids(data, split.observed)[0]
    H.insert(model, *next(title_batches(titles, 20, 20, seed + 1)))
    model.remove_items(api.inserted_ids(model))
    return model, titles


def growth(seed: int, batch: int) -> str:
    model, titles = warm_model(seed)
    base_rss, base_bytes, (base_nnz, base_items) = settled_rss(), api.catalog_bytes(model), inserted(model)
    rows, done, seconds, last = [], 0, 0.0, (0, 0)  # last: (nnz, RSS growth) at the previous checkpoint
    with PeakRSS(interval=0.02) as peak:
        for titles_b, ids in title_batches(titles, CHECKPOINTS[-1], batch, seed):
            seconds += H.insert(model, titles_b, ids).seconds
            done += len(ids)
            if done in CHECKPOINTS:
                (nnz, items), b, rss = inserted(model), api.catalog_bytes(model), settled_rss()
                nnz, items, grew = nnz - base_nnz, items - base_items, rss - base_rss
                rows.append([f"{done:,}", f"{nnz:,}", nnz / items, b["live"] / MB, b["allocated"] / MB, b["ids"] / MB,
                             rss / MB, grew / MB, grew / nnz, (grew - last[1]) / (nnz - last[0]),
                             (b["live"] - base_bytes["live"]) / nnz, seconds])
                last = (nnz, grew)
                C.log(f"growth: {done:,} items, RSS {rss / MB:,.0f} MB")
    return C.text("memory.growth", seed=seed, batch=batch, n_base=api.catalog_sizes(model)["base"],
                  base_mb=base_rss / MB, peak_mb=(peak.peak + base_rss) / MB, table=C.table(
                      ["items inserted", "nnz inserted", "nnz / item", "arrays live MB", "arrays allocated MB",
                       "ids + map MB", "RSS MB", "RSS growth MB", "RSS growth / nnz (B)", "marginal RSS / nnz (B)",
                       "arrays / nnz (B)", "insert seconds (cum.)"], rows,
                      ["", "", ".0f", ",.0f", ",.0f", ",.0f", ",.0f", ",.0f", ".1f", ".1f", ".2f", ".1f"]))


def cycles(seed: int, n_cycles: int, batch: int) -> str:
    model, titles = warm_model(seed)
    gc.collect()
    tracemalloc.start()
    start_traced, start, start_rss = tracemalloc.get_traced_memory()[0], api.catalog_bytes(model), rss_bytes()
    rows, first = [], None
    for cycle in range(1, n_cycles + 1):
        titles_b, ids = next(title_batches(titles, batch, batch, seed + cycle))  # same ids every cycle
        H.insert(model, titles_b, ids)
        model.remove_items(ids)
        gc.collect()
        traced, b = tracemalloc.get_traced_memory()[0] - start_traced, api.catalog_bytes(model)
        held = b["allocated"] + b["ids"] - start["allocated"] - start["ids"]
        first = traced - held if first is None else first
        if cycle in (1, 2, 5) or cycle % 5 == 0:
            rows.append([cycle, f"{len(model.catalog):,}", f"{inserted(model)[1]:,}", (b["live"] - start["live"]) / MB,
                         held / MB, traced / MB, (traced - held) / 1024, (rss_bytes() - start_rss) / MB])
    tracemalloc.stop()
    leaked = (traced - held - first) / max(n_cycles - 1, 1)
    return C.text("memory.cycles", batch=batch, cycles=n_cycles, first_kb=first / 1024, leaked_kb=leaked / 1024,
                  held_mb=held / n_cycles / MB, table=C.table(
                      ["cycle", "live items", "slots inserted (live + tombstones)", "arrays live MB",
                       "catalogue held MB", "traced MB", "unaccounted KB", "RSS growth MB"], rows,
                      ["", "", "", ".1f", ".1f", ".1f", ",.0f", ".0f"]))


def main(argv=None) -> int:
    p = C.parser(__doc__, dataset="synthetic")
    p.add_argument("--batch", type=int, default=10**4, help="items per add_items call")
    p.add_argument("--cycles", type=int, default=20, help="insert/remove cycles")
    args = C.parse(p, argv, batch=1000, cycles=3)
    global CHECKPOINTS
    if args.quick:
        CHECKPOINTS = (10**3, 3 * 10**3)
    started = time.perf_counter()
    body = growth(args.seed, args.batch)
    gc.collect()
    C.report("memory", "synthetic", body + "\n\n" + cycles(args.seed, args.cycles, args.batch), started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
