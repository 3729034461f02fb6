"""Drain requests through a real etcd: the keys, and the placement leader publishing a new epoch in
which the drained node is flagged ``draining`` and holds no position (then gets them back)."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from cli.status import collect, render_text, summarize
from placement.cluster_map import ClusterMap, NodeState
from placement.drain import cancel_drain, drain_requests, drain_requests_at, request_drain
from placement.etcd import EtcdClient, EtcdUnavailable
from placement.keys import DEFAULT_PREFIX, ClusterKeys
from placement.service import PlacementService
from placement.watcher import ClusterMapWatcher
from storagenode.client import StorageNodeClient
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.processes import free_port, port_open, stop_process, wait_until
from tests.integration.test_placement import eventually, map_with, new_prefix, run, start_registrars

pytestmark = pytest.mark.integration

PG_COUNT = 32
REPO_ROOT = Path(__file__).resolve().parents[2]


async def etcd_ready(endpoint: str) -> None:
    """Wait until etcd answers: the fixture only waits for its port, and the first gRPC handshake
    to a just-started etcd can still fail on a loaded machine."""
    async def answers() -> bool:
        try:
            async with EtcdClient(endpoint, timeout=2.0) as etcd:
                await etcd.get("/ready-probe")
        except EtcdUnavailable:
            return False
        return True

    await eventually(answers, "etcd to answer")


def test_drain_keys_round_trip(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        prefix = new_prefix()
        await etcd_ready(etcd_server.endpoint)
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


def _start_node(directory: Path, etcd: str, port: int, metrics_port: int) -> subprocess.Popen[bytes]:
    """A real storage node ``node-00`` registered under the default prefix (zone ``zone-real``)."""
    command = [sys.executable, "-m", "storagenode.server", "--node-id", "node-00",
               "--listen", f"127.0.0.1:{port}", "--volume", str(directory / "volume-0"),
               "--zone", "zone-real", "--rack", "rack-real", "--host", "host-real",
               "--capacity-bytes", str(10**12), "--metrics-port", str(metrics_port), "--lease-ttl", "2",
               "--etcd", etcd]
    with open(directory / "node.log", "ab") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: port_open(port) or process.poll() is not None, 30, "storage node to listen")
    assert process.poll() is None, (directory / "node.log").read_text()
    return process


def _start_drain_command(endpoint: str) -> subprocess.Popen[str]:
    """``coffer node drain node-00 --wait`` as its own process (it runs its own event loop)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "node", "drain", "node-00", "--etcd", endpoint, "--wait", "--timeout", "60"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_status_and_drain_wait_with_a_real_node(etcd_server: EtcdServer, tmp_path: Path) -> None:
    """One real node (node-00) among 14 registered stand-ins: `coffer status` reads its Health and
    metrics; `coffer node drain node-00 --wait` returns only once placement moved its positions
    and its volume holds no fragment (here the test deletes them, standing in for handoff)."""
    endpoint = etcd_server.endpoint
    port, metrics_port = free_port(), free_port()
    process = _start_node(tmp_path, endpoint, port, metrics_port)
    drain_command: subprocess.Popen[str] | None = None
    try:
        async def scenario() -> None:
            nonlocal drain_command
            registrars = await start_registrars(endpoint, DEFAULT_PREFIX, range(1, 15))
            service = PlacementService(endpoint, pg_count=PG_COUNT, down_out_interval=600.0, min_nodes=14,
                                       instance_id="solo", leader_ttl_seconds=2.0)
            await service.start()
            watcher = ClusterMapWatcher(endpoint)
            client = StorageNodeClient(f"127.0.0.1:{port}")
            try:
                await watcher.start(timeout=30)
                first = await map_with(watcher, lambda m: len(m.nodes) == 15, "all 15 nodes")
                held = [(pg, acting.index("node-00")) for pg, acting in enumerate(first.acting_sets)
                        if "node-00" in acting][:3]
                assert held
                stored = []
                for number, (pg, position) in enumerate(held):
                    chunk_hash = next(h for h in (hashlib.sha256(f"{number}-{i}".encode()).digest()
                                                  for i in range(10_000)) if first.placement_group(h) == pg)
                    await client.put_fragment(chunk_hash, position, pg, b"x" * 4096, 40960, first.epoch)
                    stored.append((chunk_hash, position, pg))

                collected = await collect(endpoint)
                status = summarize(collected.cluster_map, collected.registrations, collected.healths,
                                   collected.metrics, collected.now)
                row = next(r for r in status.nodes if r.node_id == "node-00")
                assert row.reachable is True and row.fragments == len(stored)
                assert collected.metrics["node-00"] is not None  # scraped via the registered address
                assert status.at_risk  # the 14 stand-ins do not answer Health
                assert "up (no answer)" in render_text(status)

                drain_command = _start_drain_command(endpoint)
                drained = await map_with(watcher, lambda m: m.node("node-00").draining, "node-00 draining")
                assert all("node-00" not in acting for acting in drained.acting_sets)
                await asyncio.sleep(1.5)  # the command sees fragments left and keeps waiting
                assert drain_command.poll() is None
                for chunk_hash, position, pg in stored:
                    assert await client.delete_fragment(chunk_hash, position, pg)
            finally:
                await client.close()
                await watcher.stop()
                for registrar in registrars:
                    await registrar.stop()
                await service.stop()

        run(scenario(), timeout=90)
        assert drain_command is not None
        out, err = drain_command.communicate(timeout=60)
        assert drain_command.returncode == 0, out + err
        assert "node-00 holds no fragments: safe to remove" in out
        assert "fragments left to hand over" in out or "fragments left: ~" in out
    finally:
        if drain_command is not None and drain_command.poll() is None:
            drain_command.kill()
            drain_command.wait(10)
        stop_process(process)
