"""How the placement leader turns registrations into the next map (pure, no etcd)."""

from __future__ import annotations

from placement.cluster_map import ClusterMap, NodeState
from placement.service import next_cluster_map
from proto import cluster_pb2

T0 = 1_700_000_000.0
DOWN_OUT = 600.0


def registration(index: int, address_port: int | None = None) -> cluster_pb2.NodeRegistration:
    return cluster_pb2.NodeRegistration(
        format_version=1, node_id=f"node-{index:02d}", address=f"127.0.0.1:{address_port or 7000 + index}",
        failure_domain=cluster_pb2.FailureDomain(zone=f"z{index}", rack=f"r{index}", host=f"h{index}"),
        capacity_bytes=10**12,
    )


def registrations(indexes: range | list[int]) -> dict[str, cluster_pb2.NodeRegistration]:
    return {f"node-{i:02d}": registration(i) for i in indexes}


def step(
    current: ClusterMap | None, regs: dict[str, cluster_pb2.NodeRegistration], now: float
) -> ClusterMap | None:
    return next_cluster_map(current, regs, now, pg_count=32, down_out_interval=DOWN_OUT, min_nodes=14)


def first_map(count: int = 15) -> ClusterMap:
    result = step(None, registrations(range(count)), T0)
    assert result is not None
    return result


def test_no_map_before_min_nodes() -> None:
    assert step(None, registrations(range(13)), T0) is None


def test_first_map_has_every_node_up() -> None:
    cluster_map = first_map(14)
    assert cluster_map.epoch == 1
    assert cluster_map.pg_count == 32
    assert {n.state for n in cluster_map.nodes.values()} == {NodeState.UP}
    assert all(sorted(acting) == sorted(cluster_map.nodes) for acting in cluster_map.acting_sets)


def test_nothing_changes_without_events() -> None:
    cluster_map = first_map()
    assert step(cluster_map, registrations(range(15)), T0 + 5) is None


def test_lapsed_node_goes_down_then_out() -> None:
    cluster_map = first_map()
    live = registrations([i for i in range(15) if i != 4])
    down = step(cluster_map, live, T0 + 10)
    assert down is not None
    assert down.epoch == 2
    assert down.node("node-04").state == NodeState.DOWN
    assert down.node("node-04").state_since == T0 + 10
    assert down.acting_sets == cluster_map.acting_sets  # DOWN keeps its fragments

    assert step(down, live, T0 + 10 + DOWN_OUT - 1) is None  # not yet
    out = step(down, live, T0 + 10 + DOWN_OUT)
    assert out is not None
    assert out.epoch == 3
    assert out.node("node-04").state == NodeState.OUT
    assert all("node-04" not in acting for acting in out.acting_sets)
    for before, after in zip(down.acting_sets, out.acting_sets, strict=True):
        assert all(a == b for a, b in zip(before, after, strict=True) if a != "node-04")


def test_down_node_coming_back_is_up_without_moves() -> None:
    cluster_map = first_map()
    down = step(cluster_map, registrations([i for i in range(15) if i != 4]), T0 + 10)
    assert down is not None
    back = step(down, registrations(range(15)), T0 + 20)
    assert back is not None
    assert back.node("node-04").state == NodeState.UP
    assert back.acting_sets == cluster_map.acting_sets


def test_new_node_joins_and_takes_a_share() -> None:
    cluster_map = first_map(14)
    grown = step(cluster_map, registrations(range(15)), T0 + 30)
    assert grown is not None
    assert grown.node("node-14").state == NodeState.UP
    assert any("node-14" in acting for acting in grown.acting_sets)


def test_address_change_is_published() -> None:
    cluster_map = first_map()
    regs = registrations(range(15))
    regs["node-03"] = registration(3, address_port=9999)
    moved = step(cluster_map, regs, T0 + 1)
    assert moved is not None
    assert moved.node("node-03").address == "127.0.0.1:9999"
    assert moved.acting_sets == cluster_map.acting_sets


def test_out_that_would_break_placement_stays_down() -> None:
    cluster_map = first_map(14)
    live = registrations(range(13))
    down = step(cluster_map, live, T0)
    assert down is not None
    # Only 13 eligible nodes would remain: node-13 keeps its fragments and stays DOWN.
    assert step(down, live, T0 + DOWN_OUT + 1) is None


def zoned_registrations(zones: dict[int, str]) -> dict[str, cluster_pb2.NodeRegistration]:
    """Registrations of nodes ``index -> zone``, each node its own rack and host."""
    regs = {}
    for index, zone in zones.items():
        reg = registration(index)
        reg.failure_domain.zone = zone
        regs[reg.node_id] = reg
    return regs


def test_first_map_waits_until_the_rule_can_be_met() -> None:
    # Zones of 8, 2, 2 and 2 nodes hold at most 10 fragments at 4 per zone.
    uneven = {i: "a" if i < 8 else "bcd"[(i - 8) // 2] for i in range(14)}
    assert step(None, zoned_registrations(uneven), T0) is None
    # Adding nodes to the small zones (now 8, 4, 3, 3) lets the first map appear.
    even = {**uneven, 14: "b", 15: "b", 16: "c", 17: "d"}
    cluster_map = step(None, zoned_registrations(even), T0 + 5)
    assert cluster_map is not None
    for acting in cluster_map.acting_sets:
        zones = [cluster_map.node(n).failure_domain.zone for n in acting]
        assert max(zones.count(z) for z in "abcd") <= 4


def test_node_making_the_rule_unmeetable_keeps_acting_sets() -> None:
    # Three zones (10, 2, 2 nodes): the rule applies per rack, one node per rack.
    zones = {i: "a" if i < 10 else "bc"[(i - 10) // 2] for i in range(14)}
    cluster_map = step(None, zoned_registrations(zones), T0)
    assert cluster_map is not None
    # A node in a fourth zone makes the rule apply per zone, where 4 + 2 + 2 + 1 < 14: the node is
    # recorded UP, but no placement that puts more than 4 fragments in zone "a" is published.
    grown = step(cluster_map, zoned_registrations({**zones, 14: "d"}), T0 + 5)
    assert grown is not None
    assert grown.node("node-14").state == NodeState.UP
    assert grown.acting_sets == cluster_map.acting_sets
    # A node failing meanwhile stays DOWN rather than OUT: its positions cannot move.
    live = zoned_registrations({i: z for i, z in {**zones, 14: "d"}.items() if i != 3})
    down = step(grown, live, T0 + 10)
    assert down is not None and down.node("node-03").state == NodeState.DOWN
    assert step(down, live, T0 + 10 + DOWN_OUT + 1) is None


def test_nodes_back_from_out_take_their_old_positions() -> None:
    def step256(current: ClusterMap | None, regs: dict[str, cluster_pb2.NodeRegistration],
                now: float) -> ClusterMap | None:
        return next_cluster_map(current, regs, now, pg_count=256, down_out_interval=DOWN_OUT)

    # node-07 joins after the first map, so positions are no longer in rendezvous rank order: filling
    # vacated positions in rank order would then swap node-03 and node-07 in many stripes.
    first = step256(None, registrations([i for i in range(18) if i != 7]), T0)
    cluster_map = step256(first, registrations(range(18)), T0)
    assert cluster_map is not None
    live = registrations([i for i in range(18) if i not in (3, 7)])
    down = step256(cluster_map, live, T0 + 1)
    assert down is not None
    out = step256(down, live, T0 + 1 + DOWN_OUT)
    assert out is not None and out.node("node-03").state == NodeState.OUT
    back = step256(out, registrations(range(18)), T0 + 2 + DOWN_OUT)
    assert back is not None
    assert back.acting_sets == cluster_map.acting_sets
    assert ClusterMap.from_bytes(back.to_bytes()) == back  # former positions survive publishing
