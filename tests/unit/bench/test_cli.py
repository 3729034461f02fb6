"""Argument handling of ``coffer bench``: target resolution from the dev cluster files, errors, compare."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.cli import UsageError, build_parser, main, read_process_groups, resolve_target
from bench.report import results_line


def _write_cluster(data_dir, processes) -> None:
    (data_dir / "cluster.json").write_text(
        json.dumps(
            {"endpoint": "http://127.0.0.1:9000", "access_key": "AK", "secret_key": "SK", "region": "r1"}
        )
    )
    (data_dir / "processes.json").write_text(json.dumps(processes))


def test_target_comes_from_cluster_and_processes_json(tmp_path) -> None:
    _write_cluster(
        tmp_path,
        [
            {"role": "frontend", "node_id": "fe", "pid": 11},
            {"role": "storagenode", "node_id": "n1", "pid": 12},
            {"role": "storagenode", "node_id": "n2", "pid": 13},
        ],
    )
    target = resolve_target(build_parser().parse_args(["--data", str(tmp_path)]))
    assert target.endpoint.url == "http://127.0.0.1:9000"
    assert (target.endpoint.access_key, target.endpoint.secret_key, target.endpoint.region) == (
        "AK",
        "SK",
        "r1",
    )
    assert target.server_groups == {"frontend": [11], "storagenode": [12, 13]}
    assert target.label == "coffer"


def test_flags_override_the_cluster_files(tmp_path) -> None:
    _write_cluster(tmp_path, [{"role": "frontend", "pid": 11}])
    args = build_parser().parse_args(
        ["--data", str(tmp_path), "--endpoint", "http://127.0.0.1:28080", "--server-pids", "5,6"]
    )
    target = resolve_target(args)
    assert target.endpoint.url == "http://127.0.0.1:28080"
    assert target.endpoint.access_key == "AK"  # still from cluster.json
    assert target.server_groups == {"server": [5, 6]}
    assert target.label == "127.0.0.1:28080"


def test_explicit_endpoint_needs_no_cluster_files(tmp_path) -> None:
    args = build_parser().parse_args(
        [
            "--endpoint",
            "http://h:1",
            "--access-key",
            "a",
            "--secret-key",
            "s",
            "--data",
            str(tmp_path / "none"),
        ]
    )
    with pytest.raises(UsageError):  # --data given explicitly: its processes.json is required
        resolve_target(args)
    args = build_parser().parse_args(["--endpoint", "http://h:1", "--access-key", "a", "--secret-key", "s"])
    target = resolve_target(args)
    assert target.server_groups == {}
    assert target.endpoint.region == "us-east-1"


def test_processes_json_accepts_a_wrapped_list_and_rejects_records_without_pid(tmp_path) -> None:
    (tmp_path / "processes.json").write_text(json.dumps({"processes": [{"role": "etcd", "pid": 3}]}))
    assert read_process_groups(str(tmp_path)) == {"etcd": [3]}
    (tmp_path / "processes.json").write_text(json.dumps([{"role": "etcd"}]))
    with pytest.raises(UsageError):
        read_process_groups(str(tmp_path))


@pytest.mark.parametrize(
    "argv",
    [
        ["--sizes", "4XB"],
        ["--runs", "0"],
        ["--ops", "4KiB=0"],
        ["--concurrency", "0"],
        ["--data", "/nonexistent-coffer-dir"],
        ["--endpoint", "http://h:1", "--access-key", "a", "--secret-key", "s", "--server-pids", "x"],
    ],
)
def test_bad_arguments_exit_2_before_any_request(argv, capsys) -> None:
    assert main(argv) == 2
    assert "coffer bench:" in capsys.readouterr().err


def test_compare_reads_two_saved_results(tmp_path, capsys) -> None:
    from tests.unit.bench.test_report import _document

    first, second = tmp_path / "a.json", tmp_path / "b.log"
    first.write_text(json.dumps(_document("coffer", put_wall=1.0)))
    second.write_text("noise\n" + results_line(_document("swift", put_wall=2.0)) + "\n")
    assert main(["--compare", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert "A = coffer" in out and "B = swift" in out
    assert main(["--compare", str(first), os.devnull]) == 2


def test_processes_json_skips_pids_that_are_no_longer_the_recorded_process(tmp_path) -> None:
    own_start = int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
    (tmp_path / "processes.json").write_text(json.dumps([
        {"role": "frontend", "pid": os.getpid(), "start_time": own_start},
        {"role": "storagenode", "pid": os.getpid(), "start_time": own_start + 1},  # a recycled pid
    ]))
    assert read_process_groups(str(tmp_path)) == {"frontend": [os.getpid()]}
