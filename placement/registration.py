"""A storage node's registration in etcd: a record bound to a lease that the node keeps alive.

While the lease lives, the placement service sees the node as UP; if the node dies the lease lapses
after its TTL, etcd deletes the key and the node becomes DOWN. The registrar never raises into the
node after ``start()``: if etcd is unreachable or the lease is lost (etcd restarted from an old
snapshot, keep-alives missed), it keeps retrying, re-granting a lease and re-writing the record.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from placement.etcd import EtcdClient, EtcdUnavailable, cancel_and_wait
from placement.keys import DEFAULT_PREFIX, ClusterKeys
from proto import cluster_pb2

REGISTRATION_FORMAT_VERSION = 1
_RETRY_SECONDS = 0.25
# Shortest useful per-call timeout (seconds) on a loaded machine.
_MIN_CALL_SECONDS = 0.2

logger = logging.getLogger(__name__)


class NodeRegistrar:
    """Keeps ``registration`` under ``<prefix>nodes/<node_id>`` in etcd at ``etcd_endpoint``
    (``host:port``), bound to a lease of ``ttl_seconds`` (etcd rounds up to whole seconds and
    enforces its own minimum, 2 s by default) refreshed every quarter of the TTL, each keep-alive
    cut off well before the lease could lapse (``refresh_schedule``).

    Raises:
        ValueError: on construction, for a malformed endpoint or node id.
    """

    def __init__(
        self,
        etcd_endpoint: str,
        registration: cluster_pb2.NodeRegistration,
        ttl_seconds: float = 5.0,
        *,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self._registration = cluster_pb2.NodeRegistration()
        self._registration.CopyFrom(registration)
        if not self._registration.format_version:
            self._registration.format_version = REGISTRATION_FORMAT_VERSION
        self._key = ClusterKeys(prefix).node(registration.node_id)
        self._etcd = EtcdClient(etcd_endpoint, timeout=max(2.0, ttl_seconds / 2))
        self._ttl_seconds = ttl_seconds
        self._lease_id: int | None = None
        self._granted_ttl = max(1, math.ceil(ttl_seconds))
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._registered = asyncio.Event()

    @property
    def key(self) -> str:
        """The etcd key this node registers under."""
        return self._key

    @property
    def registered(self) -> bool:
        """True while the record is believed to be in etcd under a live lease."""
        return self._registered.is_set()

    async def start(self) -> None:
        """Register (one attempt, bounded by the etcd timeout) and start keeping the lease alive.

        Does not raise when etcd is unreachable: the background task keeps retrying; see
        ``registered`` / ``wait_registered``.
        """
        if self._task is not None:
            return
        try:
            await self._register()
        except EtcdUnavailable as error:
            logger.warning("registration failed, will retry", extra={"fields": {"error": str(error)}})
        self._task = asyncio.create_task(self._keep_alive(), name=f"registrar:{self._key}")

    async def wait_registered(self, timeout: float) -> None:
        """Wait until the record is in etcd.

        Raises:
            TimeoutError: if it is not registered within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            await self._registered.wait()

    def update(self, used_bytes: int, full: bool | None = None) -> None:
        """Record the node's used capacity (bytes) and, unless ``full`` is None, whether the node is
        full (refuses puts for want of space); written to etcd at the next refresh (within a
        quarter of the TTL). A full node is placed like a draining one: placement moves its
        positions to other nodes, which copy its fragments from it. The caller applies hysteresis
        (e.g. full below 2x a volume's reserve, not full above 4x) so the flag does not flap.
        """
        if self._registration.used_bytes != used_bytes:
            self._registration.used_bytes = used_bytes
            self._dirty = True
        if full is not None:
            self.set_full(full)

    def set_full(self, full: bool) -> None:
        """Publish whether the node is full (see ``update``); a change is written at the next
        refresh and logged."""
        if self._registration.full != full:
            self._registration.full = full
            self._dirty = True
            logger.info("full flag changed", extra={"fields": {"key": self._key, "full": full}})

    @property
    def full(self) -> bool:
        """The full flag this registrar publishes."""
        return self._registration.full

    async def stop(self) -> None:
        """Stop refreshing and revoke the lease, which deletes the record at once (best effort:
        if etcd is unreachable the record lapses with the lease)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._lease_id is not None:
            try:
                await self._etcd.revoke_lease(self._lease_id)
            except EtcdUnavailable as error:
                logger.warning("lease revoke failed", extra={"fields": {"error": str(error)}})
            self._lease_id = None
        self._registered.clear()
        await self._etcd.close()

    async def _register(self) -> None:
        lease_id, granted = await self._etcd.grant_lease(self._ttl_seconds)
        self._dirty = False
        # A lease whose put failed is simply left to expire; the next attempt grants a new one.
        await self._etcd.put(self._key, self._registration.SerializeToString(), lease=lease_id)
        self._lease_id = lease_id
        self._granted_ttl = granted
        self._registered.set()
        logger.info("registered", extra={"fields": {"key": self._key, "lease": lease_id, "ttl": granted}})

    async def _keep_alive(self) -> None:
        # Monotonic times: when the lease lapses at the latest (counted from when the last successful
        # keep-alive was sent) and when the next keep-alive is due.
        lease_deadline = time.monotonic() + self._granted_ttl
        next_refresh = time.monotonic() + refresh_schedule(self._granted_ttl)[0]
        while True:
            if self._lease_id is None:
                await asyncio.sleep(_RETRY_SECONDS)
            else:
                await asyncio.sleep(max(0.0, next_refresh - time.monotonic()))
            interval, call_timeout = refresh_schedule(self._granted_ttl)
            try:
                if self._lease_id is None:
                    await self._register()
                    lease_deadline = time.monotonic() + self._granted_ttl
                    next_refresh = time.monotonic() + refresh_schedule(self._granted_ttl)[0]
                    continue
                sent = time.monotonic()
                # Bounded by a fraction of the lease time left, so a slow answer leaves time for
                # further attempts before the lease lapses.
                budget = max(_MIN_CALL_SECONDS, min(call_timeout, (lease_deadline - sent) / 2))
                async with asyncio.timeout(budget):
                    ttl = await self._etcd.refresh_lease(self._lease_id)
                if ttl <= 0:
                    # The lease expired (etcd was away too long): the record is gone, start over.
                    logger.warning("lease lost, re-registering", extra={"fields": {"key": self._key}})
                    self._lease_id = None
                    self._registered.clear()
                    await self._register()
                    sent = time.monotonic()
                    ttl = self._granted_ttl
                lease_deadline = sent + ttl
                next_refresh = sent + interval
                if self._dirty:
                    self._dirty = False
                    async with asyncio.timeout(budget):
                        await self._etcd.put(self._key, self._registration.SerializeToString(),
                                             lease=self._lease_id)
            except (EtcdUnavailable, TimeoutError) as error:
                if time.monotonic() > lease_deadline:
                    self._registered.clear()
                # Retry soon: the lease is still running down.
                next_refresh = time.monotonic() + min(_RETRY_SECONDS, interval)
                logger.warning("lease keep-alive failed", extra={
                    "fields": {"key": self._key, "error": repr(error)}})
            except Exception:
                # Never let the registrar die: a dead registrar would make the node DOWN forever.
                logger.exception("registration keep-alive failed", extra={"fields": {"key": self._key}})
                next_refresh = time.monotonic() + _RETRY_SECONDS


def refresh_schedule(ttl_seconds: float) -> tuple[float, float]:
    """Return ``(refresh_interval, call_timeout)`` in seconds for a lease of ``ttl_seconds``.

    A keep-alive is sent every quarter of the TTL and each attempt is cut off after a fifth of it
    (and after half the lease time still left), retrying at once: a lease survives at least two
    failed or hung attempts in a row (1.25 s / 1 s for a 5 s TTL, where etcd's own client sends
    keep-alives every TTL/3 with no per-call slack to spare).
    """
    return ttl_seconds / 4, max(_MIN_CALL_SECONDS, ttl_seconds / 5)
