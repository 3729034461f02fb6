"""A real storage-node process (``python -m storagenode.server``) exercised through the real client."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from proto import cluster_pb2
from storagenode.client import StorageNodeClient
from storagenode.engine import HEADER, HEADERS_COLUMN_FAMILY, fragment_key
from storagenode.errors import FragmentCorrupt, FragmentNotFound, InvalidFragment, NodeUnavailable
from tests.fixtures.processes import free_port, port_open, stop_process, wait_until

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def chunk_hash_for(seed: int) -> bytes:
    return hashlib.sha256(seed.to_bytes(8, "big")).digest()


def fragment(seed: int, size: int = 50_000) -> bytes:
    return (hashlib.sha256(b"fragment" + seed.to_bytes(8, "big")).digest() * (size // 32 + 1))[:size]


@dataclass
class NodeProcess:
    """A storage node this test started; restartable on the same port and volumes."""

    directory: Path
    node_id: str = "node-test"
    port: int = field(default_factory=free_port)
    etcd: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def volumes(self) -> list[str]:
        return [str(self.directory / "volume-0"), str(self.directory / "volume-1")]

    def start(self) -> None:
        command = [
            sys.executable, "-m", "storagenode.server", "--node-id", self.node_id,
            "--listen", self.address, "--volume", self.volumes[0], "--volume", self.volumes[1],
            "--zone", "zone-a", "--rack", "rack-1", "--host", "host-1",
            "--capacity-bytes", str(10**12), "--metrics-port", "0", "--lease-ttl", "2",
            # These tests look at the request path: a scrub pass at start would quarantine the
            # fragment the bit-rot test damages before its read can report it.
            "--no-scrub",
        ]
        if self.etcd:
            command += ["--etcd", self.etcd]
        log = open(self.directory / "node.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        process = self.process
        wait_until(lambda: port_open(self.port) or process.poll() is not None, 30, "storage node to listen")
        assert process.poll() is None, (self.directory / "node.log").read_text()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def terminate(self) -> int:
        """SIGTERM and return the exit status."""
        self.signal(signal.SIGTERM)
        assert self.process is not None
        return self.process.wait(30)

    def cleanup(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGCONT)  # in case a test left it stopped
            stop_process(self.process)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(directory=tmp_path)
    try:
        node.start()
        yield node
    finally:
        node.cleanup()


def test_put_get_delete_list_and_health_over_grpc(node: NodeProcess) -> None:
    async def scenario() -> None:
        client = StorageNodeClient(node.address)
        try:
            data = fragment(1, 420_000)
            await client.put_fragment(chunk_hash_for(1), 3, 42, memoryview(data), 4_194_304, 7)
            assert await client.get_fragment(chunk_hash_for(1), 3, 42) == data
            with pytest.raises(FragmentNotFound):
                await client.get_fragment(chunk_hash_for(1), 4, 42)

            entries = await client.list_fragments(42)
            assert [(e.chunk_hash, e.index, e.length, e.chunk_size) for e in entries] == [
                (chunk_hash_for(1), 3, len(data), 4_194_304)
            ]
            health = await client.health()
            assert health.node_id == "node-test"
            assert [v.path for v in health.volumes] == node.volumes
            assert sum(v.fragments for v in health.volumes) == 1

            # Garbage collection's conditional delete keeps a record written at or after its time.
            written_at_ms = entries[0].written_at_ms
            assert written_at_ms > 0
            assert await client.delete_fragment(chunk_hash_for(1), 3, 42, written_before_ms=written_at_ms) is False
            assert await client.delete_fragment(chunk_hash_for(1), 3, 42,
                                                written_before_ms=written_at_ms + 1) is True
            await client.put_fragment(chunk_hash_for(1), 3, 42, memoryview(data), 4_194_304, 7)
            assert await client.delete_fragment(chunk_hash_for(1), 3, 42) is True
            assert await client.delete_fragment(chunk_hash_for(1), 3, 42) is False
            assert await client.list_fragments(42) == []
        finally:
            await client.close()

    asyncio.run(scenario())


def test_hundred_concurrent_puts_and_gets_on_one_stream(node: NodeProcess) -> None:
    async def scenario() -> None:
        client = StorageNodeClient(node.address)
        try:
            seeds = range(100)
            await asyncio.gather(*(
                client.put_fragment(chunk_hash_for(seed), seed % 14, seed % 4, fragment(seed), 10**6, 1)
                for seed in seeds
            ))
            results = await asyncio.gather(*(
                client.get_fragment(chunk_hash_for(seed), seed % 14, seed % 4) for seed in seeds
            ))
            assert results == [fragment(seed) for seed in seeds]
            listed = [await client.list_fragments(pg) for pg in range(4)]
            assert sorted(len(entries) for entries in listed) == [25, 25, 25, 25]
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_bad_request_fails_alone_and_the_stream_keeps_serving(node: NodeProcess) -> None:
    async def scenario() -> None:
        client = StorageNodeClient(node.address)
        try:
            results = await asyncio.gather(
                client.put_fragment(b"too short", 0, 1, b"data", 4, 1),
                client.put_fragment(chunk_hash_for(2), 14, 1, b"data", 4, 1),
                client.put_fragment(chunk_hash_for(3), 0, 1, b"good", 4, 1),
                client.get_fragment(chunk_hash_for(4), 0, 1),
                return_exceptions=True,
            )
            assert isinstance(results[0], InvalidFragment)
            assert isinstance(results[1], InvalidFragment)
            assert results[2] is None
            assert isinstance(results[3], FragmentNotFound)
            assert await client.get_fragment(chunk_hash_for(3), 0, 1) == b"good"
        finally:
            await client.close()

    asyncio.run(scenario())


def test_killed_node_fails_fast_and_acknowledged_writes_survive_restart(node: NodeProcess) -> None:
    async def scenario() -> None:
        # A long timeout: failures below must come from the broken connection, not from waiting.
        client = StorageNodeClient(node.address, timeout=120)
        try:
            await asyncio.gather(*(
                client.put_fragment(chunk_hash_for(seed), 0, 9, fragment(seed), 10**6, 1)
                for seed in range(20)
            ))
            # Freeze the node so requests are surely in flight, then kill it under them.
            node.signal(signal.SIGSTOP)
            pending = [asyncio.create_task(client.get_fragment(chunk_hash_for(seed), 0, 9))
                       for seed in range(5)]
            await asyncio.sleep(0.2)
            await asyncio.to_thread(node.kill)
            results = await asyncio.gather(*pending, return_exceptions=True)
            assert all(isinstance(result, NodeUnavailable) for result in results), results
            assert not any("no answer within" in str(result) for result in results)
            with pytest.raises(NodeUnavailable):
                await client.get_fragment(chunk_hash_for(0), 0, 9)

            await asyncio.to_thread(node.start)
            data = await _first_success_at(client, chunk_hash_for(0), 0, 9)
            assert data == fragment(0)
            for seed in range(20):
                assert await client.get_fragment(chunk_hash_for(seed), 0, 9) == fragment(seed)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_unresponsive_node_times_out_as_node_unavailable(node: NodeProcess) -> None:
    async def scenario() -> None:
        client = StorageNodeClient(node.address, timeout=1.0)
        try:
            await client.put_fragment(chunk_hash_for(1), 0, 1, b"x", 1, 1)
            node.signal(signal.SIGSTOP)
            try:
                with pytest.raises(NodeUnavailable, match="no answer within"):
                    await client.get_fragment(chunk_hash_for(1), 0, 1)
            finally:
                node.signal(signal.SIGCONT)
            assert await client.get_fragment(chunk_hash_for(1), 0, 1) == b"x"
        finally:
            await client.close()

    asyncio.run(scenario())


def test_bit_rot_on_disk_is_reported_as_corrupt(node: NodeProcess) -> None:
    data = fragment(5, 300_000)

    async def put() -> None:
        client = StorageNodeClient(node.address)
        try:
            await client.put_fragment(chunk_hash_for(5), 2, 3, data, 10**6, 1)
        finally:
            await client.close()

    asyncio.run(put())
    assert node.terminate() == 0
    chunk_hash = chunk_hash_for(5)
    volume = node.volumes[int.from_bytes(chunk_hash[8:16], "big") % 2]
    database = Rdict(volume, Options(raw_mode=True),
                     column_families={HEADERS_COLUMN_FAMILY: Options(raw_mode=True)})
    try:
        key = fragment_key(chunk_hash, 2, 3)
        value = bytearray(database[key] or b"")
        value[HEADER.size + 100_000] ^= 0x40
        database[key] = bytes(value)
    finally:
        database.close()
        del database
    node.start()

    async def read() -> None:
        client = StorageNodeClient(node.address)
        try:
            with pytest.raises(FragmentCorrupt):
                await client.get_fragment(chunk_hash, 2, 3)
            assert (await client.health()).corrupt_fragments_detected == 1
        finally:
            await client.close()

    asyncio.run(read())


def test_registers_in_etcd_and_revokes_the_lease_on_sigterm(tmp_path: Path, etcd_server: object) -> None:
    from placement.etcd import EtcdClient, EtcdUnavailable
    from placement.keys import ClusterKeys

    endpoint = etcd_server.endpoint  # type: ignore[attr-defined]
    node = NodeProcess(directory=tmp_path, node_id="node-etcd", etcd=endpoint)
    key = ClusterKeys().node("node-etcd")

    async def registration() -> cluster_pb2.NodeRegistration | None:
        async with EtcdClient(endpoint) as etcd:
            record = await etcd.get(key)
        return None if record is None else cluster_pb2.NodeRegistration.FromString(record.value)

    def registered() -> bool:
        try:
            return asyncio.run(registration()) is not None
        except EtcdUnavailable:  # etcd may still be starting
            return False

    try:
        node.start()
        wait_until(registered, 30, "the node to register")
        record = asyncio.run(registration())
        assert record is not None
        assert record.address == node.address
        assert (record.failure_domain.zone, record.failure_domain.rack, record.failure_domain.host) == (
            "zone-a", "rack-1", "host-1")
        assert list(record.volumes) == node.volumes
        assert node.terminate() == 0
        assert asyncio.run(registration()) is None
    finally:
        node.cleanup()


def test_sigterm_with_an_open_stream_exits_zero_and_keeps_the_data(node: NodeProcess) -> None:
    async def scenario() -> None:
        client = StorageNodeClient(node.address, timeout=60)
        try:
            await client.put_fragment(chunk_hash_for(8), 1, 2, b"kept", 4, 1)
            assert await asyncio.to_thread(node.terminate) == 0
            with pytest.raises(NodeUnavailable):
                await client.get_fragment(chunk_hash_for(8), 1, 2)
            await asyncio.to_thread(node.start)
            assert await _first_success_at(client, chunk_hash_for(8), 1, 2) == b"kept"
        finally:
            await client.close()

    asyncio.run(scenario())


async def _first_success_at(client: StorageNodeClient, chunk_hash: bytes, index: int, pg: int) -> bytes:
    """Retry a get while a restarted node comes up (the client reconnects on its own)."""
    for _attempt in range(100):
        try:
            return await client.get_fragment(chunk_hash, index, pg)
        except NodeUnavailable:
            await asyncio.sleep(0.2)
    raise AssertionError("client never reconnected")
