"""Whole benchmark runs over real HTTP against a tiny in-memory S3 server (tests/unit/bench/s3_server)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator

import pytest

from bench.cli import main
from bench.progress import Progress
from bench.s3bench import Endpoint, OpsSpec, plan_cases, run_benchmark
from bench.server_cpu import ServerCpuMeter
from tests.fixtures.processes import free_port
from tests.unit.bench.s3_server import TinyS3

KIB = 1024


@pytest.fixture
def s3_factory() -> Iterator:
    servers: list[TinyS3] = []

    def start(fault: str | None = None) -> TinyS3:
        servers.append(TinyS3(fault))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _run(url: str, *, runs: int = 2, meter: ServerCpuMeter | None = None, bucket: str | None = None):
    cases = plan_cases([4 * KIB, 64 * KIB], [1, 4], 4 * KIB, OpsSpec.parse("6"))
    return run_benchmark(
        Endpoint(url, "key", "secret"),
        cases,
        runs=runs,
        checksum_mode=None,
        meter=meter,
        progress=Progress(io.StringIO()),
        bucket=bucket,
    )


def test_a_clean_run_measures_every_case_and_leaves_nothing_behind(s3_factory) -> None:
    server = s3_factory()
    result = _run(server.url, meter=ServerCpuMeter({"self": [os.getpid()]}))
    assert result.error is None
    assert [(case.spec.size, case.spec.concurrency) for case in result.cases] == [
        (4 * KIB, 1),
        (4 * KIB, 4),
        (64 * KIB, 1),
    ]
    for case in result.cases:
        assert len(case.runs) == 2
        for put, get in case.runs:
            assert (put.phase, get.phase) == ("put", "get")
            assert len(put.latencies_seconds) == len(get.latencies_seconds) == 6
            assert put.wall_seconds > 0 and get.wall_seconds > 0
            assert put.server_cpu_seconds is not None and put.server_cpu_seconds["self"] >= 0
    assert server.objects == {}
    assert server.buckets == set(), "the fresh bucket must be deleted"
    assert result.bucket.startswith("coffer-bench-")


def test_every_object_put_is_distinct(s3_factory) -> None:
    server = s3_factory()
    result = _run(server.url, runs=2)
    assert result.error is None
    assert len(server.put_bodies) == 2 * (6 + 6 + 6)  # 4KiB c=1, 4KiB c=4, 64KiB c=1; 2 runs
    assert len(set(server.put_bodies)) == len(server.put_bodies), "a payload was reused"


def test_phases_too_large_to_copy_up_front_put_the_same_bytes(s3_factory, monkeypatch) -> None:
    monkeypatch.setattr("bench.s3bench.PREPARED_BODIES_MAX_BYTES", 0)  # every request copies its body
    server = s3_factory()
    result = _run(server.url, runs=1)
    assert result.error is None  # every ETag was the MD5 of its body, every GET byte-identical
    assert len(set(server.put_bodies)) == len(server.put_bodies) == 6 + 6 + 6


def test_a_named_bucket_is_kept(s3_factory) -> None:
    server = s3_factory()
    result = _run(server.url, runs=1, bucket="kept-bucket")
    assert result.error is None
    assert server.buckets == {"kept-bucket"}
    assert server.objects == {}


@pytest.mark.parametrize(
    ("fault", "message"),
    [("corrupt_get", "body differs"), ("bad_etag", "ETag"), ("get_500", "InternalError")],
)
def test_wrong_data_or_a_failed_request_stops_the_run(s3_factory, fault: str, message: str) -> None:
    server = s3_factory(fault)
    result = _run(server.url)
    assert result.error is not None and message in result.error
    assert result.cases == []  # the very first run failed
    assert server.objects == {}, "objects of the failed run are cleaned up"


def test_an_unreachable_endpoint_is_reported_not_raised() -> None:
    result = _run(f"http://127.0.0.1:{free_port()}")
    assert result.error is not None and "HEAD bucket" in result.error


def test_cli_prints_table_and_results_json_and_writes_the_file(s3_factory, tmp_path, capsys) -> None:
    server = s3_factory()
    json_path = tmp_path / "run.json"
    status = main(
        [
            *("--endpoint", server.url, "--access-key", "k", "--secret-key", "s"),
            *("--sizes", "4KiB", "--concurrency", "1,2", "--ops", "4", "--runs", "1"),
            *("--server-pids", str(os.getpid()), "--label", "tiny", "--json", str(json_path)),
            *("--no-ceilings", "--checksum-mode", "when_required", "--quiet"),
        ]
    )
    assert status == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("RESULTS_JSON ")
    document = json.loads(out[-1][len("RESULTS_JSON ") :])
    assert document == json.loads(json_path.read_text())
    assert document["label"] == "tiny"
    assert document["checksum_mode"] == "when_required"
    assert document["server_pids"] == {"server": [os.getpid()]}
    assert [(c["size_label"], c["concurrency"], c["ops"]) for c in document["cases"]] == [
        ("4KiB", 1, 4),
        ("4KiB", 2, 4),
    ]
    assert any(line.startswith("4KiB c=2") and " GET " in line for line in out)


def test_cli_exits_1_with_partial_results_when_the_run_fails(s3_factory, capsys) -> None:
    server = s3_factory("corrupt_get")
    status = main(
        [
            *("--endpoint", server.url, "--access-key", "k", "--secret-key", "s"),
            *("--sizes", "4KiB", "--ops", "2", "--runs", "1", "--no-ceilings", "--quiet"),
        ]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "FAILED: GET" in out
    assert json.loads(out.splitlines()[-1][len("RESULTS_JSON ") :])["error"].startswith("GET ")
