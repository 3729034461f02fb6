"""Async client of the sync HTTP API (contracts section 1) and of the presigned chunk URLs.

`SyncApi` speaks JSON to `<server>/-/sync/...` with a device's bearer token, and moves chunk bytes
with presigned S3 URLs (`/-/chunks/{hash}?...`), which carry their own SigV4 query signature and so
get no Authorization header and are sent exactly as given (re-encoding the query would break the
signature).

Retries: connection errors, timeouts, truncated bodies and 5xx answers are retried with exponential
backoff and "full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015): the n-th
delay is uniform in [0, min(max_delay, base_delay * 2**n)], or the server's Retry-After if it sent
one (capped at max_delay). 4xx answers are never retried (`SyncApiError`). When every attempt failed
the call raises `ServerUnreachable` and `online` turns False, the daemon's offline signal; the next
successful answer turns it True again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from client.chunking import HashAndSize

SYNC_PREFIX = "/-/sync"
_BODY_PIECE = 1024 * 1024  # chunk bodies are written in 1 MiB views (no copy, no aiohttp "large body" warning)
_XML_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


class SyncApiError(Exception):
    """The server answered with an error: HTTP `status`, error `code` (e.g. "PathExists", or the S3
    code such as "AccessDenied" on chunk URLs), `message`, and the decoded `body` (dict for JSON
    errors, e.g. ChunksMissing's `body["missing"]`; bytes otherwise)."""

    def __init__(self, status: int, code: str, message: str, body: Any) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class ServerUnreachable(Exception):
    """Every attempt failed with a connection error, a timeout or a 5xx answer: the server is
    unreachable or unavailable (offline). `last_status` is the last HTTP status seen, or None."""

    def __init__(self, message: str, last_status: int | None = None) -> None:
        super().__init__(message)
        self.last_status = last_status


class ChunkHashMismatch(Exception):
    """A downloaded chunk's SHA-256 (`actual`) differs from its name (`expected`), or its size from
    the expected size. The bytes are discarded; the caller may fetch it again."""

    def __init__(self, expected: str, actual: str, size: int) -> None:
        super().__init__(f"chunk {expected} arrived as {actual} ({size} bytes)")
        self.expected = expected
        self.actual = actual
        self.size = size


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: `attempts` in total (>= 1), delays in seconds."""

    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 8.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (0-based): full jitter, at most max_delay."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2.0 ** min(retry, 60)))


def _chunk_json(chunk: HashAndSize | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(chunk, Mapping):
        return {"hash": str(chunk["hash"]), "size": int(chunk["size"])}
    return {"hash": chunk.hash, "size": chunk.size}


def _error_from(status: int, body: bytes) -> SyncApiError:
    """A SyncApiError from a JSON error (`{"error", "message"}`) or an S3 XML error body."""
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and "error" in decoded:
        return SyncApiError(status, str(decoded["error"]), str(decoded.get("message", "")), decoded)
    code = _XML_CODE.search(body)
    message = _XML_MESSAGE.search(body)
    return SyncApiError(status, code.group(1).decode() if code else f"HTTP{status}",
                        message.group(1).decode() if message else body[:200].decode(errors="replace"), body)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["Retry-After"])
    except (KeyError, ValueError):
        return None


async def _pieces(data: memoryview) -> AsyncIterator[memoryview]:
    for start in range(0, len(data), _BODY_PIECE):
        yield data[start:start + _BODY_PIECE]


class SyncApi:
    """One device's client of the sync API at `server_url` (e.g. "http://127.0.0.1:9000").

    `token` is the device's bearer token; `retries` is a RetryPolicy or the number of attempts;
    `session` an aiohttp.ClientSession to share (else one is made on first use and closed by
    `close`). `request_timeout` (seconds) bounds each read of an answer; a long poll gets `wait`
    more. JSON answers are returned as dicts with the fields of contracts section 1.

    Counters (bytes of HTTP bodies, every attempt counted): `bytes_sent`, `bytes_received`, and of
    those the chunk bodies `chunk_bytes_sent`, `chunk_bytes_received`. `online` is False after a
    call ended in ServerUnreachable, True after any answer.
    """

    def __init__(self, server_url: str, token: str, *, retries: RetryPolicy | int = RetryPolicy(),
                 session: aiohttp.ClientSession | None = None, request_timeout: float = 60.0,
                 connect_timeout: float = 10.0) -> None:
        self.server_url = server_url.rstrip("/")
        self.base_url = self.server_url + SYNC_PREFIX
        self.retry = retries if isinstance(retries, RetryPolicy) else RetryPolicy(attempts=max(1, retries))
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self._token = token
        self._session = session
        self._own_session = session is None
        self.online = True
        self.bytes_sent = 0
        self.bytes_received = 0
        self.chunk_bytes_sent = 0
        self.chunk_bytes_received = 0

    async def __aenter__(self) -> SyncApi:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client made it."""
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _timeout(self, extra: float = 0.0) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, connect=self.connect_timeout,
                                     sock_read=self.request_timeout + extra)

    async def _send(self, method: str, url: str | URL, *, headers: Mapping[str, str] | None = None,
                    body: bytes | memoryview | None = None, params: Mapping[str, str] | None = None,
                    timeout_extra: float = 0.0, chunk_body: bool = False) -> tuple[int, CIMultiDict[str], bytes]:
        """One call with retries: (status, headers, body) of a 2xx/3xx answer; SyncApiError on 4xx;
        ServerUnreachable when every attempt failed."""
        session = self._client_session()
        last_status: int | None = None
        last_error: str = ""
        for attempt in range(self.retry.attempts):
            retry_after: float | None = None
            request_headers = dict(headers or {})
            data: Any = None
            if body is not None:
                view = memoryview(body)
                request_headers["Content-Length"] = str(view.nbytes)
                data = _pieces(view.cast("B")) if chunk_body else bytes(view)
                self.bytes_sent += view.nbytes
                if chunk_body:
                    self.chunk_bytes_sent += view.nbytes
            try:
                async with session.request(method, url, headers=request_headers, data=data, params=params,
                                           timeout=self._timeout(timeout_extra), allow_redirects=False) as resp:
                    answer = await resp.read()
                    status = resp.status
                    response_headers = CIMultiDict(resp.headers)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                last_status = None
            else:
                self.bytes_received += len(answer)
                if status < 500:
                    self.online = True
                    if status >= 400:
                        raise _error_from(status, answer)
                    return status, response_headers, answer
                last_status = status
                last_error = str(_error_from(status, answer))
                retry_after = _retry_after(response_headers)
            if attempt + 1 < self.retry.attempts:
                await asyncio.sleep(self.retry.delay(attempt, retry_after))
        self.online = False
        raise ServerUnreachable(f"{method} {url}: {self.retry.attempts} attempts failed; last: {last_error}",
                                last_status)

    async def _json(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                    params: Mapping[str, str] | None = None, timeout_extra: float = 0.0) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        encoded = None
        if body is not None:
            encoded = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        _, _, answer = await self._send(method, self.base_url + path, headers=headers, body=encoded, params=params,
                                     timeout_extra=timeout_extra)
        result = json.loads(answer) if answer else {}
        if not isinstance(result, dict):
            raise SyncApiError(200, "InvalidResponse", "expected a JSON object", answer)
        return result

    # --- JSON endpoints (contracts section 1) -------------------------------------------------

    async def account(self) -> dict[str, Any]:
        """GET /account -> {"user", "device", "device_id", "namespace_id"}."""
        return await self._json("GET", "/account")

    async def begin_upload(self, path: str, size: int, chunks: Sequence[HashAndSize | Mapping[str, Any]],
                           base_version: int | None, namespace_id: int | None = None) -> dict[str, Any]:
        """POST /files: start an upload session for `size` bytes of `chunks` (FileChunks or
        {"hash","size"} dicts, in file order) edited from `base_version` (None for a new file).
        -> {"upload_id", "file_id", "missing": [{"hash","size","url"}], "expires_at", ...}."""
        body: dict[str, Any] = {"path": path, "size": size, "chunks": [_chunk_json(chunk) for chunk in chunks],
                                "base_version": base_version}
        if namespace_id is not None:
            body["namespace_id"] = namespace_id
        return await self._json("POST", "/files", body)

    async def upload_state(self, upload_id: str) -> dict[str, Any]:
        """GET /files/{upload_id}/chunks -> {"upload_id", "state", "missing" (fresh URLs), "uploaded"}."""
        return await self._json("GET", f"/files/{upload_id}/chunks")

    async def mark_chunk(self, upload_id: str, chunk_hash: str) -> dict[str, Any]:
        """POST /files/{upload_id}/chunks/{hash} -> {"hash", "uploaded", "missing": n}; 409 ChunksMissing
        (SyncApiError) if the server does not hold it for this session."""
        return await self._json("POST", f"/files/{upload_id}/chunks/{chunk_hash}")

    async def commit(self, upload_id: str) -> dict[str, Any]:
        """POST /files/{upload_id}:commit -> {"file_id", "version_id", "path", "conflict", "conflict_of",
        "cursor"}. Idempotent on the server, so retrying it is safe."""
        return await self._json("POST", f"/files/{upload_id}:commit")

    async def get_file(self, file_id: int, version: int | None = None) -> dict[str, Any]:
        """GET /files/{file_id}[?version=V] -> metadata, versions and chunks with presigned GET URLs."""
        params = None if version is None else {"version": str(version)}
        return await self._json("GET", f"/files/{file_id}", params=params)

    async def get_file_by_path(self, path: str) -> dict[str, Any]:
        """GET /files?path=P -> as get_file, for the live entry at `path` (404 NotFound if none)."""
        return await self._json("GET", "/files", params={"path": path})

    async def delete(self, file_id: int, *, version: int | None = None, if_empty: bool = False) -> dict[str, Any]:
        """DELETE /files/{file_id} -> {"cursor"} (soft delete; folders recursively). ``version``:
        only if the file is still at that version; ``if_empty``: a folder only if nothing is under
        it (else SyncApiError 412 PreconditionFailed, nothing deleted)."""
        params: dict[str, str] = {}
        if version is not None:
            params["version"] = str(version)
        if if_empty:
            params["if_empty"] = "true"
        return await self._json("DELETE", f"/files/{file_id}", params=params or None)

    async def move(self, file_id: int, to: str) -> dict[str, Any]:
        """POST /files/{file_id}:move {"to"} -> {"cursor"}; 409 PathExists if `to` is taken."""
        return await self._json("POST", f"/files/{file_id}:move", {"to": to})

    async def restore(self, file_id: int, version_id: int) -> dict[str, Any]:
        """POST /files/{file_id}:restore {"version_id"} -> {"version_id" (new), "path", "cursor"}."""
        return await self._json("POST", f"/files/{file_id}:restore", {"version_id": version_id})

    async def make_folder(self, path: str) -> dict[str, Any]:
        """POST /folders {"path"} -> {"file_id", "cursor"} (existing folder: same id)."""
        return await self._json("POST", "/folders", {"path": path})

    async def tree(self) -> dict[str, Any]:
        """GET /tree -> {"entries": [entry...], "cursor"}: every live entry, consistent with the cursor."""
        return await self._json("GET", "/tree")

    async def changes(self, since: str | None = None, limit: int = 1000, wait: float = 0.0) -> dict[str, Any]:
        """GET /changes?since=C&limit=N&wait=S -> {"entries", "cursor", "has_more"}.

        With `wait` > 0 (seconds, the server caps it at 60) the server holds the request until a
        change arrives or `wait` elapses; the read timeout is `wait` + request_timeout.
        """
        params = {"limit": str(limit)}
        if since is not None:
            params["since"] = since
        if wait > 0:
            params["wait"] = f"{wait:g}"
        return await self._json("GET", "/changes", params=params, timeout_extra=max(wait, 0.0))

    # --- chunk bytes over presigned URLs ------------------------------------------------------

    async def upload_chunk(self, url: str, data: bytes | bytearray | memoryview) -> str | None:
        """PUT one sync chunk's bytes to its presigned URL (from begin_upload/upload_state "missing").

        `data` is sent without copying, in 1 MiB views. Returns the ETag (or None). Raises
        SyncApiError (S3 code, e.g. 400 BadDigest, 403 AccessDenied for an expired URL) or
        ServerUnreachable.
        """
        _, headers, _ = await self._send("PUT", URL(url, encoded=True), body=memoryview(data), chunk_body=True)
        return headers.get("ETag")

    async def download_chunk(self, url: str, expected_hash: str, expected_size: int | None = None) -> bytes:
        """GET one sync chunk from its presigned URL and check it: SHA-256 must equal `expected_hash`
        (and the length `expected_size` if given), else ChunkHashMismatch. Returns its bytes."""
        _, _, body = await self._send("GET", URL(url, encoded=True))
        self.chunk_bytes_received += len(body)
        actual = (await asyncio.to_thread(hashlib.sha256, body)).hexdigest()  # off the event loop
        if actual != expected_hash or (expected_size is not None and len(body) != expected_size):
            raise ChunkHashMismatch(expected_hash, actual, len(body))
        return body
