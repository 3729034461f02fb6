"""The `coffer` command's argument handling and its operator-facing errors (no cluster started)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli import processes
from cli.dev_cluster import load_records
from cli.dev_layout import new_settings, save_settings
from cli.main import build_parser, main
from client.status import status_path
from metadata.sqlite_store import SqliteMetadataStore
from tests.fixtures.processes import free_port


def _coffer(*arguments: str, environment: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *arguments], capture_output=True, text=True,
                          timeout=60, env=environment, check=False)


def test_dev_up_defaults() -> None:
    arguments = build_parser().parse_args(["dev", "up"])
    assert arguments.data == Path(".coffer")
    assert (arguments.nodes, arguments.port, arguments.detach) == (None, None, False)


@pytest.mark.parametrize("argv", [["dev", "up", "--nodes", "0"], ["dev", "up", "--port", "70000"],
                                  ["dev", "up", "--down-out-interval", "-1"], ["dev"], [],
                                  ["dev", "kill", "node-01", "--signal", "NOPE"]])
def test_bad_arguments_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: coffer" in capsys.readouterr().err


def test_service_subcommands_get_their_arguments_verbatim() -> None:
    # The storage node's own parser answers --help: coffer only dispatched.
    result = _coffer("storagenode", "--help")
    assert result.returncode == 0, result.stderr
    assert "--node-id" in result.stdout and "--capacity-bytes" in result.stdout


def test_status_and_down_of_an_empty_directory_say_what_to_do(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "status", "--data", str(tmp_path)]) == 1
    assert "coffer dev up --data" in capsys.readouterr().out
    assert main(["dev", "down", "--data", str(tmp_path)]) == 0
    assert "nothing to stop" in capsys.readouterr().out
    assert main(["dev", "status", "--json", "--data", str(tmp_path)]) == 1
    assert json.loads(capsys.readouterr().out)["processes"] == []


def test_up_without_etcd_names_the_package_to_install(tmp_path: Path) -> None:
    environment = dict(os.environ, PATH=str(tmp_path / "empty-bin"))
    result = _coffer("dev", "up", "--data", str(tmp_path / "cluster"), "--port", "0", environment=environment)
    assert result.returncode == 1
    assert "etcd is not installed" in result.stderr
    assert "apt-get install -y etcd-server" in result.stderr
    assert not (tmp_path / "cluster" / "processes.json").exists()


def test_up_refuses_flags_that_contradict_the_existing_cluster(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    save_settings(tmp_path, new_settings(tmp_path, nodes=3, frontend_port=free_port(), base_port=0,
                                         pg_count=16, down_out_interval=5))
    assert main(["dev", "up", "--data", str(tmp_path), "--nodes", "5"]) == 1
    error = capsys.readouterr().err
    assert "created with --nodes 3" in error and "new --data directory" in error
    assert not (tmp_path / "processes.json").exists()


def test_up_refuses_ports_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        assert main(["dev", "up", "--data", str(tmp_path), "--port", str(busy), "--nodes", "1"]) == 1
    error = capsys.readouterr().err
    assert f"{busy} (frontend)" in error and "already in use" in error
    assert not (tmp_path / "processes.json").exists()


def test_keys_create_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "list", "--data", str(tmp_path)]) == 1
    assert "coffer dev up" in capsys.readouterr().err
    SqliteMetadataStore(tmp_path / "metadata.sqlite3").close()

    assert main(["keys", "create", "--data", str(tmp_path), "--owner", "alice", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["owner"] == "alice" and len(created["secret_key"]) == 40

    assert main(["keys", "list", "--metadata", str(tmp_path / "metadata.sqlite3"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(key["access_key"], key["owner"]) for key in listed] == [(created["access_key"], "alice")]
    assert "secret_key" not in listed[0]
    with SqliteMetadataStore(tmp_path / "metadata.sqlite3") as store:
        assert store.get_access_key(created["access_key"]) is not None


def _fake_etcd(directory: Path, script: str) -> dict[str, str]:
    """A PATH whose `etcd` is ``script`` (a shell script body), for startup-failure tests."""
    directory.mkdir()
    binary = directory / "etcd"
    binary.write_text(f"#!/bin/sh\n{script}\n")
    binary.chmod(0o755)
    return dict(os.environ, PATH=f"{directory}{os.pathsep}{os.environ['PATH']}")


def test_a_process_dying_during_up_is_reported_with_its_log(tmp_path: Path) -> None:
    environment = _fake_etcd(tmp_path / "bin", 'echo "etcd: cannot open data dir: disk on fire" >&2; exit 3')
    data = tmp_path / "cluster"
    result = _coffer("dev", "up", "--data", str(data), "--port", "0", "--nodes", "1", environment=environment)
    assert result.returncode == 1
    assert "etcd exited with code 3 during startup" in result.stderr
    assert "disk on fire" in result.stderr
    assert f"coffer dev up --data {data}" in result.stderr
    records = json.loads((data / "processes.json").read_text())["processes"]
    assert [record["name"] for record in records] == ["etcd"]


def test_a_stage_that_never_gets_ready_times_out_and_stops_what_started(tmp_path: Path) -> None:
    environment = _fake_etcd(tmp_path / "bin", 'echo "etcd: waiting forever"; sleep 600')
    data = tmp_path / "cluster"
    result = _coffer("dev", "up", "--data", str(data), "--port", "0", "--nodes", "1", "--timeout", "1",
                     environment=environment)
    assert result.returncode == 1
    assert "timed out after 1s waiting for etcd to accept connections" in result.stderr
    assert "waiting forever" in result.stderr and "coffer dev down" in result.stderr
    status = _coffer("dev", "status", "--json", "--data", str(data))
    assert status.returncode == 1
    assert [row["up"] for row in json.loads(status.stdout)["processes"]] == [False]
    (record,) = load_records(data)
    assert processes.session_members(record.identity) == []  # its `sleep` helper is gone too


def test_a_broken_pipe_that_is_not_the_output_still_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only a closed stdout means "the reader went away"; a pipe to a child process or a socket
    # breaking is an error the operator must see, not a quiet exit 141.
    def broken_child_pipe(arguments: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("cli.main._run", broken_child_pipe)
    with pytest.raises(BrokenPipeError):
        main(["keys", "list"])


@pytest.mark.parametrize("command", [
    ["dev", "status", "--data", "{folder}"],  # an operator command
    ["sync", "status", "--json", "{folder}"],  # a dispatched one: its module's own main runs it
])
def test_output_to_a_closed_pipe_ends_quietly(tmp_path: Path, command: list[str]) -> None:
    # `coffer dev status | head -1` and `coffer sync status | head -1` once ended in a
    # BrokenPipeError traceback. The read end is closed before the command starts, so its first
    # write fails deterministically.
    status_file = status_path(tmp_path)
    status_file.parent.mkdir()
    status_file.write_text(json.dumps({"folder": str(tmp_path), "state": "stopped", "pid": 0}))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "cli", *(part.format(folder=tmp_path) for part in command)],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""
