"""The cluster map: nodes, their state and labels, and every placement group's acting set.

A ``ClusterMap`` is an immutable snapshot versioned by its ``epoch``. The active placement service
publishes it to etcd as the ``cluster.proto`` ``ClusterMap`` record (``format_version`` 2, which adds
each acting set's former positions; version 1 records are still read, with none); every other
process reads it through ``placement.watcher``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from google.protobuf.message import DecodeError

from common.layout import DATA_FRAGMENTS, PARITY_FRAGMENTS, placement_group
from proto import cluster_pb2

CLUSTER_MAP_FORMAT_VERSION = 2
# Versions ``from_bytes`` reads: 1 has no former positions.
READABLE_FORMAT_VERSIONS = frozenset({1, 2})


class UnsupportedFormatVersion(ValueError):
    """A stored record carries a ``format_version`` this code does not know."""


@dataclass(frozen=True)
class FailureDomain:
    """A node's location labels, outermost first: ``zone`` contains ``rack`` contains ``host``."""

    zone: str
    rack: str
    host: str


class NodeState(enum.Enum):
    """Lifecycle of a node in the map (design brief, "Cluster map and placement").

    UP: registered, lease alive. DOWN: lease lapsed; the node stays in its acting sets and readers
    route around it. OUT: down longer than the down-out interval; removed from acting sets.
    """

    UP = "up"
    DOWN = "down"
    OUT = "out"


_STATE_TO_PROTO = {
    NodeState.UP: cluster_pb2.NODE_STATE_UP,
    NodeState.DOWN: cluster_pb2.NODE_STATE_DOWN,
    NodeState.OUT: cluster_pb2.NODE_STATE_OUT,
}
_STATE_FROM_PROTO = {value: key for key, value in _STATE_TO_PROTO.items()}


@dataclass(frozen=True)
class Node:
    """One storage node as the map knows it.

    ``address`` is the ``host:port`` of its StorageNode gRPC service; ``capacity_bytes`` its total
    volume capacity in bytes; ``state_since`` the wall-clock time (Unix seconds) it entered
    ``state``, used for the down-out interval. ``draining``: an operator asked to empty the node
    (``placement.drain``); it keeps serving in any state, but placement gives it no positions
    while the rest of the cluster can hold every stripe without it. ``full``: the node reported
    itself out of space (``NodeRegistration.full``); placement treats it exactly like a draining
    node (``placement.service.placement_view``) and it keeps serving reads and deletes.
    """

    node_id: str
    address: str
    failure_domain: FailureDomain
    capacity_bytes: int
    state: NodeState
    state_since: float = 0.0
    draining: bool = False
    full: bool = False


def node_from_registration(
    registration: cluster_pb2.NodeRegistration, state: NodeState, state_since: float
) -> Node:
    """Build a ``Node`` from a storage node's etcd registration record (``draining`` False;
    ``full`` as the node reported it)."""
    domain = registration.failure_domain
    return Node(
        node_id=registration.node_id,
        address=registration.address,
        failure_domain=FailureDomain(zone=domain.zone, rack=domain.rack, host=domain.host),
        capacity_bytes=int(registration.capacity_bytes),
        state=state,
        state_since=state_since,
        full=registration.full,
    )


@dataclass(frozen=True)
class ClusterMap:
    """An immutable snapshot of the cluster, identified by a monotonically increasing ``epoch``.

    ``nodes`` maps node id -> ``Node`` (including DOWN and OUT nodes); ``acting_sets[pg]`` is the
    ordered tuple of ``data_fragments + parity_fragments`` node ids holding placement group ``pg``:
    fragment ``i`` lives on ``acting_sets[pg][i]``. ``published_at`` is the publish time (Unix
    seconds, 0 when unknown); it is informational and not compared. ``former_positions[pg]`` lists
    ``(node_id, position)`` of nodes that held a position of ``pg``'s stripe and left it, oldest
    departure first, so placement can give a returning node its old position back (``()``: none
    for any placement group).

    Raises:
        ValueError: on construction, if ``acting_sets`` does not hold exactly ``pg_count`` stripes
            of width ``data_fragments + parity_fragments`` naming nodes of ``nodes``, or
            ``former_positions`` is not one entry per placement group naming known nodes outside
            the acting set at positions inside the stripe.
    """

    epoch: int
    pg_count: int
    nodes: Mapping[str, Node]
    acting_sets: tuple[tuple[str, ...], ...]
    data_fragments: int = DATA_FRAGMENTS
    parity_fragments: int = PARITY_FRAGMENTS
    published_at: float = field(default=0.0, compare=False)
    former_positions: tuple[tuple[tuple[str, int], ...], ...] = ()

    def __post_init__(self) -> None:
        # A read-only view, so a "frozen" map cannot be changed through its nodes dict.
        object.__setattr__(self, "nodes", MappingProxyType(dict(self.nodes)))
        object.__setattr__(self, "acting_sets", tuple(tuple(s) for s in self.acting_sets))
        if self.epoch < 0 or self.pg_count <= 0:
            raise ValueError(f"invalid epoch {self.epoch} or pg_count {self.pg_count}")
        if len(self.acting_sets) != self.pg_count:
            raise ValueError(f"{len(self.acting_sets)} acting sets for {self.pg_count} placement groups")
        width = self.stripe_width
        for pg, acting in enumerate(self.acting_sets):
            if len(acting) != width:
                raise ValueError(f"acting set of pg {pg} has {len(acting)} nodes, stripe width is {width}")
            for node_id in acting:
                if node_id not in self.nodes:
                    raise ValueError(f"acting set of pg {pg} names unknown node {node_id!r}")
        former = tuple(tuple((str(n), int(p)) for n, p in entries) for entries in self.former_positions)
        if not former:
            former = tuple(() for _ in range(self.pg_count))
        object.__setattr__(self, "former_positions", former)
        if len(former) != self.pg_count:
            raise ValueError(f"{len(former)} former-position lists for {self.pg_count} placement groups")
        for pg, entries in enumerate(former):
            node_ids = [node_id for node_id, _ in entries]
            if len(set(node_ids)) != len(node_ids):
                raise ValueError(f"former positions of pg {pg} name a node twice")
            for node_id, position in entries:
                if node_id not in self.nodes or node_id in self.acting_sets[pg] or not 0 <= position < width:
                    raise ValueError(f"invalid former position {position} of node {node_id!r} in pg {pg}")
        for node_id, node in self.nodes.items():
            if node.node_id != node_id:
                raise ValueError(f"node {node.node_id!r} filed under {node_id!r}")

    @property
    def stripe_width(self) -> int:
        """Fragments per stripe (``data_fragments + parity_fragments``)."""
        return self.data_fragments + self.parity_fragments

    def acting_set(self, pg: int) -> tuple[str, ...]:
        """Return the ordered node ids of placement group ``pg``.

        Raises:
            IndexError: if ``pg`` is not in ``range(pg_count)``.
        """
        if not 0 <= pg < self.pg_count:
            raise IndexError(f"placement group {pg} out of range 0..{self.pg_count - 1}")
        return self.acting_sets[pg]

    def placement_group(self, chunk_hash: bytes) -> int:
        """Return the placement group of a chunk (32-byte SHA-256 digest), per ``common.layout``."""
        return placement_group(chunk_hash, self.pg_count)

    def acting_set_for_chunk(self, chunk_hash: bytes) -> tuple[str, ...]:
        """Return the acting set of the placement group of ``chunk_hash`` (32 raw bytes).

        Raises:
            ValueError: if ``chunk_hash`` is not 32 bytes.
        """
        return self.acting_sets[placement_group(chunk_hash, self.pg_count)]

    def node(self, node_id: str) -> Node:
        """Return the node ``node_id``.

        Raises:
            KeyError: if the map does not know the node.
        """
        return self.nodes[node_id]

    def nodes_in_state(self, state: NodeState) -> list[Node]:
        """Return the nodes in ``state``, sorted by node id."""
        return sorted((n for n in self.nodes.values() if n.state == state), key=lambda n: n.node_id)

    def with_changes(self, **changes: object) -> ClusterMap:
        """Return a copy with the given fields replaced (``dataclasses.replace``)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_proto(self) -> cluster_pb2.ClusterMap:
        """Return the ``cluster.proto`` record (format version 2) of this map."""
        record = cluster_pb2.ClusterMap(
            format_version=CLUSTER_MAP_FORMAT_VERSION,
            epoch=self.epoch,
            pg_count=self.pg_count,
            data_fragments=self.data_fragments,
            parity_fragments=self.parity_fragments,
            published_unix_ms=int(self.published_at * 1000),
        )
        for node_id in sorted(self.nodes):
            node = self.nodes[node_id]
            record.nodes.append(
                cluster_pb2.NodeRecord(
                    node_id=node.node_id,
                    address=node.address,
                    failure_domain=cluster_pb2.FailureDomain(
                        zone=node.failure_domain.zone,
                        rack=node.failure_domain.rack,
                        host=node.failure_domain.host,
                    ),
                    capacity_bytes=node.capacity_bytes,
                    state=_STATE_TO_PROTO[node.state],
                    state_since_unix_ms=round(node.state_since * 1000),
                    draining=node.draining,
                    full=node.full,
                )
            )
        for acting, former in zip(self.acting_sets, self.former_positions, strict=True):
            record.acting_sets.append(cluster_pb2.ActingSet(
                node_ids=acting,
                former_positions=[cluster_pb2.FormerPosition(node_id=n, position=p) for n, p in former],
            ))
        return record

    def to_bytes(self) -> bytes:
        """Serialize as the ``cluster.proto`` ``ClusterMap`` record (format version 2)."""
        return self.to_proto().SerializeToString(deterministic=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> ClusterMap:
        """Parse a ``cluster.proto`` ``ClusterMap`` record.

        Raises:
            UnsupportedFormatVersion: if ``format_version`` is not 1 or 2 (1: no former positions).
            ValueError: if the bytes are not a valid record or the map is inconsistent.
        """
        record = cluster_pb2.ClusterMap()
        try:
            record.ParseFromString(bytes(data))
        except DecodeError as error:
            raise ValueError(f"cluster map record does not parse: {error}") from error
        if record.format_version not in READABLE_FORMAT_VERSIONS:
            raise UnsupportedFormatVersion(
                f"cluster map format_version {record.format_version} is not supported "
                f"(this code reads versions {sorted(READABLE_FORMAT_VERSIONS)}); upgrade this process"
            )
        nodes: dict[str, Node] = {}
        for item in record.nodes:
            if item.state not in _STATE_FROM_PROTO:
                raise ValueError(f"node {item.node_id!r} has unknown state {item.state}")
            nodes[item.node_id] = Node(
                node_id=item.node_id,
                address=item.address,
                failure_domain=FailureDomain(
                    zone=item.failure_domain.zone, rack=item.failure_domain.rack,
                    host=item.failure_domain.host,
                ),
                capacity_bytes=int(item.capacity_bytes),
                state=_STATE_FROM_PROTO[item.state],
                state_since=item.state_since_unix_ms / 1000.0,
                draining=item.draining,
                full=item.full,
            )
        return cls(
            epoch=int(record.epoch),
            pg_count=int(record.pg_count),
            nodes=nodes,
            acting_sets=tuple(tuple(a.node_ids) for a in record.acting_sets),
            data_fragments=int(record.data_fragments),
            parity_fragments=int(record.parity_fragments),
            published_at=record.published_unix_ms / 1000.0,
            former_positions=tuple(
                tuple((f.node_id, int(f.position)) for f in a.former_positions) if record.format_version >= 2
                else ()
                for a in record.acting_sets
            ),
        )

