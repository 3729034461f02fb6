"""`coffer dev up|status|down|start|kill|add-node`: a whole Coffer cluster on one machine.

``up`` starts etcd, N storage nodes (each its own failure domain), the placement service and the
frontend on 127.0.0.1, waits until the frontend's ``/-/ready`` answers 200, creates an access key
on first start and either supervises in the foreground (Ctrl-C / SIGTERM stop everything) or, with
``--detach``, returns and leaves the processes running. All state lives under one directory
(layout in ``cli/dev_layout.py``), so ``up`` again reuses the same ports and data.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from cli import processes
from cli.dev_layout import (
    DEFAULT_DOWN_OUT_INTERVAL_SECONDS,
    DEFAULT_FRONTEND_PORT,
    DEFAULT_NODES,
    DEFAULT_PG_COUNT,
    LOOPBACK,
    REGION,
    DevClusterError,
    ProcessSpec,
    Settings,
    add_node_to_settings,
    child_environment,
    load_settings,
    new_settings,
    port_in_use,
    process_specs,
    save_settings,
    write_json_atomically,
)
from cli.processes import ProcessIdentity

PROCESSES_FORMAT_VERSION = 1
STOP_ORDER = ("frontend", "placement", "storagenode", "etcd")
STOP_TIMEOUT_SECONDS = 15.0
LOG_TAIL_LINES = 30


def _say(message: str, stream: TextIO | None = None) -> None:
    print(message, file=stream or sys.stdout, flush=True)


# ----------------------------------------------------------------------------- records


@dataclass
class ProcessRecord:
    """One started process as written to ``DIR/processes.json``.

    ``failure_domain`` is ``zone/rack/host`` for storage nodes, None otherwise; ``start_time`` is
    the kernel's start time (clock ticks after boot) used with ``command`` to recognise the process.
    """

    name: str
    role: str
    node_id: str | None
    failure_domain: str | None
    pid: int
    start_time: int
    port: int | None
    metrics_port: int | None
    command: list[str]
    log: str

    @property
    def identity(self) -> ProcessIdentity:
        """The identity that ``cli.processes`` checks before trusting or signalling ``pid``."""
        return ProcessIdentity(pid=self.pid, start_time=self.start_time, command=tuple(self.command))

    def is_running(self) -> bool:
        """True when the recorded process is alive and still the one we started."""
        return processes.is_running(self.identity)

    @classmethod
    def started(cls, spec: ProcessSpec, identity: ProcessIdentity) -> ProcessRecord:
        """The record of ``spec`` just started as ``identity``."""
        return cls(name=spec.name, role=spec.role, node_id=spec.node_id,
                   failure_domain=str(spec.failure_domain) if spec.failure_domain else None,
                   pid=identity.pid, start_time=identity.start_time, port=spec.port,
                   metrics_port=spec.metrics_port, command=list(identity.command), log=str(spec.log))


def processes_path(data_dir: Path) -> Path:
    """``DIR/processes.json``."""
    return data_dir / "processes.json"


def cluster_path(data_dir: Path) -> Path:
    """``DIR/cluster.json``."""
    return data_dir / "cluster.json"


def load_records(data_dir: Path) -> list[ProcessRecord]:
    """The processes recorded by the last ``up`` (empty if none).

    Raises:
        DevClusterError: if ``processes.json`` is unreadable.
    """
    path = processes_path(data_dir)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        raise DevClusterError(f"cannot read {path}: {error}") from error
    return [ProcessRecord(**entry) for entry in raw.get("processes", [])]


def save_records(data_dir: Path, records: Sequence[ProcessRecord]) -> None:
    """Write ``DIR/processes.json`` (atomically)."""
    document = {"format_version": PROCESSES_FORMAT_VERSION,
                "processes": [vars(record) for record in records]}
    write_json_atomically(processes_path(data_dir), document)


def load_cluster_info(data_dir: Path) -> dict[str, str] | None:
    """``DIR/cluster.json``: endpoint, access_key, secret_key, region; None before the first ``up``."""
    try:
        return dict(json.loads(cluster_path(data_dir).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise DevClusterError(f"cannot read {cluster_path(data_dir)}: {error}") from error


@contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """Hold ``DIR/.lock`` so two ``coffer dev`` commands never start or stop one cluster at once."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevClusterError(f"another `coffer dev` command is working on {data_dir}; wait for it "
                                  "to finish") from None
        yield


def _log_tail(path: Path | str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "    (no log yet)"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) if tail else "    (log is empty)"


# ----------------------------------------------------------------------------- up


@dataclass(frozen=True)
class UpOptions:
    """The arguments of ``coffer dev up``. None means "not given": the persisted or default value."""

    data_dir: Path
    nodes: int | None
    port: int | None
    base_port: int
    detach: bool
    pg_count: int | None
    down_out_interval: float | None
    timeout: float
    node_args: tuple[str, ...] | None = None
    frontend_args: tuple[str, ...] | None = None


def find_etcd() -> str:
    """Path of Debian's ``etcd`` binary (package ``etcd-server``), looked up on ``PATH``.

    Raises:
        DevClusterError: if it is not installed, naming the command that installs it.
    """
    binary = shutil.which("etcd")
    if binary is None:
        raise DevClusterError(
            "etcd is not installed. Install it with `sudo apt-get install -y etcd-server` "
            "(Debian/Ubuntu), or run `bash scripts/setup.sh`, then run `coffer dev up` again.")
    return binary


def _resolve_settings(options: UpOptions) -> Settings:
    """Load the persisted settings (checking they agree with the flags) or create new ones."""
    settings = load_settings(options.data_dir)
    if settings is None:
        settings = new_settings(
            options.data_dir, nodes=options.nodes or DEFAULT_NODES,
            frontend_port=DEFAULT_FRONTEND_PORT if options.port is None else options.port,
            base_port=options.base_port, pg_count=options.pg_count or DEFAULT_PG_COUNT,
            down_out_interval=(DEFAULT_DOWN_OUT_INTERVAL_SECONDS if options.down_out_interval is None
                               else options.down_out_interval))
        _apply_extra_args(settings, options)
        return settings
    fixed = {"--nodes": (options.nodes, settings.nodes), "--port": (options.port, settings.frontend_port),
             "--pg-count": (options.pg_count, settings.pg_count)}
    for flag, (given, persisted) in fixed.items():
        if given is not None and given not in (persisted, 0):
            raise DevClusterError(
                f"{options.data_dir} holds a cluster created with {flag} {persisted}; run `coffer dev up "
                f"--data {options.data_dir}` without {flag}, or use a new --data directory")
    if options.down_out_interval is not None:
        settings.down_out_interval = options.down_out_interval  # safe to change between runs
    _apply_extra_args(settings, options)
    return settings


def _apply_extra_args(settings: Settings, options: UpOptions) -> None:
    """Extra node / frontend flags given to this ``up`` replace the persisted ones (not given:
    the persisted ones stay); they only tune processes, so they may change between runs."""
    if options.node_args is not None:
        settings.node_args = list(options.node_args)
    if options.frontend_args is not None:
        settings.frontend_args = list(options.frontend_args)


def _check_ports_free(specs: Sequence[ProcessSpec], settings: Settings) -> None:
    busy = [(spec.name, port) for spec in specs for port in {spec.port, spec.metrics_port}
            if port is not None and port_in_use(port)]
    if port_in_use(settings.etcd_peer_port):
        busy.append(("etcd (peer)", settings.etcd_peer_port))
    if busy:
        described = ", ".join(f"{port} ({name})" for name, port in busy)
        raise DevClusterError(
            f"port(s) already in use: {described}. Stop whatever holds them (an old cluster: "
            "`coffer dev down --data DIR`), or choose other ports with a new --data directory and --port.")


class _StartupFailed(Exception):
    """A stage of ``up`` failed; the message is the full explanation for the operator."""


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while ``up`` was starting the cluster."""


class _Supervisor:
    """Starts the processes of one cluster and watches them until told to stop."""

    def __init__(self, data_dir: Path, specs: Sequence[ProcessSpec], timeout: float) -> None:
        self.data_dir = data_dir
        self.specs = list(specs)
        self.timeout = timeout
        self.records: list[ProcessRecord] = []
        self.handles: dict[str, subprocess.Popen[bytes]] = {}
        self.stop_requested = False
        self.environment = child_environment()

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        """Signal handler: ask the supervisor to stop everything (the second signal too)."""
        self.stop_requested = True

    def start(self, spec: ProcessSpec) -> None:
        """Start one process and record it in ``processes.json`` at once (so ``down`` finds it)."""
        identity, handle = processes.spawn(spec.command, spec.log, self.environment, cwd=self.data_dir)
        self.handles[spec.name] = handle
        self.records.append(ProcessRecord.started(spec, identity))
        save_records(self.data_dir, self.records)

    def _check_alive(self) -> None:
        if self.stop_requested:
            raise _Interrupted
        for name, handle in self.handles.items():
            code = handle.poll()
            if code is not None:
                record = next(record for record in self.records if record.name == name)
                raise _StartupFailed(
                    f"{name} exited with code {code} during startup. Last lines of {record.log}:\n"
                    f"{_log_tail(record.log)}\n"
                    f"Fix the cause, then run `coffer dev up --data {self.data_dir}` again.")

    def wait_stage(self, what: str, ready: Callable[[], bool], blame: Callable[[], Sequence[str]],
                   deadline: float) -> None:
        """Poll ``ready`` until it holds; fail fast if a child dies, or at ``deadline`` (monotonic),
        showing the log tails of the processes ``blame`` names."""
        while True:
            self._check_alive()
            if ready():
                return
            if time.monotonic() >= deadline:
                suspects = set(blame())
                tails = "\n".join(
                    f"  {record.name} ({record.log}):\n{_log_tail(record.log, 15)}"
                    for record in self.records if record.name in suspects)
                raise _StartupFailed(
                    f"timed out after {self.timeout:g}s waiting for {what}. Last log lines:\n{tails}\n"
                    f"All logs are in {self.data_dir / 'logs'}. Run `coffer dev status --data "
                    f"{self.data_dir}` to see what is up, `coffer dev down --data {self.data_dir}` to "
                    "stop, then `coffer dev up` again (with --timeout SECONDS on a slow machine).")
            time.sleep(0.1)

    def stop_all(self) -> None:
        """Stop every started process (frontend first, etcd last) and reap them, including those
        restarted by `coffer dev start` meanwhile (recorded only in ``processes.json``)."""
        everything = {(record.pid, record.start_time): record for record in self.records}
        for record in load_records(self.data_dir):
            everything.setdefault((record.pid, record.start_time), record)
        stop_recorded(list(everything.values()))
        for handle in self.handles.values():
            with suppress(subprocess.TimeoutExpired):
                handle.wait(timeout=1)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def frontend_ready(port: int) -> bool:
    """True when ``GET http://127.0.0.1:PORT/-/ready`` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException):
        # HTTPException: something that does not speak HTTP/1.1 answered (not our frontend yet).
        return False


def _ensure_access_key(data_dir: Path, endpoint: str) -> dict[str, str]:
    """Reuse the key in ``cluster.json`` or create one (owner ``admin``) in the metadata store."""
    info = load_cluster_info(data_dir)
    if info and info.get("access_key") and info.get("secret_key"):
        info["endpoint"] = endpoint
        return info
    from metadata.sqlite_store import SqliteMetadataStore

    with SqliteMetadataStore(data_dir / "metadata.sqlite3") as store:
        key = store.create_access_key("admin")
    return {"endpoint": endpoint, "access_key": key.access_key_id, "secret_key": key.secret_key,
            "region": REGION}


def _print_welcome(data_dir: Path, info: dict[str, str], detached: bool) -> None:
    endpoint = info["endpoint"]
    _say(f"\nCoffer is running at {endpoint} (region {info['region']})\n"
         f"  access key: {info['access_key']}\n"
         f"  secret key: {info['secret_key']}\n"
         f"Try it:\n"
         f"  AWS_ACCESS_KEY_ID={info['access_key']} AWS_SECRET_ACCESS_KEY={info['secret_key']} "
         f"AWS_DEFAULT_REGION={info['region']} aws --endpoint-url {endpoint} s3 mb s3://demo\n"
         f"File sync: coffer user create NAME --data {data_dir}; coffer token create --user NAME --device DEVICE "
         f"--data {data_dir}; coffer sync FOLDER --server {endpoint} --token TOKEN\n"
         f"Credentials: {cluster_path(data_dir)}   logs: {data_dir / 'logs'}/\n"
         f"Status: coffer dev status --data {data_dir}   "
         + (f"stop: coffer dev down --data {data_dir}" if detached else "stop: Ctrl-C"))


def _already_running(data_dir: Path) -> int | None:
    """If a cluster recorded in ``data_dir`` is (partly) running, report it and return an exit code."""
    records = load_records(data_dir)
    running = [record for record in records if record.is_running()]
    if not running:
        return None
    if len(running) == len(records):
        _say(f"The Coffer dev cluster in {data_dir} is already running ({len(records)} processes).")
        info = load_cluster_info(data_dir)
        if info:
            _print_welcome(data_dir, info, detached=True)
        return 0
    down = ", ".join(record.name for record in records if not record.is_running())
    _say(f"The Coffer dev cluster in {data_dir} is partly running ({len(running)} of {len(records)} "
         f"processes up; down: {down}). Restart one with `coffer dev start NAME --data {data_dir}`, or "
         f"run `coffer dev down --data {data_dir}` and then `coffer dev up` again.", sys.stderr)
    return 1


def up(options: UpOptions) -> int:
    """Run ``coffer dev up``; returns the process exit code (0 ready / stopped cleanly, 1 failure).

    Raises:
        DevClusterError: for problems the operator fixes before starting (etcd missing, ports busy,
            flags that contradict the existing cluster).
    """
    data_dir = options.data_dir.resolve()
    ready = False
    with _exclusive(data_dir):
        code = _already_running(data_dir)
        if code is not None:
            return code
        for record in load_records(data_dir):
            # Helpers a crashed run left behind in its sessions (their leaders are gone).
            processes.send_signal(record.identity, signal.SIGKILL, whole_session=True)
        etcd_binary = find_etcd()
        settings = _resolve_settings(replace(options, data_dir=data_dir))
        specs = process_specs(data_dir, settings, etcd_binary)
        _check_ports_free(specs, settings)
        save_settings(data_dir, settings)
        (data_dir / "logs").mkdir(exist_ok=True)
        supervisor = _Supervisor(data_dir, specs, options.timeout)
        previous = {sig: signal.signal(sig, supervisor.request_stop)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            info = _start_cluster(supervisor, settings)
            ready = True
        except (_StartupFailed, DevClusterError, OSError) as error:
            _say(f"coffer dev up failed: {error}", sys.stderr)
            _say("Stopping the processes started so far ...", sys.stderr)
            supervisor.stop_all()
            return 1
        except _Interrupted:
            _say("Interrupted: stopping the processes started so far ...", sys.stderr)
            supervisor.stop_all()
            return 130
        except BaseException:
            supervisor.stop_all()
            raise
        finally:
            if options.detach or not ready:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
    _print_welcome(data_dir, info, options.detach)
    if options.detach:
        return 0
    try:
        return _supervise(supervisor)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start_cluster(supervisor: _Supervisor, settings: Settings) -> dict[str, str]:
    """Start the processes stage by stage; return the cluster info once the frontend is ready."""
    data_dir = supervisor.data_dir
    deadline = time.monotonic() + supervisor.timeout
    by_role: dict[str, list[ProcessSpec]] = {}
    for spec in supervisor.specs:
        by_role.setdefault(spec.role, []).append(spec)
    began = time.monotonic()

    def stage(number: int, text: str) -> None:
        _say(f"[{number}/5] {text}")

    def done() -> None:
        _say(f"      ok ({time.monotonic() - began:.1f}s elapsed)")

    stage(1, f"etcd: starting on 127.0.0.1:{settings.etcd_port} (data {data_dir / 'etcd'})")
    supervisor.start(by_role["etcd"][0])
    supervisor.wait_stage("etcd to accept connections", lambda: _port_open(settings.etcd_port),
                          lambda: ["etcd"], deadline)
    done()
    nodes = by_role["storagenode"]
    stage(2, f"storage nodes: starting {len(nodes)} (volumes under {data_dir / 'nodes'})")
    for spec in nodes:
        supervisor.start(spec)
    supervisor.wait_stage(
        "the storage nodes to listen",
        lambda: all(spec.port is not None and _port_open(spec.port) for spec in nodes),
        lambda: [spec.name for spec in nodes if spec.port is not None and not _port_open(spec.port)][:3],
        deadline)
    done()
    stage(3, "access key: " + ("reusing the one in cluster.json" if load_cluster_info(data_dir)
                               else "creating one for owner 'admin'"))
    endpoint = f"http://127.0.0.1:{settings.frontend_port}"
    info = _ensure_access_key(data_dir, endpoint)
    write_json_atomically(cluster_path(data_dir), info)
    done()
    stage(4, f"placement: starting (pg count {settings.pg_count}, down-out interval "
             f"{settings.down_out_interval:g}s)")
    supervisor.start(by_role["placement"][0])
    done()
    stage(5, f"frontend: starting on {endpoint}, waiting for the cluster map and /-/ready")
    supervisor.start(by_role["frontend"][0])
    supervisor.wait_stage("the frontend to be ready (GET /-/ready = 200)",
                          lambda: frontend_ready(settings.frontend_port),
                          lambda: ["frontend", "placement"], deadline)
    done()
    return info


def _supervise(supervisor: _Supervisor) -> int:
    """Foreground mode: report children that exit, stop everything on Ctrl-C / SIGTERM."""
    reported: set[str] = set()
    while not supervisor.stop_requested:
        if len(reported) == len(supervisor.records) and not any(
                record.is_running() for record in load_records(supervisor.data_dir)):
            _say("Every process has exited (`coffer dev down`?); the supervisor exits too.")
            return 0
        for record in supervisor.records:
            handle = supervisor.handles.get(record.name)
            if record.name in reported or handle is None:
                continue
            code = handle.poll()
            if code is not None:
                reported.add(record.name)
                _say(f"{record.name} exited with code {code}; see {record.log}. Restart it with "
                     f"`coffer dev start {record.name} --data {supervisor.data_dir}`.", sys.stderr)
        time.sleep(0.2)
    _say("Stopping the Coffer dev cluster ...")
    supervisor.stop_all()
    _say("Stopped.")
    return 0


# ----------------------------------------------------------------------------- stop


def stop_recorded(records: Sequence[ProcessRecord], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Stop the recorded processes role by role (frontend, placement, nodes, etcd): SIGTERM, wait
    up to ``timeout`` seconds, SIGKILL stragglers and anything left in their sessions."""
    for role in STOP_ORDER:
        group = [record.identity for record in records if record.role == role]
        if group:
            processes.stop(group, timeout)


def down(data_dir: Path) -> int:
    """``coffer dev down``: stop every recorded process; 0 when none is left running."""
    data_dir = data_dir.resolve()
    with _exclusive(data_dir):
        records = load_records(data_dir)
        if not records:
            _say(f"No Coffer dev cluster was started in {data_dir} (no processes.json); nothing to stop.")
            return 0
        running = [record for record in records if record.is_running()]
        _say(f"Stopping {len(running)} running process(es) in {data_dir} ...")
        stop_recorded(records)
        left = [record for record in records if record.is_running()]
    if left:
        _say("Still running (check permissions, or kill by pid): "
             + ", ".join(f"{record.name} pid {record.pid}" for record in left), sys.stderr)
        return 1
    _say(f"Stopped. Data is kept in {data_dir}; `coffer dev up --data {data_dir}` starts it again.")
    return 0


# ----------------------------------------------------------------------------- status


def status_rows(data_dir: Path) -> list[dict[str, Any]]:
    """One dict per recorded process: name, role, node_id, failure_domain, pid, port, metrics_port,
    log, up (bool)."""
    rows = []
    for record in load_records(data_dir.resolve()):
        rows.append({"name": record.name, "role": record.role, "node_id": record.node_id,
                     "failure_domain": record.failure_domain, "pid": record.pid, "port": record.port,
                     "metrics_port": record.metrics_port, "log": record.log, "up": record.is_running()})
    return rows


def status(data_dir: Path, as_json: bool) -> int:
    """``coffer dev status``: print every process; exit 0 when all are up, 1 otherwise."""
    data_dir = data_dir.resolve()
    rows = status_rows(data_dir)
    if as_json:
        info = load_cluster_info(data_dir) or {}
        _say(json.dumps({"data_dir": str(data_dir), "endpoint": info.get("endpoint"),
                         "processes": rows}, indent=2))
    elif not rows:
        _say(f"No Coffer dev cluster in {data_dir}: start one with `coffer dev up --data {data_dir}`.")
        return 1
    else:
        header = ("NAME", "ROLE", "FAILURE DOMAIN", "PID", "PORT", "METRICS", "STATE")
        table = [header] + [
            (row["name"], row["role"], row["failure_domain"] or "-", str(row["pid"]),
             str(row["port"] or "-"), str(row["metrics_port"] or "-"), "up" if row["up"] else "DOWN")
            for row in rows]
        widths = [max(len(line[column]) for line in table) for column in range(len(header))]
        for line in table:
            _say("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        up_count = sum(row["up"] for row in rows)
        _say(f"{up_count} of {len(rows)} processes up. Logs: {data_dir / 'logs'}/")
    return 0 if rows and all(row["up"] for row in rows) else 1


# ----------------------------------------------------------------------------- one process


def _find_record(records: Sequence[ProcessRecord], name: str, data_dir: Path) -> ProcessRecord:
    for record in records:
        if name in (record.name, record.node_id) or (record.role == name and record.role != "storagenode"):
            return record
    names = ", ".join(record.name for record in records) or "none: run `coffer dev up` first"
    raise DevClusterError(f"no process named {name!r} in {data_dir} (known: {names})")


def start_one(data_dir: Path, name: str, timeout: float = 60.0) -> int:
    """``coffer dev start NAME``: restart one recorded process with its recorded command and wait
    until it listens (the frontend: until ``/-/ready``). 0 on success.

    Raises:
        DevClusterError: unknown name, or the process is already running.
    """
    data_dir = data_dir.resolve()
    with _exclusive(data_dir):
        records = load_records(data_dir)
        record = _find_record(records, name, data_dir)
        if record.is_running():
            raise DevClusterError(f"{record.name} is already running (pid {record.pid})")
        identity, handle = processes.spawn(record.command, Path(record.log), child_environment(),
                                           cwd=data_dir)
        record.pid, record.start_time = identity.pid, identity.start_time
        save_records(data_dir, records)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = handle.poll()
        if code is not None:
            _say(f"{record.name} exited with code {code}. Last lines of {record.log}:\n"
                 f"{_log_tail(record.log)}", sys.stderr)
            return 1
        if record.role == "frontend" and record.port is not None:
            ready = frontend_ready(record.port)
        elif record.port is not None:
            ready = _port_open(record.port)
        else:
            ready = True
        if ready:
            _say(f"{record.name} started (pid {record.pid}).")
            return 0
        time.sleep(0.1)
    _say(f"{record.name} (pid {record.pid}) did not become ready within {timeout:g}s; see {record.log}",
         sys.stderr)
    return 1


def kill_one(data_dir: Path, name: str, sig: signal.Signals) -> int:
    """``coffer dev kill NAME``: send ``sig`` to one recorded process (SIGKILL also ends its
    helpers, once they had ``processes.HELPER_GRACE_SECONDS`` to clean up and end by themselves);
    waits until it is gone for SIGKILL/SIGTERM. 0 if signalled, 1 if it was not running."""
    data_dir = data_dir.resolve()
    record = _find_record(load_records(data_dir), name, data_dir)
    if sig == signal.SIGKILL:
        signalled = processes.kill(record.identity)
    else:
        signalled = processes.send_signal(record.identity, sig)
    if not signalled:
        _say(f"{record.name} is not running.", sys.stderr)
        return 1
    if sig in (signal.SIGKILL, signal.SIGTERM):
        left = processes.wait_gone([record.identity], STOP_TIMEOUT_SECONDS)
        if left:
            _say(f"{record.name} (pid {record.pid}) is still running after {sig.name}.", sys.stderr)
            return 1
    _say(f"Sent {sig.name} to {record.name} (pid {record.pid}).")
    return 0


# ----------------------------------------------------------------------------- add a node


def _node_state(etcd_port: int, node_id: str) -> str | None:
    """The state of ``node_id`` in the published map (``up``/``down``/``out``); None when there is no
    map, etcd does not answer, or the map does not know the node yet."""
    import asyncio

    from placement.etcd import EtcdUnavailable
    from placement.watcher import load_cluster_map

    try:
        cluster_map = asyncio.run(load_cluster_map(f"{LOOPBACK}:{etcd_port}"))
    except (EtcdUnavailable, ValueError):
        return None
    if cluster_map is None or node_id not in cluster_map.nodes:
        return None
    return cluster_map.nodes[node_id].state.value


def add_node(data_dir: Path, timeout: float = 60.0) -> int:
    """``coffer dev add-node``: start one more storage node in the running dev cluster in
    ``data_dir`` (next node id, its own failure domain, free ports), record it in ``settings.json``
    and ``processes.json`` (so ``up``, ``down`` and ``status`` know it) and wait up to ``timeout``
    seconds until the placement service has it UP in the map. 0 when UP, 1 otherwise.

    Raises:
        DevClusterError: no cluster in ``data_dir``, or it is not running (etcd, placement).
    """
    data_dir = data_dir.resolve()
    with _exclusive(data_dir):
        settings = load_settings(data_dir)
        records = load_records(data_dir)
        if settings is None or not records:
            raise DevClusterError(f"no Coffer dev cluster in {data_dir}: start one with "
                                  f"`coffer dev up --data {data_dir} --detach` first")
        needed = [record for record in records if record.role in ("etcd", "placement")]
        stopped = [record.name for record in needed if not record.is_running()]
        if stopped or len(needed) < 2:
            raise DevClusterError(f"the dev cluster in {data_dir} is not running ({', '.join(stopped) or 'etcd'} "
                                  f"down): run `coffer dev up --data {data_dir} --detach` first")
        etcd_binary = next(record.command[0] for record in records if record.role == "etcd")
        node_id = add_node_to_settings(settings)
        spec = next(spec for spec in process_specs(data_dir, settings, etcd_binary) if spec.name == node_id)
        busy = [port for port in (spec.port, spec.metrics_port) if port is not None and port_in_use(port)]
        if busy:
            raise DevClusterError(f"port(s) {busy} just got taken; run `coffer dev add-node` again")
        save_settings(data_dir, settings)
        identity, handle = processes.spawn(spec.command, spec.log, child_environment(), cwd=data_dir)
        records.append(ProcessRecord.started(spec, identity))
        save_records(data_dir, records)
    _say(f"{node_id} started (pid {identity.pid}, {spec.failure_domain}, port {spec.port}); waiting until the "
         "placement service has it UP in the cluster map ...")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = handle.poll()
        if code is not None:
            _say(f"{node_id} exited with code {code}. Last lines of {spec.log}:\n{_log_tail(spec.log)}\n"
                 f"Fix the cause, then `coffer dev start {node_id} --data {data_dir}`.", sys.stderr)
            return 1
        if _node_state(settings.etcd_port, node_id) == "up":
            _say(f"{node_id} is UP in the cluster map: placement gives it its share of placement groups and "
                 "their fragments move to it in the background (follow with `coffer status --data "
                 f"{data_dir}`).")
            return 0
        time.sleep(0.5)
    _say(f"{node_id} (pid {identity.pid}) is not UP in the cluster map after {timeout:g}s; see {spec.log} and "
         f"{data_dir / 'logs' / 'placement.log'}. It stays recorded: `coffer dev status --data {data_dir}`.",
         sys.stderr)
    return 1
