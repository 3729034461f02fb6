"""Full nodes through a real etcd: a node's registrar publishes ``full`` with its usage report and
the placement leader publishes a new epoch in which the node is flagged ``full`` and holds no
position (its positions recorded as former positions for the new holders), then, once the node
reports it has space again, an epoch where it holds exactly its old positions."""

from __future__ import annotations

import pytest

from placement.cluster_map import ClusterMap, NodeState
from placement.etcd import EtcdClient
from placement.keys import ClusterKeys
from placement.service import PlacementService
from placement.watcher import ClusterMapWatcher
from proto import cluster_pb2
from tests.fixtures.etcd import EtcdServer
from tests.integration.test_placement import map_with, new_prefix, run, start_registrars
from tests.integration.test_placement_drain import etcd_ready

pytestmark = pytest.mark.integration

PG_COUNT = 32


def test_leader_moves_positions_off_a_full_node_and_back(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        prefix = new_prefix()
        endpoint = etcd_server.endpoint
        await etcd_ready(endpoint)
        registrars = await start_registrars(endpoint, prefix, range(15))
        service = PlacementService(endpoint, pg_count=PG_COUNT, down_out_interval=600.0, min_nodes=14,
                                   instance_id="solo", prefix=prefix, leader_ttl_seconds=2.0)
        await service.start()
        watcher = ClusterMapWatcher(endpoint, prefix=prefix)
        try:
            await watcher.start(timeout=20)
            first = await map_with(watcher, lambda m: len(m.nodes) == 15, "all 15 nodes")
            assert any("node-04" in acting for acting in first.acting_sets)
            registrars[4].update(500 * 2**30, full=True)
            full = await map_with(watcher, lambda m: m.node("node-04").full, "node-04 full")
            assert full.epoch > first.epoch
            node = full.node("node-04")
            assert node.state == NodeState.UP and not node.draining  # still serving, not drained
            assert all("node-04" not in acting for acting in full.acting_sets)
            for pg, acting in enumerate(first.acting_sets):
                for position, (old, new) in enumerate(zip(acting, full.acting_sets[pg], strict=True)):
                    if old == "node-04":
                        assert ("node-04", position) in full.former_positions[pg]
                    else:
                        assert old == new
            # The registration in etcd carries the flag and the usage (one write, same lease).
            async with EtcdClient(endpoint) as etcd:
                stored = await etcd.get(ClusterKeys(prefix).node("node-04"))
            assert stored is not None
            record = cluster_pb2.NodeRegistration.FromString(stored.value)
            assert record.full and record.used_bytes == 500 * 2**30

            registrars[4].update(100 * 2**30, full=False)

            def not_full(cluster_map: ClusterMap) -> bool:
                return not cluster_map.node("node-04").full

            back = await map_with(watcher, not_full, "node-04 no longer full")
            assert back.epoch > full.epoch
            assert back.acting_sets == first.acting_sets
        finally:
            await watcher.stop()
            for registrar in registrars:
                await registrar.stop()
            await service.stop()

    run(scenario())
