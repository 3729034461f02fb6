"""``coffer bench``: command line of the S3 benchmark harness (``main(argv) -> exit code``).

Target: ``--endpoint/--access-key/--secret-key/--region``, or else the dev cluster described in
``DIR/cluster.json`` (keys ``endpoint``, ``access_key``, ``secret_key``, ``region``; DIR from
``--data``, default ``./.coffer``). Server processes whose CPU is measured: ``--server-pids``, or
else every process listed in ``DIR/processes.json`` (a list of ``{role, node_id, pid, ...}``,
grouped by role) when the target came from DIR or ``--data`` was given.

Output: progress on stderr; on stdout the table, then one ``RESULTS_JSON {...}`` line; ``--json``
also writes the document to a file. ``--compare A.json B.json`` prints two saved results side by
side and runs nothing. Exit status: 0 success, 1 the benchmark failed (a request failed or data
came back wrong; partial results are still printed), 2 bad arguments or unreadable inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.ceilings import measure_ceilings
from bench.progress import Progress
from bench.report import format_compare, format_results, load_results, results_line, results_to_json, save_results
from bench.s3bench import CHECKSUM_MODES, Endpoint, OpsSpec, plan_cases, run_benchmark
from bench.server_cpu import ServerCpuMeter
from common.units import format_size, parse_int_list, parse_size, parse_size_list

DEFAULT_DATA_DIR = ".coffer"
DEFAULT_SIZES = "4KiB,1MiB,256MiB"
DEFAULT_CONCURRENCY = "1,8"
DEFAULT_CONC_MAX_SIZE = "1MiB"
DEFAULT_RUNS = 3
DEFAULT_REGION = "us-east-1"


class UsageError(Exception):
    """Bad arguments or an unreadable cluster description; exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The ``coffer bench`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="coffer bench",
        description="PUT/GET benchmark of an S3 endpoint (Coffer's dev cluster by default).",
        epilog="`coffer bench sync ...` benchmarks file sync instead: change-to-other-device latency and "
        "delta efficiency (see `coffer bench sync --help`).",
    )
    target = parser.add_argument_group("target")
    target.add_argument("--endpoint", help="S3 endpoint URL (default: endpoint in DIR/cluster.json)")
    target.add_argument("--access-key", help="access key id")
    target.add_argument("--secret-key", help="secret access key")
    target.add_argument("--region", help=f"signing region (default {DEFAULT_REGION})")
    target.add_argument("--data", help=f"dev cluster directory (default ./{DEFAULT_DATA_DIR})")
    target.add_argument(
        "--server-pids",
        help="comma-separated server PIDs whose CPU (with their descendants) is measured",
    )
    target.add_argument("--bucket", help="bucket to use (default: a fresh one, deleted afterwards)")
    shape = parser.add_argument_group("workload")
    shape.add_argument("--sizes", default=DEFAULT_SIZES, help=f"object sizes (default {DEFAULT_SIZES})")
    shape.add_argument(
        "--concurrency", default=DEFAULT_CONCURRENCY, help=f"thread counts (default {DEFAULT_CONCURRENCY})"
    )
    shape.add_argument(
        "--conc-max-size",
        default=DEFAULT_CONC_MAX_SIZE,
        help=f"largest size run at concurrency > 1 (default {DEFAULT_CONC_MAX_SIZE})",
    )
    shape.add_argument(
        "--ops",
        default="",
        help="objects per run: N, SIZE=N or SIZE:CONC=N, comma-separated "
        "(default 4KiB: 200, 1MiB: 50, 64MiB: 6, 256MiB: 3)",
    )
    shape.add_argument(
        "--runs", type=int, default=DEFAULT_RUNS, help=f"runs per case (default {DEFAULT_RUNS})"
    )
    shape.add_argument(
        "--checksum-mode",
        choices=CHECKSUM_MODES,
        help="botocore request checksum calculation / response validation (default: botocore's)",
    )
    shape.add_argument("--no-ceilings", action="store_true", help="skip the single-core ceilings")
    output = parser.add_argument_group("output")
    output.add_argument("--json", dest="json_path", help="also write the result document here")
    output.add_argument("--label", help="name of this run in reports (default: coffer or host:port)")
    output.add_argument("--quiet", action="store_true", help="no progress on stderr")
    output.add_argument(
        "--compare",
        nargs=2,
        metavar=("A.json", "B.json"),
        help="print two saved results side by side (ratios A vs B) and exit",
    )
    return parser


@dataclass(frozen=True)
class Target:
    """Resolved endpoint, server process groups (role -> PIDs) and the default label."""

    endpoint: Endpoint
    server_groups: dict[str, list[int]]
    label: str


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as json_file:
            return json.load(json_file)
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}") from error


def read_cluster(data_dir: str) -> dict[str, str]:
    """``DIR/cluster.json`` as a dict of strings. Raises ``UsageError`` if missing or malformed."""
    document = _read_json(os.path.join(data_dir, "cluster.json"))
    if not isinstance(document, dict):
        raise UsageError(f"{data_dir}/cluster.json: expected an object")
    return {str(key): str(value) for key, value in document.items() if value is not None}


def read_process_groups(data_dir: str) -> dict[str, list[int]]:
    """PIDs from ``DIR/processes.json`` grouped by role (``storagenode``, ``frontend``, ...).

    Accepts a list of ``{role, pid, ...}`` records (or an object holding it under ``processes``).
    Raises ``UsageError`` if missing or malformed.
    """
    path = os.path.join(data_dir, "processes.json")
    document = _read_json(path)
    if isinstance(document, dict):
        document = document.get("processes")
    if not isinstance(document, list):
        raise UsageError(f"{path}: expected a list of {{role, node_id, pid}} records")
    groups: dict[str, list[int]] = {}
    for record in document:
        if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
            raise UsageError(f"{path}: record without an integer pid: {record!r}")
        start_time = record.get("start_time")
        if isinstance(start_time, int) and start_time >= 0 and not _same_process(record["pid"], start_time):
            continue  # that process is gone (its pid may now belong to another): measure nothing of it
        groups.setdefault(str(record.get("role", "server")), []).append(record["pid"])
    return groups


def _same_process(pid: int, start_time: int) -> bool:
    """True when ``pid`` is still the process that started at ``start_time`` (clock ticks after
    boot, field 22 of /proc/PID/stat), so a recycled pid is never measured."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return len(fields) > 19 and fields[19] == str(start_time)


def resolve_target(args: argparse.Namespace) -> Target:
    """Endpoint, credentials and server PIDs from the flags, falling back to the dev cluster files."""
    data_dir = args.data or DEFAULT_DATA_DIR
    cluster: dict[str, str] = {}
    if not (args.endpoint and args.access_key and args.secret_key):
        cluster = read_cluster(data_dir)
    url = args.endpoint or cluster.get("endpoint")
    access_key = args.access_key or cluster.get("access_key")
    secret_key = args.secret_key or cluster.get("secret_key")
    if not (url and access_key and secret_key):
        raise UsageError("need --endpoint, --access-key and --secret-key (or a cluster.json with them)")
    region = args.region or cluster.get("region") or DEFAULT_REGION
    if args.server_pids:
        try:
            groups = {"server": parse_int_list(args.server_pids)}
        except ValueError as error:
            raise UsageError(f"--server-pids: {error}") from error
    elif cluster or args.data:
        groups = read_process_groups(data_dir)
    else:
        groups = {}
    default_label = "coffer" if cluster and not args.endpoint else (urlsplit(url).netloc or url)
    return Target(Endpoint(url, access_key, secret_key, region), groups, default_label)


def _compare(paths: list[str]) -> int:
    try:
        first, second = (load_results(path) for path in paths)
    except (OSError, ValueError) as error:
        print(f"coffer bench: {error}", file=sys.stderr)
        return 2
    print(format_compare(first, second))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``coffer bench`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.
    ``coffer bench sync ...`` goes to ``bench.syncbench.main``."""
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "sync":
        from bench import syncbench

        return syncbench.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compare:
        return _compare(args.compare)
    try:
        if args.runs < 1:
            raise UsageError("--runs must be at least 1")
        sizes = parse_size_list(args.sizes)
        concurrencies = parse_int_list(args.concurrency)
        cases = plan_cases(sizes, concurrencies, parse_size(args.conc_max_size), OpsSpec.parse(args.ops))
        target = resolve_target(args)
    except (UsageError, ValueError) as error:
        print(f"coffer bench: {error}", file=sys.stderr)
        return 2
    progress = Progress(enabled=not args.quiet)
    meter = None
    if target.server_groups:
        meter = ServerCpuMeter(target.server_groups)
        live = meter.live_roots()
        for name, pids in meter.groups.items():
            dead = sorted(set(pids) - set(live[name]))
            if dead:
                progress.message(f"warning: {name} PIDs not running: {dead}")
    else:
        progress.message("note: no server PIDs known: server CPU is not measured (--server-pids)")
    ceilings = None
    if not args.no_ceilings:
        progress.message("measuring single-core ceilings (SHA-256, MD5, RS 10+4 encode) ...")
        ceilings = measure_ceilings()
    result = run_benchmark(
        target.endpoint,
        cases,
        runs=args.runs,
        checksum_mode=args.checksum_mode,
        meter=meter,
        progress=progress,
        bucket=args.bucket,
    )
    settings = {
        "sizes": [format_size(size) for size in sizes],
        "concurrency": concurrencies,
        "conc_max_size": args.conc_max_size,
        "ops": args.ops or "default",
        "runs": args.runs,
        "region": target.endpoint.region,
    }
    document = results_to_json(result, ceilings, args.label or target.label, settings)
    if args.json_path:
        save_results(document, args.json_path)
    print(format_results(document))
    print(results_line(document))
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
