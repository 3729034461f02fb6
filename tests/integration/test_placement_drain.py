"""Drain requests through a real etcd: the keys, and the placement leader publishing a new epoch in
which the drained node is flagged ``draining`` and holds no position (then gets them back)."""

from __future__ import annotations

import pytest

from placement.cluster_map import ClusterMap, NodeState
from placement.drain import cancel_drain, drain_requests, drain_requests_at, request_drain
from placement.etcd import EtcdClient
from placement.keys import ClusterKeys
from placement.service import PlacementService
from placement.watcher import ClusterMapWatcher
from tests.fixtures.etcd import EtcdServer
from tests.integration.test_placement import map_with, new_prefix, run, start_registrars

pytestmark = pytest.mark.integration

PG_COUNT = 32


def test_drain_keys_round_trip(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        prefix = new_prefix()
        async with EtcdClient(etcd_server.endpoint) as etcd:
            assert await drain_requests(etcd, prefix=prefix) == frozenset()
            assert await request_drain(etcd, "node-03", prefix=prefix, now=1234.5)
            assert not await request_drain(etcd, "node-03", prefix=prefix)  # already requested
            assert await request_drain(etcd, "node-11", prefix=prefix)
            stored = await etcd.get(ClusterKeys(prefix).drain("node-03"))
            assert stored is not None and stored.value == b"1234.500" and stored.lease == 0
            requested, revision = await drain_requests_at(etcd, prefix=prefix)
            assert requested == frozenset({"node-03", "node-11"}) and revision >= stored.mod_revision
            # Another cluster under another prefix sees none of it.
            assert await drain_requests(etcd, prefix=new_prefix()) == frozenset()
            assert await cancel_drain(etcd, "node-03", prefix=prefix)
            assert not await cancel_drain(etcd, "node-03", prefix=prefix)
            assert await drain_requests(etcd, prefix=prefix) == frozenset({"node-11"})
            with pytest.raises(ValueError):
                await request_drain(etcd, "a/b", prefix=prefix)

    run(scenario())


def test_leader_publishes_drain_and_undrain(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        prefix = new_prefix()
        endpoint = etcd_server.endpoint
        registrars = await start_registrars(endpoint, prefix, range(15))
        service = PlacementService(endpoint, pg_count=PG_COUNT, down_out_interval=600.0, min_nodes=14,
                                   instance_id="solo", prefix=prefix, leader_ttl_seconds=2.0)
        await service.start()
        watcher = ClusterMapWatcher(endpoint, prefix=prefix)
        try:
            await watcher.start(timeout=20)
            first = await map_with(watcher, lambda m: len(m.nodes) == 15, "all 15 nodes")
            assert any("node-04" in acting for acting in first.acting_sets)
            async with EtcdClient(endpoint) as etcd:
                await request_drain(etcd, "node-04", prefix=prefix)
                drained = await map_with(watcher, lambda m: m.node("node-04").draining, "node-04 draining")
                assert drained.epoch > first.epoch
                assert drained.node("node-04").state == NodeState.UP  # still serving
                assert all("node-04" not in acting for acting in drained.acting_sets)
                for pg, acting in enumerate(first.acting_sets):
                    for position, (old, new) in enumerate(zip(acting, drained.acting_sets[pg], strict=True)):
                        if old == "node-04":
                            assert ("node-04", position) in drained.former_positions[pg]
                        else:
                            assert old == new
                await cancel_drain(etcd, "node-04", prefix=prefix)

                def undrained(cluster_map: ClusterMap) -> bool:
                    return not cluster_map.node("node-04").draining

                back = await map_with(watcher, undrained, "node-04 undrained")
                assert back.epoch > drained.epoch
                assert back.acting_sets == first.acting_sets
        finally:
            await watcher.stop()
            for registrar in registrars:
                await registrar.stop()
            await service.stop()

    run(scenario())
