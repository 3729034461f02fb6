"""`coffer node drain|undrain <id>`: move every fragment off a node before removing it, or cancel.

``drain`` refuses up front (exit 1) when the other nodes could not hold every stripe under the
failure-domain rule, then writes the drain request (``placement.drain``). The placement leader
publishes a map in which the node holds no position; the new holders copy its fragments from it
(it stays UP and serving) and the node deletes each copy once the new holder has it. With
``--wait`` the command polls until the node is in no acting set and its volumes hold no fragment
(counted exactly by listing every placement group on it, after the ``Health`` estimate reaches
0), then says it is safe to remove. Exit codes: 0 done, 1 refused / timed out / error.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from cli.dev_layout import DevClusterError, load_settings
from cli.status import StatusUnavailable, node_health, read_cluster
from placement.cluster_map import ClusterMap, NodeState
from placement.drain import cancel_drain, request_drain
from placement.etcd import EtcdClient, EtcdUnavailable
from placement.keys import DEFAULT_PREFIX
from placement.rendezvous import rule_status
from placement.service import placement_view
from storagenode.client import StorageNodeClient
from storagenode.errors import StorageError

POLL_SECONDS = 1.0
LIST_TIMEOUT_SECONDS = 10.0
# Below this ``Health`` estimate the node's fragments are counted exactly (headers only, cheap).
EXACT_COUNT_BELOW = 1000


def _say(message: str, error: bool = False) -> None:
    print(message, file=sys.stderr if error else sys.stdout, flush=True)


def etcd_endpoint(etcd: str | None, data_dir: Path | None) -> str:
    """The etcd ``host:port`` from ``--etcd``, or from the dev cluster in ``--data DIR``.

    Raises:
        DevClusterError: neither given, or ``DIR`` holds no dev cluster.
    """
    if etcd:
        return etcd
    if data_dir is None:
        raise DevClusterError("say where the cluster is: --etcd HOST:PORT, or --data DIR for a dev cluster")
    settings = load_settings(data_dir.resolve())
    if settings is None:
        raise DevClusterError(f"no Coffer dev cluster in {data_dir} (no settings.json): pass --etcd HOST:PORT, "
                              "or the --data directory given to `coffer dev up`")
    return f"127.0.0.1:{settings.etcd_port}"


def drain_blocker(cluster_map: ClusterMap, node_id: str) -> str | None:
    """Why draining ``node_id`` (besides the nodes already draining or full) would leave no valid
    placement, or None if the other nodes can hold every stripe under the failure-domain rule. Pure."""
    nodes = placement_view(cluster_map.nodes)
    nodes[node_id] = replace(nodes[node_id], draining=True)
    status = rule_status(nodes)
    return None if status.satisfied else status.detail


def positions_held(cluster_map: ClusterMap, node_id: str) -> int:
    """How many acting-set positions ``node_id`` holds in ``cluster_map``."""
    return sum(acting.count(node_id) for acting in cluster_map.acting_sets)


async def count_fragments(address: str, pg_count: int) -> int:
    """Exact number of fragments the node at ``address`` stores, by listing every placement group.

    Raises:
        StorageError: the node does not answer (``NodeUnavailable``) or fails a listing.
    """
    client = StorageNodeClient(address, timeout=LIST_TIMEOUT_SECONDS)
    try:
        total = 0
        for pg in range(pg_count):
            total += len(await client.list_fragments(pg))
        return total
    finally:
        await client.close()


def _known(cluster_map: ClusterMap, node_id: str) -> None:
    if node_id not in cluster_map.nodes:
        known = ", ".join(sorted(cluster_map.nodes))
        raise DevClusterError(f"no node {node_id!r} in the cluster map (epoch {cluster_map.epoch}; known: {known})")


async def _drain(endpoint: str, node_id: str, *, wait: bool, timeout: float, prefix: str) -> int:
    async with EtcdClient(endpoint) as etcd:
        cluster_map, _ = await read_cluster(etcd, prefix)
        _known(cluster_map, node_id)
        blocker = drain_blocker(cluster_map, node_id)
        if blocker is not None and not cluster_map.nodes[node_id].draining:
            _say(f"refusing to drain {node_id}: without it no placement meets the failure-domain rule "
                 f"({blocker}). Add a node first (dev cluster: `coffer dev add-node`), then drain again.",
                 error=True)
            return 1
        created = await request_drain(etcd, node_id, prefix=prefix)
        _say(f"drain of {node_id} {'requested' if created else 'was already requested'}: placement moves its "
             "positions to other nodes, which copy its fragments while it keeps serving.")
        if not wait:
            _say(f"Follow it with `coffer status`, or wait for it: `coffer node drain {node_id} --wait`.")
            return 0
        return await _wait_empty(etcd, node_id, timeout, prefix)


async def _wait_empty(etcd: EtcdClient, node_id: str, timeout: float, prefix: str) -> int:
    """Poll until ``node_id`` is draining, in no acting set and stores no fragment; 0 then, 1 on
    timeout."""
    deadline = time.monotonic() + timeout
    last_report = ""
    report = "no map read yet"
    while True:
        cluster_map, registrations = await read_cluster(etcd, prefix)
        node = cluster_map.nodes[node_id]
        positions = positions_held(cluster_map, node_id)
        address = registrations[node_id].address if node_id in registrations else node.address
        if not node.draining:
            report = (f"waiting for placement to publish a map with {node_id} draining (epoch "
                      f"{cluster_map.epoch} so far; if this lasts, check that the placement service runs)")
        elif positions:
            report = (f"epoch {cluster_map.epoch}: {node_id} still holds {positions} positions: the drain is "
                      "blocked until nodes are added (see `coffer status`)")
        elif node.state != NodeState.UP:
            report = f"{node_id} is {node.state.value}: its remaining fragments cannot be counted"
        else:
            health = await node_health(address)
            estimate = None if health is None else sum(v.fragments for v in health.volumes)
            report = (f"{node_id} is in no acting set; fragments left: "
                      f"{'unknown (no Health answer)' if estimate is None else f'~{estimate}'}")
            if estimate is not None and estimate <= EXACT_COUNT_BELOW:
                # The Health count is RocksDB's estimate (it need not reach 0 exactly): count by
                # listing every placement group once few are left.
                try:
                    exact = await count_fragments(address, cluster_map.pg_count)
                except StorageError as error:
                    report = f"{node_id}: cannot list its fragments ({error})"
                else:
                    if exact == 0:
                        _say(f"{node_id} holds no fragments: safe to remove (epoch {cluster_map.epoch}). "
                             f"To keep it instead, `coffer node undrain {node_id}` gives it data again.")
                        return 0
                    report = f"{node_id} is in no acting set; {exact} fragments left to hand over"
        if report != last_report:
            _say(report)
            last_report = report
        if time.monotonic() >= deadline:
            _say(f"timed out after {timeout:g}s: {report}. Fragments move at the repair rate limit; run "
                 f"`coffer node drain {node_id} --wait --timeout SECONDS` again (the drain stays requested), "
                 "and check `coffer status`.", error=True)
            return 1
        await asyncio.sleep(POLL_SECONDS)


async def _undrain(endpoint: str, node_id: str, prefix: str) -> int:
    async with EtcdClient(endpoint) as etcd:
        existed = await cancel_drain(etcd, node_id, prefix=prefix)
    if existed:
        _say(f"drain of {node_id} cancelled: placement gives it its former positions back.")
    else:
        _say(f"{node_id} had no drain request; nothing to cancel.")
    return 0


def drain(endpoint: str, node_id: str, *, wait: bool = False, timeout: float = 3600.0,
          prefix: str = DEFAULT_PREFIX) -> int:
    """``coffer node drain``: request the drain (refused, exit 1, when the rule could not be met
    without the node); with ``wait``, poll up to ``timeout`` seconds until the node is empty.

    Raises:
        DevClusterError: unknown node, no map, or etcd unreachable (the message says what to do).
    """
    try:
        return _with_etcd_retries(lambda: _drain(endpoint, node_id, wait=wait, timeout=timeout, prefix=prefix))
    except StatusUnavailable as error:
        raise DevClusterError(str(error)) from error
    except EtcdUnavailable as error:
        raise DevClusterError(f"etcd at {endpoint} does not answer ({error}); check --etcd or start the "
                              "cluster (`coffer dev up`)") from error


#: Attempts, and seconds between them, when etcd does not answer (a busy machine can be slow to
#: accept a new connection; requesting or cancelling a drain is idempotent).
ETCD_ATTEMPTS = 3
ETCD_RETRY_SECONDS = 2.0


def _with_etcd_retries(run: Callable[[], Coroutine[Any, Any, int]]) -> int:
    for attempt in range(1, ETCD_ATTEMPTS + 1):
        try:
            return asyncio.run(run())
        except EtcdUnavailable:
            if attempt == ETCD_ATTEMPTS:
                raise
            time.sleep(ETCD_RETRY_SECONDS)
    raise AssertionError("unreachable")  # pragma: no cover


def undrain(endpoint: str, node_id: str, *, prefix: str = DEFAULT_PREFIX) -> int:
    """``coffer node undrain``: delete the drain request of ``node_id``.

    Raises:
        DevClusterError: etcd unreachable.
    """
    try:
        return _with_etcd_retries(lambda: _undrain(endpoint, node_id, prefix))
    except EtcdUnavailable as error:
        raise DevClusterError(f"etcd at {endpoint} does not answer ({error}); check --etcd or start the "
                              "cluster (`coffer dev up`)") from error
