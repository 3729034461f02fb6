"""The durability machinery against a real dev cluster (issue 3, acceptance 1 to 7).

One 18-node cluster serves the module (losing 4 nodes still leaves the 14 distinct failure
domains a stripe needs, so full redundancy can come back). Repair scans every 2 s, a node is OUT
3 s after its lease lapses, scrub passes take a few seconds and garbage collection has
a 2 s grace, so each scenario settles in seconds. Ground truth is always a census of the volumes
read straight from RocksDB (``tests/fixtures/census.py``), never the nodes' own answers. The tests
run in file order and each leaves the cluster whole.

``COFFER_FAULT_MIB`` sets the data loaded (default 96 MiB in CI; the issue's 2 GiB measurement:
``COFFER_FAULT_MIB=2048``). Times to repair and scrub rates are printed (``-s``) and recorded as
test properties.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from common.layout import STRIPE_WIDTH, placement_group
from metadata.sqlite_store import SqliteMetadataStore
from placement.cluster_map import ClusterMap, NodeState
from placement.etcd import EtcdUnavailable
from placement.watcher import load_cluster_map
from tests.fixtures.census import Census, open_volume, take_census
from tests.fixtures.cluster import DevCluster, run_coffer
from tests.fixtures.processes import wait_until

# A full scrub pass every few seconds finds injected damage fast on CI-sized data; measuring repair
# on large data wants the scrubber out of the way (COFFER_FAULT_SCRUB_PERIOD=100000).
SCRUB_PERIOD = os.environ.get("COFFER_FAULT_SCRUB_PERIOD", "4")
# The background write cap is far above what these tests write: it only has to be in place.
NODE_FLAGS = ("--repair-scan-interval=2", "--repair-bytes-per-second=200000000", f"--scrub-period={SCRUB_PERIOD}",
              "--scrub-max-bytes-per-second=400000000", "--background-write-max-bytes-per-second=400000000")
FRONTEND_FLAGS = ("--gc-grace=2", "--gc-interval=1", "--orphan-grace=30", "--orphan-sweep-interval=2")

pytestmark = [
    pytest.mark.system,
    pytest.mark.coffer_cluster(nodes=18, pg_count=64, down_out_interval=3, node_args=NODE_FLAGS,
                               frontend_args=FRONTEND_FLAGS),
]

MiB = 1024 * 1024
BUCKET = "durability"
LOAD_BYTES = int(os.environ.get("COFFER_FAULT_MIB", "96")) * MiB
SETTLE_SECONDS = float(os.environ.get("COFFER_FAULT_SETTLE_SECONDS", "240"))


# -- helpers --------------------------------------------------------------------------------------


def body_of(key: str, size: int) -> bytes:
    """The deterministic body of ``key`` (regenerated, never kept: 2 GiB must not sit in memory)."""
    return random.Random(key).randbytes(size)


class Workload:
    """Objects of mixed sizes, named by their size, loaded once and checked byte for byte."""

    def __init__(self, total_bytes: int) -> None:
        rng = random.Random(3)
        self.sizes: dict[str, int] = {}
        loaded = 0
        index = 0
        while loaded < total_bytes:
            size = rng.choice([1, 4096, 300_000, 1 * MiB, 5 * MiB, 9 * MiB + 123, 17 * MiB])
            key = f"object-{index:05d}"
            self.sizes[key] = size
            loaded += size
            index += 1

    def load(self, s3: Any) -> None:
        for key, size in self.sizes.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=body_of(key, size))

    def check(self, s3: Any, keys: list[str] | None = None) -> None:
        for key in keys or list(self.sizes):
            data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            assert hashlib.sha256(data).digest() == hashlib.sha256(body_of(key, self.sizes[key])).digest(), key


def node_ids(cluster: DevCluster) -> list[str]:
    return [p["node_id"] for p in cluster.processes() if p["role"] == "storagenode"]


def volumes(cluster: DevCluster, nodes: list[str] | None = None) -> dict[str, Path]:
    return {node: cluster.data_dir / "nodes" / node / "volume-0" for node in (nodes or node_ids(cluster))}


def current_map(cluster: DevCluster) -> ClusterMap:
    """The published cluster map (etcd may be slow to answer on a loaded machine: retried)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            loaded = asyncio.run(load_cluster_map(f"127.0.0.1:{cluster.process('etcd')['port']}"))
        except EtcdUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
            continue
        assert loaded is not None
        return loaded


def live_chunks(cluster: DevCluster, keys: list[str]) -> set[str]:
    """Hashes of every chunk the objects ``keys`` reference (read from the metadata file)."""
    store = SqliteMetadataStore(cluster.data_dir / "metadata.sqlite3")
    try:
        return {chunk.hash for key in keys for chunk in store.get_object(BUCKET, key).chunks}
    finally:
        store.close()


def stripe_problems(cluster: DevCluster, census: Census, chunks: set[str]) -> list[str]:
    cluster_map = current_map(cluster)
    pg_of = {chunk: placement_group(bytes.fromhex(chunk), cluster_map.pg_count) for chunk in chunks}
    return census.problems(chunks, cluster_map, pg_of)


def wait_whole(cluster: DevCluster, workload: Workload, nodes: list[str], what: str) -> float:
    """Wait until the stripe of every chunk of ``workload`` is whole on ``nodes`` under the current
    map; returns the seconds it took. Fails with the remaining problems after ``SETTLE_SECONDS``."""
    started = time.monotonic()
    chunks = live_chunks(cluster, list(workload.sizes))
    last: list[str] = []

    def whole() -> bool:
        nonlocal last
        last = stripe_problems(cluster, take_census(volumes(cluster, nodes)), chunks)
        return not last

    try:
        wait_until(whole, SETTLE_SECONDS, what, interval=2.0)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; {len(last)} fragments still misplaced, e.g. {last[:5]}") from None
    return time.monotonic() - started


def metric_total(cluster: DevCluster, processes: list[str], name: str) -> float:
    import urllib.request

    total = 0.0
    for process in processes:
        port = cluster.process(process)["metrics_port"]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
    return total


class Reader(threading.Thread):
    """Reads objects in a loop until stopped; counts wrong bytes (never allowed) and failures."""

    def __init__(self, cluster: DevCluster, workload: Workload) -> None:
        super().__init__(daemon=True)
        self.s3 = cluster.s3_client()
        self.workload = workload
        self.stopping = threading.Event()
        self.reads = 0
        self.wrong: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        keys = [key for key, size in self.workload.sizes.items() if size <= 5 * MiB]
        rng = random.Random(5)
        while not self.stopping.is_set():
            key = rng.choice(keys)
            try:
                data = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            except Exception as exc:  # counted: the test decides what is allowed
                self.errors.append(f"{key}: {exc!r}")
                continue
            self.reads += 1
            if data != body_of(key, self.workload.sizes[key]):
                self.wrong.append(key)

    def finish(self) -> None:
        self.stopping.set()
        self.join(30)
        assert not self.wrong, f"wrong bytes returned for {self.wrong[:5]}"
        assert self.reads > 0


@pytest.fixture(scope="module")
def s3(cluster: DevCluster) -> Any:
    client = cluster.s3_client()
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def workload(s3: Any) -> Workload:
    loaded = Workload(LOAD_BYTES)
    loaded.load(s3)
    return loaded


@pytest.fixture
def reader(cluster: DevCluster, workload: Workload) -> Iterator[Reader]:
    thread = Reader(cluster, workload)
    thread.start()
    try:
        yield thread
    finally:
        thread.stopping.set()
        thread.join(30)


def report(record_property: Callable[[str, object], None], name: str, value: float, unit: str) -> None:
    print(f"\n{name}: {value:.2f} {unit}")
    record_property(name, f"{value:.3f} {unit}")


# -- acceptance 3: scrub --------------------------------------------------------------------------


def test_every_volume_opens_with_the_background_write_cap(cluster: DevCluster) -> None:
    """``--background-write-max-bytes-per-second`` reaches each volume's RocksDB: the options it
    logs when it opens name a rate limiter (``(nil)`` without the flag)."""
    for node, volume in volumes(cluster).items():
        logged = [line for line in (volume / "LOG").read_text().splitlines() if "Options.rate_limiter:" in line]
        assert logged and "(nil)" not in logged[-1], (node, logged)


def test_scrub_finds_every_flipped_byte_and_repair_rebuilds_it(
    cluster: DevCluster, s3: Any, workload: Workload, record_property: Callable[[str, object], None]
) -> None:
    nodes = node_ids(cluster)
    victims = nodes[:3]
    found_before = metric_total(cluster, nodes, "coffer_scrub_corrupt_fragments_total")
    injected: list[tuple[str, bytes]] = []
    rng = random.Random(17)
    for node in victims:
        cluster.kill(node, signal.SIGTERM)  # RocksDB allows one writer: the node must be stopped
        volume = open_volume(volumes(cluster, [node])[node], read_only=False)
        try:
            keys = sorted(cast(bytes, key) for key in volume.keys())  # noqa: SIM118 - Rdict iterates items
            # 1% of the records, at least one, on three nodes: at most 3 bad fragments per stripe.
            for key in rng.sample(keys, max(1, len(keys) // 100)):
                value = bytearray(cast(bytes, volume[key]))
                value[rng.randrange(len(value))] ^= 0xFF
                volume[key] = bytes(value)
                injected.append((node, key))
        finally:
            volume.close()
        cluster.start_process(node)
    scrubbed_before = metric_total(cluster, nodes, "coffer_scrub_bytes_checked_total")
    started = time.monotonic()
    wait_until(lambda: metric_total(cluster, nodes, "coffer_scrub_corrupt_fragments_total") - found_before
               >= len(injected), SETTLE_SECONDS, f"the scrubbers to find {len(injected)} flipped records")
    seconds = time.monotonic() - started
    assert metric_total(cluster, nodes, "coffer_scrub_corrupt_fragments_total") - found_before == len(injected)
    wait_whole(cluster, workload, nodes, "the corrupt fragments to be rebuilt")
    census = take_census(volumes(cluster), verify_data=True)
    assert census.corrupt() == []
    workload.check(s3)
    scrubbed = metric_total(cluster, nodes, "coffer_scrub_bytes_checked_total") - scrubbed_before
    report(record_property, "scrub_rate_mb_per_s_all_nodes", scrubbed / seconds / 1e6, "MB/s")


# -- acceptance 1: one node lost ------------------------------------------------------------------


def test_a_lost_node_is_repaired_to_full_redundancy_while_reads_continue(
    cluster: DevCluster, s3: Any, workload: Workload, reader: Reader,
    record_property: Callable[[str, object], None],
) -> None:
    nodes = node_ids(cluster)
    victim = nodes[-1]
    survivors = [node for node in nodes if node != victim]
    stored_bytes = sum(workload.sizes.values())
    repaired_before = metric_total(cluster, survivors, "coffer_repair_bytes_total")
    cluster.kill(victim)
    started = time.monotonic()
    wait_until(lambda: current_map(cluster).nodes[victim].state == NodeState.OUT, 60, f"{victim} to be OUT")
    wait_whole(cluster, workload, survivors, "14 fragments of every stripe on survivors")
    seconds = time.monotonic() - started  # down-out interval + repair
    reader.finish()
    workload.check(s3)
    repaired = metric_total(cluster, survivors, "coffer_repair_bytes_total") - repaired_before
    assert repaired > 0
    report(record_property, "repair_seconds_per_gib_stored", seconds / (stored_bytes / 1024**3), "s/GiB")
    report(record_property, "repair_fragment_mb_per_s", repaired / seconds / 1e6, "MB/s")
    cluster.start_process(victim)  # back as a new, empty-handed member; later tests use it
    wait_until(lambda: current_map(cluster).nodes[victim].state == NodeState.UP, 60, f"{victim} to be UP")
    wait_whole(cluster, workload, nodes, "the returned node to get its share back")


# -- acceptance 2: four nodes lost at once ----------------------------------------------------------


def test_four_nodes_lost_at_once_lose_nothing_and_redundancy_comes_back(
    cluster: DevCluster, s3: Any, workload: Workload, reader: Reader
) -> None:
    nodes = node_ids(cluster)
    victims = nodes[3:7]
    survivors = [node for node in nodes if node not in victims]
    for victim in victims:
        cluster.kill(victim)
    workload.check(s3)  # degraded reads: every byte still there
    wait_until(lambda: all(current_map(cluster).nodes[victim].state == NodeState.OUT for victim in victims),
               60, "the killed nodes to be OUT")
    wait_whole(cluster, workload, survivors, "14 fragments of every stripe on the survivors")
    reader.finish()
    workload.check(s3)
    for victim in victims:
        cluster.start_process(victim)
    wait_whole(cluster, workload, nodes, "the returned nodes to get their share back")


# -- acceptance 5: drain --------------------------------------------------------------------------


def test_drain_moves_everything_off_a_node_without_reducing_redundancy(
    cluster: DevCluster, s3: Any, workload: Workload
) -> None:
    nodes = node_ids(cluster)
    drained = nodes[2]
    chunks = live_chunks(cluster, list(workload.sizes))
    low_water: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        # Source first, then the others: a fragment moving from the drained node is seen at
        # least once, so any real gap in redundancy shows up as fewer than 14 distinct indexes.
        order = [drained, *[node for node in nodes if node != drained]]
        while not stop.wait(1.0):  # a census opens every volume: not in a tight loop
            census = take_census(volumes(cluster, order))
            low_water.append(min(census.distinct_indexes(chunk) for chunk in chunks))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = run_coffer("node", "drain", drained, "--data", str(cluster.data_dir), "--wait",
                            "--timeout", f"{SETTLE_SECONDS:g}", timeout=SETTLE_SECONDS + 30)
    finally:
        stop.set()
        watcher.join(60)
    assert "safe to remove" in result.stdout
    assert low_water and min(low_water) == STRIPE_WIDTH
    assert take_census(volumes(cluster, [drained])).count() == 0
    workload.check(s3)
    run_coffer("node", "undrain", drained, "--data", str(cluster.data_dir))
    wait_whole(cluster, workload, nodes, "the undrained node to get its share back")


# -- acceptance 4: a node added -------------------------------------------------------------------


def test_an_added_node_takes_its_share_while_reads_and_writes_continue(
    cluster: DevCluster, s3: Any, workload: Workload, reader: Reader
) -> None:
    before = set(node_ids(cluster))
    run_coffer("dev", "add-node", "--data", str(cluster.data_dir))
    added = sorted(set(node_ids(cluster)) - before)
    assert len(added) == 1
    # Writes during the move.
    for index in range(5):
        key = f"during-move-{index}"
        workload.sizes[key] = 3 * MiB + index
        s3.put_object(Bucket=BUCKET, Key=key, Body=body_of(key, workload.sizes[key]))
    nodes = node_ids(cluster)
    wait_whole(cluster, workload, nodes, "every stripe whole with the added node")
    reader.finish()
    workload.check(s3)
    cluster_map = current_map(cluster)
    positions = {node: 0 for node in nodes}
    for pg in range(cluster_map.pg_count):
        for node in cluster_map.acting_set(pg):
            positions[node] += 1
    mean = sum(positions.values()) / len(positions)
    assert positions[added[0]] > 0
    assert all(abs(count - mean) <= 0.1 * mean for count in positions.values()), positions


# -- acceptance 6: deletes and garbage collection -------------------------------------------------


def test_deleted_objects_leave_no_fragments_behind(cluster: DevCluster, s3: Any, workload: Workload) -> None:
    for key in list(workload.sizes):
        s3.delete_object(Bucket=BUCKET, Key=key)
    # An abandoned multipart upload's parts go too, once aborted.
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="abandoned")["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key="abandoned", UploadId=upload, PartNumber=1, Body=os.urandom(6 * MiB))
    s3.abort_multipart_upload(Bucket=BUCKET, Key="abandoned", UploadId=upload)
    wait_until(lambda: take_census(volumes(cluster)).count() == 0, SETTLE_SECONDS,
               "garbage collection to empty every volume")


# -- acceptance 7: processes killed at random under load ------------------------------------------


def test_random_kills_under_load_lose_no_acknowledged_write(cluster: DevCluster) -> None:
    s3 = cluster.s3_client(retries={"max_attempts": 1, "mode": "standard"})
    rng = random.Random(29)
    acknowledged: dict[str, int] = {}
    wrong: list[str] = []
    stop = threading.Event()
    chaos_seconds = float(os.environ.get("COFFER_CHAOS_SECONDS", "60"))

    def load() -> None:
        index = 0
        while not stop.is_set():
            key = f"chaos-{index:05d}"
            size = rng.choice([1000, 700_000, 5 * MiB + 17])
            index += 1
            try:
                s3.put_object(Bucket=BUCKET, Key=key, Body=body_of(key, size))
            except Exception:  # refused or cut off: not acknowledged, may or may not exist
                continue
            acknowledged[key] = size
            probe = rng.choice(list(acknowledged))
            try:
                data = s3.get_object(Bucket=BUCKET, Key=probe)["Body"].read()
            except Exception:  # unavailable for a moment is allowed; wrong bytes never are
                continue
            if data != body_of(probe, acknowledged[probe]):
                wrong.append(probe)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    storage_nodes = node_ids(cluster)
    deadline = time.monotonic() + chaos_seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(3, 6))
            victim = rng.choice([*rng.sample(storage_nodes, 2), "placement", "frontend"])
            cluster.kill(victim)
            time.sleep(rng.uniform(1, 4))
            cluster.start_process(victim)
            if victim == "frontend":
                cluster.wait_ready()
    finally:
        stop.set()
        worker.join(120)
    assert not wrong, f"wrong bytes for {wrong[:5]}"
    assert acknowledged
    s3 = cluster.s3_client()
    for key, size in acknowledged.items():
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body_of(key, size), key
    healed = Workload(0)
    healed.sizes = dict(acknowledged)
    wait_whole(cluster, healed, storage_nodes, "the cluster to heal after the chaos")
