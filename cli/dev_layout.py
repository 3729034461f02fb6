"""What a dev cluster consists of: its settings and ports (persisted in ``DIR/settings.json``) and
the command line of every process, derived from them.

Kept free of process handling so it can be tested as plain data. The directory layout::

    DIR/settings.json        node count, PG count, ports (so `up` again reuses them)
    DIR/cluster.json         endpoint, access key, secret key, region
    DIR/processes.json       what `up` started: role, node id, failure domain, pid, ports, command
    DIR/etcd/                etcd's data
    DIR/nodes/node-NN/volume-0/   one RocksDB volume per storage node
    DIR/metadata.sqlite3     the frontend's metadata
    DIR/logs/<name>.log      one log per process
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.ports import free_ports

SETTINGS_FORMAT_VERSION = 1
REGION = "us-east-1"
LOOPBACK = "127.0.0.1"
DEFAULT_NODES = 14
DEFAULT_FRONTEND_PORT = 9000
DEFAULT_PG_COUNT = 64
DEFAULT_DOWN_OUT_INTERVAL_SECONDS = 600.0
STRIPE_WIDTH_NODES = 14  # placement needs a full stripe's worth of nodes before it publishes a map

# Passed to every child: pyeclib's 4 MiB buffers otherwise page-fault on every call (perf-notes.md).
MALLOC_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "67108864", "MALLOC_TRIM_THRESHOLD_": "268435456"}


class DevClusterError(Exception):
    """A dev-cluster problem the operator can fix; the message says how."""


@dataclass(frozen=True)
class FailureDomain:
    """A storage node's location labels, outermost first."""

    zone: str
    rack: str
    host: str

    def __str__(self) -> str:
        return f"{self.zone}/{self.rack}/{self.host}"


@dataclass
class Settings:
    """The persisted shape of one dev cluster (``DIR/settings.json``).

    ``ports`` maps a process name (``etcd``, ``node-01``, ``placement``, ``frontend``) to
    ``{"port": int | None, "metrics_port": int}``; ``etcd_peer_port`` is etcd's raft port.
    ``capacity_bytes`` is what every storage node advertises. ``node_args`` / ``frontend_args`` are
    extra flags appended to every storage node's / the frontend's command line (e.g.
    ``--repair-scan-interval=1``); settings files without them still load.
    """

    nodes: int
    pg_count: int
    down_out_interval: float
    capacity_bytes: int
    etcd_peer_port: int
    ports: dict[str, dict[str, int | None]] = field(default_factory=dict)
    format_version: int = SETTINGS_FORMAT_VERSION
    node_args: list[str] = field(default_factory=list)
    frontend_args: list[str] = field(default_factory=list)

    @property
    def frontend_port(self) -> int:
        """The S3 endpoint's TCP port."""
        port = self.ports["frontend"]["port"]
        assert port is not None
        return port

    @property
    def etcd_port(self) -> int:
        """etcd's client port."""
        port = self.ports["etcd"]["port"]
        assert port is not None
        return port


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the cluster: how to start it and what to record about it.

    ``name`` is unique (``etcd``, ``node-03``, ``placement``, ``frontend``); ``port`` is its listen
    port (None for placement, which serves only metrics); ``command`` is the full argv.
    """

    name: str
    role: str
    node_id: str | None
    failure_domain: FailureDomain | None
    port: int | None
    metrics_port: int | None
    command: tuple[str, ...]
    log: Path


def node_ids(count: int) -> list[str]:
    """``node-01`` .. ``node-NN`` (zero-padded to at least two digits, so names sort)."""
    width = max(2, len(str(count)))
    return [f"node-{number:0{width}d}" for number in range(1, count + 1)]


def failure_domain_of(node_id: str) -> FailureDomain:
    """Each dev node is its own failure domain: ``node-03`` -> ``zone-03/rack-03/host-03``."""
    number = node_id.removeprefix("node-")
    return FailureDomain(zone=f"zone-{number}", rack=f"rack-{number}", host=f"host-{number}")


def process_names(nodes: int) -> list[str]:
    """Every process in start order: etcd, the storage nodes, placement, frontend."""
    return ["etcd", *node_ids(nodes), "placement", "frontend"]


def settings_path(data_dir: Path) -> Path:
    """``DIR/settings.json``."""
    return data_dir / "settings.json"


def load_settings(data_dir: Path) -> Settings | None:
    """The persisted settings of ``data_dir``; None if no cluster was ever created there.

    Raises:
        DevClusterError: if the file is unreadable or from an unknown format version.
    """
    path = settings_path(data_dir)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise DevClusterError(f"cannot read {path}: {error}; fix or delete it (deleting it forgets "
                              "the ports, not the data)") from error
    if raw.get("format_version") != SETTINGS_FORMAT_VERSION:
        raise DevClusterError(f"{path} has format version {raw.get('format_version')!r}, this coffer "
                              f"understands {SETTINGS_FORMAT_VERSION}; use a new --data directory")
    return Settings(**raw)


def write_json_atomically(path: Path, document: Any) -> None:
    """Write ``document`` as JSON to ``path`` via a temporary file and rename (never half-written)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def save_settings(data_dir: Path, settings: Settings) -> None:
    """Persist ``settings`` to ``DIR/settings.json``."""
    write_json_atomically(settings_path(data_dir), asdict(settings))


def _free_ports(count: int) -> Iterator[int]:
    """``count`` distinct free ports on 127.0.0.1, outside the kernel's ephemeral range."""
    yield from free_ports(count, LOOPBACK)


def port_in_use(port: int) -> bool:
    """True when ``127.0.0.1:port`` cannot be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def new_settings(data_dir: Path, *, nodes: int, frontend_port: int, base_port: int, pg_count: int,
                 down_out_interval: float) -> Settings:
    """Choose ports and capacity for a new cluster.

    ``frontend_port`` is the S3 port (0 = any free port). The other ports (etcd client and peer,
    every process's metrics port, every node's gRPC port) are ``base_port``, ``base_port + 1``, ...
    or, with ``base_port`` 0, ports the kernel reports free; never ``frontend_port``.

    Raises:
        DevClusterError: for a node count below 1 or a PG count that is not a power of two.
    """
    if nodes < 1:
        raise DevClusterError("--nodes must be at least 1 (a full stripe needs 14)")
    if pg_count < 1 or pg_count & (pg_count - 1):
        raise DevClusterError(f"--pg-count must be a power of two, got {pg_count}")
    names = process_names(nodes)
    # etcd peer + one metrics port per process + a listen port per node and for etcd.
    needed = 1 + len(names) + nodes + 1 + (1 if frontend_port == 0 else 0)
    # A given S3 port is free now only because the frontend has not started: never hand it out
    # (one spare port makes up for skipping it).
    candidates = range(base_port, base_port + needed + 1) if base_port else _free_ports(needed + 1)
    pool = (port for port in candidates if port != frontend_port)
    ports: dict[str, dict[str, int | None]] = {}
    etcd_port = next(pool)
    ports["etcd"] = {"port": etcd_port, "metrics_port": etcd_port}  # etcd serves /metrics itself
    etcd_peer_port = next(pool)
    for node_id in node_ids(nodes):
        ports[node_id] = {"port": next(pool), "metrics_port": next(pool)}
    ports["placement"] = {"port": None, "metrics_port": next(pool)}
    ports["frontend"] = {"port": frontend_port or next(pool), "metrics_port": next(pool)}
    data_dir.mkdir(parents=True, exist_ok=True)
    # Every node claims an equal share of the disk the volumes live on.
    capacity_bytes = shutil.disk_usage(data_dir).total // nodes
    return Settings(nodes=nodes, pg_count=pg_count, down_out_interval=down_out_interval,
                    capacity_bytes=capacity_bytes, etcd_peer_port=etcd_peer_port, ports=ports)


def add_node_to_settings(settings: Settings, ports: Iterator[int] | None = None) -> str:
    """Grow ``settings`` by one storage node (``coffer dev add-node``) and return its id.

    The node is the next id (``node-15`` after 14 nodes), its own failure domain, with two new
    ports (gRPC, metrics) from ``ports`` (default: free ports on 127.0.0.1) that no process of the
    cluster uses. Mutates ``settings`` (``nodes`` and ``ports``); the caller saves it.

    Raises:
        DevClusterError: if the next id would change the width of every node id (99 -> 100 nodes:
            the existing nodes' names, and so their data directories, would change).
    """
    next_count = settings.nodes + 1
    if len(node_ids(next_count)[0]) != len(node_ids(settings.nodes)[0]):
        raise DevClusterError(f"a dev cluster cannot grow from {settings.nodes} to {next_count} nodes (node ids "
                              "would be renamed); create a new cluster with --nodes instead")
    node_id = node_ids(next_count)[-1]
    taken = {port for entry in settings.ports.values() for port in entry.values() if port is not None}
    taken.add(settings.etcd_peer_port)
    source = ports if ports is not None else _free_ports(8)
    chosen = [port for port in source if port not in taken][:2]
    if len(chosen) < 2:
        raise DevClusterError("no two free ports found for the new node; stop something and try again")
    settings.ports[node_id] = {"port": chosen[0], "metrics_port": chosen[1]}
    settings.nodes = next_count
    return node_id


def _python_entry(subcommand: str, *arguments: str) -> tuple[str, ...]:
    """The argv that runs ``coffer SUBCOMMAND ...`` with this very interpreter."""
    return (sys.executable, "-m", "cli", subcommand, *arguments)


def process_specs(data_dir: Path, settings: Settings, etcd_binary: str) -> list[ProcessSpec]:
    """The command line and records of every process of the cluster, in start order.

    ``data_dir`` must be absolute (commands are run from elsewhere and compared verbatim later).
    """
    etcd = f"{LOOPBACK}:{settings.etcd_port}"
    logs = data_dir / "logs"
    specs: list[ProcessSpec] = []
    peer_url = f"http://{LOOPBACK}:{settings.etcd_peer_port}"
    client_url = f"http://{etcd}"
    specs.append(ProcessSpec(
        name="etcd", role="etcd", node_id=None, failure_domain=None, port=settings.etcd_port,
        metrics_port=settings.etcd_port, log=logs / "etcd.log",
        command=(etcd_binary, "--name", "coffer-dev", "--data-dir", str(data_dir / "etcd"),
                 "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                 "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                 "--initial-cluster", f"coffer-dev={peer_url}", "--log-level", "warn"),
    ))
    for node_id in node_ids(settings.nodes):
        ports = settings.ports[node_id]
        domain = failure_domain_of(node_id)
        specs.append(ProcessSpec(
            name=node_id, role="storagenode", node_id=node_id, failure_domain=domain,
            port=ports["port"], metrics_port=ports["metrics_port"], log=logs / f"{node_id}.log",
            command=_python_entry(
                "storagenode", "--node-id", node_id, "--listen", f"{LOOPBACK}:{ports['port']}",
                "--volume", str(data_dir / "nodes" / node_id / "volume-0"), "--etcd", etcd,
                "--zone", domain.zone, "--rack", domain.rack, "--host", domain.host,
                "--capacity-bytes", str(settings.capacity_bytes),
                "--metrics-port", str(ports["metrics_port"]), *settings.node_args),
        ))
    placement_metrics = settings.ports["placement"]["metrics_port"]
    specs.append(ProcessSpec(
        name="placement", role="placement", node_id=None, failure_domain=None, port=None,
        metrics_port=placement_metrics, log=logs / "placement.log",
        command=_python_entry(
            "placement", "--etcd", etcd, "--pg-count", str(settings.pg_count),
            "--down-out-interval", f"{settings.down_out_interval:g}",
            "--min-nodes", str(min(STRIPE_WIDTH_NODES, settings.nodes)),
            "--metrics-port", str(placement_metrics), "--instance-id", "placement-1"),
    ))
    frontend = settings.ports["frontend"]
    specs.append(ProcessSpec(
        name="frontend", role="frontend", node_id=None, failure_domain=None, port=frontend["port"],
        metrics_port=frontend["metrics_port"], log=logs / "frontend.log",
        command=_python_entry(
            "frontend", "--listen", f"{LOOPBACK}:{frontend['port']}", "--etcd", etcd,
            "--metadata", str(data_dir / "metadata.sqlite3"),
            "--metrics-port", str(frontend["metrics_port"]), "--region", REGION, *settings.frontend_args),
    ))
    return specs


def child_environment() -> dict[str, str]:
    """The environment for every child: ours, plus the malloc tuning, unbuffered output, and this
    checkout on ``PYTHONPATH`` (so ``python -m cli`` works even without an editable install)."""
    environment = dict(os.environ)
    environment.update(MALLOC_ENVIRONMENT)
    environment["PYTHONUNBUFFERED"] = "1"
    root = str(Path(__file__).resolve().parent.parent)
    existing = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = root if not existing else f"{root}{os.pathsep}{existing}"
    return environment
