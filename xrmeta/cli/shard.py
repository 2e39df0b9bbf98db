"""`xrmeta-shard` (`python -m xrmeta.shard`): cut a saved model into shards, and start or stop their workers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import fail, parser


def build_parser():
    p = parser(
        "xrmeta-shard",
        description="Cut a saved model into shards for serving on a Ray cluster (`xrmeta.distributed`): each shard "
        "holds the trained and inserted items of whole subtrees of the tree, and a router directory holds the "
        "featurizer, the tree's upper layers and the cold start. --serve starts the shard workers of a cut "
        "directory on a Ray cluster (detached: they outlive this command) so that routers in other processes "
        "attach to them with ShardedModel.open(DIR); --stop ends them.",
        usage="%(prog)s --model-dir M --shards N --out DIR | --serve DIR [--replicas R] | --stop DIR",
    )
    p.add_argument("--model-dir", type=Path, help="the saved model (`xrmeta-train`, `xrmeta-add-items`) to cut")
    p.add_argument("--shards", type=int, help="number of shards, at most the tree's leaf clusters")
    p.add_argument("--out", type=Path, help="the sharded directory to write (absent or empty)")
    p.add_argument("--serve", type=Path, metavar="DIR", help="start the workers of this sharded directory")
    p.add_argument("--stop", type=Path, metavar="DIR", help="stop the workers of this sharded directory")
    p.add_argument("--replicas", type=int, default=1, help="workers per shard (--serve)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (--serve, --stop), e.g. 'auto' or 'host:6379'; none: a local one, "
                   "which ends with this command")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cutting = args.model_dir is not None or args.shards is not None or args.out is not None
    if sum([cutting, args.serve is not None, args.stop is not None]) != 1:
        return fail(ValueError("give either --model-dir, --shards and --out (cut), or --serve DIR, or --stop DIR"))
    try:
        if cutting:
            if None in (args.model_dir, args.shards, args.out):
                raise ValueError("cutting needs --model-dir, --shards and --out")
            if args.shards < 1:
                raise ValueError(f"--shards must be >= 1, got {args.shards}")
            from ..distributed import cut  # Ray is not needed to cut

            out = cut(args.model_dir, args.shards, args.out, verbose=True)
            info = json.loads((out / "sharding.json").read_text(encoding="utf-8"))
            print(f"wrote {info['n_shards']} shards and the router to {out}", file=sys.stderr)
            return 0
        import ray

        from ..distributed.router import start_workers, stop_workers

        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
        if args.serve is not None:
            if args.replicas < 1:
                raise ValueError(f"--replicas must be >= 1, got {args.replicas}")
            workers = start_workers(args.serve, args.replicas)
            for s, row in enumerate(workers):
                status = ray.get([w.ping.remote() for w in row])
                print(f"shard {s}: " + ", ".join(f"pid {r['pid']} ({r['items']} items)" for r in status),
                      file=sys.stderr)
        else:
            print(f"stopped {stop_workers(args.stop)} workers of {args.stop}", file=sys.stderr)
    except (ValueError, OSError) as e:
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
