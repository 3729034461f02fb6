"""The frontend's command line: defaults match the configuration's, bad values are refused."""

from __future__ import annotations

import pytest

from frontend.config import PARALLEL_CHUNKS, FrontendConfig, parse_args


def test_the_command_line_defaults_are_the_configuration_defaults() -> None:
    parsed = parse_args([])
    assert parsed.parallel_chunks == FrontendConfig().parallel_chunks == PARALLEL_CHUNKS
    assert parsed.upload_memory_bytes == FrontendConfig().upload_memory_bytes
    assert parsed.read_memory_bytes == FrontendConfig().read_memory_bytes


def test_parallel_chunks_is_taken_from_the_command_line() -> None:
    assert parse_args(["--parallel-chunks", "4"]).parallel_chunks == 4


@pytest.mark.parametrize("value", ["0", "-3"])
def test_parallel_chunks_below_one_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--parallel-chunks", value])
    assert exited.value.code == 2
    assert "--parallel-chunks must be at least 1" in capsys.readouterr().err


def test_memory_budgets_are_taken_from_the_command_line() -> None:
    parsed = parse_args(["--upload-memory", "1000", "--read-memory", "2000"])
    assert (parsed.upload_memory_bytes, parsed.read_memory_bytes) == (1000, 2000)


@pytest.mark.parametrize("flag", ["--upload-memory", "--read-memory"])
def test_memory_budgets_must_be_positive(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args([flag, "0"])
    assert exited.value.code == 2
    assert f"{flag} must be > 0" in capsys.readouterr().err
