"""Benchmark results as JSON and as plain-text tables; side-by-side comparison of two saved runs.

Every table is rendered from the JSON document (``results_to_json``), so a fresh run and a saved
file print the same way. Units: MB/s = 10**6 bytes per wall-clock second; latencies in
milliseconds; CPU-s/GB = CPU seconds per 10**9 payload bytes; CPU ms/op = CPU milliseconds per
request. Figures over several runs are medians of the per-run figures (throughput also shows the
min..max); latency percentiles pool the requests of all runs (nearest rank, ``stats.percentile``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bench.ceilings import Ceilings
from bench.s3bench import BenchResult, CaseResult, PhaseRun
from bench.stats import percentile
from common.units import format_size

SCHEMA = "coffer-bench/1"
RESULTS_PREFIX = "RESULTS_JSON "
PHASES = ("put", "get")


# ---------------------------------------------------------------- JSON


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


def phase_run_to_json(run: PhaseRun) -> dict[str, Any]:
    """Raw figures of one phase of one run (latencies as p50/p99 only, in ms)."""
    return {
        "ops": run.ops,
        "wall_seconds": run.wall_seconds,
        "mb_per_s": run.payload_bytes / run.wall_seconds / 1e6,
        "ops_per_s": run.ops / run.wall_seconds,
        "p50_ms": percentile(run.latencies_seconds, 50) * 1e3,
        "p99_ms": percentile(run.latencies_seconds, 99) * 1e3,
        "client_cpu_seconds": run.client_cpu_seconds,
        "server_cpu_seconds": run.server_cpu_seconds,
    }


def summarize_phase(runs: Sequence[PhaseRun], ceiling_gb_per_s: float | None) -> dict[str, Any]:
    """Summary of one phase over runs: medians of per-run figures, pooled latency percentiles.

    ``ceiling_gb_per_s`` (the phase's bottleneck primitive on one core) gives ``ceiling_ratio`` =
    MB/s / (ceiling in MB/s), or None. Server figures are None when no server CPU was measured.
    Raises ``ValueError`` for no runs.
    """
    if not runs:
        raise ValueError("no runs to summarize")
    per_run = [phase_run_to_json(run) for run in runs]
    throughputs = [figures["mb_per_s"] for figures in per_run]
    latencies = [latency for run in runs for latency in run.latencies_seconds]
    payload_gb = [run.payload_bytes / 1e9 for run in runs]
    client_cpu_per_gb = [run.client_cpu_seconds / gb for run, gb in zip(runs, payload_gb, strict=True)]
    summary: dict[str, Any] = {
        "mb_per_s": statistics.median(throughputs),
        "mb_per_s_min": min(throughputs),
        "mb_per_s_max": max(throughputs),
        "ops_per_s": statistics.median(figures["ops_per_s"] for figures in per_run),
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "client_cpu_s_per_gb": statistics.median(client_cpu_per_gb),
        "server_cpu_s_per_gb": None,
        "server_cpu_ms_per_op": None,
        "server_cpu_s_per_gb_by_group": None,
        "ceiling_ratio": None,
    }
    measured = [run for run in runs if run.server_cpu_seconds is not None]
    if len(measured) == len(runs):
        totals = [sum((run.server_cpu_seconds or {}).values()) for run in runs]
        summary["server_cpu_s_per_gb"] = statistics.median(
            total / gb for total, gb in zip(totals, payload_gb, strict=True)
        )
        summary["server_cpu_ms_per_op"] = statistics.median(
            total / run.ops * 1e3 for total, run in zip(totals, runs, strict=True)
        )
        groups = list(dict.fromkeys(name for run in runs for name in (run.server_cpu_seconds or {})))
        summary["server_cpu_s_per_gb_by_group"] = {
            name: statistics.median(
                (run.server_cpu_seconds or {}).get(name, 0.0) / gb
                for run, gb in zip(runs, payload_gb, strict=True)
            )
            for name in groups
        }
    if ceiling_gb_per_s:
        summary["ceiling_ratio"] = summary["mb_per_s"] / (ceiling_gb_per_s * 1e3)
    return summary


def case_to_json(case: CaseResult, ceilings: Ceilings | None) -> dict[str, Any]:
    """One case: its spec, a summary per phase and the raw per-run figures."""
    put_ceiling = ceilings.put_ceiling() if ceilings else None
    get_ceiling = ceilings.get_ceiling() if ceilings else None
    puts = [put for put, _ in case.runs]
    gets = [get for _, get in case.runs]
    return {
        "size": case.spec.size,
        "size_label": format_size(case.spec.size),
        "concurrency": case.spec.concurrency,
        "ops": case.spec.ops,
        "put": summarize_phase(puts, put_ceiling[1] if put_ceiling else None),
        "get": summarize_phase(gets, get_ceiling[1] if get_ceiling else None),
        "runs": [{"put": phase_run_to_json(put), "get": phase_run_to_json(get)} for put, get in case.runs],
    }


def results_to_json(
    result: BenchResult, ceilings: Ceilings | None, label: str, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The whole benchmark as one JSON-ready document (schema ``coffer-bench/1``).

    ``settings`` holds the options the run used (sizes, concurrency, runs, ...), stored verbatim.
    Cases without any completed run (a failure before their first run ended) are left out.
    """
    import boto3

    return {
        "schema": SCHEMA,
        "label": label,
        "endpoint": result.endpoint,
        "bucket": result.bucket,
        "checksum_mode": result.checksum_mode or "botocore-default",
        "started_at": _iso(result.started_at),
        "finished_at": _iso(result.finished_at),
        "error": result.error,
        "host": {
            "hostname": socket.gethostname(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "boto3": boto3.__version__,
        },
        "settings": dict(settings),
        "server_pids": result.server_groups,
        "ceilings": ceilings.to_json() if ceilings else None,
        "cases": [case_to_json(case, ceilings) for case in result.cases if case.runs],
    }


def results_line(document: Mapping[str, Any]) -> str:
    """The single machine-readable output line: ``RESULTS_JSON {...}`` (compact JSON, no newline)."""
    return RESULTS_PREFIX + json.dumps(document, separators=(",", ":"), sort_keys=False)


def save_results(document: Mapping[str, Any], path: str) -> None:
    """Write ``document`` to ``path`` as indented JSON (``--json FILE``). Raises OSError."""
    with open(path, "w", encoding="utf-8") as json_file:
        json.dump(document, json_file, indent=2)
        json_file.write("\n")


def load_results(path: str) -> dict[str, Any]:
    """Read a saved result: a JSON file, or a log whose ``RESULTS_JSON`` line holds it.

    Raises ``ValueError`` when the file holds neither or has another schema; ``OSError`` if
    unreadable.
    """
    with open(path, encoding="utf-8") as results_file:
        text = results_file.read()
    document: Any = None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        for line in text.splitlines():
            if line.startswith(RESULTS_PREFIX):
                document = json.loads(line[len(RESULTS_PREFIX) :])
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a {SCHEMA} result (JSON file or a log with a RESULTS_JSON line)")
    return document


# ---------------------------------------------------------------- tables


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: the first column left-aligned, the others right-aligned, a rule under the
    header. Every row must have ``len(headers)`` cells (``ValueError`` otherwise)."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, header has {len(headers)}")
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(cell).ljust(width) if index == 0 else str(cell).rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _number(value: float | None, digits: int = 1) -> str:
    """Compact number: ``-`` for None, 3 significant-ish digits for small values."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100 or digits == 0:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.{digits}f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def _percent_of(ratio: float | None, primitive: str | None) -> str:
    """``ratio`` of a ceiling as a percentage with two significant digits: ``11% of md5``."""
    if ratio is None:
        return "-"
    return f"{ratio * 100:.2g}% of {primitive}"


def format_ceilings(ceilings: Mapping[str, Any] | None) -> str:
    """One line per primitive: single-core GB/s, with the PUT/GET bottlenecks named."""
    if not ceilings:
        return "ceilings: not measured"
    speeds: Mapping[str, float] = ceilings.get("gb_per_s", {})
    parts = [f"{name} {speed:.2f} GB/s" for name, speed in speeds.items()]
    parts.extend(f"{name} unavailable ({why})" for name, why in ceilings.get("errors", {}).items())
    lines = ["single-core ceilings: " + ", ".join(parts)]
    for phase in PHASES:
        bottleneck = ceilings.get(phase)
        if bottleneck:
            lines.append(
                f"  {phase.upper()} ceiling = {bottleneck['primitive']} "
                f"({bottleneck['gb_per_s'] * 1e3:,.0f} MB/s per core)"
            )
    return "\n".join(lines)


RESULT_HEADERS = (
    "case",
    "op",
    "ops",
    "MB/s",
    "min..max",
    "ops/s",
    "p50 ms",
    "p99 ms",
    "srv CPU-s/GB",
    "srv CPU ms/op",
    "cli CPU-s/GB",
    "vs ceiling",
)


def format_results(document: Mapping[str, Any]) -> str:
    """The human-readable report of one result document: header, ceilings, one row per phase."""
    title = document.get("label") or document.get("endpoint", "")
    ceilings = document.get("ceilings")
    lines = [
        f"coffer bench: {title}  endpoint {document.get('endpoint')}  "
        f"checksums {document.get('checksum_mode')}  runs {document.get('settings', {}).get('runs', '?')}",
        format_ceilings(ceilings),
        "",
    ]
    rows: list[list[str]] = []
    for case in document.get("cases", []):
        for phase in PHASES:
            summary = case[phase]
            ceiling = (ceilings or {}).get(phase) or {}
            ratio = summary.get("ceiling_ratio")
            rows.append(
                [
                    f"{case['size_label']} c={case['concurrency']}",
                    phase.upper(),
                    str(case["ops"]),
                    _number(summary["mb_per_s"]),
                    f"{_number(summary['mb_per_s_min'])}..{_number(summary['mb_per_s_max'])}",
                    _number(summary["ops_per_s"]),
                    _number(summary["p50_ms"]),
                    _number(summary["p99_ms"]),
                    _number(summary.get("server_cpu_s_per_gb")),
                    _number(summary.get("server_cpu_ms_per_op")),
                    _number(summary.get("client_cpu_s_per_gb")),
                    _percent_of(ratio, ceiling.get("primitive")),
                ]
            )
    lines.append(format_table(RESULT_HEADERS, rows))
    groups = _group_breakdown(document)
    if groups:
        lines.extend(["", "server CPU-s/GB by group:", groups])
    if document.get("error"):
        lines.extend(["", f"FAILED: {document['error']}"])
    return "\n".join(lines)


def _group_breakdown(document: Mapping[str, Any]) -> str:
    """Per-group server CPU table, only when more than one group was measured."""
    names: list[str] = []
    for case in document.get("cases", []):
        for phase in PHASES:
            names.extend((case[phase].get("server_cpu_s_per_gb_by_group") or {}).keys())
    names = list(dict.fromkeys(names))
    if len(names) < 2:
        return ""
    rows = []
    for case in document.get("cases", []):
        for phase in PHASES:
            by_group = case[phase].get("server_cpu_s_per_gb_by_group") or {}
            rows.append(
                [f"{case['size_label']} c={case['concurrency']} {phase.upper()}"]
                + [_number(by_group.get(name)) for name in names]
            )
    return format_table(["case", *names], rows)


def _cases_by_key(document: Mapping[str, Any]) -> dict[tuple[int, int], Mapping[str, Any]]:
    return {(case["size"], case["concurrency"]): case for case in document.get("cases", [])}


def format_compare(first: Mapping[str, Any], second: Mapping[str, Any]) -> str:
    """Two saved results side by side, per case and phase present in both.

    Ratios are first / second for throughput and ops/s (above 1: first is faster) and second /
    first for server CPU per GB (above 1: first is cheaper), so above 1 always favours the first.
    """
    name_a = first.get("label") or first.get("endpoint") or "A"
    name_b = second.get("label") or second.get("endpoint") or "B"
    headers = [
        "case",
        "op",
        f"{name_a} MB/s",
        f"{name_b} MB/s",
        "ratio",
        f"{name_a} ops/s",
        f"{name_b} ops/s",
        f"{name_a} p50 ms",
        f"{name_b} p50 ms",
        f"{name_a} CPU-s/GB",
        f"{name_b} CPU-s/GB",
        "CPU ratio",
    ]
    rows: list[list[str]] = []
    cases_b = _cases_by_key(second)
    only_one: list[str] = []
    for key, case_a in _cases_by_key(first).items():
        case_b = cases_b.get(key)
        label = f"{case_a['size_label']} c={case_a['concurrency']}"
        if case_b is None:
            only_one.append(label)
            continue
        for phase in PHASES:
            a, b = case_a[phase], case_b[phase]
            cpu_a, cpu_b = a.get("server_cpu_s_per_gb"), b.get("server_cpu_s_per_gb")
            rows.append(
                [
                    label,
                    phase.upper(),
                    _number(a["mb_per_s"]),
                    _number(b["mb_per_s"]),
                    _ratio(a["mb_per_s"], b["mb_per_s"]),
                    _number(a["ops_per_s"]),
                    _number(b["ops_per_s"]),
                    _number(a["p50_ms"]),
                    _number(b["p50_ms"]),
                    _number(cpu_a),
                    _number(cpu_b),
                    _ratio(cpu_b, cpu_a),
                ]
            )
    only_one.extend(
        f"{case['size_label']} c={case['concurrency']}"
        for key, case in cases_b.items()
        if key not in _cases_by_key(first)
    )
    lines = [
        f"A = {name_a} ({first.get('endpoint')}, {first.get('started_at')})",
        f"B = {name_b} ({second.get('endpoint')}, {second.get('started_at')})",
        "ratio = A/B throughput; CPU ratio = B/A server CPU per GB (above 1 favours A)",
        f"A {format_ceilings(first.get('ceilings'))}",
        f"B {format_ceilings(second.get('ceilings'))}",
        "",
        format_table(headers, rows) if rows else "no case measured in both results",
    ]
    if only_one:
        lines.append("in one result only (not compared): " + ", ".join(only_one))
    return "\n".join(lines)
