"""Full nodes in placement (pure): a node whose registration says ``full`` is placed like a
draining node: no positions, only its positions move, the new holders find it in the former
positions (to copy from), it gets its positions back once not full, and a cluster that cannot do
without it keeps it placed (and logs an error saying to add capacity)."""

from __future__ import annotations

import logging

import pytest

from placement.cluster_map import ClusterMap, NodeState
from placement.service import placement_view
from proto import cluster_pb2
from tests.unit.placement.map_helpers import PG_COUNT, T0, first_map, positions_of, registration, registrations, step


def test_full_node_gets_no_positions_and_new_holders_copy_from_it() -> None:
    before = first_map(16)
    held = positions_of(before, "node-05")
    assert held, "with 16 nodes and 64 PGs every node holds positions"
    after = step(before, registrations(16, frozenset({"node-05"})), T0 + 1)
    assert after is not None and after.epoch == before.epoch + 1
    node = after.node("node-05")
    assert node.full and not node.draining and node.state == NodeState.UP
    assert positions_of(after, "node-05") == set()
    changed = {(pg, position) for pg in range(PG_COUNT) for position in range(14)
               if before.acting_sets[pg][position] != after.acting_sets[pg][position]}
    assert changed == held  # only the full node's positions move
    for pg, position in held:
        assert ("node-05", position) in after.former_positions[pg]
    # Nothing more changes while it stays full.
    assert step(after, registrations(16, frozenset({"node-05"})), T0 + 2) is None


def test_node_no_longer_full_gets_its_positions_back() -> None:
    before = first_map(15)
    full = step(before, registrations(15, frozenset({"node-07"})), T0 + 1)
    assert full is not None and positions_of(full, "node-07") == set()
    back = step(full, registrations(15), T0 + 2)
    assert back is not None and not back.node("node-07").full
    # The exact positions it held: the fragments it still stores are reused.
    assert back.acting_sets == before.acting_sets


def test_full_and_draining_together() -> None:
    before = first_map(16)
    after = step(before, registrations(16, frozenset({"node-01"})), T0 + 1, drains=frozenset({"node-02"}))
    assert after is not None
    assert after.node("node-01").full and after.node("node-02").draining
    assert positions_of(after, "node-01") == set() and positions_of(after, "node-02") == set()


def test_full_blocked_when_the_rest_cannot_hold_a_stripe(caplog: pytest.LogCaptureFixture) -> None:
    before = first_map(14)
    with caplog.at_level(logging.ERROR, logger="placement.service"):
        blocked = step(before, registrations(14, frozenset({"node-02"})), T0 + 1)
    assert blocked is not None, "the full flag itself is published"
    assert blocked.node("node-02").full
    assert blocked.acting_sets == before.acting_sets  # it keeps every position
    assert any("add capacity" in record.getMessage() and "node-02" in str(getattr(record, "fields", ""))
               for record in caplog.records)
    # A 15th node lets the full node's positions go elsewhere.
    unblocked = step(blocked, registrations(15, frozenset({"node-02"})), T0 + 2)
    assert unblocked is not None and positions_of(unblocked, "node-02") == set()


def test_first_map_skips_full_nodes() -> None:
    cluster_map = step(None, registrations(15, frozenset({"node-00"})), T0)
    assert cluster_map is not None and cluster_map.node("node-00").full
    assert positions_of(cluster_map, "node-00") == set()


def test_down_node_keeps_its_last_full_flag() -> None:
    full = step(first_map(16), registrations(16, frozenset({"node-03"})), T0 + 1)
    assert full is not None
    live = {k: v for k, v in registrations(16).items() if k != "node-03"}
    down = step(full, live, T0 + 2)
    assert down is not None and down.node("node-03").state == NodeState.DOWN and down.node("node-03").full


def test_placement_view_flags_full_nodes_draining() -> None:
    cluster_map = step(None, registrations(15, frozenset({"node-04"})), T0)
    assert cluster_map is not None
    view = placement_view(cluster_map.nodes)
    assert view["node-04"].draining and view["node-04"].full
    assert view["node-05"] is cluster_map.nodes["node-05"]
    assert not cluster_map.nodes["node-04"].draining  # the map itself keeps the two flags apart


def test_full_flag_round_trips_through_the_proto() -> None:
    cluster_map = step(None, registrations(15, frozenset({"node-04"})), T0)
    assert cluster_map is not None
    record = cluster_map.to_proto()
    assert [n.node_id for n in record.nodes if n.full] == ["node-04"]
    back = ClusterMap.from_bytes(cluster_map.to_bytes())
    assert back == cluster_map and back.node("node-04").full and not back.node("node-05").full
    reg = cluster_pb2.NodeRegistration()
    reg.ParseFromString(registration(3, full=True).SerializeToString())
    assert reg.full and reg.format_version == 1
