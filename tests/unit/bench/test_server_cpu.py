"""CPU accounting of process trees from the real /proc, with real child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from bench.server_cpu import (
    CLOCK_TICKS_PER_SECOND,
    ServerCpuMeter,
    parse_stat_line,
    process_tree,
    read_all_stats,
    read_stat,
)
from tests.fixtures.processes import wait_until

BURN_SECONDS = 0.3

# Waits for a line on stdin, burns BURN_SECONDS of its own CPU, says "done", then waits for EOF.
BURNER = textwrap.dedent(
    f"""
    import sys, time
    sys.stdin.readline()
    start = time.process_time()
    while time.process_time() - start < {BURN_SECONDS}:
        pass
    print("done", flush=True)
    sys.stdin.read()
    """
)

# Waits for a line, runs a burner child to completion (reaping it), says "done", waits for EOF.
PARENT_OF_BURNER = textwrap.dedent(
    f"""
    import subprocess, sys
    sys.stdin.readline()
    pipe = subprocess.PIPE
    child = subprocess.Popen([sys.executable, "-c", {BURNER!r}], stdin=pipe, stdout=pipe, text=True)
    child.communicate("go\\n")
    print("done", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def start_python() -> Iterator:
    """Start ``python -c CODE`` children with pipes; all are stopped (by PID) at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(code: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _trigger_and_wait(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done"


def test_parse_stat_line_handles_spaces_and_parentheses_in_the_command_name() -> None:
    fields_after_comm = (
        ["S", "42"] + ["0"] * 9 + ["300", "100", "50", "50"] + ["0"] * 4 + ["777"] + ["0"] * 30
    )
    line = "1234 (evil) name (x)) " + " ".join(fields_after_comm) + "\n"
    stat = parse_stat_line(line)
    tick = CLOCK_TICKS_PER_SECOND
    assert stat.pid == 1234
    assert stat.ppid == 42
    assert stat.user_seconds == pytest.approx(300 / tick)
    assert stat.system_seconds == pytest.approx(100 / tick)
    assert stat.reaped_children_seconds == pytest.approx(100 / tick)
    assert stat.total_seconds == pytest.approx(500 / tick)
    assert stat.start_ticks == 777


def test_parse_stat_line_rejects_truncated_lines() -> None:
    with pytest.raises(ValueError):
        parse_stat_line("1234 (name) S 1 2 3")
    with pytest.raises(ValueError):
        parse_stat_line("no parentheses here")


def test_read_stat_of_this_process_and_of_a_missing_one() -> None:
    mine = read_stat(os.getpid())
    assert mine is not None
    assert mine.pid == os.getpid()
    assert mine.ppid == os.getppid()
    assert mine.total_seconds > 0
    assert read_stat(2**22 + 12345) is None  # above Linux's maximum pid_max


def test_process_tree_finds_children_and_grandchildren(start_python) -> None:
    parent = start_python(PARENT_OF_BURNER)
    assert parent.stdin is not None
    parent.stdin.write("go\n")  # the parent starts its child, which then waits for its own "go"
    parent.stdin.flush()

    def grandchildren() -> list[int]:
        return [pid for pid, stat in read_all_stats().items() if stat.ppid == parent.pid]

    wait_until(lambda: bool(grandchildren()), timeout=20, what="the parent's child")
    stats = read_all_stats()
    tree_of_test = process_tree([os.getpid()], stats)
    tree_of_parent = process_tree([parent.pid], stats)
    assert {parent.pid, *grandchildren()} <= tree_of_test
    assert tree_of_parent == {parent.pid, *grandchildren()}
    assert os.getpid() not in tree_of_parent


def test_meter_counts_cpu_of_a_live_process(start_python) -> None:
    burner = start_python(BURNER)
    meter = ServerCpuMeter({"burner": [burner.pid]})
    before = meter.snapshot()
    _trigger_and_wait(burner)
    used = meter.delta(before, meter.snapshot())
    assert used["burner"] >= BURN_SECONDS - 2 / CLOCK_TICKS_PER_SECOND


def test_meter_counts_cpu_of_a_child_that_exited_and_was_reaped(start_python) -> None:
    parent = start_python(PARENT_OF_BURNER)
    meter = ServerCpuMeter({"parent": [parent.pid]})
    before = meter.snapshot()
    _trigger_and_wait(parent)  # its burner child has exited and been reaped by now
    after = meter.snapshot()
    assert after.pids_by_group["parent"] == frozenset({parent.pid})
    assert meter.delta(before, after)["parent"] >= BURN_SECONDS - 2 / CLOCK_TICKS_PER_SECOND


def test_a_process_in_two_groups_counts_once_for_the_first(start_python) -> None:
    burner = start_python(BURNER)
    meter = ServerCpuMeter({"first": [burner.pid], "second": [burner.pid, 2**22 + 12345]})
    before = meter.snapshot()
    _trigger_and_wait(burner)
    after = meter.snapshot()
    used = meter.delta(before, after)
    assert used["first"] >= BURN_SECONDS - 2 / CLOCK_TICKS_PER_SECOND
    assert used["second"] == 0
    assert meter.live_roots() == {"first": [burner.pid], "second": [burner.pid]}


def test_meter_without_pids_is_refused() -> None:
    with pytest.raises(ValueError):
        ServerCpuMeter({"empty": []})
