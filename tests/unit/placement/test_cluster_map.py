"""ClusterMap: validation, lookups and the cluster.proto record."""

from __future__ import annotations

import hashlib

import pytest

from common.layout import placement_group
from placement.cluster_map import (
    ClusterMap,
    FailureDomain,
    Node,
    NodeState,
    UnsupportedFormatVersion,
    node_from_registration,
)
from placement.rendezvous import compute_acting_sets
from proto import cluster_pb2


def sample_map(epoch: int = 3, pg_count: int = 16) -> ClusterMap:
    nodes = {
        f"node-{i:02d}": Node(f"node-{i:02d}", f"127.0.0.1:{7000 + i}",
                              FailureDomain(f"z{i}", f"r{i}", f"h{i}"),
                              (i + 1) * 10**9, NodeState.UP, 1_700_000_000.25 + i)
        for i in range(16)
    }
    nodes["node-02"] = Node("node-02", "127.0.0.1:7002", FailureDomain("z2", "r2", "h2"), 10**9,
                            NodeState.DOWN, 1_700_000_123.5)
    nodes["node-15"] = Node("node-15", "127.0.0.1:7015", FailureDomain("z15", "r15", "h15"), 10**9,
                            NodeState.OUT, 1_700_000_456.0)
    acting_sets = compute_acting_sets(pg_count, nodes)
    return ClusterMap(epoch, pg_count, nodes, acting_sets, published_at=1_700_001_000.0)


def test_round_trip_through_bytes() -> None:
    original = sample_map()
    decoded = ClusterMap.from_bytes(original.to_bytes())
    assert decoded == original
    assert decoded.node("node-02").state == NodeState.DOWN
    assert decoded.node("node-02").state_since == 1_700_000_123.5
    assert decoded.published_at == 1_700_001_000.0
    assert decoded.to_bytes() == original.to_bytes()  # deterministic serialization


def test_unknown_format_version_is_refused() -> None:
    record = sample_map().to_proto()
    record.format_version = 3
    with pytest.raises(UnsupportedFormatVersion, match="format_version 3"):
        ClusterMap.from_bytes(record.SerializeToString())


def with_former_positions(cluster_map: ClusterMap) -> ClusterMap:
    """node-15 (OUT) remembered at position 3 of placement group 0."""
    former: list[tuple[tuple[str, int], ...]] = [() for _ in range(cluster_map.pg_count)]
    former[0] = (("node-15", 3),)
    return cluster_map.with_changes(former_positions=tuple(former))


def test_former_positions_round_trip() -> None:
    original = with_former_positions(sample_map())
    assert original.to_proto().format_version == 2
    decoded = ClusterMap.from_bytes(original.to_bytes())
    assert decoded.former_positions[0] == (("node-15", 3),)
    assert decoded == original


def test_version_1_maps_are_still_read() -> None:
    # A map published before former positions existed: same record, format_version 1.
    original = sample_map()
    record = original.to_proto()
    record.format_version = 1
    decoded = ClusterMap.from_bytes(record.SerializeToString())
    assert decoded == original
    assert decoded.former_positions == tuple(() for _ in range(original.pg_count))


def test_invalid_former_positions_are_rejected() -> None:
    good = sample_map(pg_count=4)
    member = good.acting_sets[0][0]
    for bad in ((("ghost", 1),), ((member, 1),), (("node-15", 14),), (("node-15", 1), ("node-15", 2))):
        with pytest.raises(ValueError, match="former position"):
            good.with_changes(former_positions=(bad, (), (), ()))
    with pytest.raises(ValueError, match="former-position lists"):
        good.with_changes(former_positions=((), ()))


def test_garbage_is_refused() -> None:
    with pytest.raises(ValueError):
        ClusterMap.from_bytes(b"\xff\xff\xff not a protobuf")


def test_acting_set_for_chunk_uses_the_placement_group() -> None:
    cluster_map = sample_map(pg_count=16)
    chunk_hash = hashlib.sha256(b"some chunk").digest()
    pg = placement_group(chunk_hash, 16)
    assert cluster_map.placement_group(chunk_hash) == pg
    assert cluster_map.acting_set_for_chunk(chunk_hash) == cluster_map.acting_set(pg)
    with pytest.raises(IndexError):
        cluster_map.acting_set(16)
    with pytest.raises(ValueError):
        cluster_map.acting_set_for_chunk(b"short")


def test_inconsistent_maps_are_rejected() -> None:
    good = sample_map(pg_count=4)
    with pytest.raises(ValueError, match="acting sets"):
        ClusterMap(1, 5, good.nodes, good.acting_sets)
    with pytest.raises(ValueError, match="stripe width"):
        ClusterMap(1, 4, good.nodes, (good.acting_sets[0][:13], *good.acting_sets[1:]))
    with pytest.raises(ValueError, match="unknown node"):
        ClusterMap(1, 4, good.nodes, (("ghost", *good.acting_sets[0][1:]), *good.acting_sets[1:]))


def test_map_is_immutable() -> None:
    cluster_map = sample_map()
    with pytest.raises(TypeError):
        cluster_map.nodes["node-99"] = cluster_map.node("node-00")  # type: ignore[index]
    with pytest.raises(AttributeError):
        cluster_map.epoch = 9  # type: ignore[misc]


def test_node_from_registration() -> None:
    registration = cluster_pb2.NodeRegistration(
        format_version=1, node_id="node-07", address="127.0.0.1:7007",
        failure_domain=cluster_pb2.FailureDomain(zone="a", rack="b", host="c"), capacity_bytes=5 * 10**12,
    )
    node = node_from_registration(registration, NodeState.UP, 12.5)
    assert node == Node("node-07", "127.0.0.1:7007", FailureDomain("a", "b", "c"), 5 * 10**12,
                        NodeState.UP, 12.5)
