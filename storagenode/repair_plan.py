"""What one storage node must repair in one placement group, decided from fragment listings alone.

Pure: no I/O, no clock, no randomness (the repair agent, ``storagenode.repair``, does the fetching
and storing). Each node repairs only its own positions of a placement group's acting set: for a
node at position ``p`` of PG ``pg``, every chunk seen in any listing of ``pg`` must have a valid
fragment ``p`` on this node.

Definitions used throughout (docs/architecture.md, repair; /work/helper-notes/issue3-plan.md §2):

* A listing is what ``ListFragments(pg)`` returned for one node; ``None`` when the node could not
  be listed. Only UP nodes are listed (``listing_targets``): a DOWN node's fragments count as
  missing until the node is back or OUT (placement then gives its positions to others).
* A chunk's ``chunk_size`` is the value most of its entries carry whose ``length`` matches it. An
  entry is **valid** when its ``chunk_size`` is that value and its ``length`` is
  ``fragment_length(chunk_size)``; other entries are **stale**: never a source, and this node's own
  stale entry at its position is rebuilt (the put replaces it).
* ``surviving`` = distinct fragment indexes of the chunk held validly anywhere (acting members,
  former holders, strays on listed nodes). With fewer than 10 and no copy of the missing fragment
  elsewhere, the stripe is **unrecoverable**: counted and skipped (usually the leftover of a failed
  write, which garbage collection removes).
* A placement group may be left unlisted when the members' summaries (per fragment index: a
  count and a digest of (chunk hash, chunk size, length), ``FragmentEngine.summarize_by_index``)
  show every UP position complete and nothing misplaced (``needs_listing``); its health then
  follows from the map alone (``clean_health``).
* A **misplaced** fragment is one this node holds at an index that is not its position in the
  current acting set. It may be deleted once the current holder of that position lists the same
  chunk and index with the same checksum (or this node's copy is stale and the holder's is valid).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from common.erasure_code import fragment_bytes
from common.layout import DATA_FRAGMENTS
from placement.cluster_map import ClusterMap, NodeState
from storagenode.records import FragmentEntry

#: ``PlacementGroupHealth.stripes_by_missing`` buckets, as the metric labels them: 1..4, then "5+".
MISSING_BUCKETS = ("1", "2", "3", "4", "5+")

#: One node's summary of one placement group: fragment index -> (fragments, 16-byte digest), as
#: ``FragmentEngine.summarize_by_index`` and ``StorageNodeClient.summarize_placement_groups`` give
#: it (an index holding nothing is absent).
PositionSummaries = Mapping[int, tuple[int, bytes]]
_EMPTY_SUMMARY = (0, bytes(16))


@dataclass(frozen=True)
class RepairTask:
    """Put a valid fragment ``index`` of chunk ``chunk_hash`` (``chunk_size`` bytes) on this node.

    ``fragment_length`` is the expected fragment length in bytes. ``copy_from`` names UP nodes that
    hold a valid copy of this very fragment (former holders first): copying one fetches
    ``fragment_length`` bytes. Otherwise the fragment is rebuilt from 10 of ``sources``:
    ``(index, holders)`` pairs of the chunk's other valid fragments, lowest index first, each
    ``holders`` acting-set holder first (the node itself may be among them: a misplaced copy it
    holds). ``surviving`` is the chunk's distinct valid fragment indexes anywhere (the priority:
    fewest first). ``reason`` is ``"missing"`` (no entry here) or ``"stale"`` (wrong length or
    chunk size here).
    """

    pg: int
    chunk_hash: bytes
    index: int
    chunk_size: int
    fragment_length: int
    surviving: int
    copy_from: tuple[str, ...]
    sources: tuple[tuple[int, tuple[str, ...]], ...]
    reason: Literal["missing", "stale"]

    @property
    def method(self) -> Literal["copy", "rebuild"]:
        """``"copy"`` when a copy of the fragment exists elsewhere, else ``"rebuild"``."""
        return "copy" if self.copy_from else "rebuild"

    @property
    def fetch_bytes(self) -> int:
        """Bytes the task fetches: one fragment for a copy, ten for a rebuild."""
        return self.fragment_length * (1 if self.copy_from else DATA_FRAGMENTS)

    def priority(self) -> tuple[int, int, bytes, int]:
        """Sort key: fewest surviving fragments first, then placement group, chunk, index."""
        return (self.surviving, self.pg, self.chunk_hash, self.index)


@dataclass(frozen=True)
class MisplacedFragment:
    """A fragment this node holds at ``index`` of ``pg`` whose current holder is ``holder``.

    ``confirmed``: the holder lists the same chunk and index with the same ``checksum`` (or this
    copy is stale and the holder's copy is valid), so this node may delete its copy.
    ``written_at_ms`` is when this node wrote its copy (Unix ms, 0 unknown), for a conditional delete.
    """

    pg: int
    chunk_hash: bytes
    index: int
    checksum: int
    holder: str
    confirmed: bool
    written_at_ms: int = 0


@dataclass(frozen=True)
class PlacementGroupHealth:
    """Redundancy of one placement group's stripes, the same whichever member computes it.

    ``stripes_by_missing[k]`` counts recoverable stripes with ``k`` (0..14) fragment indexes held
    validly by no listed node (a DOWN or unlisted node's fragments count as missing);
    ``unrecoverable`` counts stripes with fewer than 10 valid fragments and no way to repair them
    (not in ``stripes_by_missing``).
    """

    pg: int
    stripes_by_missing: tuple[int, ...]
    unrecoverable: int

    def degraded_buckets(self) -> dict[str, int]:
        """Degraded stripes per ``MISSING_BUCKETS`` label (``"1"``..``"4"``, ``"5+"``)."""
        buckets = dict.fromkeys(MISSING_BUCKETS, 0)
        for missing, count in enumerate(self.stripes_by_missing):
            if missing >= 1:
                buckets[str(missing) if missing < 5 else "5+"] += count
        return buckets


@dataclass(frozen=True)
class PlacementGroupPlan:
    """What ``plan_placement_group`` decided: this node's ``tasks`` (priority order), its
    ``misplaced`` fragments, the PG's ``health``, and ``unrecoverable_chunks`` (skipped here)."""

    tasks: list[RepairTask]
    misplaced: list[MisplacedFragment]
    health: PlacementGroupHealth
    unrecoverable_chunks: list[bytes] = field(default_factory=list)


def primary_of(cluster_map: ClusterMap, pg: int) -> str | None:
    """The first UP node in ``pg``'s acting set (it reports the PG-level gauges), or None.

    Raises:
        IndexError: ``pg`` is outside the map.
    """
    for node_id in cluster_map.acting_set(pg):
        if cluster_map.nodes[node_id].state == NodeState.UP:
            return node_id
    return None


def listing_targets(cluster_map: ClusterMap, pg: int) -> list[str]:
    """Node ids whose listing of ``pg`` the plan needs: UP acting members in position order, then
    UP former holders (oldest departure first), each once.

    Raises:
        IndexError: ``pg`` is outside the map.
    """
    targets: list[str] = []
    candidates = [*cluster_map.acting_set(pg), *(node_id for node_id, _ in cluster_map.former_positions[pg])]
    for node_id in candidates:
        if node_id not in targets and cluster_map.nodes[node_id].state == NodeState.UP:
            targets.append(node_id)
    return targets


def needs_listing(
    pg: int,
    cluster_map: ClusterMap,
    node_id: str,
    own: PositionSummaries,
    peers: Mapping[str, PositionSummaries | None],
) -> bool:
    """Whether ``node_id`` must list placement group ``pg`` on every ``listing_targets`` node and
    plan it, rather than take it as clean from the summaries.

    ``own`` is this node's summary of ``pg``; ``peers`` maps each other node of
    ``listing_targets(cluster_map, pg)`` to its summary (``{}`` when it holds nothing there,
    ``None`` when it could not be asked). The placement group is clean, and False returned, only when:

    * every fragment this node holds is at one of its positions (nothing misplaced here), and
    * every other UP acting member holds fragments only at its own positions, each with exactly
      this node's (fragments, digest) at this node's position (same chunks, same chunk sizes and
      lengths), and
    * every UP former holder that is no longer an acting member holds nothing in ``pg``.

    Then every chunk of the PG has a valid fragment at every UP position and nothing is left to
    copy, rebuild or delete. DOWN members are not asked: their positions count as missing
    (``clean_health``), and nothing can be done for them until they are back or OUT. Digests
    compare multisets of (chunk hash, chunk size, length); a collision (2^-128) is the only way
    this misses work. An unreachable peer (``None``) makes the PG need a listing.

    Raises:
        IndexError: ``pg`` is outside the map.
    """
    acting = cluster_map.acting_set(pg)
    my_positions = {position for position, holder in enumerate(acting) if holder == node_id}
    if any(index not in my_positions for index in own):
        return True
    reference = {own.get(position, _EMPTY_SUMMARY) for position in my_positions}
    if len(reference) > 1:
        return True
    expected = next(iter(reference), _EMPTY_SUMMARY)
    for target in listing_targets(cluster_map, pg):
        if target == node_id:
            continue
        summary = peers.get(target)
        if summary is None:
            return True
        positions = {position for position, holder in enumerate(acting) if holder == target}
        if any(index not in positions for index in summary):
            return True
        if any(summary.get(position, _EMPTY_SUMMARY) != expected for position in positions):
            return True
    return False


def clean_health(pg: int, cluster_map: ClusterMap, stripes: int) -> PlacementGroupHealth:
    """The health ``plan_placement_group`` would report for a placement group ``needs_listing``
    found clean, holding ``stripes`` chunks at each UP position, without listing it: every stripe
    misses exactly the positions of acting members that are not UP (unrecoverable when fewer than
    10 positions are left).

    Raises:
        IndexError: ``pg`` is outside the map.
    """
    acting = cluster_map.acting_set(pg)
    missing = sum(
        1 for holder in acting if holder not in cluster_map.nodes or cluster_map.nodes[holder].state != NodeState.UP
    )
    stripes_by_missing = [0] * (len(acting) + 1)
    unrecoverable = 0
    if len(acting) - missing < DATA_FRAGMENTS:
        unrecoverable = stripes
    else:
        stripes_by_missing[missing] = stripes
    return PlacementGroupHealth(pg=pg, stripes_by_missing=tuple(stripes_by_missing), unrecoverable=unrecoverable)


def _chunk_size_of(entries: Sequence[FragmentEntry], fragment_length: Callable[[int], int]) -> int | None:
    """The chunk size most entries agree on, counting only entries whose length matches it."""
    votes: Counter[int] = Counter()
    for entry in entries:
        if entry.chunk_size > 0 and entry.length == fragment_length(entry.chunk_size):
            votes[entry.chunk_size] += 1
    if not votes:
        return None
    # Most votes; ties go to the smaller size so that every node decides alike.
    return min(votes, key=lambda size: (-votes[size], size))


def plan_placement_group(
    pg: int,
    cluster_map: ClusterMap,
    node_id: str,
    listings: Mapping[str, Sequence[FragmentEntry] | None],
    fragment_length: Callable[[int], int] = fragment_bytes,
) -> PlacementGroupPlan:
    """Decide this node's repair tasks and misplaced fragments in placement group ``pg``.

    ``listings`` maps node id -> that node's listing of ``pg`` (``None``: could not be listed);
    ``node_id``'s own listing must be present. Listings of nodes the map does not know are ignored.
    ``fragment_length(chunk_size)`` gives a fragment's expected length in bytes (default the real
    codec's). See the module docstring for the rules.

    Raises:
        IndexError: ``pg`` is outside the map.
        KeyError: ``listings`` lacks ``node_id``.
    """
    acting = cluster_map.acting_set(pg)
    width = cluster_map.stripe_width
    own_listing = listings[node_id]
    my_positions = [position for position, holder in enumerate(acting) if holder == node_id]
    former_rank = {holder: rank for rank, (holder, _) in enumerate(cluster_map.former_positions[pg])}

    # chunk -> [(node, entry)] over every listed, known node.
    by_chunk: dict[bytes, list[tuple[str, FragmentEntry]]] = {}
    for listed_node, listing in listings.items():
        if listing is None or listed_node not in cluster_map.nodes:
            continue
        for entry in listing:
            if 0 <= entry.index < width:
                by_chunk.setdefault(bytes(entry.chunk_hash), []).append((listed_node, entry))

    def holder_order(holder: str, index: int) -> tuple[int, int, str]:
        # The acting holder of the index first, then former holders (oldest first), then strays.
        if acting[index] == holder:
            return (0, 0, holder)
        if holder in former_rank:
            return (1, former_rank[holder], holder)
        return (2, 0, holder)

    def ordered_holders(holders: Mapping[str, FragmentEntry], index: int) -> tuple[str, ...]:
        return tuple(sorted(holders, key=lambda holder: holder_order(holder, index)))

    tasks: list[RepairTask] = []
    unrecoverable_chunks: list[bytes] = []
    stripes_by_missing = [0] * (width + 1)
    valid_by_chunk: dict[bytes, dict[int, dict[str, FragmentEntry]]] = {}
    for chunk_hash, seen in sorted(by_chunk.items()):
        chunk_size = _chunk_size_of([entry for _, entry in seen], fragment_length)
        valid: dict[int, dict[str, FragmentEntry]] = {}  # index -> holder -> entry
        if chunk_size is not None:
            expected = fragment_length(chunk_size)
            for holder, entry in seen:
                if entry.chunk_size == chunk_size and entry.length == expected:
                    valid.setdefault(entry.index, {})[holder] = entry
        valid_by_chunk[chunk_hash] = valid
        surviving = len(valid)
        if chunk_size is None or surviving < DATA_FRAGMENTS:
            unrecoverable_chunks.append(chunk_hash)
            continue
        stripes_by_missing[width - surviving] += 1
        expected = fragment_length(chunk_size)
        for position in my_positions:
            if node_id in valid.get(position, {}):
                continue
            own = [e for e in own_listing or () if bytes(e.chunk_hash) == chunk_hash and e.index == position]
            copy_from = ordered_holders(valid.get(position, {}), position)
            sources = tuple(
                (index, ordered_holders(holders, index))
                for index, holders in sorted(valid.items())
                if index != position
            )
            tasks.append(RepairTask(
                pg=pg, chunk_hash=chunk_hash, index=position, chunk_size=chunk_size, fragment_length=expected,
                surviving=surviving, copy_from=copy_from, sources=sources,
                reason="stale" if own else "missing",
            ))

    misplaced: list[MisplacedFragment] = []
    for entry in own_listing or ():
        if not 0 <= entry.index < width or acting[entry.index] == node_id:
            continue
        holder = acting[entry.index]
        chunk_hash = bytes(entry.chunk_hash)
        holder_entries = valid_by_chunk.get(chunk_hash, {}).get(entry.index, {})
        holder_entry = holder_entries.get(holder)
        mine_valid = node_id in holder_entries
        confirmed = holder_entry is not None and (holder_entry.checksum == entry.checksum or not mine_valid)
        misplaced.append(MisplacedFragment(
            pg=pg, chunk_hash=chunk_hash, index=entry.index, checksum=entry.checksum, holder=holder,
            confirmed=confirmed, written_at_ms=entry.written_at_ms,
        ))

    tasks.sort(key=RepairTask.priority)
    health = PlacementGroupHealth(
        pg=pg, stripes_by_missing=tuple(stripes_by_missing), unrecoverable=len(unrecoverable_chunks)
    )
    return PlacementGroupPlan(
        tasks=tasks, misplaced=misplaced, health=health, unrecoverable_chunks=unrecoverable_chunks
    )
