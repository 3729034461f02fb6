"""Starting, identifying and stopping the dev cluster's child processes (Linux ``/proc``).

A recorded PID is trusted only while the process behind it still has the command line we started
*and* the start time we recorded: PIDs are recycled, and signalling a stranger is never acceptable.
Every child runs in its own session (``setsid``), so its PID is also its process-group and session
id; helper processes it forks (the frontend's erasure-coding workers) share that session, which is
how ``stop`` finds and ends them too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
#: Seconds the helpers of a SIGKILLed process get to end by themselves (``kill``): the frontend's
#: erasure-coding workers notice within 0.5 s, its resource tracker right after them.
HELPER_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class ProcessIdentity:
    """What identifies one started process: ``pid``, its ``start_time`` (clock ticks after boot,
    field 22 of ``/proc/PID/stat``) and the exact ``command`` (argv) it was started with."""

    pid: int
    start_time: int
    command: tuple[str, ...]


@dataclass(frozen=True)
class _Stat:
    state: str
    session: int
    start_time: int


def _read_stat(pid: int) -> _Stat | None:
    """Parse ``/proc/PID/stat`` (see proc(5)); None when the process does not exist."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is parenthesised and may contain spaces: split after its last ")".
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); session is field 6; starttime is field 22.
    return _Stat(state=fields[0], session=int(fields[3]), start_time=int(fields[19]))


def read_command(pid: int) -> tuple[str, ...] | None:
    """The argv of ``pid`` from ``/proc/PID/cmdline``; None if it is gone (or a zombie: empty)."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if not raw:
        return None
    return tuple(part.decode("utf-8", "surrogateescape") for part in raw.rstrip(b"\0").split(b"\0"))


def start_time_of(pid: int) -> int | None:
    """Start time of a live ``pid`` in clock ticks after boot; None if it is gone or a zombie."""
    stat = _read_stat(pid)
    if stat is None or stat.state in ("Z", "X"):
        return None
    return stat.start_time


def is_running(identity: ProcessIdentity) -> bool:
    """True when ``identity.pid`` is alive (not a zombie) and still is the process we started.

    Both the start time and the command line must match: a recycled PID fails the check.
    """
    stat = _read_stat(identity.pid)
    if stat is None or stat.state in ("Z", "X") or stat.start_time != identity.start_time:
        return False
    return command_matches(read_command(identity.pid), identity.command)


def command_matches(actual: tuple[str, ...] | None, started: tuple[str, ...]) -> bool:
    """True when ``actual`` (from /proc) is the argv we ``started``, or that argv behind a script's
    ``#!`` interpreter (the kernel runs ``interpreter [argument] script args``, see execve(2))."""
    if actual is None:
        return False
    if actual == started:
        return True
    prefix = len(actual) - len(started)
    return 0 < prefix <= 2 and actual[prefix:] == started


def session_members(identity: ProcessIdentity) -> list[int]:
    """Live PIDs in the session ``identity`` created (itself included, if alive).

    Linux never hands out a PID still in use as some process's session id, so while any member of
    our session lives, ``identity.pid`` cannot belong to a stranger. Hence: if a process with that
    PID exists but is not ours (other start time), the session is a stranger's and this returns [].
    """
    leader = _read_stat(identity.pid)
    if leader is not None and leader.start_time != identity.start_time:
        return []
    members: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if (stat is not None and stat.session == identity.pid and stat.state not in ("Z", "X")
                and stat.start_time >= identity.start_time):
            members.append(int(entry.name))
    return members


def spawn(command: Sequence[str], log_path: Path, environment: Mapping[str, str],
          cwd: Path | None = None) -> tuple[ProcessIdentity, subprocess.Popen[bytes]]:
    """Start ``command`` in a new session, stdout and stderr appended to ``log_path``.

    Returns the identity to record and the ``Popen`` handle (for a supervisor that stays to watch;
    a detached ``up`` simply drops it and the child lives on).

    The new session keeps the terminal's Ctrl-C away from the child (the supervisor decides when
    children stop) and lets the child outlive a detached ``coffer dev up``.

    Raises:
        OSError: if the executable cannot be started, or the started process cannot be identified
            in /proc (it is killed then: an unidentifiable process could never be stopped later).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(environment), cwd=cwd, start_new_session=True, close_fds=True,
        )
    # Right after exec the kernel may briefly report an empty command line; wait until /proc shows
    # the process as it will be recognised later (bounded: a child that exits at once ends the wait).
    start_time: int | None = None
    deadline = time.monotonic() + 5.0
    while process.poll() is None and time.monotonic() < deadline:
        start_time = start_time_of(process.pid)
        if start_time is not None and command_matches(read_command(process.pid), tuple(command)):
            break
        time.sleep(0.005)
    if start_time is None and process.poll() is None:
        # A process we could never recognise again could never be stopped by `dev down`: stop it now.
        process.kill()
        process.wait()
        raise OSError(f"could not identify the started process {command[0]!r} in /proc within 5 s")
    return ProcessIdentity(pid=process.pid, start_time=start_time or -1, command=tuple(command)), process


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def send_signal(identity: ProcessIdentity, sig: signal.Signals, whole_session: bool = False) -> bool:
    """Send ``sig`` to the process (and, with ``whole_session``, to every member of its session).

    Returns False when the recorded process is no longer running (nothing is signalled then,
    except leftover session members when ``whole_session`` is set).
    """
    alive = is_running(identity)
    if alive:
        _signal_pid(identity.pid, sig)
    if whole_session:
        for pid in session_members(identity):
            _signal_pid(pid, sig)
    return alive


def kill(identity: ProcessIdentity, helper_grace_seconds: float = HELPER_GRACE_SECONDS) -> bool:
    """SIGKILL the process, give the helpers in its session up to ``helper_grace_seconds`` to end on
    their own, then SIGKILL whatever of its session is left and wait (up to 5 s) until it is gone.
    Returns like ``send_signal``.

    Helpers that outlive their leader clean up as they end: the frontend's erasure-coding workers
    exit once their parent is gone, and then Python's multiprocessing resource tracker unlinks the
    semaphores and shared memory the pool used. SIGKILLing the whole session at once leaves those
    files in ``/dev/shm`` until reboot.
    """
    alive = send_signal(identity, signal.SIGKILL)
    _wait_session_empty(identity, helper_grace_seconds)
    for pid in session_members(identity):
        _signal_pid(pid, signal.SIGKILL)
    _wait_session_empty(identity, 5.0)  # a SIGKILLed process takes a moment to exit
    return alive


def _wait_session_empty(identity: ProcessIdentity, timeout: float) -> None:
    """Wait up to ``timeout`` seconds until no member of ``identity``'s session is alive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and session_members(identity):
        time.sleep(0.05)


def wait_gone(identities: Iterable[ProcessIdentity], timeout: float) -> list[ProcessIdentity]:
    """Wait up to ``timeout`` seconds for the processes to exit; return those still running."""
    pending = list(identities)
    deadline = time.monotonic() + timeout
    while True:
        pending = [identity for identity in pending if is_running(identity)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.05)


def stop(identities: Sequence[ProcessIdentity], timeout: float) -> None:
    """Stop processes as a group: SIGTERM each, wait up to ``timeout`` s, then ``kill`` each: a
    straggler is SIGKILLed, and helpers left in any of the sessions (orphaned by their parent)
    get the same grace to end by themselves before they are SIGKILLed too."""
    for identity in identities:
        send_signal(identity, signal.SIGTERM)
    wait_gone(identities, timeout)
    for identity in identities:
        kill(identity)  # at once for a process gone with its whole session
