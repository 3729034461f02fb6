"""Recognising, signalling and stopping started processes through /proc (real processes)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import processes
from cli.processes import ProcessIdentity
from tests.fixtures.processes import wait_until

SLEEPER = (sys.executable, "-c", "import time; time.sleep(120)")
# A shell whose child outlives it: SIGTERM ends the shell, the child stays in the session.
WITH_HELPER = ("/bin/sh", "-c", f"{sys.executable} -c 'import time; time.sleep(120)' & wait")


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ProcessIdentity]]:
    """Collects identities spawned by a test and SIGKILLs their sessions afterwards."""
    identities: list[ProcessIdentity] = []
    yield identities
    for identity in identities:
        processes.send_signal(identity, signal.SIGKILL, whole_session=True)
    processes.wait_gone(identities, 10)


def _spawn(command: tuple[str, ...], tmp_path: Path, started: list[ProcessIdentity]) -> ProcessIdentity:
    identity, _handle = processes.spawn(command, tmp_path / "logs" / "child.log", dict(os.environ))
    started.append(identity)
    return identity


def test_a_started_process_is_recognised(tmp_path: Path, started: list[ProcessIdentity]) -> None:
    identity = _spawn(SLEEPER, tmp_path, started)
    assert identity.command == SLEEPER
    assert identity.start_time > 0
    assert processes.is_running(identity)
    assert processes.read_command(identity.pid) == SLEEPER
    assert os.getsid(identity.pid) == identity.pid  # its own session, away from our Ctrl-C


def test_a_recycled_pid_is_not_trusted(tmp_path: Path, started: list[ProcessIdentity]) -> None:
    identity = _spawn(SLEEPER, tmp_path, started)
    other_command = ProcessIdentity(identity.pid, identity.start_time, ("/bin/sleep", "120"))
    other_start = ProcessIdentity(identity.pid, identity.start_time + 1, identity.command)
    assert not processes.is_running(other_command)
    assert not processes.is_running(other_start)
    # Signalling through an identity that does not match must leave the process alone.
    assert processes.send_signal(other_command, signal.SIGKILL) is False
    assert processes.is_running(identity)


def test_a_killed_process_is_not_running_even_as_a_zombie(tmp_path: Path,
                                                          started: list[ProcessIdentity]) -> None:
    identity, handle = processes.spawn(SLEEPER, tmp_path / "child.log", dict(os.environ))
    started.append(identity)
    assert processes.send_signal(identity, signal.SIGKILL)
    # Not reaped yet: the kernel keeps a zombie, which must not count as running.
    wait_until(lambda: not processes.is_running(identity), 10, "the child to die")
    assert handle.wait(timeout=10) == -signal.SIGKILL


def test_stop_ends_the_process_and_helpers_left_in_its_session(tmp_path: Path,
                                                               started: list[ProcessIdentity]) -> None:
    identity = _spawn(WITH_HELPER, tmp_path, started)
    wait_until(lambda: len(processes.session_members(identity)) == 2, 10, "the helper to start")
    helper = next(pid for pid in processes.session_members(identity) if pid != identity.pid)
    processes.stop([identity], timeout=5)
    assert not processes.is_running(identity)
    assert processes.session_members(identity) == []
    assert processes.start_time_of(helper) is None


def test_spawn_appends_output_to_the_log(tmp_path: Path, started: list[ProcessIdentity]) -> None:
    log = tmp_path / "logs" / "echo.log"
    log.parent.mkdir()
    log.write_text("earlier run\n")
    _identity, handle = processes.spawn(("/bin/echo", "hello"), log, dict(os.environ))
    assert handle.wait(timeout=10) == 0
    assert log.read_text() == "earlier run\nhello\n"


def test_wait_gone_returns_the_processes_still_running(tmp_path: Path,
                                                       started: list[ProcessIdentity]) -> None:
    identity = _spawn(SLEEPER, tmp_path, started)
    assert processes.wait_gone([identity], timeout=0.2) == [identity]


def test_a_session_whose_leader_pid_was_recycled_is_left_alone(tmp_path: Path,
                                                               started: list[ProcessIdentity]) -> None:
    stranger = _spawn(SLEEPER, tmp_path, started)
    # What a stale record would hold if its pid had been reused by this unrelated session leader.
    stale = ProcessIdentity(stranger.pid, stranger.start_time - 1, stranger.command)
    assert processes.session_members(stale) == []
    assert processes.send_signal(stale, signal.SIGKILL, whole_session=True) is False
    assert processes.is_running(stranger)


def test_helpers_of_a_dead_leader_are_found_by_its_session(tmp_path: Path,
                                                           started: list[ProcessIdentity]) -> None:
    identity = _spawn(WITH_HELPER, tmp_path, started)
    wait_until(lambda: len(processes.session_members(identity)) == 2, 10, "the helper to start")
    os.kill(identity.pid, signal.SIGKILL)  # the leader dies, its helper lives on in the session
    wait_until(lambda: not processes.is_running(identity), 10, "the leader to die")
    helpers = processes.session_members(identity)
    assert len(helpers) == 1 and helpers[0] != identity.pid
    processes.send_signal(identity, signal.SIGKILL, whole_session=True)
    wait_until(lambda: processes.session_members(identity) == [], 10, "the helper to die")


def test_kill_lets_helpers_clean_up_before_it_ends_them(tmp_path: Path,
                                                        started: list[ProcessIdentity]) -> None:
    # One helper cleans up and exits once its parent is gone (as the erasure-coding workers do),
    # the other never exits on its own: the first must get to finish, the second must still end.
    marker = tmp_path / "cleaned"
    cleaner = tmp_path / "cleaner.py"
    cleaner.write_text(
        "import os, sys, time\n"
        "parent = int(sys.argv[2])  # passed in: the parent may be gone before this line runs\n"
        "while os.getppid() == parent:\n"
        "    time.sleep(0.05)\n"
        "time.sleep(0.3)  # cleaning up takes a moment\n"
        "open(sys.argv[1], 'w').write('done')\n"
    )
    leader = tmp_path / "leader.py"
    leader.write_text(
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(cleaner)!r}, {str(marker)!r}, str(os.getpid())])\n"
        f"subprocess.Popen({list(SLEEPER)!r})\n"
        "time.sleep(120)\n"
    )
    identity = _spawn((sys.executable, str(leader)), tmp_path, started)
    wait_until(lambda: len(processes.session_members(identity)) == 3, 10, "the helpers to start")
    assert processes.kill(identity, helper_grace_seconds=2.0)
    assert marker.read_text() == "done"
    assert not processes.is_running(identity)
    assert processes.session_members(identity) == []


def test_kill_of_a_process_that_is_not_running_returns_false(tmp_path: Path,
                                                             started: list[ProcessIdentity]) -> None:
    identity = _spawn(SLEEPER, tmp_path, started)
    stale = ProcessIdentity(identity.pid, identity.start_time - 1, identity.command)
    assert processes.kill(stale, helper_grace_seconds=0.5) is False
    assert processes.is_running(identity)  # a stranger's session is never touched


def test_a_script_is_recognised_behind_its_interpreter(tmp_path: Path, started: list[ProcessIdentity]) -> None:
    script = tmp_path / "service"
    script.write_text("#!/bin/sh\nsleep 120\n")
    script.chmod(0o755)
    identity = _spawn((str(script), "--flag"), tmp_path, started)
    assert processes.read_command(identity.pid) == ("/bin/sh", str(script), "--flag")
    assert processes.is_running(identity)
    assert not processes.command_matches(("/bin/sh", "other", "--flag"), identity.command)
    assert not processes.command_matches(None, identity.command)
