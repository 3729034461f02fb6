"""The frontend's command line: defaults match the configuration's, bad values are refused."""

from __future__ import annotations

import pytest

from frontend.config import PARALLEL_CHUNKS, FrontendConfig, parse_args


def test_the_command_line_defaults_are_the_configuration_defaults() -> None:
    parsed = parse_args([])
    assert parsed.parallel_chunks == FrontendConfig().parallel_chunks == PARALLEL_CHUNKS
    assert parsed.upload_memory_bytes == FrontendConfig().upload_memory_bytes


def test_parallel_chunks_is_taken_from_the_command_line() -> None:
    assert parse_args(["--parallel-chunks", "4"]).parallel_chunks == 4


@pytest.mark.parametrize("value", ["0", "-3"])
def test_parallel_chunks_below_one_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--parallel-chunks", value])
    assert exited.value.code == 2
    assert "--parallel-chunks must be at least 1" in capsys.readouterr().err
