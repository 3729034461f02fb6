"""Deterministic placement of stripes: rendezvous hashing under the failure-domain rule, balanced.

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

Domains nest (a host lies in one rack, a rack in one zone), so these caps form a laminar matroid:
the greedy choice in rank order is the maximum-weight valid set, whether a valid set exists does
not depend on the order, and any partial stripe that keeps the caps can be completed (Edmonds,
"Matroids and the greedy algorithm", 1971).

Rendezvous alone leaves node position counts uneven (binomial: 19 nodes and 64 PGs gave 42..54
around a mean of 47.2), so ``compute_placement`` balances across placement groups. With no usable
previous map it starts from each group's rendezvous choice; with one it starts from the previous
members (so history, not the hash, decides who keeps what), gives nodes coming back from OUT or a
drain their former positions, and fills vacancies with the least-loaded nodes that fit. Then it
moves single memberships from nodes above ``balance_bounds`` (mean ± ``BALANCE_TOLERANCE``) to
less-loaded nodes and into nodes below them, each move keeping the caps, until every node is
within the bounds or no move helps (a local search in the spirit of the balanced allocations used
by Ceph's upmap balancer; each move lowers the sum of squared counts, so it ends). Nodes within
the bounds are left alone: a balanced previous map is kept, a joining node takes about its share
from the most loaded nodes, and an OUT or draining node's positions are the only ones that move.

Positions: a node keeps its position while it stays a member, and a node that left a stripe (OUT,
draining, or moved away by balancing) is remembered with the position it held
(``former_positions``): when it is a member again it gets that position back if vacant, so the
fragments it still stores are the right ones.
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

# Balancing keeps every node's position count within this fraction of the mean where the failure
# domains allow it. Issue 3 asks for 10%; aiming at 5% leaves room for a join or a departure
# before any node drifts past 10%.
BALANCE_TOLERANCE = 0.05


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


def balance_bounds(mean: float, tolerance: float = BALANCE_TOLERANCE) -> tuple[int, int]:
    """Return ``(low, high)``, the position counts balancing keeps every node within: ``mean``
    (positions per eligible node) ± ``tolerance`` (a fraction), rounded inwards, but never
    narrower than ``floor(mean) .. ceil(mean)`` (integer counts cannot do better)."""
    low = min(math.floor(mean), math.ceil(mean * (1 - tolerance)))
    high = max(math.ceil(mean), math.floor(mean * (1 + tolerance)))
    return low, high


def _rank(pg: int, eligible: Iterable[Node]) -> list[Node]:
    return sorted(eligible, key=lambda n: (rendezvous_score(pg, n.node_id), n.node_id), reverse=True)


class _Stripes:
    """The members of every placement group while ``compute_placement`` chooses them, with the
    counts the rule checks need: positions per node, and per stripe fragments per rule-level
    domain and per host."""

    def __init__(self, pg_count: int, eligible: Sequence[Node], rules: PlacementRules) -> None:
        self.rules = rules
        self.domain = {n.node_id: domain_of(n, rules.domain_level) for n in eligible}
        self.host = {n.node_id: domain_of(n, "host") for n in eligible}
        self.members: list[set[str]] = [set() for _ in range(pg_count)]
        self.per_domain: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(pg_count)]
        self.per_host: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(pg_count)]
        self.load = {n.node_id: 0 for n in eligible}
        self.groups: dict[str, set[int]] = {n.node_id: set() for n in eligible}
        # Groups in which each domain / host is below its cap: lets ``movable_groups`` find a
        # pair's possible moves with set operations instead of checking group by group.
        every_group = range(pg_count)
        self.domain_open = {domain: set(every_group) for domain in self.domain.values()}
        self.host_open = {host: set(every_group) for host in self.host.values()}

    def fits(self, pg: int, node_id: str, replacing: str | None = None) -> bool:
        """Whether ``node_id`` may join ``pg``'s stripe (in place of member ``replacing``, if given)
        without breaking the per-domain or per-host cap."""
        if node_id in self.members[pg]:
            return False
        domain, host = self.domain[node_id], self.host[node_id]
        if ((replacing is None or self.domain[replacing] != domain)
                and self.per_domain[pg][domain] >= self.rules.max_per_domain):
            return False
        return ((replacing is not None and self.host[replacing] == host)
                or self.per_host[pg][host] < self.rules.max_per_host)

    def movable_groups(self, source: str, target: str) -> set[int]:
        """The groups in which ``target`` may take ``source``'s membership under the caps (the same
        answer as ``fits(pg, target, source)`` for each group holding ``source``)."""
        groups = self.groups[source] - self.groups[target]
        if self.domain[target] != self.domain[source]:
            groups &= self.domain_open[self.domain[target]]
        if self.host[target] != self.host[source]:
            groups &= self.host_open[self.host[target]]
        return groups

    def add(self, pg: int, node_id: str) -> None:
        domain, host = self.domain[node_id], self.host[node_id]
        self.members[pg].add(node_id)
        self.per_domain[pg][domain] += 1
        if self.per_domain[pg][domain] >= self.rules.max_per_domain:
            self.domain_open[domain].discard(pg)
        self.per_host[pg][host] += 1
        if self.per_host[pg][host] >= self.rules.max_per_host:
            self.host_open[host].discard(pg)
        self.load[node_id] += 1
        self.groups[node_id].add(pg)

    def remove(self, pg: int, node_id: str) -> None:
        domain, host = self.domain[node_id], self.host[node_id]
        self.members[pg].remove(node_id)
        self.per_domain[pg][domain] -= 1
        if self.per_domain[pg][domain] < self.rules.max_per_domain:
            self.domain_open[domain].add(pg)
        self.per_host[pg][host] -= 1
        if self.per_host[pg][host] < self.rules.max_per_host:
            self.host_open[host].add(pg)
        self.load[node_id] -= 1
        self.groups[node_id].remove(pg)

    def move(self, pg: int, source: str, target: str) -> None:
        """Give ``source``'s membership of ``pg`` to ``target`` (checked by the caller with ``fits``)."""
        self.remove(pg, source)
        self.add(pg, target)


Scores = list[dict[str, int]]  # per placement group: node id -> rendezvous score


def _keep_previous_members(stripes: _Stripes, eligible: Sequence[Node], scores: Scores,
                           previous: ClusterMap) -> None:
    """Keep every previous member that is still eligible; if the caps changed, keep the best
    rendezvous-ranked subset of them that fits (greedy: the most that can be kept)."""
    for pg, acting in enumerate(previous.acting_sets):
        stayed = [n for n in eligible if n.node_id in acting]
        stayed.sort(key=lambda n: (scores[pg][n.node_id], n.node_id), reverse=True)
        for node in _select(stayed, stripes.rules):
            stripes.add(pg, node.node_id)


def _restore_returning(stripes: _Stripes, previous: ClusterMap, returning: Container[str],
                       bounds: tuple[int, int]) -> None:
    """Give nodes coming back (OUT or draining in ``previous``, eligible now) their former
    positions, latest departure first: a vacant one if it fits the caps, one held by a stand-in if
    the node can replace it under the caps and neither count leaves ``bounds`` (or the move evens
    the two counts). Repeated until nothing changes, since one restoration can make another fit."""
    low, high = bounds
    width = stripes.rules.width
    restored: list[set[int]] = [set() for _ in previous.acting_sets]
    changed = True
    while changed:
        changed = False
        for pg, (acting, former) in enumerate(zip(previous.acting_sets, previous.former_positions, strict=True)):
            members = stripes.members[pg]
            for node_id, position in reversed(former):
                if (node_id not in returning or node_id in members or not 0 <= position < len(acting)
                        or position in restored[pg] or stripes.load[node_id] + 1 > high):
                    continue
                holder = acting[position] if acting[position] in members else None
                if holder is None:
                    if len(members) >= width or not stripes.fits(pg, node_id):
                        continue
                    stripes.add(pg, node_id)
                else:
                    evens = stripes.load[holder] >= stripes.load[node_id] + 2
                    if not (evens or stripes.load[holder] - 1 >= low) or not stripes.fits(pg, node_id, holder):
                        continue
                    stripes.move(pg, holder, node_id)
                restored[pg].add(position)
                changed = True


def _fill_vacancies(stripes: _Stripes, scores: Scores) -> None:
    """Fill every stripe to full width, each vacancy with the least-loaded node that fits the caps
    (ties: best rendezvous rank). The caps form a matroid, so any partial stripe that fits can be
    completed (see the module docstring).

    Raises:
        InsufficientNodes: if a stripe cannot be completed (not for rules from ``placement_rules``).
    """
    width = stripes.rules.width
    for pg, members in enumerate(stripes.members):
        if len(members) == width:
            continue
        candidates = sorted(stripes.load, key=lambda n: (stripes.load[n], -scores[pg][n], n))
        for node_id in candidates:
            if len(members) == width:
                break
            if stripes.fits(pg, node_id):
                stripes.add(pg, node_id)
        if len(members) < width:
            raise InsufficientNodes(f"placement group {pg}: only {len(members)} nodes fit the rules")


def _best_group(stripes: _Stripes, source: str, target: str, scores: Scores,
                stored: Sequence[Container[str]], former: Sequence[Container[str]]) -> int | None:
    """The placement group in which ``target`` should take ``source``'s membership, or None if no
    such move fits the caps. Preferred, in order: moves that copy no more fragments than before
    (``stored[pg]``: the previous members), moves to a node that held a position there before
    (``former[pg]``), moves rendezvous ranks best (target's score most above source's), lowest pg."""
    best: tuple[int, int, int, int] | None = None
    for pg in stripes.movable_groups(source, target):
        cost = (target not in stored[pg]) - (source not in stored[pg])
        # Not the source's score: positions follow rank in a first map, so that would pick the
        # source's last (parity) positions and leave a joining node without data fragments.
        key = (cost, target not in former[pg], -scores[pg][target], pg)
        if best is None or key < best:
            best = key
    return None if best is None else best[3]


def _balance(stripes: _Stripes, scores: Scores, bounds: tuple[int, int],
             stored: Sequence[Container[str]], former: Sequence[Container[str]]) -> None:
    """Move memberships until every node's position count is within ``bounds`` or no move can help.

    Each step takes a node above ``bounds`` (most loaded first) and gives one of its memberships to
    the least-loaded node that can take it, or else takes a node below ``bounds`` (least loaded
    first) and gives it a membership of the most-loaded node that can give one; the group is chosen
    by ``_best_group``. Every move is between counts at least 2 apart, so the sum of squared counts
    falls with each move and the loop ends. Nodes already within ``bounds`` are never touched for
    their own sake, so a balanced previous map is kept as it is. Deterministic: candidates are
    ordered by count, then node id.
    """
    low, high = bounds
    load = stripes.load
    # source -> targets that cannot take any of its memberships. Whether a pair can move depends
    # only on the groups holding the source, so a move in group g forgets the entries of g's
    # members (before and after the move); without this, domains that cannot even out (a zone
    # with too many nodes) make every step re-scan the same impossible pairs.
    stuck: dict[str, set[str]] = {node_id: set() for node_id in load}

    def try_pair(source: str, target: str) -> tuple[int, str, str] | None:
        if target in stuck[source]:
            return None
        pg = _best_group(stripes, source, target, scores, stored, former)
        if pg is None:
            stuck[source].add(target)
            return None
        return pg, source, target

    while True:
        by_load = sorted(load, key=lambda n: (load[n], n))
        move = None
        for source in reversed(by_load):
            if load[source] <= high:
                break
            for target in by_load:
                if load[target] > load[source] - 2:
                    break
                move = try_pair(source, target)
                if move is not None:
                    break
            if move is not None:
                break
        if move is None:
            for target in by_load:
                if load[target] >= low:
                    break
                for source in reversed(by_load):
                    if load[source] < load[target] + 2:
                        break
                    move = try_pair(source, target)
                    if move is not None:
                        break
                if move is not None:
                    break
        if move is None:
            return
        pg, source, target = move
        stripes.move(pg, source, target)
        for member in (*stripes.members[pg], source):
            stuck[member].clear()


def _positions(
    chosen: Sequence[str],
    width: int,
    previous: Sequence[str] | None,
    former: FormerPositions = (),
    known: Container[str] = (),
) -> tuple[tuple[str, ...], FormerPositions]:
    """Order the members ``chosen`` (best rendezvous rank first) into an acting set; return
    ``(acting set, former positions)``. ``known``: ids of every node in the map (former positions
    of nodes no longer known are forgotten)."""
    if previous is None or len(previous) != width:
        return tuple(chosen), ()
    # Keep every fragment whose node is still chosen at its position.
    members = set(chosen)
    positions: list[str | None] = []
    for node_id in previous:
        positions.append(node_id if node_id in members and node_id not in positions else None)
    # A node chosen again takes back the position it held (it still stores that fragment index),
    # if that position is vacant; the latest holder of a position wins.
    for node_id, position in reversed(former):
        if (node_id in members and node_id not in positions and 0 <= position < width
                and positions[position] is None):
            positions[position] = node_id
    # Other newly chosen nodes take the remaining vacated positions in rank order.
    newcomers = iter(n for n in chosen if n not in positions)
    acting = tuple(node_id if node_id is not None else next(newcomers) for node_id in positions)
    # Remember where each node that left the stripe was; forget nodes that are members again.
    history = {
        node_id: position for node_id, position in former
        if node_id not in acting and node_id in known and 0 <= position < width
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
    """Return the plain rendezvous acting set (``width`` distinct node ids, fragment ``i`` on
    element ``i``, best rank first) of ``pg``, without balancing or history: what
    ``compute_placement`` starts from for a first map, not necessarily what it publishes.

    ``nodes``: a node-id -> ``Node`` mapping or an iterable of ``Node``; OUT and draining nodes are
    skipped.
    Deterministic: the same nodes give the same answer in every process.

    Raises:
        InsufficientNodes: if no valid acting set exists.
    """
    rules = placement_rules(nodes, width, max_per_domain)
    chosen = _select(_rank(pg, _eligible(nodes)), rules)
    if len(chosen) < width:  # cannot happen for rules from placement_rules(nodes)
        raise InsufficientNodes(f"placement group {pg}: only {len(chosen)} nodes fit the rules")
    return tuple(n.node_id for n in chosen)


def compute_placement(
    pg_count: int,
    nodes: Mapping[str, Node] | Iterable[Node],
    previous: ClusterMap | None = None,
    width: int = STRIPE_WIDTH,
    max_per_domain: int = PARITY_FRAGMENTS,
) -> Placement:
    """Return the balanced acting sets and former positions of placement groups ``0 .. pg_count-1``.

    Members: without a usable ``previous`` map (None, or another ``pg_count``), each PG starts from
    its rendezvous choice. With one, each PG keeps its previous members that are still eligible
    (the best-ranked subset that fits if the caps changed); nodes coming back (OUT or draining in
    ``previous``) take back their former positions, from vacancies or from stand-ins, while counts
    stay within the balance bounds; remaining vacancies go to the least-loaded node that fits. Then
    ``_balance`` moves single memberships off nodes above ``balance_bounds(width * pg_count / N)``
    (N eligible nodes; ±5%) and onto nodes below, each between counts at least 2 apart and never
    breaking the caps, until every node is within the bounds or no move can help; it prefers moves
    that copy nothing new, then moves back to former holders, then groups ranking the receiver
    highest. So a joining node takes about its share (``width * pg_count / N`` positions; measured
    0.95-0.98 of it, all from other nodes to it, for 15-40 nodes in distinct zones), an OUT or
    draining node's positions are exactly the ones that move, and with no membership change
    nothing moves (a balanced previous map is kept as it is). Where the domains cannot hold an even
    spread (a zone with more than ``N * max_per_domain / width`` nodes), counts stay uneven across
    domains but the rule always holds.

    Positions: a kept node keeps its position; a member that held a position before (in
    ``previous.former_positions``) gets it back if it is vacant (latest holder wins); other new
    members fill the remaining vacated positions in rank order; every node leaving a stripe is
    remembered with its position. In a first map positions follow rank, a node balancing moved in
    taking the slot of the node it replaced (data and parity positions stay evenly spread).

    Pure and deterministic: a function of ``(pg_count, nodes, previous)`` only (node order does not
    matter). Cost: ``pg_count * N`` hashes plus set operations per move; about 0.05 s for 256 PGs
    and 40 nodes, 0.3 s for 1024 PGs and 100 nodes, up to 1 s for 1024 PGs in very uneven zones.

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
    if usable is not None and usable.stripe_width != width:
        usable = None
    scores: Scores = [{n.node_id: rendezvous_score(pg, n.node_id) for n in eligible} for pg in range(pg_count)]
    bounds = balance_bounds(width * pg_count / len(eligible))
    stripes = _Stripes(pg_count, eligible, rules)
    rendezvous_choice: list[tuple[str, ...]] = []
    if usable is None:
        for pg in range(pg_count):
            ranked = sorted(eligible, key=lambda n: (scores[pg][n.node_id], n.node_id), reverse=True)
            rendezvous_choice.append(tuple(n.node_id for n in _select(ranked, rules)))
            for node_id in rendezvous_choice[-1]:
                stripes.add(pg, node_id)
        stored: list[frozenset[str]] = [frozenset()] * pg_count
        former_holders: list[frozenset[str]] = [frozenset()] * pg_count
    else:
        _keep_previous_members(stripes, eligible, scores, usable)
        returning = {
            n.node_id for n in eligible
            if n.node_id in usable.nodes
            and (usable.nodes[n.node_id].state == NodeState.OUT or usable.nodes[n.node_id].draining)
        }
        if returning:
            _restore_returning(stripes, usable, returning, bounds)
        stored = [frozenset(acting) for acting in usable.acting_sets]
        former_holders = [frozenset(n for n, _ in entries) for entries in usable.former_positions]
    _fill_vacancies(stripes, scores)
    _balance(stripes, scores, bounds, stored, former_holders)
    acting_sets: list[tuple[str, ...]] = []
    former_positions: list[FormerPositions] = []
    for pg, members in enumerate(stripes.members):
        chosen = sorted(members, key=lambda n: (scores[pg][n], n), reverse=True)
        if usable is None:
            # A first map: a node balancing moved in takes the slot of the node it replaced, so
            # data and parity positions stay as evenly spread as in the rendezvous choice.
            acting, _ = _positions(chosen, width, rendezvous_choice[pg])
            former: FormerPositions = ()
        else:
            acting, former = _positions(chosen, width, usable.acting_sets[pg], usable.former_positions[pg], known)
        acting_sets.append(acting)
        former_positions.append(former)
    return Placement(tuple(acting_sets), tuple(former_positions))


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
