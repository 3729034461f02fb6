"""Follow the published cluster map: load it once, then watch etcd for newer epochs.

A process that loses etcd keeps its last map (a frontend keeps serving) and keeps retrying (after any
error, not only etcd's: the watch task never ends before ``stop()``); after etcd returns it re-reads
the map, so no epoch published meanwhile is missed. Maps are only ever
replaced by a higher epoch.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable

from placement.cluster_map import ClusterMap
from placement.etcd import EtcdClient, EtcdUnavailable, cancel_and_wait
from placement.keys import DEFAULT_PREFIX, ClusterKeys

logger = logging.getLogger(__name__)

MapListener = Callable[[ClusterMap], Awaitable[None] | None]
_POLL_SECONDS = 0.25
_MAX_RETRY_SECONDS = 2.0


async def load_cluster_map(etcd_endpoint: str, *, prefix: str = DEFAULT_PREFIX) -> ClusterMap | None:
    """Read the published cluster map once; None if none has been published yet.

    Raises:
        EtcdUnavailable: etcd unreachable.
        ValueError: the stored map is unreadable (e.g. ``UnsupportedFormatVersion``).
    """
    async with EtcdClient(etcd_endpoint) as etcd:
        kv = await etcd.get(ClusterKeys(prefix).map)
    return None if kv is None else ClusterMap.from_bytes(kv.value)


class ClusterMapWatcher:
    """Keeps ``current`` equal to the newest cluster map published in etcd at ``etcd_endpoint``.

    Listeners (sync or async callables taking the new ``ClusterMap``) run, in registration order,
    each time a higher epoch arrives; their exceptions are logged and do not stop the watch.
    """

    def __init__(self, etcd_endpoint: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._endpoint = etcd_endpoint
        self._keys = ClusterKeys(prefix)
        self._etcd: EtcdClient | None = None
        self._current: ClusterMap | None = None
        self._listeners: list[MapListener] = []
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    @property
    def current(self) -> ClusterMap:
        """The newest map seen.

        Raises:
            RuntimeError: before ``start()`` has loaded a map.
        """
        if self._current is None:
            raise RuntimeError("ClusterMapWatcher.start() has not loaded a cluster map yet")
        return self._current

    def add_listener(self, callback: MapListener) -> None:
        """Call ``callback(new_map)`` whenever a newer epoch arrives."""
        self._listeners.append(callback)

    async def start(self, timeout: float = 30.0) -> None:
        """Load the map, waiting until one is published, then watch for newer epochs.

        Raises:
            TimeoutError: if no map could be loaded within ``timeout`` seconds (etcd unreachable
                or nothing published yet).
        """
        if self._task is not None:
            return
        self._etcd = EtcdClient(self._endpoint)
        deadline = time.monotonic() + timeout
        last_error = "no cluster map published yet"
        while self._current is None:
            try:
                kv = await self._etcd.get(self._keys.map)
                if kv is not None:
                    await self._apply(kv.value)
            except EtcdUnavailable as error:
                last_error = str(error)
            if self._current is not None:
                break
            if time.monotonic() >= deadline:
                await self._etcd.close()
                self._etcd = None
                raise TimeoutError(f"no cluster map after {timeout:.1f}s: {last_error}")
            await asyncio.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        self._task = asyncio.create_task(self._follow(), name="cluster-map-watcher")

    async def wait_for_epoch(self, epoch: int, timeout: float) -> ClusterMap:
        """Wait until ``current.epoch >= epoch``; return that map.

        Raises:
            TimeoutError: if it does not arrive within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self._current is not None and self._current.epoch >= epoch)
        return self.current

    async def stop(self) -> None:
        """Stop watching and close the etcd connection; ``current`` keeps the last map."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._etcd is not None:
            await self._etcd.close()
            self._etcd = None

    async def _apply(self, value: bytes) -> None:
        try:
            new_map = ClusterMap.from_bytes(value)
        except ValueError as error:
            logger.error("ignoring unreadable cluster map", extra={"fields": {"error": str(error)}})
            return
        if self._current is not None and new_map.epoch <= self._current.epoch:
            return
        self._current = new_map
        logger.info("cluster map", extra={"fields": {"epoch": new_map.epoch}})
        async with self._changed:
            self._changed.notify_all()
        for listener in list(self._listeners):
            try:
                result = listener(new_map)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("cluster map listener failed", extra={"fields": {"epoch": new_map.epoch}})

    async def _follow(self) -> None:
        assert self._etcd is not None
        retry = _POLL_SECONDS
        while True:
            try:
                # Re-read first so changes made while the watch was down are not missed, then
                # watch from just after that read.
                kvs, revision = await self._etcd.get_prefix(self._keys.map)
                for kv in kvs:
                    if kv.key == self._keys.map:
                        await self._apply(kv.value)
                retry = _POLL_SECONDS
                async for event in self._etcd.watch(self._keys.map, start_revision=revision + 1):
                    if not event.deleted:
                        await self._apply(event.value)
            except EtcdUnavailable as error:
                logger.warning("cluster map watch interrupted", extra={"fields": {"error": str(error)}})
            except Exception:
                # Never end: a dead watch would leave this process on a stale map forever. Log with
                # the traceback, back off and re-read.
                logger.exception("cluster map watch failed, retrying")
            await asyncio.sleep(retry)
            retry = min(_MAX_RETRY_SECONDS, retry * 2)
