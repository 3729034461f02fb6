"""The storage-node process: ``coffer storagenode`` (also ``python -m storagenode.server``).

Opens the volumes, serves ``StorageNode`` over gRPC (uvloop, 64 MiB message limits), exposes
Prometheus metrics and, given ``--etcd``, registers the node under a lease through
``placement.registration.NodeRegistrar``, watches the cluster map and runs repair; the scrubber
runs in every node (``storagenode.background``). SIGTERM / SIGINT: stop accepting calls, stop the
background work, let calls in progress finish, close RocksDB, revoke the lease, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import uvloop

from common.logs import setup_logging
from common.malloc import tune_malloc
from common.metrics import serve_metrics
from proto import cluster_pb2
from storagenode.background import DurabilitySettings, NodeBackground
from storagenode.engine import FragmentEngine
from storagenode.errors import StorageError
from storagenode.rocksdb_crc32c import HARDWARE_CRC32C, use_hardware_crc32c
from storagenode.servicer import StorageNodeServicer, add_to_server

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
REGISTRATION_FORMAT_VERSION = 1
SERVER_OPTIONS: list[tuple[str, Any]] = [
    # A 4 MiB chunk (or a fragment of a large chunk size) exceeds gRPC's default 4 MiB limit.
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Clients ping idle long-lived streams to notice dead nodes; allow it.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]


@dataclass(frozen=True)
class NodeConfig:
    """Everything a storage node is started with (the ``coffer storagenode`` flags).

    ``listen`` is ``host:port`` (bind 127.0.0.1 in tests); ``volumes`` the RocksDB directories, in a
    fixed order; ``etcd`` ``host:port`` or None to run unregistered; ``capacity_bytes`` what the
    node advertises; ``metrics_port`` 0 picks a free port; ``lease_ttl_seconds`` the registration
    lease; ``drain_seconds`` how long calls in progress may take to finish at shutdown;
    ``durability`` what repair and scrub run with; ``hardware_crc32c`` whether ``main`` switches
    RocksDB to hardware CRC32C (``storagenode.rocksdb_crc32c``) before the volumes open.
    """

    node_id: str
    listen: str
    volumes: tuple[str, ...]
    zone: str
    rack: str
    host: str
    capacity_bytes: int
    metrics_port: int
    etcd: str | None = None
    lease_ttl_seconds: float = 5.0
    drain_seconds: float = 10.0
    engine_threads: int = 8
    durability: DurabilitySettings = field(default_factory=DurabilitySettings)
    hardware_crc32c: bool = True


USAGE_REPORT_SECONDS = 10.0


class _Registrar(Protocol):
    async def start(self) -> None: ...

    def update(self, used_bytes: int, full: bool | None = None) -> None: ...

    async def stop(self) -> None: ...


def _host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]


async def serve(config: NodeConfig, stop: asyncio.Event | None = None) -> None:
    """Run the node until ``stop`` is set or SIGTERM / SIGINT arrives, then shut down cleanly.

    Raises:
        StorageError: a volume cannot be opened.
        RuntimeError: the listen address cannot be bound.
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Outside the main thread there are no signal handlers: the caller sets ``stop``.
        with contextlib.suppress(RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)

    engine = await asyncio.to_thread(
        FragmentEngine, list(config.volumes),
        background_write_max_bytes_per_second=config.durability.background_write_max_bytes_per_second)
    executor = ThreadPoolExecutor(config.engine_threads, thread_name_prefix="engine")
    # Group-committed puts run one batch at a time anyway. A thread of their own keeps RocksDB's
    # write batches and memtable blocks in one malloc arena, so the memory a memtable flush frees
    # is what the next memtable reuses, instead of each pool thread's arena growing its own copy
    # (fewer fresh pages, each a host fault on a VM: after 26 PUTs of 256 MiB to a 14-node dev
    # cluster its nodes held 155-177 MB of anonymous memory each, against 157-221 MB).
    write_executor = ThreadPoolExecutor(1, thread_name_prefix="engine-write")
    servicer = StorageNodeServicer(config.node_id, engine, executor, write_executor=write_executor)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add_to_server(servicer, server)
    registrar: _Registrar | None = None
    background = NodeBackground(config.node_id, engine, executor, config.etcd, config.durability)
    servicer.set_repair_hints(background.hint)
    try:
        port = server.add_insecure_port(config.listen)
        if port == 0:
            raise RuntimeError(f"cannot listen on {config.listen}")
        address = f"{_host_of(config.listen)}:{port}"
        await server.start()
        metrics_port = serve_metrics(_host_of(config.listen), config.metrics_port)
        logger.info("serving", extra={"fields": {"address": address, "metrics_port": metrics_port,
                                                 "volumes": ",".join(config.volumes)}})
        if config.etcd:
            registrar = await _register(config, engine, address, f"{_host_of(config.listen)}:{metrics_port}")
        await background.start()
        await _report_usage_until(stop, engine, registrar)
        await background.stop()
        if registrar is not None:
            # Leave the cluster map first (lease revoked -> DOWN), so frontends route around this
            # node while it drains instead of sending it requests it will refuse.
            await registrar.stop()
            registrar = None
        logger.info("stopping: draining calls in progress")
        servicer.begin_drain()
        await server.stop(config.drain_seconds)
        await servicer.wait_idle()
    finally:
        await background.stop()
        await server.stop(0)
        await asyncio.to_thread(write_executor.shutdown, True)
        await asyncio.to_thread(executor.shutdown, True)
        await asyncio.to_thread(engine.close)
        if registrar is not None:
            await registrar.stop()
        logger.info("stopped")


#: A node calls itself full when a volume has less than this many times the engine's reserve free,
#: and not full again only once every volume has more than ``NOT_FULL_RESERVES`` times: the gap
#: keeps a node near the line from flapping in and out of placement.
FULL_RESERVES = 2
NOT_FULL_RESERVES = 4


def full_flag(free_bytes: Sequence[int], min_free_bytes: int) -> bool | None:
    """The node's ``full`` flag from each volume's free bytes: True (placement moves its positions
    elsewhere, as for a drain), False, or None (between the thresholds: keep the flag as it is)."""
    if any(free < FULL_RESERVES * min_free_bytes for free in free_bytes):
        return True
    if all(free > NOT_FULL_RESERVES * min_free_bytes for free in free_bytes):
        return False
    return None


async def _report_usage_until(
    stop: asyncio.Event, engine: FragmentEngine, registrar: _Registrar | None
) -> None:
    """Wait for ``stop``; meanwhile refresh the registration's used bytes and full flag every few
    seconds."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), USAGE_REPORT_SECONDS)
            return
        if registrar is not None:
            try:
                stats = await asyncio.to_thread(engine.stats)
            except StorageError:
                continue
            registrar.update(sum(volume.bytes_used for volume in stats),
                             full=full_flag([volume.bytes_free for volume in stats], engine.min_free_bytes))


async def _register(
    config: NodeConfig, engine: FragmentEngine, address: str, metrics_address: str
) -> _Registrar:
    # Imported here: storagenode depends on placement.registration only when it registers.
    from placement.registration import NodeRegistrar

    stats = await asyncio.to_thread(engine.stats)
    registration = cluster_pb2.NodeRegistration(
        format_version=REGISTRATION_FORMAT_VERSION,
        node_id=config.node_id,
        address=address,
        failure_domain=cluster_pb2.FailureDomain(zone=config.zone, rack=config.rack, host=config.host),
        capacity_bytes=config.capacity_bytes,
        used_bytes=sum(volume.bytes_used for volume in stats),
        volumes=list(config.volumes),
        metrics_address=metrics_address,
    )
    assert config.etcd is not None
    registrar = NodeRegistrar(config.etcd, registration, config.lease_ttl_seconds)
    await registrar.start()
    logger.info("registration started", extra={"fields": {"etcd": config.etcd,
                                                "ttl_seconds": config.lease_ttl_seconds}})
    return registrar


def parse_args(argv: list[str] | None) -> NodeConfig:
    """Parse ``coffer storagenode`` flags into a ``NodeConfig`` (argparse exits 2 on bad flags)."""
    parser = argparse.ArgumentParser(prog="coffer storagenode", description="Run a Coffer storage node.")
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--listen", required=True, help="host:port of the gRPC service")
    parser.add_argument("--volume", action="append", required=True, dest="volumes",
                        help="a RocksDB volume directory (repeatable; order is fixed)")
    parser.add_argument("--etcd", default=None, help="host:port; without it the node does not register")
    parser.add_argument("--zone", required=True)
    parser.add_argument("--rack", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--capacity-bytes", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--lease-ttl", type=float, default=5.0, help="registration lease, seconds")
    defaults = DurabilitySettings()
    parser.add_argument("--repair-bytes-per-second", type=float, default=defaults.repair_bytes_per_second,
                        help="bytes repair may fetch from other nodes per second")
    parser.add_argument("--repair-scan-interval", type=float, default=defaults.repair_scan_interval,
                        help="seconds between repair scans of this node's placement groups")
    parser.add_argument("--scrub-period", type=float, default=defaults.scrub_period,
                        help="seconds a full scrub pass over every fragment should take")
    parser.add_argument("--scrub-max-bytes-per-second", type=float, default=defaults.scrub_max_bytes_per_second,
                        help="the scrub never reads faster than this")
    parser.add_argument("--compaction-interval", type=float, default=defaults.compaction_interval,
                        help="seconds between checks for deleted fragments' disk space to give back")
    parser.add_argument("--compaction-garbage-ratio", type=float, default=defaults.compaction_garbage_ratio,
                        help="share of a volume's blob file bytes that must be garbage before live "
                             "fragments are moved out of the oldest blob files (0 < ratio <= 1)")
    parser.add_argument("--background-write-max-bytes-per-second", type=int,
                        default=defaults.background_write_max_bytes_per_second,
                        help="cap on each volume's flush and compaction writes, flushes first (RocksDB's "
                             "rate limiter); keep it above the volume's sustained write rate (default 0: "
                             "no cap)")
    parser.add_argument("--no-repair", action="store_true", help="do not run the repair agent")
    parser.add_argument("--no-scrub", action="store_true", help="do not run the scrubber")
    parser.add_argument("--no-compaction", action="store_true",
                        help="never give deleted fragments' disk space back")
    parser.add_argument("--software-crc32c", action="store_true",
                        help="keep RocksDB's built-in software CRC32C instead of switching it to the CPU's "
                             "CRC32 instruction (the checksums are the same; the switch saves ~2 CPU-s per GB "
                             "stored)")
    args = parser.parse_args(argv)
    for flag in ("repair_bytes_per_second", "repair_scan_interval", "scrub_period", "scrub_max_bytes_per_second",
                 "compaction_interval"):
        if not getattr(args, flag) > 0:
            parser.error(f"--{flag.replace('_', '-')} must be a positive number")
    if not 0 < args.compaction_garbage_ratio <= 1:
        parser.error("--compaction-garbage-ratio must be above 0 and at most 1")
    if args.background_write_max_bytes_per_second < 0:
        parser.error("--background-write-max-bytes-per-second must be 0 (no cap) or a positive number")
    return NodeConfig(
        node_id=args.node_id, listen=args.listen, volumes=tuple(args.volumes), zone=args.zone,
        rack=args.rack, host=args.host, capacity_bytes=args.capacity_bytes,
        metrics_port=args.metrics_port, etcd=args.etcd, lease_ttl_seconds=args.lease_ttl,
        hardware_crc32c=not args.software_crc32c,
        durability=DurabilitySettings(
            repair=not args.no_repair, repair_bytes_per_second=args.repair_bytes_per_second,
            repair_scan_interval=args.repair_scan_interval, scrub=not args.no_scrub,
            scrub_period=args.scrub_period, scrub_max_bytes_per_second=args.scrub_max_bytes_per_second,
            compaction=not args.no_compaction, compaction_interval=args.compaction_interval,
            compaction_garbage_ratio=args.compaction_garbage_ratio,
            background_write_max_bytes_per_second=args.background_write_max_bytes_per_second,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``coffer storagenode``; returns the process exit status (0 after a clean stop)."""
    tune_malloc()
    config = parse_args(argv)
    setup_logging(f"storagenode/{config.node_id}")
    try:
        # Before any volume opens: no RocksDB thread may run the code being switched.
        if config.hardware_crc32c:
            switch = use_hardware_crc32c()
            log = logger.info if switch.hardware else logger.warning
            log("rocksdb crc32c", extra={"fields": {"hardware": switch.hardware, "detail": switch.reason}})
        else:
            HARDWARE_CRC32C.set(0)
            logger.info("rocksdb crc32c", extra={"fields": {"hardware": False, "detail": "--software-crc32c"}})
        uvloop.run(serve(config))
    except (StorageError, RuntimeError, OSError) as exc:
        logger.error("storage node failed", extra={"fields": {"error": str(exc)}})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
