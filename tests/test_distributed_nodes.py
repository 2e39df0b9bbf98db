"""ShardedModel on a two-node Ray cluster on 127.0.0.1: the workers are dealt over both nodes, and answers equal
the XRMetaModel's. Its own module: it needs its own Ray cluster, not test_distributed's local instance."""

from __future__ import annotations

import pytest
import ray
from ray.cluster_utils import Cluster

from xrmeta.distributed import ShardedModel
from xrmeta.model import XRMetaModel

from .test_distributed import assert_same


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_workers_are_dealt_over_both_nodes(two_nodes, trained, novel, test_queries, tmp_path):
    trained.save(tmp_path / "model")
    model = XRMetaModel.load(tmp_path / "model")
    sharded = ShardedModel.from_model(model, 2, replicas=2, out=tmp_path / "s")
    try:
        nodes = [[r["node"] for r in row] for row in sharded.status()]
        assert len({n for row in nodes for n in row}) == 2
        assert all(len(set(row)) == 2 for row in nodes)  # a shard's replicas on different nodes
        for m in (model, sharded):
            m.add_items(*novel)
        assert_same(model, sharded, test_queries)
    finally:
        sharded.close()
