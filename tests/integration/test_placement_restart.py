"""Placement across an etcd restart, and the placement service as a real process.

Its own module because it stops and restarts the module's etcd.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from placement.cluster_map import NodeState
from placement.etcd import EtcdClient, EtcdUnavailable
from placement.keys import ClusterKeys
from placement.registration import NodeRegistrar
from placement.service import PlacementService
from placement.watcher import ClusterMapWatcher
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.processes import free_port, stop_process, wait_until
from tests.integration.test_placement import (
    LEASE_TTL,
    PG_COUNT,
    eventually,
    map_with,
    new_prefix,
    registration,
    run,
    start_registrars,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_watcher_and_registrars_survive_etcd_restart(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        prefix = new_prefix()
        endpoint = etcd_server.endpoint
        service = PlacementService(endpoint, pg_count=PG_COUNT, down_out_interval=600.0, min_nodes=14,
                                   instance_id="solo", prefix=prefix, leader_ttl_seconds=2.0)
        registrars = await start_registrars(endpoint, prefix, range(14))
        await service.start()
        watcher = ClusterMapWatcher(endpoint, prefix=prefix)
        seen: list[int] = []
        watcher.add_listener(lambda m: seen.append(m.epoch))
        try:
            await watcher.start(timeout=20)
            before = watcher.current
            await asyncio.to_thread(etcd_server.stop)
            await asyncio.sleep(1.0)  # the watcher is now cut off from etcd
            assert watcher.current == before  # it keeps serving the last map
            await asyncio.to_thread(etcd_server.start)

            async def all_registered() -> bool:
                return all(r.registered for r in registrars)

            await eventually(all_registered, "registrars to be registered after the restart")
            registrars += await start_registrars(endpoint, prefix, [14])
            joined = await map_with(watcher, lambda m: "node-14" in m.nodes and
                                    m.node("node-14").state == NodeState.UP, "a new epoch after the restart")
            assert joined.epoch > before.epoch
            assert seen[-1] == joined.epoch
            assert seen == sorted(seen)  # epochs only move forward
        finally:
            await watcher.stop()
            for registrar in registrars:
                await registrar.stop()
            await service.stop()

    run(scenario(), timeout=60)


def test_registrar_recovers_a_lost_lease(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        prefix = new_prefix()
        registrar = NodeRegistrar(etcd_server.endpoint, registration(3), ttl_seconds=LEASE_TTL, prefix=prefix)
        await registrar.start()
        await registrar.wait_registered(timeout=10)
        try:
            async with EtcdClient(etcd_server.endpoint) as etcd:
                kv = await etcd.get(registrar.key)
                assert kv is not None
                await etcd.revoke_lease(kv.lease)  # as if the lease had lapsed
                assert await etcd.get(registrar.key) is None

                async def re_registered() -> bool:
                    current = await etcd.get(registrar.key)
                    return current is not None and current.lease != kv.lease

                await eventually(re_registered, "the registrar to re-register with a new lease")
        finally:
            await registrar.stop()

    run(scenario())


def test_placement_service_process(etcd_server: EtcdServer, tmp_path: Path) -> None:
    prefix = new_prefix()
    metrics_port = free_port()
    log = (tmp_path / "placement.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "placement.service", "--etcd", etcd_server.endpoint, "--pg-count", "32",
         "--down-out-interval", "5", "--min-nodes", "14", "--metrics-port", str(metrics_port),
         "--instance-id", "proc", "--prefix", prefix, "--leader-ttl", "2"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    keys = ClusterKeys(prefix)

    async def leader_value() -> bytes | None:
        async with EtcdClient(etcd_server.endpoint) as etcd:
            try:
                kv = await etcd.get(keys.placement_leader)
            except EtcdUnavailable:  # etcd still starting
                return b"unavailable"
            return None if kv is None else kv.value

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as response:
            return str(response.read().decode())

    try:
        wait_until(lambda: (asyncio.run(leader_value()) or b"").startswith(b"proc#"), 30, "the process to lead")
        wait_until(lambda: "coffer_placement_is_leader 1.0" in metrics(), 10, "is_leader metric")
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert asyncio.run(leader_value()) is None  # leadership released on SIGTERM, not left to lapse
    finally:
        stop_process(process)
        log.close()
