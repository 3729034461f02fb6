"""``coffer bench sync``: how fast a change on one device shows up on another, and how little of a
large file an edit sends (issue 4, acceptance 9).

Target: the dev cluster in ``--data DIR`` (``DIR/cluster.json`` gives ``endpoint``; users and tokens
are made with ``coffer user create`` / ``coffer token create --json`` against ``DIR``, which open its
``metadata.sqlite3``). The benchmark creates a fresh user ``bench-<hex>`` with two devices, ``a``
and ``b``, and runs two real sync daemons (``coffer sync FOLDER --server URL --token T``) as
subprocesses on two folders of a temporary directory. Whatever happens, the daemons are stopped
(SIGTERM, SIGKILL after ``STOP_TIMEOUT_SECONDS``) and the directory is deleted. The user and the
versions it committed stay in the cluster (the sync API has no way to remove them).

Latency (per size, ``files`` times each, one change at a time): the time from a change in folder A
until folder B shows it, polled every ``POLL_INTERVAL_SECONDS``:
- ``create``: random bytes written to a staging file outside A, then renamed into A (the daemon
  sees a complete file); done when B's file has the same size and SHA-256.
- ``edit``: the same, renamed over an existing file of A (new random content, same size).
- ``rename``: a file of A renamed; done when B has the new path with the content and the old one is
  gone.
- ``delete``: a file of A removed; done when B's file is gone.
The clock starts just before the rename/remove and stops at the poll that observed the result (the
SHA-256 is computed after that poll, outside the measured time, which is fair because the daemon
renames a complete, verified file into place). Figures: p50/p99/max over the samples (nearest rank,
``bench.stats.percentile``); with few samples p99 is simply the maximum.

Delta efficiency: a ``delta_size`` random file is synced first; then (a) one byte in its middle is
flipped in place, (b) 1 KiB is inserted at its start (staging file renamed over it). For each edit:
A's ``bytes_uploaded``/``chunks_uploaded`` and B's ``bytes_downloaded``/``bytes_reused`` (differences
of the daemons' status counters, ``client/status.py``, read once both daemons report the edit done
and are idle), against the file size and against the ideal: the bytes of the new file's chunks that
the old file lacks (both chunked here with the daemon's default FastCDC settings,
``client.chunking``). A content-defined chunker should send about one chunk for either edit.

Output: progress on stderr; on stdout a table and one ``RESULTS_JSON {...}`` line (schema
``coffer-bench-sync/1``); ``--json FILE`` also writes the document. Exit status 0 success, 1 the
benchmark failed (partial results are still printed), 2 bad arguments or no cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.progress import Progress
from bench.report import format_table, results_line, save_results
from bench.stats import percentile
from client.chunking import ChunkerSettings, FileChunk, chunk_file
from client.status import read_status
from common.units import format_size, parse_size, parse_size_list

SCHEMA = "coffer-bench-sync/1"
DEFAULT_DATA_DIR = ".coffer"
DEFAULT_SIZES = "4KiB,1MiB,32MiB"
DEFAULT_FILES = 20
DEFAULT_DELTA_SIZE = "100MiB"
DEFAULT_TIMEOUT_SECONDS = 120.0
POLL_INTERVAL_SECONDS = 0.01
STATUS_POLL_SECONDS = 0.05
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
INSERT_BYTES = 1024
LATENCY_OPS = ("create", "edit", "rename", "delete")
MIB = 1 << 20


class UsageError(Exception):
    """Bad arguments or no readable cluster description; exit status 2."""


class SyncBenchFailure(Exception):
    """The benchmark could not finish: a daemon died, a change never arrived within the timeout, an
    account could not be made. The message says which step."""


# ---------------------------------------------------------------- results (pure)


@dataclass
class LatencyCase:
    """Samples of one latency case: ``op`` (one of ``LATENCY_OPS``) on files of ``size`` bytes;
    ``latencies_seconds``: one per change, in the order measured."""

    op: str
    size: int
    latencies_seconds: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Short name such as ``create 4KiB``."""
        return f"{self.op} {format_size(self.size)}"


@dataclass(frozen=True)
class DeltaResult:
    """What one edit of a large synced file cost.

    ``file_size``: bytes of the file after the edit; ``file_chunks``: its chunk count;
    ``ideal_bytes`` / ``ideal_chunks``: distinct chunks of the new content missing from the old one
    (what a perfect client of this chunker must send); ``uploaded_bytes`` / ``uploaded_chunks``:
    what daemon A sent; ``downloaded_bytes`` / ``reused_bytes``: what daemon B fetched from the
    server / copied from its local old copy; ``latency_seconds``: edit on A until B held the
    new content.
    """

    name: str
    file_size: int
    file_chunks: int
    ideal_bytes: int
    ideal_chunks: int
    uploaded_bytes: int
    uploaded_chunks: int
    downloaded_bytes: int
    reused_bytes: int
    latency_seconds: float


def summarize_latencies(samples_seconds: Sequence[float]) -> dict[str, Any]:
    """``{"count", "p50_ms", "p99_ms", "max_ms", "mean_ms"}`` of latencies given in seconds
    (nearest-rank percentiles, so every figure is an observed sample). Raises ``ValueError`` for no
    samples."""
    if not samples_seconds:
        raise ValueError("no latency samples")
    return {
        "count": len(samples_seconds),
        "p50_ms": percentile(samples_seconds, 50) * 1e3,
        "p99_ms": percentile(samples_seconds, 99) * 1e3,
        "max_ms": max(samples_seconds) * 1e3,
        "mean_ms": sum(samples_seconds) / len(samples_seconds) * 1e3,
    }


def latency_case_to_json(case: LatencyCase) -> dict[str, Any]:
    """One latency case: op, size, the summary and every sample (ms). A case without samples has
    ``count`` 0 and None figures."""
    document: dict[str, Any] = {"op": case.op, "size": case.size, "size_label": format_size(case.size)}
    if case.latencies_seconds:
        document.update(summarize_latencies(case.latencies_seconds))
    else:
        document.update({"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None})
    document["samples_ms"] = [round(sample * 1e3, 3) for sample in case.latencies_seconds]
    return document


def delta_to_json(delta: DeltaResult) -> dict[str, Any]:
    """One delta edit with its ratios: ``uploaded_fraction`` = uploaded / file size,
    ``uploaded_vs_ideal`` = uploaded / ideal (None when the ideal is 0)."""
    document: dict[str, Any] = {
        "name": delta.name,
        "file_size": delta.file_size,
        "file_chunks": delta.file_chunks,
        "ideal_bytes": delta.ideal_bytes,
        "ideal_chunks": delta.ideal_chunks,
        "uploaded_bytes": delta.uploaded_bytes,
        "uploaded_chunks": delta.uploaded_chunks,
        "downloaded_bytes": delta.downloaded_bytes,
        "reused_bytes": delta.reused_bytes,
        "latency_ms": delta.latency_seconds * 1e3,
        "uploaded_fraction": delta.uploaded_bytes / delta.file_size if delta.file_size else None,
        "uploaded_vs_ideal": delta.uploaded_bytes / delta.ideal_bytes if delta.ideal_bytes else None,
    }
    document["summary"] = delta_sentence(document)
    return document


def _mib(size: int) -> str:
    """Bytes as MiB with 3 significant digits (``4.02``, ``100``, ``0.004``)."""
    return f"{size / MIB:.3g}"


def delta_sentence(delta: Mapping[str, Any]) -> str:
    """``uploaded 4.02 MiB of a 100 MiB file (1 of 24 chunks; ideal 4.02 MiB); B downloaded 4.02
    MiB, reused 96 MiB`` from a ``delta_to_json`` document."""
    return (
        f"uploaded {_mib(delta['uploaded_bytes'])} MiB of a {_mib(delta['file_size'])} MiB file "
        f"({delta['uploaded_chunks']} of {delta['file_chunks']} chunks; ideal {_mib(delta['ideal_bytes'])} MiB); "
        f"B downloaded {_mib(delta['downloaded_bytes'])} MiB, reused {_mib(delta['reused_bytes'])} MiB"
    )


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


@dataclass
class SyncBenchResult:
    """Everything one run measured; ``error`` is None on success (else partial results)."""

    endpoint: str
    user: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None
    latency: list[LatencyCase] = field(default_factory=list)
    delta: list[DeltaResult] = field(default_factory=list)


def results_to_json(result: SyncBenchResult, label: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The run as one JSON-ready document (schema ``coffer-bench-sync/1``): ``latency`` (one per
    case, see ``latency_case_to_json``; cases without samples left out) and ``delta`` (see
    ``delta_to_json``); ``settings`` stored verbatim."""
    return {
        "schema": SCHEMA,
        "label": label,
        "endpoint": result.endpoint,
        "user": result.user,
        "started_at": _iso(result.started_at),
        "finished_at": _iso(result.finished_at),
        "error": result.error,
        "host": {"hostname": socket.gethostname(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "settings": dict(settings),
        "latency": [latency_case_to_json(case) for case in result.latency if case.latencies_seconds],
        "delta": [delta_to_json(delta) for delta in result.delta],
    }


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def format_results(document: Mapping[str, Any]) -> str:
    """The human-readable report of a ``coffer-bench-sync/1`` document: a latency table (ms) and
    one line per delta edit."""
    settings = document.get("settings", {})
    lines = [
        f"coffer bench sync: {document.get('label')}  endpoint {document.get('endpoint')}  "
        f"user {document.get('user')}  files per case {settings.get('files', '?')}",
        "latency = change in folder A until folder B shows it (two daemons, one change at a time)",
        "",
    ]
    rows = [
        [
            case["op"],
            case["size_label"],
            str(case["count"]),
            _ms(case["p50_ms"]),
            _ms(case["p99_ms"]),
            _ms(case["max_ms"]),
        ]
        for case in document.get("latency", [])
    ]
    lines.append(format_table(("change", "size", "n", "p50 ms", "p99 ms", "max ms"), rows))
    deltas = document.get("delta", [])
    if deltas:
        lines.extend(["", "delta efficiency (edit of a synced file):"])
        lines.extend(f"  {delta['name']}: {delta_sentence(delta)}; {_ms(delta['latency_ms'])} ms" for delta in deltas)
    if document.get("error"):
        lines.extend(["", f"FAILED: {document['error']}"])
    return "\n".join(lines)


def new_chunk_bytes(old: Sequence[FileChunk], new: Sequence[FileChunk]) -> tuple[int, int]:
    """(bytes, count) of the distinct chunks of ``new`` whose hash ``old`` lacks: what a client
    must send at least when a file changes from ``old`` to ``new`` chunking."""
    known = {chunk.hash for chunk in old}
    missing: dict[str, int] = {}
    for chunk in new:
        if chunk.hash not in known:
            missing.setdefault(chunk.hash, chunk.size)
    return sum(missing.values()), len(missing)


# ---------------------------------------------------------------- waiting on the folders


def file_matches(path: Path, size: int, sha256: str, checked: dict[Path, tuple[int, int, int]]) -> bool:
    """True when ``path`` holds exactly ``size`` bytes whose SHA-256 hex is ``sha256``.

    ``checked`` remembers (size, mtime_ns, inode) of files already hashed and found different, so a
    poll loop does not re-hash an unchanged large file every few milliseconds."""
    try:
        stat = path.stat()
    except OSError:
        return False
    if stat.st_size != size:
        return False
    key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if checked.get(path) == key:
        return False
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while piece := handle.read(MIB):
                digest.update(piece)
    except OSError:
        return False
    if digest.hexdigest() == sha256:
        return True
    checked[path] = key
    return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = POLL_INTERVAL_SECONDS,
               alive: Callable[[], None] | None = None) -> float:
    """Poll ``condition`` every ``interval`` seconds; return the ``time.perf_counter()`` of the poll
    that found it true (taken before the check, so the check's own cost is not counted).

    ``alive`` is called on every poll (it raises when a daemon died). Raises SyncBenchFailure naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        observed = time.perf_counter()
        if condition():
            return observed
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise SyncBenchFailure(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- the two daemons


@dataclass
class Device:
    """One synced folder and its daemon subprocess (``process`` None until started)."""

    name: str
    folder: Path
    token: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def status(self) -> dict[str, Any]:
        """The daemon's ``status.json`` (empty dict until it wrote one)."""
        return read_status(self.folder) or {}

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the daemon's stderr log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _coffer(*arguments: str, timeout: float = 60.0) -> str:
    """Run ``coffer ARGUMENTS`` (this interpreter, ``-m cli``); its stdout. Raises SyncBenchFailure."""
    try:
        completed = subprocess.run([sys.executable, "-m", "cli", *arguments], capture_output=True, text=True,
                                   timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SyncBenchFailure(f"`coffer {' '.join(arguments[:2])}` failed: {error}") from error
    if completed.returncode != 0:
        raise SyncBenchFailure(f"`coffer {' '.join(arguments[:2])}` exited {completed.returncode}: "
                               f"{completed.stderr.strip()}")
    return completed.stdout


def create_account(data_dir: Path, user: str, devices: Sequence[str]) -> dict[str, str]:
    """Create sync user ``user`` in the cluster at ``data_dir`` and one token per device name;
    returns device name -> token. Raises SyncBenchFailure."""
    _coffer("user", "create", user, "--data", str(data_dir), "--json")
    tokens: dict[str, str] = {}
    for device in devices:
        answer = json.loads(_coffer("token", "create", "--user", user, "--device", device, "--data",
                                    str(data_dir), "--json"))
        tokens[device] = str(answer["token"])
    return tokens


class DevicePair:
    """Two daemons, ``a`` and ``b``, syncing two folders of ``work_dir`` with one user's namespace.

    ``start()`` launches them and waits until both are idle; ``stop()`` (also on leaving the
    ``with`` block) stops them: SIGTERM, then SIGKILL after STOP_TIMEOUT_SECONDS. Raises
    SyncBenchFailure when a daemon dies or does not become idle in START_TIMEOUT_SECONDS.
    """

    def __init__(self, work_dir: Path, endpoint: str, tokens: Mapping[str, str]) -> None:
        self.endpoint = endpoint
        self.staging = work_dir / "staging"
        self.staging.mkdir()
        (work_dir / "logs").mkdir()
        self.a = Device("a", work_dir / "a", tokens["a"], work_dir / "logs" / "a.log")
        self.b = Device("b", work_dir / "b", tokens["b"], work_dir / "logs" / "b.log")

    def __enter__(self) -> DevicePair:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start both daemons and wait until both report ``idle``."""
        for device in (self.a, self.b):
            device.folder.mkdir()
            with device.log_path.open("wb") as log:
                device.process = subprocess.Popen(
                    [sys.executable, "-m", "cli", "sync", str(device.folder), "--server", self.endpoint,
                     "--token", device.token, "--no-progress"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.a.status().get("state") == "idle" and self.b.status().get("state") == "idle",
                   START_TIMEOUT_SECONDS, "both daemons to start and become idle", STATUS_POLL_SECONDS,
                   self.check_alive)

    def check_alive(self) -> None:
        """Raise SyncBenchFailure (with the end of its log) if a daemon has exited."""
        for device in (self.a, self.b):
            if device.process is not None and device.process.poll() is not None:
                raise SyncBenchFailure(f"daemon {device.name} exited with {device.process.returncode}:\n"
                                       f"{device.log_tail()}")

    def stop(self) -> None:
        """SIGTERM both daemons, SIGKILL whichever is still alive after STOP_TIMEOUT_SECONDS."""
        running = [device.process for device in (self.a, self.b)
                   if device.process is not None and device.process.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()

    def logs(self) -> str:
        """The ends of both daemons' logs (for failure messages)."""
        return f"daemon a log:\n{self.a.log_tail()}\ndaemon b log:\n{self.b.log_tail()}"

    def settle(self, timeout: float, uploads: int = 0, downloads: int = 0,
               before: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None
               ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Wait until both daemons are idle and, relative to ``before`` (statuses of a and b), a has
        committed ``uploads`` more files and b has downloaded ``downloads`` more; returns the
        statuses (a, b) that satisfied it."""
        statuses: list[dict[str, Any]] = [{}, {}]
        old_a, old_b = before if before is not None else ({}, {})

        def done() -> bool:
            statuses[0], statuses[1] = self.a.status(), self.b.status()
            return (statuses[0].get("state") == "idle" and statuses[1].get("state") == "idle"
                    and statuses[0].get("files_uploaded", 0) >= old_a.get("files_uploaded", 0) + uploads
                    and statuses[1].get("files_downloaded", 0) >= old_b.get("files_downloaded", 0) + downloads)

        wait_until(done, timeout, "both daemons to be idle with the change counted", STATUS_POLL_SECONDS,
                   self.check_alive)
        return statuses[0], statuses[1]

    def staged(self, name: str, data: bytes | bytearray) -> Path:
        """Write ``data`` to a staging file (same file system as the folders, outside them)."""
        path = self.staging / name
        with path.open("wb") as handle:
            handle.write(data)
        return path


# ---------------------------------------------------------------- the measurements


def _sha256(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def measure_latency(pair: DevicePair, sizes: Sequence[int], files: int, timeout: float, progress: Progress,
                    result: SyncBenchResult) -> None:
    """The latency cases (see the module docstring), appended to ``result.latency`` as they run
    (so a failure keeps what was measured). Raises SyncBenchFailure."""
    checked: dict[Path, tuple[int, int, int]] = {}
    for size in sizes:
        label = format_size(size)
        names = [f"latency-{label}-{index:03d}.bin" for index in range(files)]
        renamed = [name.replace(".bin", "-renamed.bin") for name in names]
        cases = {op: LatencyCase(op, size) for op in LATENCY_OPS}
        result.latency.extend(cases.values())
        for op in ("create", "edit"):
            progress.start(f"{op} {label}", files)
            for name in names:
                data = os.urandom(size)
                expected = _sha256(data)
                staged = pair.staged(name, data)
                target = pair.b.folder / name
                started = time.perf_counter()
                os.rename(staged, pair.a.folder / name)
                seen = wait_until(functools.partial(file_matches, target, size, expected, checked), timeout,
                                  f"{op} of {name} to reach b", alive=pair.check_alive)
                cases[op].latencies_seconds.append(seen - started)
                progress.advance()
                pair.settle(timeout)
            progress.finish(_note(cases[op]))
        progress.start(f"rename {label}", files)
        for name, new_name in zip(names, renamed, strict=True):
            expected = _sha256((pair.a.folder / name).read_bytes())
            old_target, new_target = pair.b.folder / name, pair.b.folder / new_name
            started = time.perf_counter()
            os.rename(pair.a.folder / name, pair.a.folder / new_name)
            seen = wait_until(functools.partial(_moved, old_target, new_target, size, expected, checked), timeout,
                              f"rename of {name} to reach b", alive=pair.check_alive)
            cases["rename"].latencies_seconds.append(seen - started)
            progress.advance()
            pair.settle(timeout)
        progress.finish(_note(cases["rename"]))
        progress.start(f"delete {label}", files)
        for name in renamed:
            target = pair.b.folder / name
            started = time.perf_counter()
            os.remove(pair.a.folder / name)
            seen = wait_until(functools.partial(_gone, target), timeout, f"delete of {name} to reach b",
                              alive=pair.check_alive)
            cases["delete"].latencies_seconds.append(seen - started)
            progress.advance()
            pair.settle(timeout)
        progress.finish(_note(cases["delete"]))


def _moved(old: Path, new: Path, size: int, sha256: str, checked: dict[Path, tuple[int, int, int]]) -> bool:
    return not os.path.lexists(old) and file_matches(new, size, sha256, checked)


def _gone(path: Path) -> bool:
    return not os.path.lexists(path)


def _note(case: LatencyCase) -> str:
    summary = summarize_latencies(case.latencies_seconds)
    return f"p50 {summary['p50_ms']:.0f} ms, p99 {summary['p99_ms']:.0f} ms"


def _chunks_of(pair: DevicePair, data: bytes | bytearray) -> list[FileChunk]:
    """The daemon's default chunking of ``data`` (through a staging file, which is removed)."""
    path = pair.staged("chunking.tmp", data)
    try:
        return chunk_file(path, ChunkerSettings())
    finally:
        path.unlink()


def measure_delta(pair: DevicePair, delta_size: int, timeout: float, progress: Progress,
                  result: SyncBenchResult) -> None:
    """The delta-efficiency edits (see the module docstring), appended to ``result.delta``.
    Raises SyncBenchFailure."""
    name = "delta.bin"
    source, target = pair.a.folder / name, pair.b.folder / name
    checked: dict[Path, tuple[int, int, int]] = {}
    progress.start(f"delta: sync a {format_size(delta_size)} file", 1)
    data = bytearray(os.urandom(delta_size))
    chunks = _chunks_of(pair, data)
    expected = _sha256(data)
    before = pair.settle(timeout)
    os.rename(pair.staged(name, data), source)
    wait_until(lambda: file_matches(target, len(data), expected, checked), timeout, f"{name} to reach b",
               alive=pair.check_alive)
    before = pair.settle(timeout, uploads=1, downloads=1, before=before)
    progress.advance()
    progress.finish()

    def edit(label: str, new_data: bytearray, apply: Callable[[], None]) -> None:
        nonlocal data, chunks, before
        progress.start(f"delta: {label}", 1)
        new_chunks = _chunks_of(pair, new_data)
        ideal_bytes, ideal_chunks = new_chunk_bytes(chunks, new_chunks)
        new_expected = _sha256(new_data)
        started = time.perf_counter()
        apply()
        seen = wait_until(lambda: file_matches(target, len(new_data), new_expected, checked), timeout,
                          f"{label} to reach b", alive=pair.check_alive)
        after = pair.settle(timeout, uploads=1, downloads=1, before=before)
        (a_before, b_before), (a_after, b_after) = before, after
        result.delta.append(DeltaResult(
            name=label, file_size=len(new_data), file_chunks=len(new_chunks), ideal_bytes=ideal_bytes,
            ideal_chunks=ideal_chunks,
            uploaded_bytes=a_after["bytes_uploaded"] - a_before["bytes_uploaded"],
            uploaded_chunks=a_after["chunks_uploaded"] - a_before["chunks_uploaded"],
            downloaded_bytes=b_after["bytes_downloaded"] - b_before["bytes_downloaded"],
            reused_bytes=b_after["bytes_reused"] - b_before["bytes_reused"],
            latency_seconds=seen - started))
        data, chunks, before = new_data, new_chunks, after
        progress.advance()
        progress.finish(delta_sentence(delta_to_json(result.delta[-1])))

    middle = len(data) // 2
    flipped = bytearray(data)
    flipped[middle] ^= 0xFF

    def flip_in_place() -> None:
        with source.open("r+b") as handle:
            handle.seek(middle)
            handle.write(bytes([flipped[middle]]))

    edit("flip 1 byte in the middle", flipped, flip_in_place)
    inserted = bytearray(os.urandom(INSERT_BYTES)) + data
    staged = pair.staged(name, inserted)
    edit(f"insert {format_size(INSERT_BYTES)} at the start", inserted, lambda: os.rename(staged, source))
    os.remove(source)
    wait_until(functools.partial(_gone, target), timeout, f"delete of {name} to reach b", alive=pair.check_alive)


def run_sync_benchmark(data_dir: Path, endpoint: str, sizes: Sequence[int], files: int, delta_size: int | None,
                       timeout: float, progress: Progress) -> SyncBenchResult:
    """Make the account, run both daemons in a temporary directory, measure latency then delta
    efficiency; always stop the daemons and delete the directory. Failures are reported in
    ``result.error`` (with the daemons' log ends), never raised."""
    result = SyncBenchResult(endpoint=endpoint, user=f"bench-{secrets.token_hex(4)}")
    work_dir = Path(tempfile.mkdtemp(prefix="coffer-syncbench-"))
    pair: DevicePair | None = None
    try:
        progress.message(f"creating user {result.user} with devices a and b")
        tokens = create_account(data_dir, result.user, ("a", "b"))
        pair = DevicePair(work_dir, endpoint, tokens)
        with pair:
            progress.message("starting two sync daemons")
            pair.start()
            if files > 0:
                measure_latency(pair, sizes, files, timeout, progress, result)
            if delta_size:
                measure_delta(pair, delta_size, timeout, progress, result)
    except (SyncBenchFailure, OSError) as error:
        result.error = str(error) if pair is None else f"{error}\n{pair.logs()}"
    finally:
        result.finished_at = time.time()
        shutil.rmtree(work_dir, ignore_errors=True)
    return result


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The ``coffer bench sync`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="coffer bench sync",
        description="Sync benchmark: change-to-other-device latency and delta efficiency of two sync "
                    "daemons against a running dev cluster (a fresh user is created in it).")
    parser.add_argument("--data", default=DEFAULT_DATA_DIR,
                        help=f"dev cluster directory (default ./{DEFAULT_DATA_DIR})")
    parser.add_argument("--endpoint", help="server URL (default: endpoint in DIR/cluster.json)")
    parser.add_argument("--files", type=int, default=DEFAULT_FILES,
                        help=f"changes per latency case (default {DEFAULT_FILES}; 0 skips latency)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"file sizes for latency (default {DEFAULT_SIZES})")
    parser.add_argument("--delta-size", default=DEFAULT_DELTA_SIZE,
                        help=f"size of the delta-efficiency file (default {DEFAULT_DELTA_SIZE}; 0 skips it)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                        help=f"seconds one change may take to arrive (default {DEFAULT_TIMEOUT_SECONDS:g})")
    parser.add_argument("--json", dest="json_path", help="also write the result document here")
    parser.add_argument("--label", help="name of this run in reports (default: coffer)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def read_endpoint(data_dir: Path) -> str:
    """The ``endpoint`` of ``DIR/cluster.json``. Raises UsageError if missing or malformed."""
    path = data_dir / "cluster.json"
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {path}: {error} (start a cluster: coffer dev up --data {data_dir})") from error
    if not isinstance(document, dict) or not isinstance(document.get("endpoint"), str):
        raise UsageError(f"{path}: no endpoint")
    return str(document["endpoint"])


def main(argv: list[str] | None = None) -> int:
    """Run ``coffer bench sync`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    data_dir = Path(args.data)
    try:
        sizes = parse_size_list(args.sizes)
        delta_size = 0 if args.delta_size.strip() == "0" else parse_size(args.delta_size)
        if args.files < 0:
            raise UsageError("--files must be 0 or more")
        if args.timeout <= 0:
            raise UsageError("--timeout must be positive")
        if not (data_dir / "metadata.sqlite3").exists():
            raise UsageError(f"no metadata store at {data_dir}/metadata.sqlite3: not a dev cluster directory "
                             f"(coffer dev up --data {data_dir})")
        endpoint = args.endpoint or read_endpoint(data_dir)
    except (UsageError, ValueError) as error:
        print(f"coffer bench sync: {error}", file=sys.stderr)
        return 2
    progress = Progress(enabled=not args.quiet)
    result = run_sync_benchmark(data_dir, endpoint, sizes, args.files, delta_size, args.timeout, progress)
    settings = {"files": args.files, "sizes": [format_size(size) for size in sizes],
                "delta_size": format_size(delta_size) if delta_size else None, "timeout_seconds": args.timeout,
                "poll_interval_seconds": POLL_INTERVAL_SECONDS}
    document = results_to_json(result, args.label or "coffer", settings)
    if args.json_path:
        save_results(document, args.json_path)
    print(format_results(document))
    print(results_line(document))
    return 1 if result.error else 0

