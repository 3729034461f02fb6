"""The placement service: one active leader publishes the cluster map; standbys wait.

Leadership is an etcd key (``<prefix>placement/leader``) created only if absent, in one
transaction, bound to the leader's lease; standbys watch the key and campaign again when it
vanishes (the pattern of etcd's own ``concurrency.Election``). The leader follows node
registrations and turns them into map changes (``next_cluster_map``, a pure function):

* a new registration -> the node is UP and acting sets are recomputed;
* a registration gone (lease lapsed) -> DOWN; it stays in its acting sets;
* back again -> UP (an OUT node coming back is placed anew);
* DOWN for ``down_out_interval`` seconds -> OUT, and acting sets are recomputed without it;
* a drain request (``<prefix>drain/<node_id>``, ``placement.drain``) -> the node is ``draining`` and
  acting sets are recomputed without it (it stays UP and serving while new holders copy from it);
  if the other nodes cannot hold every stripe under the rule, the drain is blocked (logged);
* a registration with ``full`` set (the node is out of space and refuses puts) -> the node is
  ``full`` and placed exactly like a draining node (``placement_view``): its positions move to nodes
  with space, which copy its fragments from it, while it keeps serving reads and deletes; once it
  reports not full it is eligible again and gets its former positions back. If the other nodes
  cannot hold every stripe, full nodes keep their positions and an error says to add capacity.

When the nodes cannot be placed under the failure-domain rule (``rendezvous.placement_rules``), the
first map is not published and later maps keep the previous acting sets; an error tells the
operator what to add, and ``coffer_placement_rule_satisfied`` drops to 0.

Each change is published as epoch + 1 in one transaction that compares the stored map's mod
revision and the leader key's value, so a deposed or concurrent leader can never publish.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace

from google.protobuf.message import DecodeError
from prometheus_client import Gauge

from common.layout import DEFAULT_PG_COUNT
from placement.cluster_map import ClusterMap, Node, NodeState, node_from_registration
from placement.drain import drain_requests
from placement.etcd import EtcdClient, EtcdUnavailable, KeyValue, cancel_and_wait
from placement.keys import DEFAULT_PREFIX, ClusterKeys
from placement.registration import REGISTRATION_FORMAT_VERSION, refresh_schedule
from placement.rendezvous import InsufficientNodes, Placement, RuleStatus, compute_placement, rule_status
from proto import cluster_pb2

logger = logging.getLogger(__name__)

EPOCH_GAUGE = Gauge("coffer_placement_epoch", "Epoch of the cluster map the leader last read or published")
NODES_GAUGE = Gauge("coffer_placement_nodes", "Nodes in the published cluster map, by state", ["state"])
DRAINING_GAUGE = Gauge("coffer_placement_draining_nodes", "Nodes flagged draining in the published cluster map")
FULL_GAUGE = Gauge("coffer_placement_full_nodes", "Nodes flagged full in the published cluster map")
IS_LEADER_GAUGE = Gauge("coffer_placement_is_leader", "1 while this placement service is the leader")
RULE_SATISFIED_GAUGE = Gauge(
    "coffer_placement_rule_satisfied",
    "1 if the leader's nodes can be placed under the failure-domain rule (at most 4 fragments per "
    "domain at the labelled level), 0 if placement is frozen until nodes are added",
    ["level"],
)

_RETRY_SECONDS = 0.5


class LostLeadership(Exception):
    """The leader key no longer holds this service's token (lease lapsed or taken over)."""


def next_cluster_map(
    current: ClusterMap | None,
    registrations: Mapping[str, cluster_pb2.NodeRegistration],
    now: float,
    *,
    pg_count: int = DEFAULT_PG_COUNT,
    down_out_interval: float = 600.0,
    min_nodes: int = 14,
    drains: frozenset[str] = frozenset(),
) -> ClusterMap | None:
    """Return the map that should follow ``current`` given the live ``registrations``, or None
    when nothing changes. Pure.

    ``registrations``: node id -> registration record of every node whose lease is alive.
    ``now``: wall-clock Unix seconds (node ``state_since`` values are in the same clock).
    The first map (epoch 1) appears once ``min_nodes`` nodes are registered and they can be placed
    under the failure-domain rule; ``pg_count`` is used only then (an existing map keeps its own).
    If marking nodes OUT would leave no valid placement, they stay DOWN; if no valid placement
    exists at all (e.g. a new zone made the rule apply at zone level, where the zones are too
    uneven), the previous acting sets are kept. Both cases log an error naming what to add.
    ``drains``: ids of nodes with a drain request (``placement.drain``); they are flagged
    ``draining`` and get no positions, their positions moving to other nodes (recorded in
    ``former_positions``, so new holders copy from them). If the others cannot hold every stripe
    under the rule, draining nodes stay eligible (the drain is blocked; an error says to add nodes).
    A registration's ``full`` flag becomes ``Node.full`` (a DOWN node keeps its last value); full
    nodes are placed exactly like draining ones (``placement_view``), and a change of the flag
    recomputes the acting sets.
    """
    if current is None:
        if len(registrations) < min_nodes:
            return None
        nodes = {
            node_id: replace(node_from_registration(reg, NodeState.UP, now), draining=node_id in drains)
            for node_id, reg in registrations.items()
        }
        first = _place_honouring_drains(pg_count, nodes, None)
        if first is None:
            logger.error("cannot publish the first cluster map: the failure-domain rule cannot be met",
                         extra={"fields": {"error": _placement_error(pg_count, nodes)}})
            return None
        return ClusterMap(epoch=1, pg_count=pg_count, nodes=nodes, acting_sets=first.acting_sets,
                          former_positions=first.former_positions, published_at=now)

    nodes: dict[str, Node] = dict(current.nodes)  # type: ignore[no-redef]
    placement_changed = False
    for node_id, reg in registrations.items():
        old = nodes.get(node_id)
        fresh = node_from_registration(reg, NodeState.UP, now)
        if old is None:
            nodes[node_id] = fresh
            placement_changed = True
            continue
        if old.state == NodeState.OUT or old.failure_domain != fresh.failure_domain or old.full != fresh.full:
            placement_changed = True
        since = old.state_since if old.state == NodeState.UP else now
        nodes[node_id] = replace(fresh, state_since=since, draining=old.draining)
    newly_out: list[str] = []
    for node_id, node in current.nodes.items():
        if node_id in registrations:
            continue
        if node.state == NodeState.UP:
            nodes[node_id] = replace(node, state=NodeState.DOWN, state_since=now)
        elif node.state == NodeState.DOWN and now - node.state_since >= down_out_interval:
            nodes[node_id] = replace(node, state=NodeState.OUT, state_since=now)
            newly_out.append(node_id)
            placement_changed = True

    for node_id, node in nodes.items():
        draining = node_id in drains
        if node.draining != draining:
            nodes[node_id] = replace(node, draining=draining)
            placement_changed = True

    acting_sets, former_positions = current.acting_sets, current.former_positions
    if placement_changed:
        placement = _place_honouring_drains(current.pg_count, nodes, current)
        if placement is None and newly_out:
            # Keep the nodes DOWN (still holding their fragments) rather than lose placements.
            logger.error("placement impossible, keeping nodes down", extra={"fields": {
                "error": _placement_error(current.pg_count, nodes), "nodes": ",".join(newly_out)}})
            for node_id in newly_out:
                nodes[node_id] = current.nodes[node_id]
            placement = _place_honouring_drains(current.pg_count, nodes, current)
        if placement is None:
            # Never publish a placement that breaks the rule: keep the previous acting sets.
            logger.error("failure-domain rule cannot be met, keeping the previous acting sets",
                         extra={"fields": {"error": _placement_error(current.pg_count, nodes)}})
        if placement is not None:
            acting_sets, former_positions = placement.acting_sets, placement.former_positions
    if nodes == dict(current.nodes) and acting_sets == current.acting_sets:
        return None
    return ClusterMap(
        epoch=current.epoch + 1,
        pg_count=current.pg_count,
        nodes=nodes,
        acting_sets=acting_sets,
        data_fragments=current.data_fragments,
        parity_fragments=current.parity_fragments,
        published_at=now,
        former_positions=former_positions,
    )


def placement_view(nodes: Mapping[str, Node]) -> dict[str, Node]:
    """``nodes`` as placement (``placement.rendezvous``) must see them: a full node is flagged
    draining, since both get no positions while the other nodes can hold every stripe. Pure;
    nodes that are neither full nor draining are returned unchanged."""
    return {node_id: replace(node, draining=True) if node.full and not node.draining else node
            for node_id, node in nodes.items()}


def _without_drains(nodes: Mapping[str, Node]) -> dict[str, Node]:
    """``nodes`` with every draining flag cleared (placement then treats them as eligible)."""
    return {node_id: replace(node, draining=False) if node.draining else node for node_id, node in nodes.items()}


def _place_honouring_drains(pg_count: int, nodes: Mapping[str, Node],
                            previous: ClusterMap | None) -> Placement | None:
    """Place without the draining and full nodes; if that is impossible, with them (the drain is
    blocked, logged as an error saying to add nodes or capacity); None if no valid placement exists
    either way. ``previous`` is seen through ``placement_view`` too, so a node that was full in it
    and no longer is returns to its former positions like an undrained node."""
    view = placement_view(nodes)
    if previous is not None and any(node.full for node in previous.nodes.values()):
        previous = previous.with_changes(nodes=placement_view(previous.nodes))
    try:
        return compute_placement(pg_count, view, previous=previous)
    except InsufficientNodes as error:
        draining = sorted(node_id for node_id, node in nodes.items() if node.draining)
        full = sorted(node_id for node_id, node in nodes.items() if node.full)
        if not draining and not full:
            return None
        try:
            placement = compute_placement(pg_count, _without_drains(view), previous=previous)
        except InsufficientNodes:
            return None
        logger.error("drain blocked until nodes are added: without the draining and full nodes no placement "
                     "meets the failure-domain rule, so they keep their positions (full nodes keep refusing "
                     "puts: add capacity)",
                     extra={"fields": {"nodes": ",".join(draining), "full": ",".join(full),
                                       "error": str(error)}})
        return placement


def _placement_error(pg_count: int, nodes: Mapping[str, Node]) -> str:
    """Why ``nodes`` cannot be placed even with draining nodes eligible ("" if they can)."""
    try:
        compute_placement(1, _without_drains(nodes))  # the rules fail before any per-PG work
    except InsufficientNodes as error:
        return str(error)
    return ""


def parse_registrations(kvs: list[KeyValue], keys: ClusterKeys) -> dict[str, cluster_pb2.NodeRegistration]:
    """Decode registration records (node id -> record), skipping and logging unreadable ones,
    records of an unknown format version and records whose node id does not match their key."""
    registrations: dict[str, cluster_pb2.NodeRegistration] = {}
    for kv in kvs:
        reg = cluster_pb2.NodeRegistration()
        try:
            reg.ParseFromString(kv.value)
        except DecodeError:
            logger.warning("unreadable registration", extra={"fields": {"key": kv.key}})
            continue
        if reg.format_version != REGISTRATION_FORMAT_VERSION or keys.nodes_prefix + reg.node_id != kv.key:
            logger.warning("ignoring registration", extra={
                "fields": {"key": kv.key, "format_version": reg.format_version, "node_id": reg.node_id}})
            continue
        registrations[reg.node_id] = reg
    return registrations


class PlacementService:
    """One placement service instance; at most one instance per cluster prefix leads at a time.

    ``pg_count``: placement groups of a new cluster; ``down_out_interval``: seconds a node stays
    DOWN before it is OUT; ``min_nodes``: registrations needed before the first map;
    ``leader_ttl_seconds``: the leader lease (a dead leader is replaced within about that long);
    ``poll_interval``: seconds between full re-reads besides the watch (a safety net).

    Raises:
        ValueError: on construction, for a malformed endpoint or prefix.
    """

    def __init__(
        self,
        etcd_endpoint: str,
        pg_count: int = DEFAULT_PG_COUNT,
        down_out_interval: float = 600.0,
        min_nodes: int = 14,
        instance_id: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        leader_ttl_seconds: float = 5.0,
        poll_interval: float = 5.0,
    ) -> None:
        if pg_count <= 0 or min_nodes <= 0 or down_out_interval < 0:
            raise ValueError("pg_count and min_nodes must be positive, down_out_interval not negative")
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self._keys = ClusterKeys(prefix)
        self._etcd = EtcdClient(etcd_endpoint)
        self._pg_count = pg_count
        self._down_out_interval = down_out_interval
        self._min_nodes = min_nodes
        self._leader_ttl = leader_ttl_seconds
        self._poll_interval = poll_interval
        self._task: asyncio.Task[None] | None = None
        self._is_leader = False
        self._lease_id: int | None = None
        self._token = ""
        self._epoch = 0
        self._rule_status: RuleStatus | None = None

    @property
    def is_leader(self) -> bool:
        """True while this instance holds the leader key."""
        return self._is_leader

    @property
    def epoch(self) -> int:
        """Epoch of the map this instance last read or published as leader (0: none)."""
        return self._epoch

    async def start(self) -> None:
        """Start campaigning in the background (returns at once; never raises for etcd trouble)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"placement:{self.instance_id}")

    async def stop(self) -> None:
        """Stop; a leader revokes its lease so a standby takes over at once."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self._resign()
        await self._etcd.close()

    def _set_leader(self, value: bool) -> None:
        if value != self._is_leader:
            logger.info("leadership " + ("acquired" if value else "released"),
                        extra={"fields": {"instance": self.instance_id}})
        self._is_leader = value
        IS_LEADER_GAUGE.set(1 if value else 0)

    async def _resign(self) -> None:
        self._set_leader(False)
        lease_id, self._lease_id = self._lease_id, None
        if lease_id is not None:
            try:
                await self._etcd.revoke_lease(lease_id)
            except EtcdUnavailable as error:
                logger.warning("could not revoke leader lease", extra={"fields": {"error": str(error)}})

    async def _run(self) -> None:
        while True:
            try:
                await self._campaign()
            except EtcdUnavailable as error:
                logger.warning("etcd unreachable", extra={"fields": {"error": str(error)}})
            except LostLeadership as error:
                logger.warning("lost leadership", extra={"fields": {"reason": str(error)}})
            except Exception:
                logger.exception("placement service iteration failed")
            await self._resign()
            await asyncio.sleep(_RETRY_SECONDS)

    async def _campaign(self) -> None:
        lease_id, granted_ttl = await self._etcd.grant_lease(self._leader_ttl)
        token = f"{self.instance_id}#{uuid.uuid4().hex[:12]}"
        if not await self._etcd.create(self._keys.placement_leader, token.encode(), lease=lease_id):
            with contextlib.suppress(EtcdUnavailable):
                await self._etcd.revoke_lease(lease_id)
            await self._wait_for_vacancy(granted_ttl)
            return
        self._lease_id, self._token = lease_id, token
        self._set_leader(True)
        hold = asyncio.create_task(self._hold_lease(lease_id, granted_ttl))
        lead = asyncio.create_task(self._lead())
        try:
            done, _ = await asyncio.wait({hold, lead}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise what ended it
            raise LostLeadership("leader lease expired")
        finally:
            for task in (hold, lead):
                await cancel_and_wait(task)

    async def _wait_for_vacancy(self, ttl: float) -> None:
        """Return when the leader key is deleted, or after ``ttl`` seconds (to campaign again)."""
        kv = await self._etcd.get(self._keys.placement_leader)
        if kv is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ttl):
                async for event in self._etcd.watch(self._keys.placement_leader,
                                                    start_revision=kv.mod_revision + 1):
                    if event.deleted:
                        return

    async def _hold_lease(self, lease_id: int, ttl: int) -> None:
        """Keep the leader lease alive; return once it is (or may be) lost. Same schedule as node
        leases (``registration.refresh_schedule``): a hung keep-alive is cut off and retried."""
        interval, call_timeout = refresh_schedule(ttl)
        lease_deadline = time.monotonic() + ttl
        next_refresh = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, next_refresh - time.monotonic()))
            sent = time.monotonic()
            try:
                async with asyncio.timeout(max(0.2, min(call_timeout, (lease_deadline - sent) / 2))):
                    remaining = await self._etcd.refresh_lease(lease_id)
                if remaining <= 0:
                    return
                lease_deadline, next_refresh = sent + remaining, sent + interval
            except (EtcdUnavailable, TimeoutError):
                if time.monotonic() >= lease_deadline:
                    return
                next_refresh = time.monotonic() + min(_RETRY_SECONDS, interval)

    async def _lead(self) -> None:
        wake = asyncio.Event()
        watchers = [asyncio.create_task(self._watch_prefix(prefix, wake))
                    for prefix in (self._keys.nodes_prefix, self._keys.drains_prefix)]
        try:
            while True:
                wake.clear()
                delay = await self._reconcile()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow our cancellation
                # when the event fires at the same moment, and stop() would hang.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await wake.wait()
        finally:
            for watcher in watchers:
                await cancel_and_wait(watcher)

    async def _watch_prefix(self, prefix: str, wake: asyncio.Event) -> None:
        """Set ``wake`` on every change under ``prefix`` (node registrations, drain requests)."""
        while True:
            try:
                _, revision = await self._etcd.get_prefix(prefix)
                wake.set()
                async for _event in self._etcd.watch(prefix, prefix=True, start_revision=revision + 1):
                    wake.set()
            except EtcdUnavailable as error:
                logger.debug("watch interrupted", extra={"fields": {"prefix": prefix, "error": str(error)}})
            except Exception:
                # Never end silently: without this watch the leader would only notice changes at
                # the next poll. Log, back off, watch again.
                logger.exception("watch failed", extra={"fields": {"prefix": prefix}})
            await asyncio.sleep(_RETRY_SECONDS)

    async def _reconcile(self) -> float:
        """Read registrations and the map, publish the next map if any; return seconds until the
        next check is due (the earliest down-out deadline, at most ``poll_interval``)."""
        kvs, _ = await self._etcd.get_prefix(self._keys.nodes_prefix)
        registrations = parse_registrations(kvs, self._keys)
        drains = await drain_requests(self._etcd, prefix=self._keys.prefix)
        stored = await self._etcd.get(self._keys.map)
        current: ClusterMap | None = None
        if stored is not None:
            try:
                current = ClusterMap.from_bytes(stored.value)
            except ValueError as error:
                # Never overwrite a map this code cannot read (e.g. a newer format).
                logger.error("stored cluster map unreadable; not publishing",
                             extra={"fields": {"error": str(error)}})
                return self._poll_interval
            if current.pg_count != self._pg_count and self._epoch == 0:
                logger.warning("existing map keeps its pg_count", extra={
                    "fields": {"pg_count": current.pg_count, "configured": self._pg_count}})
        now = time.time()
        proposed = await asyncio.to_thread(
            next_cluster_map, current, registrations, now, pg_count=self._pg_count,
            down_out_interval=self._down_out_interval, min_nodes=self._min_nodes, drains=drains,
        )
        if proposed is not None:
            published = await self._etcd.compare_and_swap(
                self._keys.map, proposed.to_bytes(),
                expected_mod_revision=stored.mod_revision if stored is not None else 0,
                guards={self._keys.placement_leader: self._token.encode()},
            )
            if not published:
                leader = await self._etcd.get(self._keys.placement_leader)
                if leader is None or leader.value != self._token.encode():
                    raise LostLeadership("leader key taken over")
                return 0.0  # the map changed under us: read again
            logger.info("published cluster map", extra={"fields": {
                "epoch": proposed.epoch, "up": len(proposed.nodes_in_state(NodeState.UP)),
                "down": len(proposed.nodes_in_state(NodeState.DOWN)),
                "out": len(proposed.nodes_in_state(NodeState.OUT)),
                "draining": ",".join(sorted(n for n, node in proposed.nodes.items() if node.draining)),
                "full": ",".join(sorted(n for n, node in proposed.nodes.items() if node.full))}})
            current = proposed
        # Whether placement is possible at all: a blocked drain is logged by next_cluster_map.
        self._record_rule_status(
            _without_drains(current.nodes) if current is not None
            else {node_id: node_from_registration(reg, NodeState.UP, now) for node_id, reg in registrations.items()}
        )
        if current is None:
            return self._poll_interval
        self._record_metrics(current)
        deadlines = [
            node.state_since + self._down_out_interval - now
            for node in current.nodes.values()
            if node.state == NodeState.DOWN and node.state_since + self._down_out_interval > now
        ]
        return min([self._poll_interval, *[d + 0.01 for d in deadlines]])

    def _record_rule_status(self, nodes: Mapping[str, Node]) -> None:
        """Set ``coffer_placement_rule_satisfied{level}`` (one series, the level in force) and log
        when the rule stops or starts being met."""
        status = rule_status(nodes)
        if status != self._rule_status:
            if not status.satisfied:
                logger.error("failure-domain rule cannot be met; placement frozen until nodes are added",
                             extra={"fields": {"level": status.level, "error": status.detail}})
            elif self._rule_status is not None:
                logger.info("failure-domain rule met again", extra={"fields": {"level": status.level}})
            self._rule_status = status
        RULE_SATISFIED_GAUGE.clear()
        RULE_SATISFIED_GAUGE.labels(level=status.level).set(1 if status.satisfied else 0)

    def _record_metrics(self, current: ClusterMap) -> None:
        self._epoch = current.epoch
        EPOCH_GAUGE.set(current.epoch)
        for state in NodeState:
            NODES_GAUGE.labels(state=state.value).set(len(current.nodes_in_state(state)))
        DRAINING_GAUGE.set(sum(1 for node in current.nodes.values() if node.draining))
        FULL_GAUGE.set(sum(1 for node in current.nodes.values() if node.full))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="coffer placement", description=__doc__.splitlines()[0])
    parser.add_argument("--etcd", required=True, help="etcd endpoint HOST:PORT")
    parser.add_argument("--pg-count", type=int, default=DEFAULT_PG_COUNT,
                        help="placement groups of a new cluster (a power of two)")
    parser.add_argument("--down-out-interval", type=float, default=600.0,
                        help="seconds a node stays DOWN before it is marked OUT")
    parser.add_argument("--min-nodes", type=int, default=14, help="registrations needed for the first map")
    parser.add_argument("--metrics-port", type=int, required=True, help="Prometheus port on 127.0.0.1")
    parser.add_argument("--instance-id", default=None, help="name of this instance (default host-pid)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="etcd key prefix of the cluster")
    parser.add_argument("--leader-ttl", type=float, default=5.0, help="leader lease TTL in seconds")
    args = parser.parse_args(argv)
    if args.pg_count <= 0 or args.pg_count & (args.pg_count - 1):
        parser.error("--pg-count must be a positive power of two")
    if args.min_nodes <= 0 or args.down_out_interval < 0 or not math.isfinite(args.down_out_interval):
        parser.error("--min-nodes must be positive and --down-out-interval a non-negative number")
    return args


async def _serve(args: argparse.Namespace, instance_id: str) -> None:
    service = PlacementService(
        args.etcd, pg_count=args.pg_count, down_out_interval=args.down_out_interval,
        min_nodes=args.min_nodes, instance_id=instance_id, prefix=args.prefix,
        leader_ttl_seconds=args.leader_ttl,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await service.start()
    try:
        await stopping.wait()
    finally:
        logger.info("stopping")
        await service.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a placement service until SIGTERM/SIGINT (``coffer placement ...``); return the exit code.

    Flags: ``--etcd HOST:PORT --pg-count N --down-out-interval SECONDS --min-nodes N
    --metrics-port P [--instance-id ID] [--prefix /coffer/] [--leader-ttl SECONDS]``.
    """
    from common.logs import setup_logging
    from common.malloc import tune_malloc
    from common.metrics import serve_metrics

    tune_malloc()
    args = _parse_args(argv)
    instance_id = args.instance_id or f"{socket.gethostname()}-{os.getpid()}"
    setup_logging(f"placement/{instance_id}")
    import uvloop

    serve_metrics("127.0.0.1", args.metrics_port)
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_serve(args, instance_id))
    finally:
        # Bounded teardown instead of asyncio.run's unbounded one: aetcd's watch tasks can swallow
        # cancellation, which would keep a SIGTERMed process alive.
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.wait(leftovers, timeout=2.0))
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
