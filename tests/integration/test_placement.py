"""Placement against a real etcd: registration leases, the leader publishing epochs, failover.

Each test uses its own key prefix in the module's etcd, so tests do not see each other's keys.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from prometheus_client import REGISTRY

from placement.cluster_map import ClusterMap, NodeState, node_from_registration
from placement.etcd import EtcdClient, EtcdUnavailable, KeyValue, cancel_and_wait
from placement.keys import ClusterKeys
from placement.registration import NodeRegistrar
from placement.rendezvous import compute_acting_sets
from placement.service import PlacementService
from placement.watcher import ClusterMapWatcher, load_cluster_map
from proto import cluster_pb2
from tests.fixtures.etcd import EtcdServer

pytestmark = pytest.mark.integration

PG_COUNT = 32
LEASE_TTL = 2.0  # etcd's minimum lease TTL


def run(coroutine: Coroutine[Any, Any, None], timeout: float = 45.0) -> None:
    """Run a scenario; on a hang, fail with the stacks of every task instead of blocking."""

    async def bounded() -> None:
        try:
            await asyncio.wait_for(coroutine, timeout)
        except TimeoutError:
            stacks = io.StringIO()
            for task in asyncio.all_tasks():
                task.print_stack(file=stacks)
            pytest.fail(f"scenario hung for {timeout}s; tasks:\n{stacks.getvalue()}")

    asyncio.run(bounded())


def new_prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:8]}/"


def registration(index: int) -> cluster_pb2.NodeRegistration:
    return cluster_pb2.NodeRegistration(
        format_version=1, node_id=f"node-{index:02d}", address=f"127.0.0.1:{7000 + index}",
        failure_domain=cluster_pb2.FailureDomain(zone=f"z{index}", rack=f"r{index}", host=f"h{index}"),
        capacity_bytes=10**12, volumes=[f"/data/node-{index:02d}/v0"],
    )


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


async def start_registrars(endpoint: str, prefix: str, indexes: range | list[int]) -> list[NodeRegistrar]:
    registrars = [NodeRegistrar(endpoint, registration(i), ttl_seconds=LEASE_TTL, prefix=prefix) for i in indexes]
    for registrar in registrars:
        await registrar.start()
        await registrar.wait_registered(timeout=10)
    return registrars


async def register_without_keepalive(endpoint: str, prefix: str, index: int) -> None:
    """A node that registers and then dies: its lease is never refreshed and lapses."""
    async with EtcdClient(endpoint) as etcd:
        lease_id, _ = await etcd.grant_lease(LEASE_TTL)
        await etcd.put(ClusterKeys(prefix).node(f"node-{index:02d}"), registration(index).SerializeToString(),
                       lease=lease_id)


async def map_with(watcher: ClusterMapWatcher, predicate: Callable[[ClusterMap], bool], what: str) -> ClusterMap:
    async def check() -> bool:
        return predicate(watcher.current)

    await eventually(check, what)
    return watcher.current


def test_registrar_writes_and_revokes(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        prefix = new_prefix()
        (registrar,) = await start_registrars(etcd_server.endpoint, prefix, [1])
        async with EtcdClient(etcd_server.endpoint) as etcd:
            kv = await etcd.get(registrar.key)
            assert kv is not None and kv.lease != 0
            stored = cluster_pb2.NodeRegistration.FromString(kv.value)
            assert stored.node_id == "node-01" and stored.format_version == 1
            registrar.update(used_bytes=12345)

            async def used_written() -> bool:
                current = await etcd.get(registrar.key)
                return current is not None and cluster_pb2.NodeRegistration.FromString(
                    current.value).used_bytes == 12345

            await eventually(used_written, "used_bytes to be written")
            await registrar.stop()
            assert await etcd.get(registrar.key) is None  # lease revoked: record gone at once

    run(scenario())


def test_first_map_then_down_then_out(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        prefix = new_prefix()
        endpoint = etcd_server.endpoint
        service = PlacementService(endpoint, pg_count=PG_COUNT, down_out_interval=2.0, min_nodes=14,
                                   instance_id="solo", prefix=prefix, leader_ttl_seconds=2.0)
        await service.start()
        registrars = await start_registrars(endpoint, prefix, range(13))
        watcher = ClusterMapWatcher(endpoint, prefix=prefix)
        try:
            async def leading() -> bool:
                return service.is_leader

            await eventually(leading, "the only service to lead")
            assert await load_cluster_map(endpoint, prefix=prefix) is None  # 13 < min_nodes
            with pytest.raises(TimeoutError):
                await ClusterMapWatcher(endpoint, prefix=prefix).start(timeout=0.5)

            await register_without_keepalive(endpoint, prefix, 13)  # the 14th node, about to die
            registrars += await start_registrars(endpoint, prefix, [14])
            await watcher.start(timeout=20)
            first = watcher.current
            assert first.epoch >= 1
            assert first.pg_count == PG_COUNT
            up = {n.node_id for n in first.nodes.values() if n.state == NodeState.UP}
            assert len(up) >= 14

            down = await map_with(watcher, lambda m: m.node("node-13").state != NodeState.UP,
                                  "node-13 to go DOWN")
            assert down.node("node-13").state == NodeState.DOWN
            assert any("node-13" in acting for acting in down.acting_sets)  # DOWN keeps its fragments

            out = await map_with(watcher, lambda m: m.node("node-13").state == NodeState.OUT, "node-13 OUT")
            assert all("node-13" not in acting for acting in out.acting_sets)
            assert out.epoch > down.epoch
            assert all(out.node(n).state == NodeState.UP for n in out.nodes if n != "node-13")
            for before, after in zip(down.acting_sets, out.acting_sets, strict=True):
                assert all(a == b for a, b in zip(before, after, strict=True) if a != "node-13")
            assert service.epoch == out.epoch
        finally:
            await watcher.stop()
            for registrar in registrars:
                await registrar.stop()
            await service.stop()

    run(scenario())


def test_down_node_returns_up(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        prefix = new_prefix()
        endpoint = etcd_server.endpoint
        service = PlacementService(endpoint, pg_count=PG_COUNT, down_out_interval=600.0, min_nodes=14,
                                   instance_id="solo", prefix=prefix, leader_ttl_seconds=2.0)
        registrars = await start_registrars(endpoint, prefix, range(15))
        await service.start()
        watcher = ClusterMapWatcher(endpoint, prefix=prefix)
        try:
            await watcher.start(timeout=20)
            first = await map_with(watcher, lambda m: len(m.nodes) == 15, "all 15 nodes")
            await registrars[7].stop()
            down = await map_with(watcher, lambda m: m.node("node-07").state == NodeState.DOWN, "node-07 DOWN")
            assert down.acting_sets == first.acting_sets
            registrars[7] = NodeRegistrar(endpoint, registration(7), ttl_seconds=LEASE_TTL, prefix=prefix)
            await registrars[7].start()
            back = await map_with(watcher, lambda m: m.node("node-07").state == NodeState.UP, "node-07 UP")
            assert back.epoch > down.epoch
            assert back.acting_sets == first.acting_sets
        finally:
            await watcher.stop()
            for registrar in registrars:
                await registrar.stop()
            await service.stop()

    run(scenario())


def test_one_leader_and_failover(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        prefix = new_prefix()
        endpoint = etcd_server.endpoint
        services = [
            PlacementService(endpoint, pg_count=PG_COUNT, down_out_interval=600.0, min_nodes=14,
                             instance_id=name, prefix=prefix, leader_ttl_seconds=2.0)
            for name in ("a", "b")
        ]
        registrars = await start_registrars(endpoint, prefix, range(14))
        watcher = ClusterMapWatcher(endpoint, prefix=prefix)
        try:
            for service in services:
                await service.start()

            async def one_leader() -> bool:
                return sum(s.is_leader for s in services) == 1

            await eventually(one_leader, "exactly one leader")
            await watcher.start(timeout=20)
            leader = next(s for s in services if s.is_leader)
            standby = next(s for s in services if not s.is_leader)
            async with EtcdClient(endpoint) as etcd:
                key = await etcd.get(ClusterKeys(prefix).placement_leader)
                assert key is not None and key.value.decode().startswith(leader.instance_id + "#")
            await asyncio.sleep(0.5)
            assert not standby.is_leader  # still exactly one

            await leader.stop()

            async def standby_leads() -> bool:
                return standby.is_leader

            await eventually(standby_leads, "the standby to take over")
            before = watcher.current.epoch
            registrars += await start_registrars(endpoint, prefix, [14])
            joined = await map_with(watcher, lambda m: "node-14" in m.nodes, "the new leader to add node-14")
            assert joined.epoch == before + 1
            assert any("node-14" in acting for acting in joined.acting_sets)
        finally:
            await watcher.stop()
            for registrar in registrars:
                await registrar.stop()
            for service in services:
                await service.stop()

    run(scenario())


def test_stale_leader_cannot_publish(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        prefix = new_prefix()
        keys = ClusterKeys(prefix)
        async with EtcdClient(etcd_server.endpoint) as etcd:
            assert await etcd.compare_and_swap(keys.map, b"one", expected_mod_revision=0)
            stored = await etcd.get(keys.map)
            assert stored is not None
            # Two writers read the same revision: only the first wins.
            assert await etcd.compare_and_swap(keys.map, b"two", stored.mod_revision)
            assert not await etcd.compare_and_swap(keys.map, b"three", stored.mod_revision)
            # A writer whose leader token is not the stored one never wins.
            latest = await etcd.get(keys.map)
            assert latest is not None
            await etcd.put(keys.placement_leader, b"other#1")
            assert not await etcd.compare_and_swap(
                keys.map, b"four", latest.mod_revision, guards={keys.placement_leader: b"me#2"})
            assert (await etcd.get(keys.map)).value == b"two"  # type: ignore[union-attr]
            assert await etcd.create(keys.placement_leader, b"x") is False

    run(scenario())


def test_watcher_survives_unexpected_errors(etcd_server: EtcdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure other than EtcdUnavailable inside the watch loop must not end it: the watcher
    logs, backs off and still delivers later epochs."""

    async def scenario() -> None:
        prefix = new_prefix()
        keys = ClusterKeys(prefix)
        nodes = {
            f"node-{i:02d}": node_from_registration(registration(i), NodeState.UP, 0.0) for i in range(14)
        }
        first = ClusterMap(epoch=1, pg_count=PG_COUNT, nodes=nodes,
                           acting_sets=compute_acting_sets(PG_COUNT, nodes))
        real_get_prefix = EtcdClient.get_prefix
        failures = 0

        async def failing_once(self: EtcdClient, key: str) -> tuple[list[KeyValue], int]:
            nonlocal failures
            if key == keys.map and failures == 0:
                failures += 1
                raise RuntimeError("injected: a bug or an unexpected reply")
            return await real_get_prefix(self, key)

        monkeypatch.setattr(EtcdClient, "get_prefix", failing_once)
        async with EtcdClient(etcd_server.endpoint) as etcd:
            async def published() -> bool:
                try:
                    await etcd.put(keys.map, first.to_bytes())
                except EtcdUnavailable:  # a freshly started etcd on a busy machine
                    return False
                return True

            await eventually(published, "etcd to accept the first map")
            watcher = ClusterMapWatcher(etcd_server.endpoint, prefix=prefix)
            await watcher.start(timeout=10)
            try:
                await eventually(_true_after(lambda: failures == 1), "the injected failure")
                await etcd.put(keys.map, first.with_changes(epoch=2).to_bytes())
                assert (await watcher.wait_for_epoch(2, timeout=15)).epoch == 2
            finally:
                await watcher.stop()

    run(scenario())


def _true_after(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


def test_hung_keepalive_does_not_lapse_the_lease(etcd_server: EtcdServer) -> None:
    """One keep-alive that never answers is cut off and retried well before the lease (2 s) lapses,
    so the registration is never deleted."""

    async def scenario() -> None:
        prefix = new_prefix()
        (registrar,) = await start_registrars(etcd_server.endpoint, prefix, [5])
        etcd_client = registrar._etcd  # the registrar's own session; only its keep-alive is slowed
        real_refresh = etcd_client.refresh_lease
        hung = asyncio.Event()

        async def hang_once(lease_id: int) -> int:
            if not hung.is_set():
                hung.set()
                await asyncio.sleep(3 * LEASE_TTL)  # an etcd answer that does not come in time
            return await real_refresh(lease_id)

        etcd_client.refresh_lease = hang_once  # type: ignore[method-assign]
        deleted = asyncio.Event()
        async with EtcdClient(etcd_server.endpoint) as etcd:
            kv = await etcd.get(registrar.key)
            assert kv is not None

            async def watch_for_delete() -> None:
                async for event in etcd.watch(registrar.key, start_revision=kv.mod_revision + 1):
                    if event.deleted:
                        deleted.set()

            watching = asyncio.create_task(watch_for_delete())
            try:
                await asyncio.wait_for(hung.wait(), 10)
                # Long enough for the lease to lapse twice over had the keep-alive waited.
                await asyncio.sleep(3 * LEASE_TTL)
                assert not deleted.is_set(), "registration lapsed during one slow keep-alive"
                assert registrar.registered
                assert await etcd.get(registrar.key) is not None
            finally:
                await cancel_and_wait(watching)
                await registrar.stop()

    run(scenario())


def test_keepalives_share_one_stream_and_each_gets_its_own_reply(etcd_server: EtcdServer) -> None:
    """Keep-alives of two leases alternate on one long-lived stream, each answered with its own
    lease's TTL. A keep-alive cut off mid-call drops the stream (its late reply cannot answer the
    next request). A revoked lease answers 0."""

    async def scenario() -> None:
        async with EtcdClient(etcd_server.endpoint) as etcd:
            short_lease, short_ttl = await etcd.grant_lease(5)
            long_lease, long_ttl = await etcd.grant_lease(60)
            assert await etcd.refresh_lease(short_lease) == short_ttl
            stream = etcd._keepalive
            assert stream is not None
            for _ in range(3):
                assert await etcd.refresh_lease(long_lease) == long_ttl
                assert await etcd.refresh_lease(short_lease) == short_ttl
            assert etcd._keepalive is stream
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0):
                    await etcd.refresh_lease(short_lease)
            assert etcd._keepalive is None
            assert await etcd.refresh_lease(long_lease) == long_ttl
            assert etcd._keepalive is not stream
            await etcd.revoke_lease(short_lease)
            assert await etcd.refresh_lease(short_lease) == 0
            assert await etcd.refresh_lease(long_lease) == long_ttl

    run(scenario())


def test_no_map_until_the_failure_domain_rule_can_be_met(etcd_server: EtcdServer) -> None:
    """Zones of 8, 2, 2 and 2 nodes: the leader publishes nothing and reports the rule unmet; once
    the small zones grow, the first map appears with at most 4 fragments per zone."""

    def zoned(index: int, zone: str) -> cluster_pb2.NodeRegistration:
        reg = registration(index)
        reg.failure_domain.zone = zone
        return reg

    async def scenario() -> None:
        prefix = new_prefix()
        endpoint = etcd_server.endpoint
        zones = {i: "a" if i < 8 else "bcd"[(i - 8) // 2] for i in range(14)}
        registrars = [NodeRegistrar(endpoint, zoned(i, z), ttl_seconds=LEASE_TTL, prefix=prefix)
                      for i, z in zones.items()]
        service = PlacementService(endpoint, pg_count=PG_COUNT, down_out_interval=600.0, min_nodes=14,
                                   instance_id="solo", prefix=prefix, leader_ttl_seconds=2.0, poll_interval=0.5)
        try:
            for registrar in registrars:
                await registrar.start()
                await registrar.wait_registered(timeout=10)
            await service.start()

            async def rule_reported_unmet() -> bool:
                return REGISTRY.get_sample_value("coffer_placement_rule_satisfied", {"level": "zone"}) == 0.0

            await eventually(rule_reported_unmet, "the rule gauge to report 0 at zone level")
            assert await load_cluster_map(endpoint, prefix=prefix) is None

            for index, zone in {14: "b", 15: "b", 16: "c", 17: "d"}.items():  # zones now 8, 4, 3, 3
                registrars.append(NodeRegistrar(endpoint, zoned(index, zone), ttl_seconds=LEASE_TTL, prefix=prefix))
                await registrars[-1].start()

            async def published() -> bool:
                return await load_cluster_map(endpoint, prefix=prefix) is not None

            await eventually(published, "the first map")
            cluster_map = await load_cluster_map(endpoint, prefix=prefix)
            assert cluster_map is not None
            for acting in cluster_map.acting_sets:
                per_zone = [cluster_map.node(n).failure_domain.zone for n in acting]
                assert max(per_zone.count(z) for z in "abcd") <= 4

            async def rule_reported_met() -> bool:
                return REGISTRY.get_sample_value("coffer_placement_rule_satisfied", {"level": "zone"}) == 1.0

            await eventually(rule_reported_met, "the rule gauge to report 1")
        finally:
            await service.stop()
            for registrar in registrars:
                await registrar.stop()

    run(scenario())
