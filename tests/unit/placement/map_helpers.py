"""Shared by the pure placement tests of draining and full nodes: registrations of N nodes in N
failure domains, one placement-service step, and the positions a node holds."""

from __future__ import annotations

from placement.cluster_map import ClusterMap
from placement.service import next_cluster_map
from proto import cluster_pb2

T0 = 1_700_000_000.0
PG_COUNT = 64


def registration(index: int, zone: str | None = None, full: bool = False) -> cluster_pb2.NodeRegistration:
    """Node ``node-<index>`` in its own zone/rack/host (or ``zone``), 1 TB, ``full`` as given."""
    return cluster_pb2.NodeRegistration(
        format_version=1, node_id=f"node-{index:02d}", address=f"127.0.0.1:{7000 + index}",
        failure_domain=cluster_pb2.FailureDomain(zone=zone or f"z{index}", rack=f"r{index}", host=f"h{index}"),
        capacity_bytes=10**12, full=full,
    )


def registrations(count: int, full: frozenset[str] = frozenset()) -> dict[str, cluster_pb2.NodeRegistration]:
    """``count`` nodes, ``node-00``...; those named in ``full`` report full."""
    return {f"node-{i:02d}": registration(i, full=f"node-{i:02d}" in full) for i in range(count)}


def step(current: ClusterMap | None, regs: dict[str, cluster_pb2.NodeRegistration], now: float,
         drains: frozenset[str] = frozenset()) -> ClusterMap | None:
    """One placement-service step (64 PGs, down-out 600 s, at least 14 nodes)."""
    return next_cluster_map(current, regs, now, pg_count=PG_COUNT, down_out_interval=600.0, min_nodes=14,
                            drains=drains)


def first_map(count: int) -> ClusterMap:
    """The first map of ``count`` healthy nodes."""
    cluster_map = step(None, registrations(count), T0)
    assert cluster_map is not None
    return cluster_map


def positions_of(cluster_map: ClusterMap, node_id: str) -> set[tuple[int, int]]:
    """(placement group, position) pairs ``node_id`` holds."""
    return {(pg, position) for pg, acting in enumerate(cluster_map.acting_sets)
            for position, member in enumerate(acting) if member == node_id}
