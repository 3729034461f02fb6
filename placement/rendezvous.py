"""Deterministic placement of stripes: rendezvous hashing under the failure-domain rule.

Pure functions, no I/O. Each placement group ranks every eligible node (not OUT; DOWN nodes stay
eligible until they are OUT) by a stable hash of ``(pg, node_id)`` — rendezvous or
highest-random-weight hashing (Thaler & Ravishankar, "Using name-based mappings to increase hit
rates", IEEE/ACM ToN 1998) — and takes the best ``width`` nodes that keep two caps:

* the design brief's failure-domain rule: at most ``max_per_domain`` (m = 4) fragments of a stripe in
  any one domain at the outermost level (zone, then rack, then host) that has at least
  ``ceil(width / max_per_domain)`` (= 4) distinct domains and can hold a whole stripe under the cap;
* hosts as even as possible: at most ``c`` fragments per host, ``c`` the smallest cap with which a
  full stripe still fits (1 when there are at least ``width`` hosts).

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from common.layout import PARITY_FRAGMENTS, STRIPE_WIDTH
from placement.cluster_map import ClusterMap, Node, NodeState

# Failure-domain levels, outermost first.
LEVELS = ("zone", "rack", "host")


class InsufficientNodes(Exception):
    """No acting set satisfies the placement rules with the eligible nodes."""


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
    values = nodes.values() if isinstance(nodes, Mapping) else nodes
    return sorted((n for n in values if n.state != NodeState.OUT), key=lambda n: n.node_id)


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


def placement_rules(
    nodes: Mapping[str, Node] | Iterable[Node],
    width: int = STRIPE_WIDTH,
    max_per_domain: int = PARITY_FRAGMENTS,
) -> PlacementRules:
    """Choose the caps for a cluster (see the module docstring). ``nodes`` may include OUT nodes.

    Raises:
        InsufficientNodes: if no set of ``width`` eligible nodes keeps the failure-domain rule at
            any level.
    """
    eligible = _eligible(nodes)
    if len(eligible) < width:
        raise InsufficientNodes(f"{len(eligible)} eligible nodes, a stripe needs {width}")
    min_domains = math.ceil(width / max_per_domain)
    host_count = len({domain_of(n, "host") for n in eligible})
    for level in LEVELS:
        if len({domain_of(n, level) for n in eligible}) < min_domains:
            continue
        # The smallest per-host cap with which a whole stripe still fits: as even as possible.
        for max_per_host in range(math.ceil(width / host_count), width + 1):
            rules = PlacementRules(width, level, max_per_domain, max_per_host)
            if len(_select(eligible, rules)) == width:
                return rules
    raise InsufficientNodes(
        f"no {width} of {len(eligible)} eligible nodes keep at most {max_per_domain} fragments per "
        f"failure domain (need at least {min_domains} domains at some level)"
    )


def _rank(pg: int, eligible: Iterable[Node]) -> list[Node]:
    return sorted(eligible, key=lambda n: (rendezvous_score(pg, n.node_id), n.node_id), reverse=True)


def _acting_set(
    pg: int, eligible: Sequence[Node], rules: PlacementRules, previous: Sequence[str] | None
) -> tuple[str, ...]:
    chosen = [n.node_id for n in _select(_rank(pg, eligible), rules)]
    if len(chosen) < rules.width:  # cannot happen for rules from placement_rules(eligible)
        raise InsufficientNodes(f"placement group {pg}: only {len(chosen)} nodes fit the rules")
    if previous is None or len(previous) != rules.width:
        return tuple(chosen)
    # Keep every fragment whose node is still chosen at its position; the newly chosen nodes take
    # the vacated positions in rank order. Only fragments on nodes that left the set move.
    members = set(chosen)
    positions: list[str | None] = []
    for node_id in previous:
        positions.append(node_id if node_id in members and node_id not in positions else None)
    newcomers = iter(n for n in chosen if n not in positions)
    return tuple(node_id if node_id is not None else next(newcomers) for node_id in positions)


def compute_acting_set(
    pg: int,
    nodes: Mapping[str, Node] | Iterable[Node],
    width: int = STRIPE_WIDTH,
    max_per_domain: int = PARITY_FRAGMENTS,
) -> tuple[str, ...]:
    """Return the acting set (``width`` distinct node ids, fragment ``i`` on element ``i``) of ``pg``.

    ``nodes``: a node-id -> ``Node`` mapping or an iterable of ``Node``; OUT nodes are skipped.
    Deterministic: the same nodes give the same answer in every process.

    Raises:
        InsufficientNodes: if no valid acting set exists.
    """
    rules = placement_rules(nodes, width, max_per_domain)
    return _acting_set(pg, _eligible(nodes), rules, None)


def compute_acting_sets(
    pg_count: int,
    nodes: Mapping[str, Node] | Iterable[Node],
    previous: ClusterMap | None = None,
    width: int = STRIPE_WIDTH,
    max_per_domain: int = PARITY_FRAGMENTS,
) -> tuple[tuple[str, ...], ...]:
    """Return the acting sets of placement groups ``0 .. pg_count-1``.

    With a ``previous`` map (same ``pg_count``), each PG keeps every fragment position whose node
    is still chosen by rendezvous under the rules; only positions whose node is OUT, gone, or
    outranked by a joining node move, to the newly chosen nodes (about ``1/N`` of all positions
    when one of ``N`` nodes joins or leaves).

    Raises:
        InsufficientNodes: if no valid acting set exists.
        ValueError: if ``pg_count`` is not positive.
    """
    if pg_count <= 0:
        raise ValueError("pg_count must be positive")
    eligible = _eligible(nodes)
    rules = placement_rules(eligible, width, max_per_domain)
    usable_previous = previous is not None and previous.pg_count == pg_count
    return tuple(
        _acting_set(pg, eligible, rules, previous.acting_sets[pg] if usable_previous and previous else None)
        for pg in range(pg_count)
    )
