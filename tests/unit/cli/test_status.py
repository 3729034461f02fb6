"""`coffer status`'s pure parts: metric parsing, summarizing map + Health + metrics, rendering."""

from __future__ import annotations

import json
from dataclasses import replace

from cli.node_commands import drain_blocker, positions_held
from cli.status import (
    EXIT_AT_RISK,
    EXIT_OK,
    NodeMetrics,
    exit_code,
    format_bytes,
    format_duration,
    parse_metrics,
    render_text,
    summarize,
    to_json,
)
from placement.cluster_map import ClusterMap, NodeState
from placement.service import next_cluster_map
from proto import cluster_pb2
from storagenode.records import NodeHealth, VolumeStats

T0 = 1_700_000_000.0
GIB = 1 << 30

REPAIRING_NODE = """\
# HELP coffer_repair_degraded_stripes Stripes missing fragments
# TYPE coffer_repair_degraded_stripes gauge
coffer_repair_degraded_stripes{missing="1"} 120.0
coffer_repair_degraded_stripes{missing="2"} 4.0
coffer_repair_degraded_stripes{missing="3"} 0.0
coffer_repair_degraded_stripes{missing="4"} 0.0
coffer_repair_degraded_stripes{missing="5+"} 0.0
# TYPE coffer_repair_pending_bytes gauge
coffer_repair_pending_bytes 1048576.0
# TYPE coffer_repair_rate_bytes_per_second gauge
coffer_repair_rate_bytes_per_second 524288.0
# TYPE coffer_repair_time_to_full_redundancy_seconds gauge
coffer_repair_time_to_full_redundancy_seconds 23.0
# TYPE coffer_repair_bytes_total counter
coffer_repair_bytes_total 3000.0
# TYPE coffer_scrub_pass_progress_ratio gauge
coffer_scrub_pass_progress_ratio 0.25
# TYPE coffer_scrub_corrupt_fragments_total counter
coffer_scrub_corrupt_fragments_total 2.0
# TYPE coffer_storagenode_other gauge
coffer_storagenode_other 7.0
"""


def registration(index: int, used: int = 0, metrics_port: int = 0) -> cluster_pb2.NodeRegistration:
    return cluster_pb2.NodeRegistration(
        format_version=1, node_id=f"node-{index:02d}", address=f"127.0.0.1:{7000 + index}",
        failure_domain=cluster_pb2.FailureDomain(zone=f"z{index}", rack=f"r{index}", host=f"h{index}"),
        capacity_bytes=10 * GIB, used_bytes=used,
        metrics_address=f"127.0.0.1:{metrics_port}" if metrics_port else "",
    )


def cluster(count: int = 15) -> tuple[ClusterMap, dict[str, cluster_pb2.NodeRegistration]]:
    registrations = {f"node-{i:02d}": registration(i, used=GIB) for i in range(count)}
    cluster_map = next_cluster_map(None, registrations, T0, pg_count=16)
    assert cluster_map is not None
    return cluster_map, registrations


def health(node_id: str, fragments: int, used: int = GIB, free: int = 100 * GIB, corrupt: int = 0) -> NodeHealth:
    return NodeHealth(node_id=node_id, volumes=(VolumeStats("/v0", fragments, used, free),),
                      corrupt_fragments_detected=corrupt)


def test_parse_metrics_reads_the_contract_names_and_ignores_others() -> None:
    metrics = parse_metrics(REPAIRING_NODE)
    assert metrics.degraded_stripes == {"1": 120.0, "2": 4.0, "3": 0.0, "4": 0.0, "5+": 0.0}
    assert metrics.pending_bytes == 1048576.0
    assert metrics.rate_bytes_per_second == 524288.0
    assert metrics.time_to_full_redundancy_seconds == 23.0
    assert metrics.repaired_bytes_total == 3000.0
    assert metrics.scrub_progress == 0.25
    assert metrics.scrub_corrupt_total == 2.0


def test_parse_metrics_of_a_node_without_repair_gives_absent_values() -> None:
    metrics = parse_metrics("# TYPE coffer_storagenode_other gauge\ncoffer_storagenode_other 7.0\n")
    assert metrics == NodeMetrics()


def test_healthy_cluster_without_repair_metrics() -> None:
    cluster_map, registrations = cluster()
    healths = {node_id: health(node_id, 100) for node_id in cluster_map.nodes}
    status = summarize(cluster_map, registrations, healths, {}, T0 + 10)
    assert (status.epoch, status.pg_count) == (1, 16)
    assert (status.pgs_clean, status.pgs_degraded) == (16, 0)
    assert status.stripes_missing is None and status.repair.pending_bytes is None
    assert not status.at_risk and exit_code(status) == EXIT_OK
    row = status.nodes[0]
    assert (row.node_id, row.state, row.fragments, row.used_bytes, row.free_bytes) == (
        "node-00", "up", 100, GIB, 9 * GIB)  # free: capacity - used, below the disk's free bytes
    assert sum(r.positions for r in status.nodes) == 16 * 14
    text = render_text(status)
    assert "epoch 1 · 16 placement groups" in text
    assert "16 clean · 0 degraded" in text
    assert "stripes missing fragments: -" in text
    assert "pending - · - · repaired - · full redundancy in -" in text
    assert "DURABILITY        ok" in text


def test_degraded_stripes_from_metrics_put_durability_at_risk() -> None:
    cluster_map, registrations = cluster()
    healths = {node_id: health(node_id, 100) for node_id in cluster_map.nodes}
    metrics = {"node-00": parse_metrics(REPAIRING_NODE), "node-01": parse_metrics(REPAIRING_NODE), "node-02": None}
    status = summarize(cluster_map, registrations, healths, metrics, T0)
    assert status.stripes_missing == {"1": 240, "2": 8, "3": 0, "4": 0, "5+": 0}
    assert status.repair.pending_bytes == 2 * 1048576.0
    assert status.repair.rate_bytes_per_second == 1048576.0
    assert status.repair.full_redundancy_in_seconds == 23.0
    assert status.scrub.corrupt_found_total == 4.0 and status.scrub.slowest_pass_progress == 0.25
    assert status.at_risk and exit_code(status) == EXIT_AT_RISK
    text = render_text(status)
    assert "stripes missing 1: 240 · 2: 8 · 3: 0 · 4: 0 · 5+: 0" in text
    assert "pending 2.0 MiB · 1.0 MiB/s" in text and "full redundancy in ~23s" in text
    assert "AT RISK: 248 stripes have fewer than 14 fragments" in text
    document = json.loads(to_json(status))
    assert document["at_risk"] is True and document["stripes_missing"]["1"] == 240


def test_down_member_makes_its_placement_groups_degraded_with_a_countdown() -> None:
    cluster_map, registrations = cluster()
    down_node = cluster_map.acting_sets[0][3]
    nodes = dict(cluster_map.nodes)
    nodes[down_node] = replace(nodes[down_node], state=NodeState.DOWN, state_since=T0)
    cluster_map = cluster_map.with_changes(nodes=nodes, epoch=2)
    live = {k: v for k, v in registrations.items() if k != down_node}
    healths = {node_id: health(node_id, 10) for node_id in live}
    status = summarize(cluster_map, live, healths, {}, T0 + 60, down_out_interval=600.0)
    expected = sum(1 for acting in cluster_map.acting_sets if down_node in acting)
    assert status.pgs_degraded == expected and status.pgs_clean == 16 - expected
    row = next(r for r in status.nodes if r.node_id == down_node)
    assert row.state == "down" and row.out_in_seconds == 540.0 and row.fragments is None
    assert row.used_bytes is None and row.reachable is None
    assert status.repair.down_out_seconds == 540.0
    assert status.at_risk
    text = render_text(status)
    assert "down (out in 9m00s)" in text and "(+ down-out 9m00s)" in text


def test_unreachable_up_node_is_a_risk_and_uses_its_registration() -> None:
    cluster_map, registrations = cluster()
    healths: dict[str, NodeHealth | None] = {node_id: health(node_id, 5) for node_id in cluster_map.nodes}
    healths["node-04"] = None
    status = summarize(cluster_map, registrations, healths, {}, T0)
    row = next(r for r in status.nodes if r.node_id == "node-04")
    assert row.reachable is False and row.fragments is None and row.used_bytes == GIB
    assert status.at_risk and "node-04" in status.at_risk_reasons[0]
    assert "up (no answer)" in render_text(status)


def test_draining_flag_shown() -> None:
    cluster_map, registrations = cluster()
    drained = next_cluster_map(cluster_map, registrations, T0 + 1, drains=frozenset({"node-03"}))
    assert drained is not None
    status = summarize(drained, registrations, {}, {}, T0 + 2)
    row = next(r for r in status.nodes if r.node_id == "node-03")
    assert row.draining and row.positions == 0
    assert positions_held(drained, "node-03") == 0
    assert any(line.startswith("node-03") and "draining" in line for line in render_text(status).splitlines())


def test_drain_blocker_refuses_when_the_rule_needs_the_node() -> None:
    cluster_map, _ = cluster(15)
    assert drain_blocker(cluster_map, "node-03") is None
    drained = next_cluster_map(cluster_map, cluster(15)[1], T0 + 1, drains=frozenset({"node-03"}))
    assert drained is not None
    blocker = drain_blocker(drained, "node-04")  # 13 left
    assert blocker is not None and "add nodes" in blocker


def test_formatting() -> None:
    assert format_bytes(None) == "-" and format_bytes(512) == "512 B" and format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * GIB) == "3.0 GiB"
    assert format_duration(None) == "-" and format_duration(5) == "5s" and format_duration(192) == "3m12s"
    assert format_duration(7300) == "2h01m"


def test_blocked_drain_is_reported() -> None:
    cluster_map, registrations = cluster(14)
    blocked = next_cluster_map(cluster_map, registrations, T0 + 1, drains=frozenset({"node-03"}))
    assert blocked is not None and blocked.node("node-03").draining
    status = summarize(blocked, registrations, {}, {}, T0 + 2)
    assert status.drain_blocked and status.rule_satisfied  # placement itself still works
    assert "DRAIN             blocked" in render_text(status)
    unblocked = next_cluster_map(cluster(15)[0], cluster(15)[1], T0 + 1, drains=frozenset({"node-03"}))
    assert unblocked is not None
    assert not summarize(unblocked, registrations, {}, {}, T0 + 2).drain_blocked


def test_full_flag_shown_in_table_and_json() -> None:
    cluster_map, registrations = cluster()
    registrations["node-06"].full = True
    full = next_cluster_map(cluster_map, registrations, T0 + 1)
    assert full is not None
    status = summarize(full, registrations, {}, {}, T0 + 2)
    row = next(r for r in status.nodes if r.node_id == "node-06")
    assert row.full and not row.draining and row.positions == 0
    assert not status.drain_blocked
    line = next(line for line in render_text(status).splitlines() if line.startswith("node-06"))
    assert " full " in line and "draining" not in line
    nodes = {node["node_id"]: node for node in json.loads(to_json(status))["nodes"]}
    assert nodes["node-06"]["full"] is True and nodes["node-05"]["full"] is False


def test_full_node_the_rule_needs_is_reported_blocked() -> None:
    cluster_map, registrations = cluster(14)
    registrations["node-03"].full = True
    blocked = next_cluster_map(cluster_map, registrations, T0 + 1)
    assert blocked is not None and blocked.node("node-03").full
    status = summarize(blocked, registrations, {}, {}, T0 + 2)
    assert status.drain_blocked and status.rule_satisfied
    assert "add nodes or capacity" in render_text(status)
