"""storagenode.repair_plan: the pure decisions of repair, from hand-built maps and listings (no I/O);
and the repair agent's token bucket on a fake clock."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
from collections.abc import Iterable, Mapping, Sequence

import pytest

from common.erasure_code import fragment_bytes
from common.layout import STRIPE_WIDTH
from placement.cluster_map import ClusterMap, FailureDomain, Node, NodeState
from storagenode.engine import summary_item
from storagenode.records import FragmentEntry
from storagenode.repair import TokenBucket
from storagenode.repair_plan import (
    PlacementGroupHealth,
    PlacementGroupPlan,
    _chunk_size_of,
    clean_health,
    listing_targets,
    needs_listing,
    plan_placement_group,
    primary_of,
)

CHUNK_SIZE = 100_000
LENGTH = fragment_bytes(CHUNK_SIZE)
NODES = [f"node-{i:02d}" for i in range(17)]
ACTING = tuple(NODES[:STRIPE_WIDTH])  # pg 0: node-00 at 0 .. node-13 at 13
ME = "node-05"
MY_POSITION = 5


def chunk(seed: int) -> bytes:
    return hashlib.sha256(seed.to_bytes(4, "big")).digest()


def make_map(
    states: Mapping[str, NodeState] | None = None,
    acting: Sequence[str] = ACTING,
    former: Iterable[tuple[str, int]] = (),
) -> ClusterMap:
    states = states or {}
    nodes = {
        node_id: Node(node_id, f"127.0.0.1:{10000 + n}", FailureDomain("z", "r", node_id), 1 << 30,
                      states.get(node_id, NodeState.UP))
        for n, node_id in enumerate(NODES)
    }
    return ClusterMap(epoch=3, pg_count=1, nodes=nodes, acting_sets=(tuple(acting),),
                      former_positions=(tuple(former),))


def entry(chunk_hash: bytes, index: int, *, length: int = LENGTH, chunk_size: int = CHUNK_SIZE,
          checksum: int | None = None) -> FragmentEntry:
    return FragmentEntry(chunk_hash=chunk_hash, index=index, length=length,
                         checksum=index + 1000 if checksum is None else checksum, chunk_size=chunk_size)


def healthy_listings(chunks: Iterable[bytes], acting: Sequence[str] = ACTING,
                     missing: Iterable[tuple[bytes, int]] = ()) -> dict[str, list[FragmentEntry]]:
    """Every acting member holds its fragment of every chunk, except the ``missing`` (chunk, index)."""
    gone = set(missing)
    listings: dict[str, list[FragmentEntry]] = {node_id: [] for node_id in NODES}
    for chunk_hash in chunks:
        for index, node_id in enumerate(acting):
            if (chunk_hash, index) not in gone:
                listings[node_id].append(entry(chunk_hash, index))
    return listings


def plan(listings: Mapping[str, Sequence[FragmentEntry] | None], cluster_map: ClusterMap | None = None,
         node_id: str = ME) -> PlacementGroupPlan:
    return plan_placement_group(0, cluster_map or make_map(), node_id, listings)


# -- healthy and simple cases ---------------------------------------------------------------------


def test_a_whole_stripe_needs_nothing() -> None:
    result = plan(healthy_listings([chunk(1), chunk(2)]))
    assert result.tasks == [] and result.misplaced == []
    assert result.health == PlacementGroupHealth(pg=0, stripes_by_missing=(2,) + (0,) * 14, unrecoverable=0)
    assert result.health.degraded_buckets() == {"1": 0, "2": 0, "3": 0, "4": 0, "5+": 0}


def test_my_missing_fragment_is_rebuilt_from_the_13_others() -> None:
    result = plan(healthy_listings([chunk(1)], missing=[(chunk(1), MY_POSITION)]))
    [task] = result.tasks
    assert (task.chunk_hash, task.index, task.chunk_size, task.reason) == (chunk(1), MY_POSITION, CHUNK_SIZE, "missing")
    assert task.method == "rebuild" and task.copy_from == ()
    assert task.surviving == 13 and task.fragment_length == LENGTH
    assert task.fetch_bytes == 10 * LENGTH
    assert [index for index, _ in task.sources] == [i for i in range(14) if i != MY_POSITION]
    assert all(holders == (ACTING[index],) for index, holders in task.sources)
    assert result.health.stripes_by_missing[1] == 1


def test_another_members_missing_fragment_is_not_my_task_but_is_degraded() -> None:
    result = plan(healthy_listings([chunk(1)], missing=[(chunk(1), 9), (chunk(1), 10)]))
    assert result.tasks == []
    assert result.health.degraded_buckets()["2"] == 1


@pytest.mark.parametrize("stale", [{"length": LENGTH - 1}, {"chunk_size": CHUNK_SIZE + 10,
                                                            "length": fragment_bytes(CHUNK_SIZE + 10)}])
def test_my_stale_fragment_is_rebuilt_and_not_counted_as_surviving(stale: dict[str, int]) -> None:
    listings = healthy_listings([chunk(1)], missing=[(chunk(1), MY_POSITION)])
    listings[ME].append(entry(chunk(1), MY_POSITION, **stale))
    [task] = plan(listings).tasks
    assert (task.reason, task.surviving, task.method, task.chunk_size) == ("stale", 13, "rebuild", CHUNK_SIZE)


def test_stale_fragments_elsewhere_are_not_sources() -> None:
    listings = healthy_listings([chunk(1)], missing=[(chunk(1), MY_POSITION), (chunk(1), 0)])
    listings[ACTING[0]].append(entry(chunk(1), 0, length=LENGTH + 3))
    [task] = plan(listings).tasks
    assert task.surviving == 12
    assert 0 not in dict(task.sources)


def test_chunk_size_is_the_majority_and_ties_go_to_the_smaller() -> None:
    listings: dict[str, list[FragmentEntry]] = {node_id: [] for node_id in NODES}
    small, large = 50_000, 60_000
    for index, node_id in enumerate(ACTING):
        if index not in (MY_POSITION, 0):
            listings[node_id].append(entry(chunk(1), index, chunk_size=large, length=fragment_bytes(large)))
    listings[ACTING[0]].append(entry(chunk(1), 0, chunk_size=small, length=fragment_bytes(small)))
    [task] = plan(listings).tasks  # 12 say large, 1 says small
    assert (task.chunk_size, task.surviving, task.fragment_length) == (large, 12, fragment_bytes(large))
    assert 0 not in dict(task.sources)
    votes = [entry(chunk(1), i, chunk_size=small, length=fragment_bytes(small)) for i in range(3)]
    votes += [entry(chunk(1), i, chunk_size=large, length=fragment_bytes(large)) for i in range(3, 6)]
    votes += [entry(chunk(1), 6, chunk_size=large, length=1)]  # a length that fits no size has no vote
    assert _chunk_size_of(votes, fragment_bytes) == small
    assert _chunk_size_of(votes[3:], fragment_bytes) == large
    assert _chunk_size_of(votes[6:], fragment_bytes) is None


# -- copies from former holders and strays --------------------------------------------------------


def test_a_former_holder_of_my_position_is_copied_from_first() -> None:
    # node-14 held position 5 before node-05 got it; node-15 holds a stray copy of index 5.
    cluster_map = make_map(former=[("node-14", MY_POSITION), ("node-15", 2)])
    listings = healthy_listings([chunk(1)], missing=[(chunk(1), MY_POSITION)])
    listings["node-14"] = [entry(chunk(1), MY_POSITION)]
    listings["node-15"] = [entry(chunk(1), MY_POSITION)]
    [task] = plan(listings, cluster_map).tasks
    assert task.method == "copy" and task.copy_from == ("node-14", "node-15")
    assert task.surviving == 14 and task.fetch_bytes == LENGTH


def test_listing_targets_are_up_members_then_up_former_holders() -> None:
    cluster_map = make_map(
        states={"node-02": NodeState.DOWN, "node-15": NodeState.DOWN},
        former=[("node-14", 5), ("node-15", 6), ("node-16", 7)],
    )
    assert listing_targets(cluster_map, 0) == [n for n in ACTING if n != "node-02"] + ["node-14", "node-16"]


def test_primary_is_the_first_up_member() -> None:
    assert primary_of(make_map(), 0) == "node-00"
    down = {"node-00": NodeState.DOWN, "node-01": NodeState.DOWN}
    assert primary_of(make_map(states=down), 0) == "node-02"
    assert primary_of(make_map(states=dict.fromkeys(ACTING, NodeState.DOWN)), 0) is None


def test_a_down_member_counts_as_missing_but_my_repair_still_uses_the_rest() -> None:
    listings: dict[str, list[FragmentEntry] | None] = dict(
        healthy_listings([chunk(1)], missing=[(chunk(1), MY_POSITION)]))
    listings.pop("node-03")  # DOWN: not listed
    listings["node-04"] = None  # UP but the listing failed
    result = plan(listings, make_map(states={"node-03": NodeState.DOWN}))
    [task] = result.tasks
    assert task.surviving == 11 and {3, 4}.isdisjoint(dict(task.sources))
    assert result.health.degraded_buckets()["3"] == 1


# -- unrecoverable stripes, priority --------------------------------------------------------------


@pytest.mark.parametrize("missing_count", range(STRIPE_WIDTH + 1))
def test_every_missing_count_decides_rebuild_or_unrecoverable(missing_count: int) -> None:
    rng = random.Random(missing_count)
    for me_missing in (False, True):
        others = [i for i in range(STRIPE_WIDTH) if i != MY_POSITION]
        if (me_missing and missing_count == 0) or (not me_missing and missing_count == STRIPE_WIDTH):
            continue
        gone = rng.sample(others, missing_count - me_missing) + ([MY_POSITION] if me_missing else [])
        listings = healthy_listings([chunk(1)], missing=[(chunk(1), i) for i in gone])
        result = plan(listings)
        surviving = STRIPE_WIDTH - missing_count
        if surviving < 10:
            assert result.tasks == [] and result.health.unrecoverable == (1 if surviving else 0)
            assert sum(result.health.stripes_by_missing) == 0
        else:
            assert result.health.stripes_by_missing[missing_count] == 1
            assert [t.surviving for t in result.tasks] == ([surviving] if me_missing else [])


def test_every_pair_of_missing_others_with_mine_missing_gives_one_rebuild() -> None:
    others = [i for i in range(STRIPE_WIDTH) if i != MY_POSITION]
    for pair in itertools.combinations(others, 2):
        gone = [(chunk(1), i) for i in (*pair, MY_POSITION)]
        [task] = plan(healthy_listings([chunk(1)], missing=gone)).tasks
        assert task.surviving == 11
        assert sorted(dict(task.sources)) == sorted(set(others) - set(pair))


def test_tasks_come_fewest_survivors_first() -> None:
    chunks = [chunk(seed) for seed in range(5)]
    gone = [(c, MY_POSITION) for c in chunks]
    gone += [(chunks[1], 0), (chunks[1], 1), (chunks[1], 2)]  # 10 left
    gone += [(chunks[3], 0)]  # 12 left
    tasks = plan(healthy_listings(chunks, missing=gone)).tasks
    assert [t.surviving for t in tasks] == [10, 12, 13, 13, 13]
    assert tasks[0].chunk_hash == chunks[1] and tasks[1].chunk_hash == chunks[3]
    assert [t.chunk_hash for t in tasks[2:]] == sorted([chunks[0], chunks[2], chunks[4]])


def test_fragments_under_10_with_a_copy_available_are_still_skipped() -> None:
    cluster_map = make_map(former=[("node-14", MY_POSITION)])
    listings = healthy_listings([chunk(1)], missing=[(chunk(1), i) for i in range(6)])
    listings["node-14"] = [entry(chunk(1), MY_POSITION)]  # 9 valid indexes in all
    result = plan(listings, cluster_map)
    assert result.tasks == [] and result.unrecoverable_chunks == [chunk(1)]


# -- misplaced fragments --------------------------------------------------------------------------


def test_misplaced_copy_is_confirmed_only_by_the_holder_with_the_same_checksum() -> None:
    # node-14 used to hold position 7 (now node-07's) and still holds its copies.
    cluster_map = make_map(former=[("node-14", 7)])
    same, other, absent, stale_mine = chunk(1), chunk(2), chunk(3), chunk(4)
    listings: dict[str, list[FragmentEntry] | None] = dict(
        healthy_listings([same, other, absent, stale_mine], missing=[(absent, 7)]))
    node_07 = listings["node-07"]
    assert node_07 is not None
    listings["node-07"] = [e if e.chunk_hash != other else entry(other, 7, checksum=1) for e in node_07]
    listings["node-14"] = [entry(same, 7), entry(other, 7), entry(absent, 7), entry(stale_mine, 7, length=5)]
    result = plan(listings, cluster_map, node_id="node-14")
    assert result.tasks == []
    confirmed = {m.chunk_hash: m.confirmed for m in result.misplaced}
    assert confirmed == {same: True, other: False, absent: False, stale_mine: True}
    assert {m.holder for m in result.misplaced} == {"node-07"}


def test_misplaced_copy_is_not_confirmed_when_the_holder_is_unlisted() -> None:
    cluster_map = make_map(former=[("node-14", 7)], states={"node-07": NodeState.DOWN})
    listings: dict[str, list[FragmentEntry] | None] = dict(healthy_listings([chunk(1)]))
    listings.pop("node-07")
    listings["node-14"] = [entry(chunk(1), 7)]
    [misplaced] = plan(listings, cluster_map, node_id="node-14").misplaced
    assert not misplaced.confirmed
    listings["node-07"] = None
    [misplaced] = plan(listings, make_map(former=[("node-14", 7)]), node_id="node-14").misplaced
    assert not misplaced.confirmed


def test_a_member_holding_another_index_is_misplaced_and_that_copy_is_a_source() -> None:
    # node-05 (position 5) also holds index 9, whose holder node-09 lost it.
    listings = healthy_listings([chunk(1)], missing=[(chunk(1), 9)])
    listings[ME].append(entry(chunk(1), 9))
    result = plan(listings)
    [misplaced] = result.misplaced
    assert (misplaced.index, misplaced.holder, misplaced.confirmed) == (9, "node-09", False)
    assert result.health.stripes_by_missing[0] == 1  # index 9 still exists somewhere
    # From node-09's point of view: a copy on node-05 (a stray, not a former holder).
    [task] = plan(listings, node_id="node-09").tasks
    assert task.method == "copy" and task.copy_from == (ME,)


def test_entries_with_out_of_range_indexes_and_unknown_nodes_are_ignored() -> None:
    listings: dict[str, list[FragmentEntry] | None] = dict(healthy_listings([chunk(1)]))
    listings[ME] = [*(listings[ME] or []), entry(chunk(2), 14)]
    listings["node-99"] = [entry(chunk(3), 5)]
    result = plan(listings)
    assert result.tasks == [] and result.misplaced == [] and result.unrecoverable_chunks == []


# -- the repair agent's rate limit (pure arithmetic on a fake clock) -------------------------------


def test_token_bucket_paces_bytes_and_lets_large_requests_go_into_debt(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    bucket = TokenBucket(100, clock=lambda: now[0])

    async def body() -> None:
        await bucket.acquire(100)  # the first second's burst
        assert slept == []
        await bucket.acquire(250)  # more than the bucket holds: waits for a full bucket, then owes 150
        assert slept == [pytest.approx(1.0)]
        await bucket.acquire(50)  # waits out the debt and its own 50
        assert slept == [pytest.approx(1.0), pytest.approx(2.0)]

    asyncio.run(body())
    assert now[0] == pytest.approx(3.0)  # 400 bytes at 100 B/s, less the 100-byte burst
    with pytest.raises(ValueError):
        TokenBucket(0)


# -- summaries: when a placement group may be skipped ---------------------------------------------


def summaries_of(listing: Sequence[FragmentEntry]) -> dict[int, tuple[int, bytes]]:
    """What ``FragmentEngine.summarize_by_index`` reports for a node holding ``listing``."""
    sums: dict[int, list[int]] = {}
    for item in listing:
        slot = sums.setdefault(item.index, [0, 0])
        slot[0] += 1
        slot[1] = (slot[1] + summary_item(item.chunk_hash, item.chunk_size, item.length)) % 2**128
    return {index: (count, digest.to_bytes(16, "big")) for index, (count, digest) in sums.items()}


def listing_needed(listings: Mapping[str, Sequence[FragmentEntry]], cluster_map: ClusterMap,
                  unreachable: Iterable[str] = ()) -> bool:
    """``needs_listing`` for ME, with the summaries every target would report."""
    silent = set(unreachable)
    peers = {node_id: (None if node_id in silent else summaries_of(listings.get(node_id, [])))
             for node_id in listing_targets(cluster_map, 0) if node_id != ME}
    return needs_listing(0, cluster_map, ME, summaries_of(listings.get(ME, [])), peers)


def test_a_whole_placement_group_needs_no_listing_and_its_health_is_known() -> None:
    chunks = [chunk(seed) for seed in range(5)]
    listings = healthy_listings(chunks)
    assert not listing_needed(listings, make_map())
    down = make_map({"node-02": NodeState.DOWN, "node-09": NodeState.DOWN})
    assert not listing_needed(listings, down)
    assert clean_health(0, down, 5) == plan({n: listings[n] for n in listing_targets(down, 0)}, down).health
    many_down = make_map({node_id: NodeState.DOWN for node_id in ACTING[:5]})
    assert clean_health(0, many_down, 5).unrecoverable == 5


def test_any_difference_an_unreachable_peer_or_a_busy_former_holder_needs_a_listing() -> None:
    chunks = [chunk(seed) for seed in range(4)]
    lost_elsewhere = healthy_listings(chunks, missing=[(chunks[1], 8)])
    assert listing_needed(lost_elsewhere, make_map())
    stale_elsewhere = healthy_listings(chunks)
    stale_elsewhere["node-03"][0] = entry(chunks[0], 3, length=LENGTH - 1)
    assert listing_needed(stale_elsewhere, make_map())
    assert listing_needed(healthy_listings(chunks), make_map(), unreachable=["node-11"])
    former = healthy_listings(chunks)
    former["node-15"] = [entry(chunks[0], 4)]
    assert listing_needed(former, make_map(former=[("node-15", 4)]))
    assert not listing_needed(healthy_listings(chunks), make_map(former=[("node-15", 4)]))


@pytest.mark.parametrize("seed", range(300))
def test_a_skipped_placement_group_is_one_the_planner_finds_clean(seed: int) -> None:
    """Random damage (lost, stale, misplaced and stray fragments, DOWN members, former holders):
    whenever the summaries let ME skip the PG, listing and planning it gives no task, nothing
    misplaced and exactly ``clean_health``."""
    rng = random.Random(seed)
    chunks = [chunk(1000 * seed + n) for n in range(rng.randint(0, 4))]
    lost = [(rng.choice(chunks), rng.randrange(STRIPE_WIDTH)) for _ in range(rng.choice([0, 0, 1, 2]))] if chunks \
        else []
    listings = healthy_listings(chunks, missing=lost)
    for _ in range(rng.choice([0, 0, 1])):  # a stale copy somewhere
        if chunks:
            index = rng.randrange(STRIPE_WIDTH)
            listings[ACTING[index]].append(entry(rng.choice(chunks), index, length=LENGTH + 1))
    for _ in range(rng.choice([0, 0, 1])):  # a misplaced or stray fragment
        if chunks:
            listings[rng.choice(NODES)].append(entry(rng.choice(chunks), rng.randrange(STRIPE_WIDTH)))
    for node_id in NODES:  # one key per (chunk, index) per node, as in the engine
        unique = {(e.chunk_hash, e.index): e for e in listings[node_id]}
        listings[node_id] = list(unique.values())
    states = {node_id: NodeState.DOWN for node_id in rng.sample(NODES, rng.choice([0, 0, 1, 3])) if node_id != ME}
    former = [("node-16", rng.randrange(STRIPE_WIDTH))] if rng.random() < 0.3 else []
    cluster_map = make_map(states, former=former)
    if not listing_needed(listings, cluster_map):
        targets = listing_targets(cluster_map, 0)
        result = plan({node_id: listings[node_id] for node_id in targets}, cluster_map)
        assert result.tasks == [] and result.misplaced == []
        stripes = summaries_of(listings[ME]).get(MY_POSITION, (0, b""))[0]
        assert result.health == clean_health(0, cluster_map, stripes)
