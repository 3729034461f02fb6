"""The frontend process: the S3 endpoint (aiohttp + uvloop) over the metadata store and the cluster.

``coffer frontend --listen 127.0.0.1:9000 --etcd 127.0.0.1:2379 --metadata PATH`` runs it. Besides
S3 it answers ``GET /-/health`` (200 while the process runs) and ``GET /-/ready`` (200 once a cluster
map is loaded with at least a write quorum of nodes up; 503 before, with the reason). Unless
``--no-gc``, it also runs garbage collection (frontend/garbage_collector.py) once the map is loaded.
The sync API (``/-/sync/...``, frontend/sync/api.py) and its presigned chunk transfers
(``/-/chunks/{hash}``, frontend/sync/chunks.py) share the port; virtual-hosted requests
(``bucket.<suffix>/-/...``) stay S3. Expired sync upload sessions are swept every 10 minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from dataclasses import dataclass

import uvloop
from aiohttp import web

from common.logs import setup_logging
from common.malloc import tune_malloc
from common.metrics import serve_metrics
from frontend.chunk_store import ChunkStore
from frontend.cluster_view import ClusterView
from frontend.config import FrontendConfig, parse_args
from frontend.erasure import ErasureCoder
from frontend.garbage_collector import GarbageCollector
from frontend.memory_budget import MemoryBudget
from frontend.s3.context import S3Services
from frontend.s3.dispatch import S3Dispatcher
from frontend.sync.api import add_sync_routes, is_virtual_hosted
from frontend.sync.chunks import ChunkTransfer
from frontend.sync.notifier import ChangeNotifier
from frontend.sync.services import SyncServices, SyncSettings, ensure_presign_key
from metadata.sqlite_store import SqliteMetadataStore
from metadata.sqlite_sync_store import SqliteSyncStore
from placement.watcher import ClusterMapWatcher
from storagenode.client import StorageNodePool

log = logging.getLogger("frontend")


@dataclass
class Frontend:
    """Everything one frontend process runs; built by :func:`start_frontend`, closed by ``close``."""

    config: FrontendConfig
    services: S3Services
    watcher: ClusterMapWatcher
    view: ClusterView
    coder: ErasureCoder
    nodes: StorageNodePool
    runner: web.AppRunner
    port: int
    collector: GarbageCollector | None = None
    background: asyncio.Task[None] | None = None
    sync: SyncServices | None = None
    sync_background: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Stop garbage collection and accepting requests, finish in-flight ones, then release
        workers and connections."""
        for task in (self.background, self.sync_background):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.runner.cleanup()
        await self.watcher.stop()
        await self.nodes.close()
        await asyncio.to_thread(self.coder.close)  # waits for the worker processes to exit


def build_app(services: S3Services, view: ClusterView, sync: SyncServices | None = None) -> web.Application:
    """The aiohttp application: health endpoints, the sync API and chunk transfers (with ``sync``),
    plus one catch-all S3 route."""
    dispatcher = S3Dispatcher(services)

    def virtual_hosted(request: web.Request) -> bool:
        # bucket.<suffix>/-/health is the object "-/health", not our endpoint.
        return is_virtual_hosted(request, services.config.virtual_host_suffixes)

    async def health(request: web.Request) -> web.StreamResponse:
        if virtual_hosted(request):
            return await dispatcher(request)
        return web.json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.StreamResponse:
        if virtual_hosted(request):
            return await dispatcher(request)
        up = view.up_nodes()
        if up >= services.config.write_quorum:
            return web.json_response({"status": "ready", "nodes_up": up})
        return web.json_response({"status": "not ready", "nodes_up": up,
                                  "needed": services.config.write_quorum}, status=503)

    # client_max_size only bounds request.read()/post(); S3 bodies are streamed, never read whole.
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_get("/-/health", health)
    app.router.add_get("/-/ready", ready)
    if sync is not None:
        add_sync_routes(app, sync, s3_fallback=dispatcher)
        transfer = ChunkTransfer(sync)

        async def chunk(request: web.Request) -> web.StreamResponse:
            return await (dispatcher(request) if virtual_hosted(request) else transfer(request))

        async def chunk_expect(request: web.Request) -> web.StreamResponse | None:
            if virtual_hosted(request):
                return await dispatcher.expect_continue(request)
            return await transfer.expect_continue(request)

        app.router.add_route("*", "/-/chunks/{hash}", chunk, expect_handler=chunk_expect)
    app.router.add_route("*", "/{tail:.*}", dispatcher, expect_handler=dispatcher.expect_continue)
    return app


async def expire_sync_uploads(sync: SyncServices) -> None:
    """Expire abandoned sync upload sessions every ``expire_interval_seconds`` (their chunk
    references are released; garbage collection takes what nobody else references). Runs until
    cancelled; failures are logged and retried at the next round."""
    while True:
        try:
            expired = await sync.s3.meta(sync.store.expire_uploads, time.time())
            if expired:
                log.info("expired sync upload sessions", extra={"fields": {"sessions": expired}})
        except Exception as exc:
            log.warning("could not expire sync upload sessions", extra={"fields": {"error": repr(exc)}})
        await asyncio.sleep(sync.settings.expire_interval_seconds)


async def start_frontend(config: FrontendConfig) -> Frontend:
    """Open the metadata store, start watching the cluster map and serve S3 on the configured port.

    The map is loaded in the background: until it arrives, S3 data requests get 503 and
    ``/-/ready`` says why, so a frontend started before the placement service still comes up.

    Raises:
        OSError: the listen address cannot be bound.
    """
    metadata = SqliteMetadataStore(config.metadata_path)
    # This process owns the file: pins left in it belong to requests that died with the previous
    # process, and would otherwise keep their chunks from collection for the whole pin TTL.
    expired = await asyncio.to_thread(metadata.expire_pins, time.time())
    if expired:
        log.info("released pins of an earlier process", extra={"fields": {"pins": expired}})
    watcher = ClusterMapWatcher(config.etcd_endpoint)
    view = ClusterView(watcher)
    coder = ErasureCoder(workers=config.erasure_workers)
    nodes = StorageNodePool()
    chunk_store = ChunkStore(view.current, nodes, coder, write_quorum=config.write_quorum)
    services = S3Services(metadata=metadata, chunk_store=chunk_store, config=config,
                          upload_budget=MemoryBudget(config.upload_memory_bytes, name="upload"),
                          read_budget=MemoryBudget(config.read_memory_bytes, name="read"))
    sync = SyncServices(
        s3=services, store=SqliteSyncStore(metadata), notifier=ChangeNotifier(),
        presign_key=await asyncio.to_thread(ensure_presign_key, metadata),
        settings=SyncSettings(url_expires_seconds=config.sync_url_expires_seconds,
                              upload_expires_seconds=config.sync_upload_expires_seconds,
                              longpoll_max_seconds=config.sync_longpoll_max_seconds))
    runner = web.AppRunner(build_app(services, view, sync), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port, backlog=1024)
    await site.start()
    port = config.listen_port
    server = site._server
    if port == 0 and server is not None:
        # Port 0 asks the kernel for a free port; report the one it chose.
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def load_map() -> None:
        while True:
            try:
                await watcher.start(timeout=config.map_timeout_seconds)
                log.info("cluster map loaded", extra={"fields": {"epoch": watcher.current.epoch}})
                return
            except (TimeoutError, OSError) as exc:
                log.warning("no cluster map yet; retrying", extra={"fields": {"error": repr(exc)}})

    collector = None
    if config.gc_enabled:
        collector = GarbageCollector(
            metadata, view.current, nodes, grace_seconds=config.gc_grace_seconds,
            interval_seconds=config.gc_interval_seconds, orphan_grace_seconds=config.orphan_grace_seconds,
            orphan_sweep_interval_seconds=config.orphan_sweep_interval_seconds,
            pin_ttl_seconds=config.pin_ttl_seconds)

    async def background() -> None:
        await load_map()
        if collector is not None:
            await collector.run()

    task = asyncio.get_running_loop().create_task(background())
    sync_task = asyncio.get_running_loop().create_task(expire_sync_uploads(sync))
    return Frontend(config=config, services=services, watcher=watcher, view=view, coder=coder, nodes=nodes,
                    runner=runner, port=port, collector=collector, background=task, sync=sync,
                    sync_background=sync_task)


async def _run(config: FrontendConfig) -> None:
    frontend = await start_frontend(config)
    log.info("frontend serving", extra={"fields": {"address": f"{config.listen_host}:{frontend.port}"}})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("frontend stopping")
    await frontend.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``coffer frontend``; returns the process exit status."""
    tune_malloc()
    config = parse_args(argv)
    setup_logging(f"frontend/{config.listen_port}")
    if config.metrics_port >= 0:
        serve_metrics("127.0.0.1", config.metrics_port)
    uvloop.run(_run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
