"""The pure parts of ``coffer bench sync`` (bench/syncbench.py): latency summaries, delta figures,
the JSON document and its table, the file-content check used by the poll loop, argument errors, and
the dispatch from ``coffer bench``. The daemons themselves run in tests/system/test_bench_sync.py."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from bench import cli as bench_cli
from bench import syncbench
from bench.syncbench import (
    DeltaResult,
    LatencyCase,
    SyncBenchFailure,
    SyncBenchResult,
    delta_sentence,
    delta_to_json,
    file_matches,
    format_results,
    new_chunk_bytes,
    results_line,
    results_to_json,
    summarize_latencies,
    wait_until,
)
from client.chunking import FileChunk

MIB = 1 << 20


def test_summarize_latencies_uses_nearest_rank_in_milliseconds() -> None:
    samples = [0.001 * value for value in range(1, 101)]  # 1..100 ms
    summary = summarize_latencies(samples)
    assert summary["count"] == 100
    assert summary["p50_ms"] == pytest.approx(50.0)
    assert summary["p99_ms"] == pytest.approx(99.0)
    assert summary["max_ms"] == pytest.approx(100.0)
    assert summary["mean_ms"] == pytest.approx(50.5)


def test_summarize_latencies_of_few_samples_reports_the_maximum_as_p99() -> None:
    summary = summarize_latencies([0.3, 0.1, 0.2])
    assert summary["p50_ms"] == pytest.approx(200.0)
    assert summary["p99_ms"] == pytest.approx(300.0)


def test_summarize_latencies_refuses_no_samples() -> None:
    with pytest.raises(ValueError):
        summarize_latencies([])


def test_new_chunk_bytes_counts_distinct_chunks_the_old_file_lacks() -> None:
    old = [FileChunk("a", 0, 4 * MIB), FileChunk("b", 4 * MIB, 3 * MIB)]
    new = [FileChunk("c", 0, 2 * MIB), FileChunk("b", 2 * MIB, 3 * MIB), FileChunk("c", 5 * MIB, 2 * MIB),
           FileChunk("d", 7 * MIB, 1 * MIB)]
    assert new_chunk_bytes(old, new) == (3 * MIB, 2)
    assert new_chunk_bytes(new, new) == (0, 0)


def _delta(uploaded: int = 4 * MIB, ideal: int = 4 * MIB) -> DeltaResult:
    return DeltaResult(name="flip 1 byte in the middle", file_size=100 * MIB, file_chunks=25, ideal_bytes=ideal,
                       ideal_chunks=1, uploaded_bytes=uploaded, uploaded_chunks=1, downloaded_bytes=4 * MIB,
                       reused_bytes=96 * MIB, latency_seconds=0.5)


def test_delta_document_has_ratios_and_the_sentence() -> None:
    document = delta_to_json(_delta())
    assert document["uploaded_fraction"] == pytest.approx(0.04)
    assert document["uploaded_vs_ideal"] == pytest.approx(1.0)
    assert document["latency_ms"] == pytest.approx(500.0)
    assert document["summary"] == (
        "uploaded 4 MiB of a 100 MiB file (1 of 25 chunks; ideal 4 MiB); B downloaded 4 MiB, reused 96 MiB")
    assert delta_to_json(_delta(ideal=0))["uploaded_vs_ideal"] is None


def test_delta_sentence_keeps_three_significant_digits() -> None:
    document = delta_to_json(_delta(uploaded=4_213_000))
    assert delta_sentence(document).startswith("uploaded 4.02 MiB of a 100 MiB file")


def _result() -> SyncBenchResult:
    result = SyncBenchResult(endpoint="http://127.0.0.1:9000", user="bench-1234")
    result.latency = [LatencyCase("create", 4096, [0.25, 0.3, 0.2]), LatencyCase("edit", 4096, [])]
    result.delta = [_delta()]
    result.finished_at = result.started_at + 10
    return result


def test_results_document_round_trips_through_json_and_skips_empty_cases() -> None:
    document = results_to_json(_result(), "coffer", {"files": 3})
    assert document["schema"] == syncbench.SCHEMA
    assert [case["op"] for case in document["latency"]] == ["create"]
    case = document["latency"][0]
    assert case["size_label"] == "4KiB"
    assert case["count"] == 3
    assert case["p50_ms"] == pytest.approx(250.0)
    assert case["samples_ms"] == [250.0, 300.0, 200.0]
    line = results_line(document)
    assert line.startswith("RESULTS_JSON {")
    assert json.loads(line.removeprefix("RESULTS_JSON ")) == json.loads(json.dumps(document))


def test_format_results_shows_the_table_the_delta_lines_and_a_failure() -> None:
    result = _result()
    result.error = "timed out after 120 s waiting for create of x to reach b"
    text = format_results(results_to_json(result, "coffer", {"files": 3}))
    lines = text.splitlines()
    assert any(line.split()[:5] == ["create", "4KiB", "3", "250", "300"] for line in lines)
    assert "flip 1 byte in the middle: uploaded 4 MiB of a 100 MiB file" in text
    assert text.endswith("FAILED: timed out after 120 s waiting for create of x to reach b")


def test_file_matches_checks_size_and_content_and_skips_rehashing_an_unchanged_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = os.urandom(10_000)
    expected = hashlib.sha256(data).hexdigest()
    checked: dict[Path, tuple[int, int, int]] = {}
    assert not file_matches(path, len(data), expected, checked)  # missing
    path.write_bytes(data[:-1])
    assert not file_matches(path, len(data), expected, checked)  # wrong size
    wrong = bytearray(data)
    wrong[5000] ^= 1
    path.write_bytes(wrong)
    assert not file_matches(path, len(data), expected, checked)  # same size, other content
    assert path in checked
    replacement = tmp_path / "new.bin"
    replacement.write_bytes(data)
    os.replace(replacement, path)  # a new inode: checked again
    assert file_matches(path, len(data), expected, checked)


def test_wait_until_returns_the_poll_time_and_times_out_naming_the_step() -> None:
    calls = []

    def third_time() -> bool:
        calls.append(time.perf_counter())
        return len(calls) == 3

    seen = wait_until(third_time, timeout=5, what="x", interval=0.001)
    assert seen <= calls[-1]
    assert seen > calls[-2]
    with pytest.raises(SyncBenchFailure, match="waiting for the moon"):
        wait_until(lambda: False, timeout=0.05, what="the moon", interval=0.01)


def test_wait_until_stops_when_the_liveness_check_raises() -> None:
    def dead() -> None:
        raise SyncBenchFailure("daemon a exited with 1")

    with pytest.raises(SyncBenchFailure, match="daemon a exited"):
        wait_until(lambda: False, timeout=30, what="never", alive=dead)


def test_main_refuses_a_directory_without_a_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert syncbench.main(["--data", str(tmp_path)]) == 2
    assert "no metadata store" in capsys.readouterr().err


def test_main_refuses_bad_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metadata.sqlite3").write_bytes(b"")
    (tmp_path / "cluster.json").write_text('{"endpoint": "http://127.0.0.1:1"}')
    assert syncbench.main(["--data", str(tmp_path), "--sizes", "4 furlongs"]) == 2
    assert "furlongs" in capsys.readouterr().err


def test_coffer_bench_sync_dispatches_to_the_sync_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_cli.main(["sync", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: coffer bench sync")
    assert "--delta-size" in out
