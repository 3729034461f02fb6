"""`coffer status`: one operator view of a cluster's health, durability, repair and scrub.

Sources: the published cluster map and the node registrations in etcd (the registration carries
each node's Prometheus address), the ``Health`` RPC of every node that is not OUT (volumes,
fragment counts, corrupt fragments seen; 2 s timeout, all nodes in parallel), and each node's
``/metrics`` page (repair and scrub gauges; names fixed in the issue-3 contracts). A metric no node
exports yet shows as ``-``.

``collect`` does the I/O; ``summarize`` (pure) turns what was collected into a ``ClusterStatus``;
``render_text`` / ``to_json`` print it. Exit code: 0, or 2 when durability is at risk (a stripe
with fewer than 14 fragments, an acting-set member not UP, or an UP node that does not answer).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

from prometheus_client.parser import text_string_to_metric_families

from placement.cluster_map import ClusterMap, NodeState
from placement.etcd import EtcdClient
from placement.keys import DEFAULT_PREFIX, ClusterKeys
from placement.rendezvous import rule_status
from placement.service import parse_registrations, placement_view
from proto import cluster_pb2
from storagenode.client import StorageNodeClient
from storagenode.errors import StorageError
from storagenode.records import NodeHealth

HEALTH_TIMEOUT_SECONDS = 2.0
METRICS_TIMEOUT_SECONDS = 2.0
EXIT_OK = 0
EXIT_AT_RISK = 2
# The ``missing`` label values of ``coffer_repair_degraded_stripes``, in display order.
MISSING_LABELS = ("1", "2", "3", "4", "5+")


@dataclass(frozen=True)
class NodeMetrics:
    """Repair and scrub values scraped from one node's ``/metrics`` (None: not exported).

    ``degraded_stripes``: ``missing`` label -> stripes (``coffer_repair_degraded_stripes``);
    bytes in bytes, rates in bytes per second, times in seconds, ``scrub_progress`` 0..1.
    """

    degraded_stripes: Mapping[str, float] | None = None
    pending_bytes: float | None = None
    rate_bytes_per_second: float | None = None
    time_to_full_redundancy_seconds: float | None = None
    repaired_bytes_total: float | None = None
    scrub_progress: float | None = None
    scrub_corrupt_total: float | None = None


_SCALAR_METRICS = {
    "coffer_repair_pending_bytes": "pending_bytes",
    "coffer_repair_rate_bytes_per_second": "rate_bytes_per_second",
    "coffer_repair_time_to_full_redundancy_seconds": "time_to_full_redundancy_seconds",
    "coffer_repair_bytes_total": "repaired_bytes_total",
    "coffer_scrub_pass_progress_ratio": "scrub_progress",
    "coffer_scrub_corrupt_fragments_total": "scrub_corrupt_total",
}


def parse_metrics(text: str) -> NodeMetrics:
    """Read the repair and scrub metrics out of a Prometheus text exposition (pure).

    Raises:
        ValueError: if ``text`` is not valid exposition format.
    """
    values: dict[str, float] = {}
    degraded: dict[str, float] | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "coffer_repair_degraded_stripes":
                degraded = degraded if degraded is not None else {}
                label = sample.labels.get("missing", "")
                degraded[label] = degraded.get(label, 0.0) + sample.value
            elif sample.name in _SCALAR_METRICS and not sample.labels:
                values[_SCALAR_METRICS[sample.name]] = sample.value
            elif sample.name in _SCALAR_METRICS:  # labelled series of one metric add up
                key = _SCALAR_METRICS[sample.name]
                values[key] = values.get(key, 0.0) + sample.value
    return NodeMetrics(degraded_stripes=degraded, **values)


@dataclass(frozen=True)
class NodeStatus:
    """One node's row. Bytes in bytes; ``fragments``/``corrupt`` from ``Health`` (None: no answer
    or not asked); ``reachable`` None when not asked (OUT nodes), False when asked without an
    answer (expected of a DOWN node; a durability risk for an UP one); ``out_in_seconds``: for a DOWN
    node, seconds until it is marked OUT (None otherwise); ``positions``: acting-set positions held;
    ``full``: the node reported itself out of space (placed like a draining node)."""

    node_id: str
    state: str
    draining: bool
    failure_domain: str
    address: str
    capacity_bytes: int
    used_bytes: int | None
    free_bytes: int | None
    fragments: int | None
    corrupt: int | None
    reachable: bool | None
    positions: int
    scrub_progress: float | None
    out_in_seconds: float | None
    full: bool = False


@dataclass(frozen=True)
class RepairProgress:
    """Cluster repair totals (None: no node exports the metric). ``full_redundancy_in_seconds`` is
    the largest node estimate; ``down_out_seconds`` the longest wait until a DOWN node turns OUT
    (repair of its fragments starts only then)."""

    pending_bytes: float | None
    rate_bytes_per_second: float | None
    repaired_bytes_total: float | None
    full_redundancy_in_seconds: float | None
    down_out_seconds: float | None


@dataclass(frozen=True)
class ScrubProgress:
    """Scrub: ``pass_progress`` is the mean over reporting nodes (0..1), ``slowest_pass_progress``
    the least advanced node, ``corrupt_found_total`` summed; None when no node exports them."""

    pass_progress: float | None
    slowest_pass_progress: float | None
    corrupt_found_total: float | None


@dataclass(frozen=True)
class ClusterStatus:
    """Everything ``coffer status`` shows. ``stripes_missing``: ``missing`` label -> stripes summed
    over nodes (None: no node exports the gauge); ``at_risk_reasons`` empty when durability is not
    at risk; ``drain_blocked``: some draining or full node keeps positions because the other nodes
    cannot hold every stripe under the failure-domain rule."""

    epoch: int
    pg_count: int
    published_at: float
    rule_level: str
    rule_satisfied: bool
    rule_detail: str
    drain_blocked: bool
    nodes: tuple[NodeStatus, ...]
    pgs_clean: int
    pgs_degraded: int
    stripes_missing: Mapping[str, int] | None
    repair: RepairProgress
    scrub: ScrubProgress
    at_risk_reasons: tuple[str, ...] = field(default=())

    @property
    def at_risk(self) -> bool:
        """True when some stripe may have fewer than 14 readable fragments."""
        return bool(self.at_risk_reasons)


def _sum(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return max(present) if present else None


def summarize(
    cluster_map: ClusterMap,
    registrations: Mapping[str, cluster_pb2.NodeRegistration],
    healths: Mapping[str, NodeHealth | None],
    metrics: Mapping[str, NodeMetrics | None],
    now: float,
    *,
    down_out_interval: float | None = None,
) -> ClusterStatus:
    """Combine the map, registrations (node id -> record of live nodes), ``Health`` answers (node
    id -> answer, None: asked but no answer; absent: not asked) and scraped metrics (node id ->
    values, None: not reachable) into a ``ClusterStatus``. Pure.

    ``now``: Unix seconds; ``down_out_interval``: seconds a DOWN node waits before OUT (unknown to
    the map; None: no countdown shown).
    """
    positions: dict[str, int] = {}
    for acting in cluster_map.acting_sets:
        for node_id in acting:
            positions[node_id] = positions.get(node_id, 0) + 1
    rows = []
    for node_id in sorted(cluster_map.nodes):
        node = cluster_map.nodes[node_id]
        registration = registrations.get(node_id)
        health = healths.get(node_id)
        node_metrics = metrics.get(node_id)
        used: int | None = int(registration.used_bytes) if registration is not None else None
        free: int | None = None
        fragments = corrupt = None
        if health is not None:
            used = sum(v.bytes_used for v in health.volumes)
            fragments = sum(v.fragments for v in health.volumes)
            corrupt = health.corrupt_fragments_detected
            free = min(max(0, node.capacity_bytes - used), sum(v.bytes_free for v in health.volumes))
        elif used is not None:
            free = max(0, node.capacity_bytes - used)
        out_in = None
        if node.state == NodeState.DOWN and down_out_interval is not None:
            out_in = max(0.0, node.state_since + down_out_interval - now)
        rows.append(NodeStatus(
            node_id=node_id, state=node.state.value, draining=node.draining,
            failure_domain=f"{node.failure_domain.zone}/{node.failure_domain.rack}/{node.failure_domain.host}",
            address=node.address, capacity_bytes=node.capacity_bytes, used_bytes=used, free_bytes=free,
            fragments=fragments, corrupt=corrupt,
            reachable=(health is not None) if node_id in healths else None,
            positions=positions.get(node_id, 0),
            scrub_progress=node_metrics.scrub_progress if node_metrics is not None else None,
            out_in_seconds=out_in, full=node.full,
        ))

    up = {node_id for node_id, node in cluster_map.nodes.items() if node.state == NodeState.UP}
    degraded_pgs = sum(1 for acting in cluster_map.acting_sets if any(n not in up for n in acting))

    scraped = [m for m in metrics.values() if m is not None]
    stripes: dict[str, int] | None = None
    for node_metrics in scraped:
        if node_metrics.degraded_stripes is not None:
            stripes = stripes if stripes is not None else dict.fromkeys(MISSING_LABELS, 0)
            for label, value in node_metrics.degraded_stripes.items():
                stripes[label] = stripes.get(label, 0) + int(value)

    reasons: list[str] = []
    if stripes is not None and sum(stripes.values()) > 0:
        reasons.append(f"{sum(stripes.values())} stripes have fewer than {cluster_map.stripe_width} fragments")
    not_up = sorted({n for acting in cluster_map.acting_sets for n in acting if n not in up})
    if not_up:
        reasons.append(f"{degraded_pgs} placement groups have members that are not up ({', '.join(not_up)})")
    unreachable = sorted(row.node_id for row in rows if row.state == "up" and row.reachable is False)
    if unreachable:
        reasons.append(f"up nodes not answering Health: {', '.join(unreachable)}")

    progress = [m.scrub_progress for m in scraped if m.scrub_progress is not None]
    down_waits = [row.out_in_seconds for row in rows if row.out_in_seconds is not None]
    # Whether placement is possible at all (draining nodes count: they keep positions while blocked),
    # and whether the drains can proceed.
    rule = rule_status({n: replace(node, draining=False) for n, node in cluster_map.nodes.items()})
    placed_nodes = placement_view(cluster_map.nodes)  # full nodes count as draining
    draining = [n for n, node in placed_nodes.items() if node.draining]
    drain_blocked = bool(draining) and any(positions.get(n, 0) for n in draining) and not rule_status(
        placed_nodes).satisfied
    return ClusterStatus(
        epoch=cluster_map.epoch, pg_count=cluster_map.pg_count, published_at=cluster_map.published_at,
        rule_level=rule.level, rule_satisfied=rule.satisfied, rule_detail=rule.detail,
        drain_blocked=drain_blocked,
        nodes=tuple(rows), pgs_clean=cluster_map.pg_count - degraded_pgs, pgs_degraded=degraded_pgs,
        stripes_missing=stripes,
        repair=RepairProgress(
            pending_bytes=_sum([m.pending_bytes for m in scraped]),
            rate_bytes_per_second=_sum([m.rate_bytes_per_second for m in scraped]),
            repaired_bytes_total=_sum([m.repaired_bytes_total for m in scraped]),
            full_redundancy_in_seconds=_max([m.time_to_full_redundancy_seconds for m in scraped]),
            down_out_seconds=max(down_waits) if down_waits else None,
        ),
        scrub=ScrubProgress(
            pass_progress=sum(progress) / len(progress) if progress else None,
            slowest_pass_progress=min(progress) if progress else None,
            corrupt_found_total=_sum([m.scrub_corrupt_total for m in scraped]),
        ),
        at_risk_reasons=tuple(reasons),
    )


# ----------------------------------------------------------------------------- rendering


def format_bytes(value: float | None) -> str:
    """``1536`` -> ``1.5 KiB``; None -> ``-``."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover (loop always returns)


def format_duration(seconds: float | None) -> str:
    """``192`` -> ``3m12s``; None -> ``-``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{int(value)}"


def render_text(status: ClusterStatus) -> str:
    """The human-readable report (one section per aspect; ``-`` for unknown values)."""
    rule = f"{status.rule_level} level, " + ("satisfied" if status.rule_satisfied else
                                             f"NOT satisfied ({status.rule_detail})")
    lines = [f"CLUSTER  epoch {status.epoch} · {status.pg_count} placement groups · failure-domain rule: {rule}",
             ""]
    header = ("NODE", "STATE", "FLAGS", "FAILURE DOMAIN", "USED", "FREE", "FRAGMENTS", "CORRUPT", "POSITIONS",
              "SCRUB")
    table = [header]
    for row in status.nodes:
        state = row.state
        if row.out_in_seconds is not None:
            state += f" (out in {format_duration(row.out_in_seconds)})"
        if row.reachable is False and row.state == "up":
            state += " (no answer)"
        flags = ",".join(flag for flag, on in (("draining", row.draining), ("full", row.full)) if on) or "-"
        table.append((row.node_id, state, flags, row.failure_domain,
                      format_bytes(row.used_bytes), format_bytes(row.free_bytes), _count(row.fragments),
                      _count(row.corrupt), str(row.positions), _ratio(row.scrub_progress)))
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    for line in table:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    lines.append("")
    lines.append(f"PLACEMENT GROUPS  {status.pgs_clean} clean · {status.pgs_degraded} degraded")
    if status.drain_blocked:
        lines.append("DRAIN             blocked: without the draining and full nodes no placement meets the "
                     "failure-domain rule; add nodes or capacity (or `coffer node undrain ID`)")
    if status.stripes_missing is None:
        at_risk = "stripes missing fragments: - (no node exports repair metrics)"
    else:
        at_risk = "stripes missing " + " · ".join(
            f"{label}: {status.stripes_missing.get(label, 0)}" for label in MISSING_LABELS)
    lines.append(f"AT RISK           {at_risk}")
    repair = status.repair
    eta = format_duration(repair.full_redundancy_in_seconds)
    if repair.full_redundancy_in_seconds is not None:
        eta = "~" + eta
    if repair.down_out_seconds is not None:
        eta += f" (+ down-out {format_duration(repair.down_out_seconds)})"
    rate = format_bytes(repair.rate_bytes_per_second)
    lines.append(f"REPAIR            pending {format_bytes(repair.pending_bytes)} · "
                 f"{rate}{'/s' if rate != '-' else ''} · repaired {format_bytes(repair.repaired_bytes_total)} · "
                 f"full redundancy in {eta}")
    lines.append(f"SCRUB             pass {_ratio(status.scrub.pass_progress)} (slowest node "
                 f"{_ratio(status.scrub.slowest_pass_progress)}) · corrupt found "
                 f"{_count(status.scrub.corrupt_found_total)}")
    if status.at_risk:
        lines.append("DURABILITY        AT RISK: " + "; ".join(status.at_risk_reasons))
    else:
        lines.append("DURABILITY        ok: every stripe has all its fragments on up nodes")
    return "\n".join(lines) + "\n"


def to_json(status: ClusterStatus) -> str:
    """The status as a JSON document (the dataclass fields, plus ``at_risk``)."""
    document = asdict(status)
    document["at_risk"] = status.at_risk
    document["stripes_missing"] = dict(status.stripes_missing) if status.stripes_missing is not None else None
    return json.dumps(document, indent=2, sort_keys=True)


def exit_code(status: ClusterStatus) -> int:
    """0, or 2 when durability is at risk."""
    return EXIT_AT_RISK if status.at_risk else EXIT_OK


# ----------------------------------------------------------------------------- collection


class StatusUnavailable(Exception):
    """The status cannot be collected; the message says what to do."""


@dataclass(frozen=True)
class Collected:
    """Raw inputs of ``summarize``, as read from the cluster."""

    cluster_map: ClusterMap
    registrations: Mapping[str, cluster_pb2.NodeRegistration]
    healths: Mapping[str, NodeHealth | None]
    metrics: Mapping[str, NodeMetrics | None]
    now: float


async def node_health(address: str, timeout: float = HEALTH_TIMEOUT_SECONDS) -> NodeHealth | None:
    """The ``Health`` answer of the node at ``address``, or None if it does not answer in time."""
    client = StorageNodeClient(address, timeout=timeout)
    try:
        return await client.health()
    except StorageError:
        return None
    finally:
        await client.close()


def _scrape(metrics_address: str, timeout: float) -> NodeMetrics | None:
    try:
        with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=timeout) as response:
            return parse_metrics(response.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None


async def scrape_metrics(metrics_address: str, timeout: float = METRICS_TIMEOUT_SECONDS) -> NodeMetrics | None:
    """Scrape ``http://<metrics_address>/metrics`` (in a thread); None if unreachable or unreadable."""
    return await asyncio.to_thread(_scrape, metrics_address, timeout)


async def read_cluster(etcd: EtcdClient, prefix: str) -> tuple[ClusterMap, dict[str, cluster_pb2.NodeRegistration]]:
    """The published map and the live registrations.

    Raises:
        StatusUnavailable: no map published yet, or it is unreadable.
        EtcdUnavailable: etcd unreachable.
    """
    keys = ClusterKeys(prefix)
    stored = await etcd.get(keys.map)
    if stored is None:
        raise StatusUnavailable(
            "no cluster map is published yet: start the placement service and at least 14 storage nodes "
            "(`coffer dev up`), or check --etcd / the key prefix")
    try:
        cluster_map = ClusterMap.from_bytes(stored.value)
    except ValueError as error:
        raise StatusUnavailable(f"the published cluster map is unreadable ({error}); upgrade coffer") from error
    kvs, _ = await etcd.get_prefix(keys.nodes_prefix)
    return cluster_map, parse_registrations(kvs, keys)


async def collect(etcd_endpoint: str, prefix: str = DEFAULT_PREFIX) -> Collected:
    """Read the map and registrations from etcd, then ask every node that is not OUT for
    ``Health`` and scrape every registered node's metrics, all in parallel.

    Raises:
        StatusUnavailable: no readable map.
        EtcdUnavailable: etcd unreachable.
    """
    async with EtcdClient(etcd_endpoint) as etcd:
        cluster_map, registrations = await read_cluster(etcd, prefix)
    asked = [node for node in cluster_map.nodes.values() if node.state != NodeState.OUT]
    scraped = [(node_id, reg.metrics_address) for node_id, reg in registrations.items() if reg.metrics_address]
    health_answers, scrape_answers = await asyncio.gather(
        asyncio.gather(*(node_health(registrations[n.node_id].address if n.node_id in registrations else n.address)
                         for n in asked)),
        asyncio.gather(*(scrape_metrics(address) for _, address in scraped)),
    )
    healths = {node.node_id: answer for node, answer in zip(asked, health_answers, strict=True)}
    metrics = {node_id: answer for (node_id, _), answer in zip(scraped, scrape_answers, strict=True)}
    return Collected(cluster_map, registrations, healths, metrics, time.time())


def run_status(etcd_endpoint: str, *, as_json: bool, prefix: str = DEFAULT_PREFIX,
               down_out_interval: float | None = None) -> int:
    """``coffer status``: print the status; return 0, or 2 when durability is at risk.

    Raises:
        StatusUnavailable: no readable map.
        EtcdUnavailable: etcd unreachable.
    """
    collected = asyncio.run(collect(etcd_endpoint, prefix))
    status = summarize(collected.cluster_map, collected.registrations, collected.healths, collected.metrics,
                       collected.now, down_out_interval=down_out_interval)
    print(to_json(status) if as_json else render_text(status), end="" if not as_json else "\n", flush=True)
    return exit_code(status)
