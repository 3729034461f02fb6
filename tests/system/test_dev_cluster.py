"""`coffer dev up|status|down` end to end: a real 14-node cluster in a temporary directory.

up -> status shows every process up -> boto3 create bucket / put / get -> down leaves no process ->
up again on the same directory serves the same object with the same credentials. Also: a killed
process shows as down and restarts; a foreground `up` stops everything on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli import processes
from cli.dev_cluster import load_records
from tests.fixtures.cluster import ClusterOptions, DevCluster, run_coffer
from tests.fixtures.processes import wait_until

pytestmark = pytest.mark.system

BODY = os.urandom(5 * 1024 * 1024 + 123)  # more than one 4 MiB chunk


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """One cluster directory for the whole module; always stopped at the end."""
    cluster = DevCluster(tmp_path_factory.mktemp("dev") / "coffer", ClusterOptions(nodes=14))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _status(cluster: DevCluster) -> dict[str, Any]:
    result = run_coffer("dev", "status", "--json", "--data", str(cluster.data_dir), check=False)
    document: dict[str, Any] = json.loads(result.stdout)
    document["exit_code"] = result.returncode
    return document


def test_up_prints_how_to_use_the_cluster(dev: DevCluster) -> None:
    assert dev.endpoint == f"http://127.0.0.1:{dev.port}"
    assert dev.region == "us-east-1"
    assert dev.access_key in dev.up_output and dev.secret_key in dev.up_output
    assert f"aws --endpoint-url {dev.endpoint} s3 mb s3://demo" in dev.up_output
    info = json.loads((dev.data_dir / "cluster.json").read_text())
    assert set(info) == {"endpoint", "access_key", "secret_key", "region"}


def test_status_shows_every_process_up(dev: DevCluster) -> None:
    status = _status(dev)
    assert status["exit_code"] == 0
    rows = status["processes"]
    names = [row["name"] for row in rows]
    assert names == ["etcd", *[f"node-{n:02d}" for n in range(1, 15)], "placement", "frontend"]
    assert all(row["up"] for row in rows)
    domains = [row["failure_domain"] for row in rows if row["role"] == "storagenode"]
    assert len(set(domains)) == 14 and domains[0] == "zone-01/rack-01/host-01"
    for record in dev.processes():
        assert record["command"], record
        assert (dev.data_dir / "logs" / f"{record['name']}.log").exists()
        if record["role"] != "etcd":
            environ = Path(f"/proc/{record['pid']}/environ").read_bytes().split(b"\0")
            assert b"MALLOC_MMAP_THRESHOLD_=67108864" in environ
            assert b"MALLOC_TRIM_THRESHOLD_=268435456" in environ


def test_up_again_while_running_says_so(dev: DevCluster) -> None:
    pids = [record["pid"] for record in dev.processes()]
    result = run_coffer("dev", "up", "--detach", "--data", str(dev.data_dir))
    assert "already running" in result.stdout
    assert [record["pid"] for record in dev.processes()] == pids


def test_objects_round_trip_through_boto3(dev: DevCluster) -> None:
    s3 = dev.s3_client()
    s3.create_bucket(Bucket="demo")
    s3.put_object(Bucket="demo", Key="greeting/blob.bin", Body=BODY)
    assert s3.get_object(Bucket="demo", Key="greeting/blob.bin")["Body"].read() == BODY


def test_down_leaves_no_process_and_up_again_serves_the_same_object(dev: DevCluster) -> None:
    s3 = dev.s3_client()
    s3.put_object(Bucket="demo", Key="survives-restart", Body=b"still here")
    records = load_records(dev.data_dir)
    result = dev.down()
    assert result.returncode == 0, result.stderr
    for record in records:
        assert not record.is_running(), record.name
        assert processes.session_members(record.identity) == [], record.name
    status = _status(dev)
    assert status["exit_code"] == 1
    assert not any(row["up"] for row in status["processes"])

    endpoint, access_key, secret_key = dev.endpoint, dev.access_key, dev.secret_key
    dev.start()
    assert (dev.endpoint, dev.access_key, dev.secret_key) == (endpoint, access_key, secret_key)
    assert "reusing the one in cluster.json" in dev.up_output
    s3 = dev.s3_client()
    assert s3.get_object(Bucket="demo", Key="survives-restart")["Body"].read() == b"still here"
    assert s3.get_object(Bucket="demo", Key="greeting/blob.bin")["Body"].read() == BODY


def test_a_killed_process_shows_down_and_can_be_restarted(dev: DevCluster) -> None:
    dev.kill("node-03")
    status = _status(dev)
    assert status["exit_code"] == 1
    states = {row["name"]: row["up"] for row in status["processes"]}
    assert states["node-03"] is False and states["node-04"] is True
    old_pid = dev.process("node-03")["pid"]
    dev.start_process("node-03")
    assert dev.process("node-03")["pid"] != old_pid
    assert _status(dev)["exit_code"] == 0

    dev.kill("frontend")
    dev.start_process("frontend")  # waits for /-/ready
    s3 = dev.s3_client()
    assert s3.get_object(Bucket="demo", Key="survives-restart")["Body"].read() == b"still here"


def test_foreground_up_stops_everything_on_sigterm(dev: DevCluster) -> None:
    assert dev.down().returncode == 0
    log = dev.data_dir.parent / "foreground.out"
    with open(log, "wb") as output:
        supervisor = subprocess.Popen([sys.executable, "-m", "cli", "dev", "up", "--data", str(dev.data_dir)],
                                      stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Coffer is running" in log.read_text() or supervisor.poll() is not None,
                   240, "the foreground cluster to be ready")
        assert supervisor.poll() is None, log.read_text()
        records = load_records(dev.data_dir)
        assert len(records) == 17 and all(record.is_running() for record in records)
        # A node restarted by hand while the supervisor runs must be stopped by it too.
        dev.kill("node-03")
        dev.start_process("node-03")
        restarted = next(record for record in load_records(dev.data_dir) if record.name == "node-03")
        assert restarted.is_running()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=120) == 0, log.read_text()
        for record in [*records, restarted]:
            assert not record.is_running(), record.name
            assert processes.session_members(record.identity) == [], record.name
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
