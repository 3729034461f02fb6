"""Draining in placement (pure): a draining node gets no positions, only its positions move, its
former positions are recorded for the new holders, and a drain the rule cannot afford is blocked."""

from __future__ import annotations

import logging

import pytest

from placement.cluster_map import ClusterMap, NodeState
from placement.rendezvous import compute_placement, rule_status
from tests.unit.placement.map_helpers import PG_COUNT, T0, first_map, positions_of, registrations, step


def test_draining_node_gets_no_positions_and_only_its_positions_move() -> None:
    before = first_map(16)
    held = positions_of(before, "node-05")
    assert held, "with 16 nodes and 64 PGs every node holds positions"
    after = step(before, registrations(16), T0 + 1, drains=frozenset({"node-05"}))
    assert after is not None and after.epoch == before.epoch + 1
    node = after.node("node-05")
    assert node.draining and node.state == NodeState.UP
    assert positions_of(after, "node-05") == set()
    changed = {(pg, position) for pg in range(PG_COUNT) for position in range(14)
               if before.acting_sets[pg][position] != after.acting_sets[pg][position]}
    assert changed == held  # minimal movement: nothing but the drained node's positions
    # Every new holder knows where to copy from: the draining node is a former holder of that position.
    for pg, position in held:
        assert ("node-05", position) in after.former_positions[pg]
    # Published and read back, the flag survives (NodeRecord.draining).
    assert ClusterMap.from_bytes(after.to_bytes()).node("node-05").draining


def test_nothing_changes_while_the_drain_stays_requested() -> None:
    drained = step(first_map(15), registrations(15), T0 + 1, drains=frozenset({"node-03"}))
    assert drained is not None
    assert step(drained, registrations(15), T0 + 2, drains=frozenset({"node-03"})) is None


def test_undrain_gives_the_node_its_positions_back() -> None:
    before = first_map(15)
    drained = step(before, registrations(15), T0 + 1, drains=frozenset({"node-07"}))
    assert drained is not None
    back = step(drained, registrations(15), T0 + 2)
    assert back is not None and not back.node("node-07").draining
    # The node returns to the exact positions it held, so the fragments it still stores are reused.
    assert back.acting_sets == before.acting_sets


def test_drain_blocked_when_the_rest_cannot_hold_a_stripe(caplog: pytest.LogCaptureFixture) -> None:
    before = first_map(14)
    with caplog.at_level(logging.ERROR, logger="placement.service"):
        blocked = step(before, registrations(14), T0 + 1, drains=frozenset({"node-02"}))
    assert blocked is not None, "the draining flag itself is published"
    assert blocked.node("node-02").draining
    assert blocked.acting_sets == before.acting_sets  # it keeps every position
    assert any("drain blocked until nodes are added" in record.getMessage() for record in caplog.records)
    # A 15th node unblocks it: the drained node's positions go elsewhere.
    grown = registrations(15)
    unblocked = step(blocked, grown, T0 + 2, drains=frozenset({"node-02"}))
    assert unblocked is not None
    assert positions_of(unblocked, "node-02") == set()
    assert unblocked.node("node-14").state == NodeState.UP


def test_drain_with_a_node_going_out_keeps_the_rule() -> None:
    # 15 nodes; one is drained and one goes OUT: only 13 would be eligible, so the drain is blocked
    # and the OUT node's positions still move.
    before = first_map(15)
    drained = step(before, registrations(15), T0 + 1, drains=frozenset({"node-01"}))
    assert drained is not None and positions_of(drained, "node-01") == set()
    live = {k: v for k, v in registrations(15).items() if k != "node-09"}
    down = step(drained, live, T0 + 2, drains=frozenset({"node-01"}))
    assert down is not None and down.node("node-09").state == NodeState.DOWN
    out = step(down, live, T0 + 2 + 600.0, drains=frozenset({"node-01"}))
    assert out is not None
    assert out.node("node-09").state == NodeState.OUT
    assert positions_of(out, "node-09") == set()
    assert out.node("node-01").draining
    assert positions_of(out, "node-01"), "blocked drain: node-01 holds positions again"


def test_first_map_honours_drains() -> None:
    cluster_map = step(None, registrations(15), T0, drains=frozenset({"node-00"}))
    assert cluster_map is not None and cluster_map.node("node-00").draining
    assert positions_of(cluster_map, "node-00") == set()


def test_rendezvous_skips_draining_nodes_in_rule_status() -> None:
    from dataclasses import replace

    cluster_map = first_map(14)
    nodes = dict(cluster_map.nodes)
    assert rule_status(nodes).satisfied
    nodes["node-00"] = replace(nodes["node-00"], draining=True)
    assert not rule_status(nodes).satisfied  # 13 eligible: the CLI refuses such a drain up front
    placement = compute_placement(PG_COUNT, {k: v for k, v in nodes.items() if k != "node-00"} | {
        "node-00": replace(nodes["node-00"], draining=False)})
    assert all("node-00" in acting for acting in placement.acting_sets)
