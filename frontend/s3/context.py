"""What an S3 operation handler receives: the process's services and the request being served."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from aiohttp import web

from common.layout import CHUNK_SIZE
from frontend.chunk_store import ChunkStore
from frontend.config import FrontendConfig
from frontend.memory_budget import MemoryBudget
from frontend.object_io import Hasher, WrittenContent, write_stream
from frontend.s3.router import Operation
from frontend.s3.sigv4 import AuthContext
from metadata.store import MetadataStore

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class S3Services:
    """Long-lived services shared by every request of one frontend process.

    ``upload_budget`` bounds the chunk windows of all uploads in progress, ``read_budget`` the
    read-ahead windows of all reads (GetObject, sync chunk downloads, UploadPartCopy's source).
    """

    metadata: MetadataStore
    chunk_store: ChunkStore
    config: FrontendConfig
    upload_budget: MemoryBudget
    read_budget: MemoryBudget

    def upload_window(self, declared_length: int) -> int:
        """Bytes an upload of ``declared_length`` bytes can hold at once: its chunk window."""
        return min(declared_length, (self.config.parallel_chunks + 1) * CHUNK_SIZE)

    async def store_body(self, pieces: AsyncIterator[bytes | bytearray | memoryview], declared_length: int,
                         pin_id: str, observers: Sequence[Hasher] = ()) -> WrittenContent:
        """Store an upload's body (``object_io.write_stream`` with this process's settings) once the
        upload budget has room for its chunk window; its chunks stay pinned under ``pin_id`` (the
        caller commits with it, or releases it on failure). Errors: those of ``write_stream``."""
        async with self.upload_budget.reserve(self.upload_window(declared_length)):
            return await write_stream(pieces, self.chunk_store, self.metadata, observers=observers,
                                      parallel_chunks=self.config.parallel_chunks, pin_id=pin_id,
                                      collection_wait_seconds=self.config.gc_wait_seconds)

    async def meta(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a (blocking, SQLite) metadata call in a thread so the event loop keeps serving."""
        return await asyncio.to_thread(function, *args, **kwargs)


@dataclass
class S3Call:
    """One authenticated S3 request, routed to ``operation``."""

    request: web.Request
    operation: Operation
    auth: AuthContext
    request_id: str
    services: S3Services
    query_pairs: list[tuple[str, str]]

    @property
    def bucket(self) -> str:
        """The bucket the operation addresses (routing guarantees one for bucket/object operations)."""
        assert self.operation.bucket is not None
        return self.operation.bucket

    @property
    def key(self) -> str:
        """The object key the operation addresses."""
        assert self.operation.key is not None
        return self.operation.key

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, percent-decoded exactly as they were signed ('+' stays '+'; the last
        value wins for repeated names)."""
        return dict(self.query_pairs)


def http_date(timestamp: float) -> str:
    """Format unix seconds as an RFC 7231 HTTP date (``Last-Modified``)."""
    return email.utils.formatdate(timestamp, usegmt=True)


def iso8601(timestamp: float) -> str:
    """Format unix seconds the way S3 XML does: ``2026-11-22T05:30:00.000Z``."""
    import time

    millis = round((timestamp % 1) * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{millis:03d}Z"
