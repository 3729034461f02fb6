"""Result documents, tables and the side-by-side comparison."""

from __future__ import annotations

import json

import pytest

from bench.ceilings import Ceilings
from bench.report import (
    RESULTS_PREFIX,
    format_compare,
    format_results,
    format_table,
    load_results,
    results_line,
    results_to_json,
    summarize_phase,
)
from bench.s3bench import BenchResult, CaseResult, CaseSpec, PhaseRun

MIB = 1024 * 1024
CEILINGS = Ceilings(gb_per_s={"sha256": 1.5, "md5": 0.5, "rs_encode": 3.0}, errors={})


def _phase(phase: str, wall: float, latencies: list[float], cpu: float | None, ops: int = 4) -> PhaseRun:
    return PhaseRun(
        phase=phase,
        size=MIB,
        concurrency=1,
        ops=ops,
        wall_seconds=wall,
        latencies_seconds=latencies,
        client_cpu_seconds=0.01,
        server_cpu_seconds=None if cpu is None else {"frontend": cpu * 0.75, "storagenode": cpu * 0.25},
    )


def _document(label: str, put_wall: float, server_cpu: float | None = 0.2) -> dict:
    runs = [
        (
            _phase("put", put_wall, [0.1, 0.2, 0.3, 0.4], server_cpu),
            _phase("get", 0.1, [0.02] * 4, server_cpu),
        ),
        (_phase("put", put_wall * 2, [0.5] * 4, server_cpu), _phase("get", 0.1, [0.03] * 4, server_cpu)),
        (_phase("put", put_wall * 4, [0.6] * 4, server_cpu), _phase("get", 0.1, [0.04] * 4, server_cpu)),
    ]
    result = BenchResult(
        endpoint="http://127.0.0.1:1",
        bucket="b",
        checksum_mode=None,
        server_groups={"frontend": [1]},
        started_at=0.0,
        finished_at=10.0,
        cases=[CaseResult(CaseSpec(MIB, 1, 4), runs)],
    )
    return results_to_json(result, CEILINGS, label, {"runs": 3})


def test_summary_takes_medians_of_runs_and_pools_latencies() -> None:
    runs = [_phase("put", wall, [wall / 4] * 4, cpu) for wall, cpu in ((1.0, 0.4), (2.0, 0.2), (0.5, 0.1))]
    summary = summarize_phase(runs, ceiling_gb_per_s=0.5)
    mb = 4 * MIB / 1e6
    assert summary["mb_per_s"] == pytest.approx(mb / 1.0)
    assert summary["mb_per_s_min"] == pytest.approx(mb / 2.0)
    assert summary["mb_per_s_max"] == pytest.approx(mb / 0.5)
    assert summary["ops_per_s"] == pytest.approx(4.0)
    assert summary["p50_ms"] == pytest.approx(250.0)  # 12 pooled latencies: 4x125, 4x250, 4x500 ms
    assert summary["p99_ms"] == pytest.approx(500.0)
    assert summary["server_cpu_s_per_gb"] == pytest.approx(0.2 / (4 * MIB / 1e9))
    assert summary["server_cpu_ms_per_op"] == pytest.approx(0.2 / 4 * 1e3)
    assert summary["server_cpu_s_per_gb_by_group"]["frontend"] == pytest.approx(0.15 / (4 * MIB / 1e9))
    assert summary["ceiling_ratio"] == pytest.approx(mb / 500.0)


def test_summary_without_server_cpu_or_ceiling_leaves_them_empty() -> None:
    summary = summarize_phase([_phase("get", 1.0, [0.1], None, ops=1)], ceiling_gb_per_s=None)
    assert summary["server_cpu_s_per_gb"] is None
    assert summary["server_cpu_s_per_gb_by_group"] is None
    assert summary["ceiling_ratio"] is None
    with pytest.raises(ValueError):
        summarize_phase([], None)


def test_document_has_ceilings_cases_and_raw_runs() -> None:
    document = _document("coffer", put_wall=1.0)
    assert document["schema"] == "coffer-bench/1"
    assert document["checksum_mode"] == "botocore-default"
    assert document["ceilings"]["put"] == {"primitive": "md5", "gb_per_s": 0.5}
    (case,) = document["cases"]
    assert (case["size_label"], case["concurrency"], case["ops"]) == ("1MiB", 1, 4)
    assert len(case["runs"]) == 3
    assert case["put"]["mb_per_s"] == pytest.approx(4 * MIB / 1e6 / 2.0)
    json.dumps(document)  # JSON-serialisable as is


def test_results_table_shows_each_phase_with_units_and_ceiling_share() -> None:
    text = format_results(_document("coffer", put_wall=1.0))
    lines = text.splitlines()
    assert "PUT ceiling = md5 (500 MB/s per core)" in text
    put_row = next(line for line in lines if line.startswith("1MiB c=1") and " PUT " in line)
    assert "2.10" in put_row  # median MB/s: 4 MiB over 2 s
    assert "0.42% of md5" in put_row  # 2.1 MB/s of 500 MB/s
    assert "server CPU-s/GB by group:" in text  # two groups measured
    assert "FAILED" not in text


def test_results_line_round_trips_through_a_log_file(tmp_path) -> None:
    document = _document("coffer", put_wall=1.0)
    line = results_line(document)
    assert line.startswith(RESULTS_PREFIX) and "\n" not in line
    log = tmp_path / "bench.log"
    log.write_text("progress noise\n" + line + "\n")
    assert load_results(str(log)) == document
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(document))
    assert load_results(str(saved)) == document
    other = tmp_path / "other.json"
    other.write_text('{"schema": "something-else"}')
    with pytest.raises(ValueError):
        load_results(str(other))


def test_compare_puts_cases_side_by_side_with_ratios_favouring_a_above_one() -> None:
    coffer = _document("coffer", put_wall=1.0, server_cpu=0.2)
    swift = _document("swift", put_wall=4.0, server_cpu=0.8)
    text = format_compare(coffer, swift)
    assert "coffer MB/s" in text and "swift MB/s" in text
    put_row = next(line for line in text.splitlines() if line.startswith("1MiB c=1") and " PUT " in line)
    cells = put_row.split()
    assert cells[-1] == "4.00x"  # swift spends 4x the server CPU per GB
    assert cells[5] == "4.00x"  # coffer PUT throughput 4x swift's
    get_row = next(line for line in text.splitlines() if line.startswith("1MiB c=1") and " GET " in line)
    assert get_row.split()[5] == "1.00x"


def test_compare_lists_cases_present_in_one_result_only() -> None:
    coffer = _document("coffer", put_wall=1.0)
    swift = _document("swift", put_wall=1.0)
    swift["cases"][0]["size"] = 4096
    swift["cases"][0]["size_label"] = "4KiB"
    text = format_compare(coffer, swift)
    assert "no case measured in both results" in text
    assert "in one result only (not compared): 1MiB c=1, 4KiB c=1" in text


def test_format_table_aligns_columns_and_checks_row_width() -> None:
    table = format_table(["name", "value"], [["a", "1"], ["longer", "1000"]])
    assert table.splitlines() == ["name    value", "------  -----", "a           1", "longer   1000"]
    with pytest.raises(ValueError):
        format_table(["a", "b"], [["only one"]])
