"""client.api against a small real aiohttp server on 127.0.0.1 (the frontend's sync API stand-in)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from client.api import ChunkHashMismatch, RetryPolicy, ServerUnreachable, SyncApi, SyncApiError
from client.chunking import FileChunk
from tests.fixtures.processes import free_port

TOKEN = "cst_test-token"
FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01)


class FakeServer:
    """Records requests; handlers follow contracts section 1 just enough to exercise the client."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.failures_left: dict[str, int] = {}
        self.bodies: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        self.chunk_store: dict[str, bytes] = {}
        self.changes_event = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/-/sync/{tail:.*}", self.sync)
        app.router.add_route("*", "/-/chunks/{hash}", self.chunk)
        return app

    def fail(self, key: str) -> web.Response | None:
        if self.failures_left.get(key, 0) > 0:
            self.failures_left[key] -= 1
            return web.json_response({"error": "ServiceUnavailable", "message": "try later"}, status=503)
        return None

    async def sync(self, request: web.Request) -> web.Response:
        key = f"{request.method} {request.path}"
        self.hits[key] += 1
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "Unauthorized", "message": "no token"}, status=401)
        failure = self.fail(key)
        if failure is not None:
            return failure
        body = await request.read()
        self.requests.append({"key": key, "query": dict(request.query),
                              "json": json.loads(body) if body else None})
        tail = request.match_info["tail"]
        if tail == "account":
            return web.json_response({"user": "alice", "device": "laptop", "device_id": 3, "namespace_id": 1})
        if tail == "files" and request.method == "POST":
            port = request.url.port
            missing = [{"hash": c["hash"], "size": c["size"],
                        "url": f"http://127.0.0.1:{port}/-/chunks/{c['hash']}?upload=u1&X-Amz-Signature=a%2Fb"}
                       for c in json.loads(body)["chunks"]]
            return web.json_response({"upload_id": "u1", "file_id": None, "missing": missing,
                                      "expires_at": 1.0}, status=201)
        if tail == "files/7" and request.method == "GET":
            return web.json_response({"error": "Forbidden", "message": "not yours"}, status=403)
        if tail == "files/u1:commit":
            return web.json_response({"file_id": 5, "version_id": 9, "path": "a.txt", "conflict": False,
                                      "conflict_of": None, "cursor": "c1.x"})
        if tail == "changes":
            wait = float(request.query.get("wait", "0"))
            try:
                await asyncio.wait_for(self.changes_event.wait(), wait)
            except TimeoutError:
                return web.json_response({"entries": [], "cursor": request.query.get("since"), "has_more": False})
            return web.json_response({"entries": [{"action": "commit", "path": "a"}], "cursor": "c1.next",
                                      "has_more": False})
        return web.json_response({"error": "NotFound", "message": tail}, status=404)

    async def chunk(self, request: web.Request) -> web.StreamResponse:
        chunk_hash = request.match_info["hash"]
        key = f"{request.method} chunk"
        self.hits[key] += 1
        # The presigned query must arrive exactly as the server wrote it (SigV4 signs the encoded form).
        if request.rel_url.raw_query_string != "upload=u1&X-Amz-Signature=a%2Fb":
            return web.Response(status=403, text="<Error><Code>SignatureDoesNotMatch</Code></Error>")
        failure = self.fail(key)
        if failure is not None:
            return failure
        if request.method == "PUT":
            body = await request.read()
            if hashlib.sha256(body).hexdigest() != chunk_hash:
                return web.Response(status=400, content_type="application/xml",
                                    text="<Error><Code>BadDigest</Code><Message>bad</Message></Error>")
            self.chunk_store[chunk_hash] = body
            return web.Response(headers={"ETag": '"etag"'})
        if chunk_hash not in self.chunk_store:
            return web.Response(status=404, text="<Error><Code>NoSuchKey</Code></Error>")
        return web.Response(body=self.chunk_store[chunk_hash])


@asynccontextmanager
async def serve(server: FakeServer) -> AsyncIterator[str]:
    runner = web.AppRunner(server.app())
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def run(body: Callable[[FakeServer, SyncApi], Awaitable[None]], server: FakeServer | None = None,
        retries: RetryPolicy = FAST) -> FakeServer:
    fake = server or FakeServer()

    async def main() -> None:
        async with serve(fake) as url, SyncApi(url, TOKEN, retries=retries) as api:
            await body(fake, api)

    asyncio.run(main())
    return fake


def test_account_and_byte_counters() -> None:
    async def body(server: FakeServer, api: SyncApi) -> None:
        account = await api.account()
        assert account["namespace_id"] == 1
        assert api.bytes_received > 0
        assert api.bytes_sent == 0

    run(body)


def test_retries_503_then_succeeds() -> None:
    server = FakeServer()
    server.failures_left["GET /-/sync/account"] = 2

    async def body(server: FakeServer, api: SyncApi) -> None:
        assert (await api.account())["user"] == "alice"
        assert api.online

    run(body, server)
    assert server.hits["GET /-/sync/account"] == 3


def test_persistent_503_is_server_unreachable_after_bounded_attempts() -> None:
    server = FakeServer()
    server.failures_left["GET /-/sync/account"] = 100

    async def body(server: FakeServer, api: SyncApi) -> None:
        with pytest.raises(ServerUnreachable) as raised:
            await api.account()
        assert raised.value.last_status == 503
        assert not api.online

    run(body, server)
    assert server.hits["GET /-/sync/account"] == FAST.attempts


def test_403_is_not_retried() -> None:
    async def body(server: FakeServer, api: SyncApi) -> None:
        with pytest.raises(SyncApiError) as raised:
            await api.get_file(7)
        assert (raised.value.status, raised.value.code, raised.value.message) == (403, "Forbidden", "not yours")
        assert raised.value.body["error"] == "Forbidden"

    server = run(body)
    assert server.hits["GET /-/sync/files/7"] == 1


def test_unauthorized_token() -> None:
    async def main() -> None:
        server = FakeServer()
        async with serve(server) as url, SyncApi(url, "cst_wrong", retries=FAST) as api:
            with pytest.raises(SyncApiError) as raised:
                await api.account()
            assert raised.value.code == "Unauthorized"

    asyncio.run(main())


def test_connection_refused_is_server_unreachable() -> None:
    async def main() -> None:
        async with SyncApi(f"http://127.0.0.1:{free_port()}", TOKEN, retries=FAST) as api:
            with pytest.raises(ServerUnreachable) as raised:
                await api.account()
            assert raised.value.last_status is None
            assert not api.online

    asyncio.run(main())


def test_upload_commit_and_download_chunks() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: sent as views of the caller's buffer
    chunk_hash = hashlib.sha256(data).hexdigest()

    async def body(server: FakeServer, api: SyncApi) -> None:
        started = await api.begin_upload("a.txt", len(data), [FileChunk(chunk_hash, 0, len(data))], None)
        assert server.requests[-1]["json"] == {"path": "a.txt", "size": len(data),
                                               "chunks": [{"hash": chunk_hash, "size": len(data)}],
                                               "base_version": None}
        (missing,) = started["missing"]
        assert await api.upload_chunk(missing["url"], memoryview(data)) == '"etag"'
        assert server.chunk_store[chunk_hash] == data
        assert api.chunk_bytes_sent == 2 * len(data)  # every attempt counts: one 503, one success
        committed = await api.commit(started["upload_id"])
        assert committed["version_id"] == 9
        assert await api.download_chunk(missing["url"], chunk_hash, len(data)) == data
        assert api.chunk_bytes_received == len(data)

    server = FakeServer()
    server.failures_left["PUT chunk"] = 1  # the chunk PUT is retried with the same bytes
    run(body, server)
    assert server.hits["PUT chunk"] == 2


def test_bad_digest_upload_and_hash_mismatch_download() -> None:
    good = b"good bytes"
    good_hash = hashlib.sha256(good).hexdigest()

    async def body(server: FakeServer, api: SyncApi) -> None:
        started = await api.begin_upload("a.txt", 3, [{"hash": good_hash, "size": 3}], None)
        url = started["missing"][0]["url"]
        with pytest.raises(SyncApiError) as raised:
            await api.upload_chunk(url, b"bad")
        assert (raised.value.status, raised.value.code) == (400, "BadDigest")
        server.chunk_store[good_hash] = b"corrupted!"
        with pytest.raises(ChunkHashMismatch) as mismatch:
            await api.download_chunk(url, good_hash)
        assert mismatch.value.expected == good_hash
        assert mismatch.value.actual == hashlib.sha256(b"corrupted!").hexdigest()

    server = run(body)
    assert server.hits["PUT chunk"] == 1


def test_long_poll_waits_longer_than_request_timeout() -> None:
    async def main() -> None:
        server = FakeServer()
        async with serve(server) as url, SyncApi(url, TOKEN, retries=RetryPolicy(attempts=1),
                                                 request_timeout=0.2) as api:
            # The server holds the poll for up to 1 s, beyond the 0.2 s read timeout: no timeout error.
            async def wake() -> None:
                await asyncio.sleep(0.5)
                server.changes_event.set()

            waker = asyncio.create_task(wake())
            page = await api.changes("c1.a", wait=5)
            await waker
            assert page["cursor"] == "c1.next"
            assert server.requests[-1]["query"] == {"since": "c1.a", "limit": "1000", "wait": "5"}

    asyncio.run(main())


def test_backoff_delays_are_bounded() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.5, max_delay=3.0)
    delays = [policy.delay(retry) for retry in range(200)]
    assert all(0.0 <= delay <= 3.0 for delay in delays)
    assert all(delay <= 0.5 for delay in delays[:1])
    assert policy.delay(3, retry_after=100.0) == 3.0
    assert policy.delay(3, retry_after=1.5) == 1.5
