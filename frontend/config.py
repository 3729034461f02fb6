"""The frontend's configuration: one frozen value built once from the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from common.layout import WRITE_QUORUM

# S3's limits (Amazon S3 user guide, "Uploading and copying objects using multipart upload").
MAX_SINGLE_PUT_BYTES = 5 * 1024**3
MAX_PART_BYTES = 5 * 1024**3
MIN_PART_BYTES = 5 * 1024**2
MAX_PART_NUMBER = 10_000
MAX_USER_METADATA_BYTES = 2 * 1024

#: Chunks of one upload in progress at once; new stripes go out in batches of half as many, so each
#: storage node takes 16 fragments (~6.7 MB) per message and group commit. A node's cost per
#: message (gRPC and Python handling, wake-ups, a WAL append in small pieces) is large: 256 MiB PUTs
#: on the 14-node dev cluster cost the nodes 0.95-0.99 CPU-s each at 32 against 1.39-1.50 at 8
#: (1.19-1.26 at 16); their MB/s moved less and within noise. Memory is the price: one 256 MiB PUT
#: peaks at ~550 MB of frontend RSS (~210 MB at 8); ``upload_memory_bytes`` bounds the chunk
#: windows of all uploads together (their fragments in flight come on top). Beyond 32 a batch
#: exceeds the storage-node client's 8 MiB message bound and is split (48: no gain).
PARALLEL_CHUNKS = 32


@dataclass(frozen=True)
class FrontendConfig:
    """Settings of one frontend process.

    ``listen_host``/``listen_port``: the S3 endpoint. ``etcd_endpoint``: ``host:port``.
    ``metadata_path``: the SQLite file. ``metrics_port``: Prometheus (0 picks a free port,
    -1 disables). ``virtual_host_suffixes``: host names under which ``bucket.<suffix>`` addresses a
    bucket (virtual-hosted-style). ``parallel_chunks``: chunks of one request in progress at once
    (new stripes are sent in batches of half as many).
    ``erasure_workers``: processes that run the erasure coder. ``upload_memory_bytes``: memory all
    uploads in progress may hold together (beyond it, uploads wait their turn);
    ``read_memory_bytes``: the same for the read-ahead windows of all reads in progress.

    Garbage collection (frontend/garbage_collector.py; seconds): ``gc_enabled`` runs the collector
    in this process. ``gc_grace_seconds``: how long a chunk stays unreferenced before it is
    collected (must exceed the longest GET: it protects readers that loaded an object record just
    before its deletion). ``gc_interval_seconds``: between collection passes.
    ``orphan_grace_seconds``: the minimum age of a fragment without a chunk record before the
    orphan sweep deletes it (must exceed the time between a write's pin and its fragments landing).
    ``orphan_sweep_interval_seconds``: between sweeps. ``pin_ttl_seconds``: a writer's pin older
    than this is dropped (must exceed the longest PUT or UploadPart). ``gc_wait_seconds``: how long a
    write waits for a chunk being collected before answering 503 SlowDown.

    Sync API (frontend/sync/): ``sync_url_expires_seconds`` is the lifetime of a presigned chunk
    URL (X-Amz-Expires), ``sync_upload_expires_seconds`` how long an upload session lives after
    its last activity, ``sync_longpoll_max_seconds`` the longest wait of a ``/-/sync/changes``
    long poll.
    """

    listen_host: str = "127.0.0.1"
    listen_port: int = 9000
    etcd_endpoint: str = "127.0.0.1:2379"
    metadata_path: str = "metadata.sqlite3"
    metrics_port: int = 0
    region: str = "us-east-1"
    virtual_host_suffixes: tuple[str, ...] = field(default=("localhost",))
    write_quorum: int = WRITE_QUORUM
    parallel_chunks: int = PARALLEL_CHUNKS
    erasure_workers: int = 2
    map_timeout_seconds: float = 60.0
    upload_memory_bytes: int = 1024**3
    read_memory_bytes: int = 1024**3
    gc_enabled: bool = True
    gc_grace_seconds: float = 3600.0
    gc_interval_seconds: float = 60.0
    orphan_grace_seconds: float = 3600.0
    orphan_sweep_interval_seconds: float = 3600.0
    pin_ttl_seconds: float = 86400.0
    gc_wait_seconds: float = 10.0
    sync_url_expires_seconds: int = 900
    sync_upload_expires_seconds: float = 86400.0
    sync_longpoll_max_seconds: float = 60.0


def parse_args(argv: list[str] | None) -> FrontendConfig:
    """Build a :class:`FrontendConfig` from ``coffer frontend`` arguments.

    Raises:
        SystemExit: on invalid arguments (argparse prints the usage).
    """
    parser = argparse.ArgumentParser(prog="coffer frontend", description="Run the S3 frontend.")
    parser.add_argument("--listen", default="127.0.0.1:9000", help="host:port of the S3 endpoint")
    parser.add_argument("--etcd", default="127.0.0.1:2379", help="host:port of etcd")
    parser.add_argument("--metadata", default="metadata.sqlite3", help="path of the SQLite metadata file")
    parser.add_argument("--metrics-port", type=int, default=0, help="Prometheus port (0: any free, -1: off)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--virtual-host-suffix", action="append", default=None,
                        help="host suffix for virtual-hosted-style requests (repeatable; default localhost)")
    parser.add_argument("--write-quorum", type=int, default=WRITE_QUORUM)
    parser.add_argument("--parallel-chunks", type=int, default=PARALLEL_CHUNKS,
                        help="chunks of one upload in progress at once; new stripes go in batches of half as many")
    parser.add_argument("--erasure-workers", type=int, default=2)
    parser.add_argument("--upload-memory", type=int, default=1024**3,
                        help="bytes all uploads in progress may hold together (default 1 GiB)")
    parser.add_argument("--read-memory", type=int, default=1024**3,
                        help="bytes the read-ahead of all reads in progress may hold together (default 1 GiB)")
    parser.add_argument("--gc-grace", type=float, default=3600.0,
                        help="seconds a chunk stays unreferenced before garbage collection deletes it")
    parser.add_argument("--gc-interval", type=float, default=60.0, help="seconds between collection passes")
    parser.add_argument("--orphan-grace", type=float, default=3600.0,
                        help="minimum age in seconds of a fragment without a chunk record before the sweep deletes it")
    parser.add_argument("--orphan-sweep-interval", type=float, default=3600.0,
                        help="seconds between orphan sweeps")
    parser.add_argument("--pin-ttl", type=float, default=86400.0,
                        help="seconds after which a writer's chunk pin expires (longer than any PUT)")
    parser.add_argument("--gc-wait", type=float, default=10.0,
                        help="seconds a write waits for a chunk being collected before answering 503")
    parser.add_argument("--no-gc", action="store_true", help="do not run garbage collection in this frontend")
    parser.add_argument("--sync-url-lifetime", type=int, default=900,
                        help="seconds a presigned sync chunk URL stays valid (1..604800)")
    parser.add_argument("--sync-upload-lifetime", type=float, default=86400.0,
                        help="seconds a sync upload session lives after its last activity")
    parser.add_argument("--sync-longpoll-max", type=float, default=60.0,
                        help="longest wait in seconds of a /-/sync/changes long poll")
    args = parser.parse_args(argv)
    if args.parallel_chunks < 1:
        parser.error(f"--parallel-chunks must be at least 1, got {args.parallel_chunks}")
    if not 1 <= args.sync_url_lifetime <= 604_800:
        parser.error("--sync-url-lifetime must be 1..604800 seconds")
    for name in ("upload_memory", "read_memory", "sync_upload_lifetime", "sync_longpoll_max"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    for name in ("gc_grace", "gc_interval", "orphan_grace", "orphan_sweep_interval", "pin_ttl", "gc_wait"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--listen must be host:port, got {args.listen!r}")
    return FrontendConfig(
        listen_host=host,
        listen_port=int(port),
        etcd_endpoint=args.etcd,
        metadata_path=args.metadata,
        metrics_port=args.metrics_port,
        region=args.region,
        virtual_host_suffixes=tuple(args.virtual_host_suffix or ["localhost"]),
        write_quorum=args.write_quorum,
        parallel_chunks=args.parallel_chunks,
        erasure_workers=args.erasure_workers,
        upload_memory_bytes=args.upload_memory,
        read_memory_bytes=args.read_memory,
        gc_enabled=not args.no_gc,
        gc_grace_seconds=args.gc_grace,
        gc_interval_seconds=args.gc_interval,
        orphan_grace_seconds=args.orphan_grace,
        orphan_sweep_interval_seconds=args.orphan_sweep_interval,
        pin_ttl_seconds=args.pin_ttl,
        gc_wait_seconds=args.gc_wait,
        sync_url_expires_seconds=args.sync_url_lifetime,
        sync_upload_expires_seconds=args.sync_upload_lifetime,
        sync_longpoll_max_seconds=args.sync_longpoll_max,
    )
