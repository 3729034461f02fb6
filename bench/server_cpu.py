"""CPU time used by server process trees, read from Linux ``/proc``.

A server's cost is the CPU time (user + system) of its process and all its descendants (worker
processes, helpers) over a measurement window. Per ``proc(5)``, ``/proc/PID/stat`` gives, after
the command name: field 4 ``ppid``, 14 ``utime``, 15 ``stime``, 16 ``cutime``, 17 ``cstime``
(clock ticks; ``cutime``/``cstime`` = CPU of children the process has waited for) and 22
``starttime`` (ticks after boot).

The total of a snapshot is ``sum(utime + stime + cutime + cstime)`` over the tree. The difference
of two such totals is exact for processes that live through the window, for children born in it,
and for children that exit and are reaped by a tree member during it (their whole CPU time moves
into the parent's ``cutime``, and the part before the window is subtracted with their first
snapshot). Only CPU of descendants reaped by a process outside the tree is lost.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PROC_ROOT = "/proc"


@dataclass(frozen=True)
class ProcessStat:
    """The fields of one ``/proc/PID/stat`` line that CPU accounting needs.

    Times are in seconds (converted from clock ticks); ``start_ticks`` (process start, ticks after
    boot) stays in ticks.
    """

    pid: int
    ppid: int
    user_seconds: float
    system_seconds: float
    reaped_children_seconds: float
    start_ticks: int

    @property
    def total_seconds(self) -> float:
        """Own user + system CPU plus that of reaped children, in seconds."""
        return self.user_seconds + self.system_seconds + self.reaped_children_seconds


def parse_stat_line(line: str) -> ProcessStat:
    """Parse one ``/proc/PID/stat`` line.

    The command name (field 2) is in parentheses and may itself contain spaces and ``)``, so the
    line is split after the *last* ``)`` (as ``proc(5)`` advises). Raises ``ValueError`` on a
    malformed line.
    """
    open_paren = line.find("(")
    close_paren = line.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ValueError(f"malformed stat line: {line[:80]!r}")
    pid = int(line[:open_paren])
    rest = line[close_paren + 2 :].split()  # rest[0] is field 3 (state)
    if len(rest) < 20:
        raise ValueError(f"short stat line: {line[:80]!r}")
    tick = float(CLOCK_TICKS_PER_SECOND)
    return ProcessStat(
        pid=pid,
        ppid=int(rest[1]),
        user_seconds=int(rest[11]) / tick,
        system_seconds=int(rest[12]) / tick,
        reaped_children_seconds=(int(rest[13]) + int(rest[14])) / tick,
        start_ticks=int(rest[19]),
    )


def read_stat(pid: int, proc_root: str = PROC_ROOT) -> ProcessStat | None:
    """Read ``/proc/PID/stat``; None when the process does not exist (or vanished meanwhile)."""
    try:
        with open(f"{proc_root}/{pid}/stat", encoding="utf-8", errors="replace") as stat_file:
            line = stat_file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return parse_stat_line(line)


def read_all_stats(proc_root: str = PROC_ROOT) -> dict[int, ProcessStat]:
    """Every live process's stat, keyed by PID (processes vanishing during the scan are skipped)."""
    stats: dict[int, ProcessStat] = {}
    for name in os.listdir(proc_root):
        if not name.isdigit():
            continue
        try:
            stat = read_stat(int(name), proc_root)
        except (OSError, ValueError):
            continue
        if stat is not None:
            stats[stat.pid] = stat
    return stats


def process_tree(root_pids: Iterable[int], stats: Mapping[int, ProcessStat]) -> set[int]:
    """The live PIDs among ``root_pids`` plus all their live descendants, found by ``ppid`` links."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    pending = [pid for pid in root_pids if pid in stats]
    while pending:
        pid = pending.pop()
        if pid in found:
            continue
        found.add(pid)
        pending.extend(children.get(pid, ()))
    return found


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU totals (seconds) of each named group of server process trees at one instant.

    ``by_group`` maps a group name (e.g. a role: ``frontend``, ``storagenode``) to the summed
    ``ProcessStat.total_seconds`` of its trees; ``pids_by_group`` holds the PIDs counted.
    """

    by_group: Mapping[str, float]
    pids_by_group: Mapping[str, frozenset[int]]


class ServerCpuMeter:
    """Measures CPU seconds spent by groups of server process trees between two snapshots.

    ``groups`` maps a group name to root PIDs; each root's descendants (found afresh at every
    snapshot) count towards its group, and a process reachable from two groups counts once, for
    the first group in order. Usage: ``before = meter.snapshot()`` ... ``meter.delta(before,
    meter.snapshot())`` -> seconds per group. Linux only (``/proc``).
    """

    def __init__(self, groups: Mapping[str, Iterable[int]], proc_root: str = PROC_ROOT) -> None:
        """Remember the groups; raises ``ValueError`` when no PIDs are given at all."""
        self._groups = {name: sorted(set(pids)) for name, pids in groups.items()}
        if not any(self._groups.values()):
            raise ValueError("no server PIDs to measure")
        self._proc_root = proc_root

    @property
    def groups(self) -> dict[str, list[int]]:
        """The root PIDs of every group (a copy)."""
        return {name: list(pids) for name, pids in self._groups.items()}

    def live_roots(self) -> dict[str, list[int]]:
        """The root PIDs of each group that are alive right now."""
        return {
            name: [pid for pid in pids if read_stat(pid, self._proc_root) is not None]
            for name, pids in self._groups.items()
        }

    def snapshot(self) -> CpuSnapshot:
        """Read /proc once and total the CPU time of every group's trees."""
        stats = read_all_stats(self._proc_root)
        claimed: set[int] = set()
        by_group: dict[str, float] = {}
        pids_by_group: dict[str, frozenset[int]] = {}
        for name, roots in self._groups.items():
            members = process_tree(roots, stats) - claimed
            claimed |= members
            by_group[name] = sum(stats[pid].total_seconds for pid in members)
            pids_by_group[name] = frozenset(members)
        return CpuSnapshot(by_group=by_group, pids_by_group=pids_by_group)

    @staticmethod
    def delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
        """CPU seconds each group used between two snapshots (see the module docstring)."""
        return {
            name: after.by_group.get(name, 0.0) - before.by_group.get(name, 0.0)
            for name in dict.fromkeys([*before.by_group, *after.by_group])
        }
