"""The storage-node process's settings: its flags and the full flag it reports to placement."""

from __future__ import annotations

import pytest

from storagenode.server import full_flag, parse_args

BASE = ["--node-id", "node-01", "--listen", "127.0.0.1:1", "--volume", "/tmp/v", "--zone", "z", "--rack", "r",
        "--host", "h", "--capacity-bytes", "1000", "--metrics-port", "0"]
MiB = 1024 * 1024


def test_full_flag_has_a_gap_between_full_and_not_full() -> None:
    reserve = 64 * MiB
    assert full_flag([10 * reserve, reserve], reserve) is True  # one volume below 2x its reserve
    assert full_flag([10 * reserve, 3 * reserve], reserve) is None  # between: keep the flag as it is
    assert full_flag([10 * reserve, 5 * reserve], reserve) is False  # every volume above 4x
    assert full_flag([], reserve) is False


def test_durability_flags_reach_the_settings() -> None:
    config = parse_args([*BASE, "--repair-bytes-per-second", "1000", "--repair-scan-interval", "2",
                         "--scrub-period", "30", "--scrub-max-bytes-per-second", "5000", "--no-repair"])
    settings = config.durability
    assert (settings.repair, settings.repair_bytes_per_second, settings.repair_scan_interval) == (False, 1000, 2)
    assert (settings.scrub, settings.scrub_period, settings.scrub_max_bytes_per_second) == (True, 30, 5000)
    assert parse_args(BASE).durability.scrub_period == 14 * 24 * 3600


def test_compaction_flags_reach_the_settings() -> None:
    settings = parse_args([*BASE, "--compaction-interval", "30", "--compaction-garbage-ratio", "0.5"]).durability
    assert (settings.compaction, settings.compaction_interval, settings.compaction_garbage_ratio) == (True, 30, 0.5)
    assert parse_args([*BASE, "--no-compaction"]).durability.compaction is False
    defaults = parse_args(BASE).durability
    assert (defaults.compaction, defaults.compaction_interval, defaults.compaction_garbage_ratio) == (True, 600, 0.25)


def test_the_background_write_cap_reaches_the_settings_and_is_off_by_default() -> None:
    flag = "--background-write-max-bytes-per-second"
    assert parse_args([*BASE, flag, str(64 * MiB)]).durability.background_write_max_bytes_per_second == 64 * MiB
    assert parse_args(BASE).durability.background_write_max_bytes_per_second == 0
    with pytest.raises(SystemExit):
        parse_args([*BASE, flag, "-1"])


@pytest.mark.parametrize("ratio", ["0", "1.5", "-0.1"])
def test_a_garbage_ratio_outside_0_to_1_is_refused(ratio: str) -> None:
    with pytest.raises(SystemExit):
        parse_args([*BASE, "--compaction-garbage-ratio", ratio])


@pytest.mark.parametrize("flag", ["--repair-scan-interval", "--scrub-period", "--repair-bytes-per-second",
                                  "--compaction-interval"])
def test_non_positive_rates_and_periods_are_refused(flag: str) -> None:
    with pytest.raises(SystemExit):
        parse_args([*BASE, flag, "0"])
