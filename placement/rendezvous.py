"""Deterministic placement of stripes: rendezvous hashing under the failure-domain rule.

Pure functions, no I/O. Each placement group ranks every eligible node (not OUT and not draining;
DOWN nodes stay eligible until they are OUT) by a stable hash of ``(pg, node_id)`` — rendezvous or
highest-random-weight hashing (Thaler & Ravishankar, "Using name-based mappings to increase hit
rates", IEEE/ACM ToN 1998) — and takes the best ``width`` nodes that keep two caps:

* the design brief's failure-domain rule: at most ``max_per_domain`` (m = 4) fragments of a stripe in
  any one domain at the outermost level (zone, then rack, then host) that has at least
  ``ceil(width / max_per_domain)`` (= 4) distinct domains, so losing any one whole domain at that
  level loses at most m fragments. If those domains cannot hold a whole stripe under the cap (e.g.
  zones of 8, 2, 2 and 2 nodes), placement raises ``InsufficientNodes``: it never falls back to a
  finer level, which would let one zone hold more than m fragments;
* hosts as even as possible: at most ``c`` fragments per host, ``c`` the smallest cap with which a
  full stripe still fits (1 when there are at least ``width`` hosts).

When a previous map is given, a node keeps its position while it stays chosen, and a node that left
a stripe (OUT, draining, or outranked) is remembered with the position it held (``former_positions``): when
it is chosen again it gets that position back, so the fragments it still stores are the right ones.

Domains nest (a host lies in one rack, a rack in one zone), so these caps form a laminar matroid:
the greedy choice in rank order is the maximum-weight valid set, and whether a valid set exists does
not depend on the order (Edmonds, "Matroids and the greedy algorithm", 1971). That same property
keeps changes small: adding or removing one node changes the chosen set of a PG by at most one node
(as long as the caps themselves do not change).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

from common.layout import PARITY_FRAGMENTS, STRIPE_WIDTH
from placement.cluster_map import ClusterMap, Node, NodeState

# Failure-domain levels, outermost first.
LEVELS = ("zone", "rack", "host")


class InsufficientNodes(Exception):
    """No acting set satisfies the placement rules with the eligible nodes."""


# Per placement group: ``(node_id, position)`` of nodes that held a position of the stripe and left
# it, oldest departure first.
FormerPositions = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Placement:
    """Acting sets of every placement group plus each group's ``former_positions`` (see above)."""

    acting_sets: tuple[tuple[str, ...], ...]
    former_positions: tuple[FormerPositions, ...]


@dataclass(frozen=True)
class RuleStatus:
    """Whether the failure-domain rule can be met: ``level`` is the level it applies at (the
    outermost with at least 4 domains; ``"none"`` if no level has 4), ``satisfied`` whether a whole
    stripe fits under the caps there, ``detail`` a human-readable reason when it does not."""

    level: str
    satisfied: bool
    detail: str = ""


@dataclass(frozen=True)
class PlacementRules:
    """The caps one cluster's stripes are placed under.

    ``domain_level`` is the level (``zone``, ``rack`` or ``host``) at which ``max_per_domain``
    applies; ``max_per_host`` caps fragments per host (1 when every fragment gets its own host).
    """

    width: int
    domain_level: str
    max_per_domain: int
    max_per_host: int


def domain_of(node: Node, level: str) -> tuple[str, ...]:
    """Return the identity of ``node``'s domain at ``level`` (a rack is named within its zone)."""
    domain = node.failure_domain
    if level == "zone":
        return (domain.zone,)
    if level == "rack":
        return (domain.zone, domain.rack)
    if level == "host":
        return (domain.zone, domain.rack, domain.host)
    raise ValueError(f"unknown failure-domain level {level!r}")


def rendezvous_score(pg: int, node_id: str) -> int:
    """Return the stable 64-bit rendezvous weight of ``node_id`` for placement group ``pg``.

    BLAKE2b (8-byte digest) of ``"<pg>/<node_id>"``: identical in every process and Python version,
    unlike ``hash()``.
    """
    digest = hashlib.blake2b(f"{pg}/{node_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _eligible(nodes: Mapping[str, Node] | Iterable[Node]) -> list[Node]:
    """Nodes that may hold positions: not OUT and not draining, sorted by node id."""
    values = nodes.values() if isinstance(nodes, Mapping) else nodes
    return sorted((n for n in values if n.state != NodeState.OUT and not n.draining),
                  key=lambda n: n.node_id)


def _select(ranked: Sequence[Node], rules: PlacementRules) -> list[Node]:
    """Greedy: take nodes in ``ranked`` order while they keep both caps; stop at ``rules.width``."""
    per_domain: Counter[tuple[str, ...]] = Counter()
    per_host: Counter[tuple[str, ...]] = Counter()
    chosen: list[Node] = []
    for node in ranked:
        domain = domain_of(node, rules.domain_level)
        host = domain_of(node, "host")
        if per_domain[domain] >= rules.max_per_domain or per_host[host] >= rules.max_per_host:
            continue
        per_domain[domain] += 1
        per_host[host] += 1
        chosen.append(node)
        if len(chosen) == rules.width:
            break
    return chosen


def rule_level(
    nodes: Mapping[str, Node] | Iterable[Node],
    width: int = STRIPE_WIDTH,
    max_per_domain: int = PARITY_FRAGMENTS,
) -> str | None:
    """Return the level the failure-domain rule applies at: the outermost of ``LEVELS`` with at least
    ``ceil(width / max_per_domain)`` domains among the eligible (not OUT, not draining) nodes; None
    if none has."""
    eligible = _eligible(nodes)
    min_domains = math.ceil(width / max_per_domain)
    for level in LEVELS:
        if len({domain_of(n, level) for n in eligible}) >= min_domains:
            return level
    return None


def placement_rules(
    nodes: Mapping[str, Node] | Iterable[Node],
    width: int = STRIPE_WIDTH,
    max_per_domain: int = PARITY_FRAGMENTS,
) -> PlacementRules:
    """Choose the caps for a cluster (see the module docstring). ``nodes`` may include OUT nodes.

    Raises:
        InsufficientNodes: if fewer than ``width`` nodes are eligible, no level has at least
            ``ceil(width / max_per_domain)`` domains, or the domains of the rule's level (the
            outermost with that many) cannot hold ``width`` fragments at ``max_per_domain`` each.
            The message names the level and the domain sizes, and what the operator must do.
    """
    eligible = _eligible(nodes)
    if len(eligible) < width:
        raise InsufficientNodes(f"{len(eligible)} eligible nodes, a stripe needs {width}; add nodes")
    min_domains = math.ceil(width / max_per_domain)
    level = rule_level(eligible, width, max_per_domain)
    if level is None:
        raise InsufficientNodes(
            f"no failure-domain level has {min_domains} domains (at most {max_per_domain} of a stripe's "
            f"{width} fragments may share a domain); add nodes in new zones, racks or hosts"
        )
    host_count = len({domain_of(n, "host") for n in eligible})
    # The smallest per-host cap with which a whole stripe still fits: as even as possible.
    for max_per_host in range(math.ceil(width / host_count), width + 1):
        rules = PlacementRules(width, level, max_per_domain, max_per_host)
        if len(_select(eligible, rules)) == width:
            return rules
    sizes = Counter(domain_of(n, level) for n in eligible)
    listing = ", ".join(f"{'/'.join(d)}={c}" for d, c in sorted(sizes.items()))
    raise InsufficientNodes(
        f"{len(sizes)} {level}s can hold only {sum(min(max_per_domain, c) for c in sizes.values())} of a "
        f"stripe's {width} fragments at {max_per_domain} per {level} (eligible nodes per {level}: "
        f"{listing}); add nodes to the smaller {level}s so that losing one {level} cannot lose data"
    )


def rule_status(
    nodes: Mapping[str, Node] | Iterable[Node],
    width: int = STRIPE_WIDTH,
    max_per_domain: int = PARITY_FRAGMENTS,
) -> RuleStatus:
    """Report whether ``nodes`` can be placed under the failure-domain rule, and at which level."""
    level = rule_level(nodes, width, max_per_domain) or "none"
    try:
        placement_rules(nodes, width, max_per_domain)
    except InsufficientNodes as error:
        return RuleStatus(level, False, str(error))
    return RuleStatus(level, True)


def _rank(pg: int, eligible: Iterable[Node]) -> list[Node]:
    return sorted(eligible, key=lambda n: (rendezvous_score(pg, n.node_id), n.node_id), reverse=True)


def _acting_set(
    pg: int,
    eligible: Sequence[Node],
    rules: PlacementRules,
    previous: Sequence[str] | None,
    former: FormerPositions = (),
    known: Container[str] = (),
) -> tuple[tuple[str, ...], FormerPositions]:
    """Return ``(acting set, former positions)`` of ``pg``; ``known``: ids of every node in the map
    (former positions of nodes no longer known are forgotten)."""
    chosen = [n.node_id for n in _select(_rank(pg, eligible), rules)]
    if len(chosen) < rules.width:  # cannot happen for rules from placement_rules(eligible)
        raise InsufficientNodes(f"placement group {pg}: only {len(chosen)} nodes fit the rules")
    if previous is None or len(previous) != rules.width:
        return tuple(chosen), ()
    # Keep every fragment whose node is still chosen at its position.
    members = set(chosen)
    positions: list[str | None] = []
    for node_id in previous:
        positions.append(node_id if node_id in members and node_id not in positions else None)
    # A node chosen again takes back the position it held (it still stores that fragment index),
    # if that position is vacant; the latest holder of a position wins.
    for node_id, position in reversed(former):
        if (node_id in members and node_id not in positions and 0 <= position < rules.width
                and positions[position] is None):
            positions[position] = node_id
    # Other newly chosen nodes take the remaining vacated positions in rank order.
    newcomers = iter(n for n in chosen if n not in positions)
    acting = tuple(node_id if node_id is not None else next(newcomers) for node_id in positions)
    # Remember where each node that left the stripe was; forget nodes that are members again.
    history = {
        node_id: position for node_id, position in former
        if node_id not in acting and node_id in known and 0 <= position < rules.width
    }
    for position, node_id in enumerate(previous):
        if node_id not in acting:
            history.pop(node_id, None)  # re-insert last: it is now the latest departure
            history[node_id] = position
    return acting, tuple(history.items())


def compute_acting_set(
    pg: int,
    nodes: Mapping[str, Node] | Iterable[Node],
    width: int = STRIPE_WIDTH,
    max_per_domain: int = PARITY_FRAGMENTS,
) -> tuple[str, ...]:
    """Return the acting set (``width`` distinct node ids, fragment ``i`` on element ``i``) of ``pg``.

    ``nodes``: a node-id -> ``Node`` mapping or an iterable of ``Node``; OUT and draining nodes are
    skipped.
    Deterministic: the same nodes give the same answer in every process.

    Raises:
        InsufficientNodes: if no valid acting set exists.
    """
    rules = placement_rules(nodes, width, max_per_domain)
    return _acting_set(pg, _eligible(nodes), rules, None)[0]


def compute_placement(
    pg_count: int,
    nodes: Mapping[str, Node] | Iterable[Node],
    previous: ClusterMap | None = None,
    width: int = STRIPE_WIDTH,
    max_per_domain: int = PARITY_FRAGMENTS,
) -> Placement:
    """Return the acting sets and former positions of placement groups ``0 .. pg_count-1``.

    With a ``previous`` map (same ``pg_count``), each PG keeps every fragment position whose node
    is still chosen by rendezvous under the rules; a chosen node that held a position before (in
    ``previous.former_positions``) gets it back if it is vacant; only then do other newly chosen
    nodes fill vacated positions, in rank order. About ``1/N`` of all positions move when one of
    ``N`` nodes joins or leaves.

    Raises:
        InsufficientNodes: if no valid acting set exists (see ``placement_rules``).
        ValueError: if ``pg_count`` is not positive.
    """
    if pg_count <= 0:
        raise ValueError("pg_count must be positive")
    values = list(nodes.values() if isinstance(nodes, Mapping) else nodes)
    eligible = _eligible(values)
    known = {n.node_id for n in values}
    rules = placement_rules(eligible, width, max_per_domain)
    usable = previous if previous is not None and previous.pg_count == pg_count else None
    results = [
        _acting_set(pg, eligible, rules,
                    usable.acting_sets[pg] if usable else None,
                    usable.former_positions[pg] if usable else (), known)
        for pg in range(pg_count)
    ]
    return Placement(tuple(a for a, _ in results), tuple(f for _, f in results))


def compute_acting_sets(
    pg_count: int,
    nodes: Mapping[str, Node] | Iterable[Node],
    previous: ClusterMap | None = None,
    width: int = STRIPE_WIDTH,
    max_per_domain: int = PARITY_FRAGMENTS,
) -> tuple[tuple[str, ...], ...]:
    """Return the acting sets of placement groups ``0 .. pg_count-1`` (``compute_placement``
    without the former positions; pass a map built from ``compute_placement`` to keep them).

    Raises:
        InsufficientNodes: if no valid acting set exists.
        ValueError: if ``pg_count`` is not positive.
    """
    return compute_placement(pg_count, nodes, previous, width, max_per_domain).acting_sets
