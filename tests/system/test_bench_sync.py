"""``coffer bench sync`` against a real dev cluster with tiny settings: the document has sane fields,
the delta edits send exactly the chunks the old file lacked, and the daemons and their folders are
gone afterwards, also when a change never arrives (issue 4, acceptance 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.cluster import DevCluster

pytestmark = [pytest.mark.system, pytest.mark.coffer_cluster(nodes=14, pg_count=64)]

MIB = 1 << 20


def _command_lines() -> list[str]:
    """Every process's command line (NUL-separated arguments joined by spaces)."""
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    lines.append(handle.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return lines


def test_bench_sync_measures_latency_and_delta_and_cleans_up(cluster: DevCluster, tmp_path: Path) -> None:
    work = tmp_path / "tmp"
    work.mkdir()
    output = tmp_path / "result.json"
    completed = subprocess.run(
        [sys.executable, "-m", "cli", "bench", "sync", "--data", str(cluster.data_dir), "--files", "2",
         "--sizes", "4KiB,1MiB", "--delta-size", "16MiB", "--timeout", "30", "--json", str(output)],
        capture_output=True, text=True, timeout=240, check=False, env={**os.environ, "TMPDIR": str(work)})
    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"

    document = json.loads(output.read_text())
    results_lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULTS_JSON ")]
    assert len(results_lines) == 1
    assert json.loads(results_lines[0].removeprefix("RESULTS_JSON ")) == document
    assert document["schema"] == "coffer-bench-sync/1"
    assert document["error"] is None
    assert document["endpoint"] == cluster.endpoint
    assert document["user"].startswith("bench-")

    cases = {(case["op"], case["size_label"]): case for case in document["latency"]}
    assert set(cases) == {(op, size) for op in ("create", "edit", "rename", "delete") for size in ("4KiB", "1MiB")}
    for case in cases.values():
        assert case["count"] == 2
        assert len(case["samples_ms"]) == 2
        assert 0 < case["p50_ms"] <= case["p99_ms"] == case["max_ms"]

    flip, insert = document["delta"]
    assert flip["name"] == "flip 1 byte in the middle"
    assert flip["file_size"] == 16 * MIB
    assert insert["file_size"] == 16 * MIB + 1024
    for delta in (flip, insert):
        # The daemon sends exactly the chunks the old content lacks; B fetches those and copies the rest.
        assert delta["ideal_chunks"] >= 1
        assert delta["uploaded_bytes"] == delta["ideal_bytes"]
        assert delta["uploaded_chunks"] == delta["ideal_chunks"]
        assert delta["downloaded_bytes"] == delta["ideal_bytes"]
        assert delta["downloaded_bytes"] + delta["reused_bytes"] == delta["file_size"]
        if delta["file_chunks"] > 1:
            assert delta["uploaded_bytes"] < delta["file_size"]
        assert delta["summary"].startswith("uploaded ")
    assert "delta efficiency" in completed.stdout

    assert list(work.iterdir()) == []  # the folders were deleted
    assert not [line for line in _command_lines() if str(work) in line]  # and the daemons stopped


def test_bench_sync_failure_reports_the_step_and_still_cleans_up(cluster: DevCluster, tmp_path: Path) -> None:
    work = tmp_path / "tmp"
    work.mkdir()
    output = tmp_path / "result.json"
    # No change reaches the other folder within a millisecond: the first create times out.
    completed = subprocess.run(
        [sys.executable, "-m", "cli", "bench", "sync", "--data", str(cluster.data_dir), "--files", "1",
         "--sizes", "4KiB", "--delta-size", "0", "--timeout", "0.001", "--json", str(output)],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "TMPDIR": str(work)})
    assert completed.returncode == 1, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    document = json.loads(output.read_text())
    assert "waiting for create of latency-4KiB-000.bin to reach b" in document["error"]
    assert "daemon a log:" in document["error"]
    assert document["latency"] == []
    assert "FAILED: timed out" in completed.stdout
    assert list(work.iterdir()) == []
    assert not [line for line in _command_lines() if str(work) in line]
