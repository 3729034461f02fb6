"""Drain requests: an operator asks placement to move every fragment off a node.

A request is the etcd key ``<prefix>drain/<node_id>`` (value: the request time, UTF-8 Unix
seconds; informational), with no lease, so it survives restarts of every process until cancelled.
The placement leader watches these keys and publishes a map in which the node is ``draining``
and, while the rest of the cluster can hold every stripe under the failure-domain rule, in no
acting set (``placement.service.next_cluster_map``). New holders copy the node's fragments from it
(it is their former holder) while it stays UP and serving.
"""

from __future__ import annotations

import time

from placement.etcd import EtcdClient
from placement.keys import DEFAULT_PREFIX, ClusterKeys


async def request_drain(etcd: EtcdClient, node_id: str, *, prefix: str = DEFAULT_PREFIX,
                        now: float | None = None) -> bool:
    """Ask placement to drain ``node_id``; True if this created the request, False if one existed.

    ``now``: request time (Unix seconds, default ``time.time()``), stored for operators.

    Raises:
        ValueError: if ``node_id`` is empty or contains ``/``.
        EtcdUnavailable: etcd unreachable.
    """
    stamp = f"{time.time() if now is None else now:.3f}".encode()
    return await etcd.create(ClusterKeys(prefix).drain(node_id), stamp)


async def cancel_drain(etcd: EtcdClient, node_id: str, *, prefix: str = DEFAULT_PREFIX) -> bool:
    """Withdraw the drain request of ``node_id``; True if there was one.

    Placement then makes the node eligible again; it gets back the positions it held (former
    positions), so fragments it still stores are reused.

    Raises:
        ValueError: if ``node_id`` is empty or contains ``/``.
        EtcdUnavailable: etcd unreachable.
    """
    return await etcd.delete(ClusterKeys(prefix).drain(node_id))


async def drain_requests_at(etcd: EtcdClient, *, prefix: str = DEFAULT_PREFIX) -> tuple[frozenset[str], int]:
    """Return the node ids with a drain request and the etcd store revision of that read (to
    watch from ``revision + 1``). Keys that do not name a node are ignored.

    Raises:
        EtcdUnavailable: etcd unreachable.
    """
    keys = ClusterKeys(prefix)
    kvs, revision = await etcd.get_prefix(keys.drains_prefix)
    node_ids = set()
    for kv in kvs:
        node_id = kv.key[len(keys.drains_prefix):]
        if node_id and "/" not in node_id:
            node_ids.add(node_id)
    return frozenset(node_ids), revision


async def drain_requests(etcd: EtcdClient, *, prefix: str = DEFAULT_PREFIX) -> frozenset[str]:
    """Return the ids of every node with a drain request.

    Raises:
        EtcdUnavailable: etcd unreachable.
    """
    node_ids, _ = await drain_requests_at(etcd, prefix=prefix)
    return node_ids
