"""Scale-out on Ray: the leaf layer cut into shards by subtrees of the tree (`cut`), served by shard actors with
replicas, and `ShardedModel`, the router with `XRMetaModel`'s API (`router`). Needs Ray:
`pip install 'xrmeta[distributed]'`."""

from .router import ShardedModel, ShardedResults
from .shard import Shard
from .sharding import cut, plan_shards

__all__ = ["Shard", "ShardedModel", "ShardedResults", "cut", "plan_shards"]
