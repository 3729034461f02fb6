"""The pure parts of the S3 runs: --ops, case planning, payload windows, run order, client config."""

import hashlib

import pytest

from bench.s3bench import (
    BenchObject,
    CaseSpec,
    Endpoint,
    OpsSpec,
    PayloadSource,
    default_ops,
    iterate_runs,
    make_client,
    new_bucket_name,
    plan_cases,
    prepared_bodies,
)

KIB = 1024
MIB = 1024 * 1024


def test_default_ops_shrink_with_size() -> None:
    assert default_ops(4 * KIB) == 200
    assert default_ops(MIB) == 50
    assert default_ops(256 * MIB) == 3


def test_ops_spec_most_specific_item_wins() -> None:
    spec = OpsSpec.parse("7, 4KiB=100, 4KiB:8=400")
    assert spec.ops_for(4 * KIB, 8) == 400
    assert spec.ops_for(4 * KIB, 1) == 100
    assert spec.ops_for(MIB, 1) == 7
    assert OpsSpec.parse("").ops_for(MIB, 1) == default_ops(MIB)


def test_ops_are_raised_to_the_concurrency() -> None:
    assert OpsSpec.parse("2").ops_for(MIB, 8) == 8


@pytest.mark.parametrize("text", ["0", "4KiB=0", "4KiB:x=3", "junk=3", "4KiB:1=-2"])
def test_ops_spec_rejects_bad_items(text: str) -> None:
    with pytest.raises(ValueError):
        OpsSpec.parse(text)


def test_plan_runs_large_sizes_at_concurrency_one_only() -> None:
    cases = plan_cases([4 * KIB, MIB, 256 * MIB], [1, 8], MIB, OpsSpec.parse(""))
    assert [(case.size, case.concurrency) for case in cases] == [
        (4 * KIB, 1),
        (4 * KIB, 8),
        (MIB, 1),
        (MIB, 8),
        (256 * MIB, 1),
    ]
    assert cases[-1].ops == 3
    assert cases[1].label == "4KiB c=8"


def test_plan_keeps_a_size_whose_levels_are_all_above_the_limit() -> None:
    cases = plan_cases([256 * MIB], [4, 8], MIB, OpsSpec.parse("2"))
    assert cases == [CaseSpec(256 * MIB, 4, 4)]


def test_payload_windows_are_distinct_objects_of_the_right_size() -> None:
    source = PayloadSource(4 * KIB, capacity=50)
    digests = {hashlib.sha256(source.view(index)).digest() for index in range(50)}
    assert len(digests) == 50
    assert all(len(source.view(index)) == 4 * KIB for index in (0, 49))
    assert bytes(source.view(1))[:-1] == bytes(source.view(0))[1:]  # windows slide by one byte
    with pytest.raises(IndexError):
        source.view(50)


def test_runs_never_reuse_a_payload_window_of_a_size() -> None:
    cases = [CaseSpec(4 * KIB, 1, 10), CaseSpec(4 * KIB, 8, 20), CaseSpec(MIB, 1, 5)]
    order = list(iterate_runs(cases, runs=2))
    assert [(spec.concurrency, run) for spec, run, _ in order[:4]] == [(1, 1), (1, 2), (8, 1), (8, 2)]
    used: dict[int, set[int]] = {}
    for spec, _, first in order:
        window = set(range(first, first + spec.ops))
        assert not window & used.setdefault(spec.size, set())
        used[spec.size] |= window
    assert used[4 * KIB] == set(range(60))
    assert used[MIB] == set(range(10))


def test_client_uses_path_style_no_retries_and_the_checksum_mode() -> None:
    client = make_client(Endpoint("http://127.0.0.1:9", "key", "secret", "eu-west-1"), "when_required", 16)
    config = client.meta.config
    assert config.s3["addressing_style"] == "path"
    assert config.retries["total_max_attempts"] == 1
    assert config.max_pool_connections == 16
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert client.meta.region_name == "eu-west-1"
    with pytest.raises(ValueError):
        make_client(Endpoint("http://127.0.0.1:9", "key", "secret"), "always", 1)


def test_bucket_names_are_fresh_and_valid() -> None:
    first, second = new_bucket_name(), new_bucket_name()
    assert first != second
    assert first.startswith("coffer-bench-")
    assert 3 <= len(first) <= 63 and first == first.lower()


def test_put_bodies_are_copied_before_the_phase_only_within_the_budget() -> None:
    payload = PayloadSource(64 * KIB, 3)
    objects = [BenchObject(key=f"k{n}", view=payload.view(n), md5_hex="") for n in range(3)]
    total = 3 * 64 * KIB
    bodies = prepared_bodies(objects, max_bytes=total)
    assert list(bodies) == ["k0", "k1", "k2"]
    for obj in objects:
        assert type(bodies[obj.key]) is bytes and bodies[obj.key] == obj.view.tobytes()
    assert prepared_bodies(objects, max_bytes=total - 1) == {}  # each request copies its own
