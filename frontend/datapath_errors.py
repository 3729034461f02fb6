"""Errors of the frontend data path (erasure coding, stripes, object bodies).

Domain errors only: the S3 layer maps them once at its boundary. ``InsufficientFragments``,
``ChunkUnavailable``, ``ChunkCorrupt`` and ``ChunkBeingCollected`` are retryable (the frontend answers 503 Service
Unavailable so SDKs retry); ``EntityTooLarge`` is the client's fault (400 EntityTooLarge).
"""

from __future__ import annotations


class DataPathError(Exception):
    """Base class of every data-path error."""

    #: True when retrying the same request later may succeed (map to 503 Service Unavailable).
    retryable: bool = False


class InsufficientFragments(DataPathError):
    """A stripe write reached fewer durable fragments than the write quorum.

    Attributes: ``chunk_hash`` (hex), ``durable`` (fragments acknowledged), ``required`` (quorum).
    """

    retryable = True

    def __init__(self, chunk_hash: str, durable: int, required: int) -> None:
        super().__init__(f"chunk {chunk_hash}: {durable} fragments durable, write quorum is {required}")
        self.chunk_hash = chunk_hash
        self.durable = durable
        self.required = required


class ChunkUnavailable(DataPathError):
    """Fewer fragments than needed to rebuild a chunk could be read (nodes down, missing, corrupt).

    Attributes: ``chunk_hash`` (hex), ``obtained`` (good fragments read), ``required`` (10).
    """

    retryable = True

    def __init__(self, chunk_hash: str, obtained: int, required: int) -> None:
        super().__init__(f"chunk {chunk_hash}: only {obtained} fragments readable, need {required}")
        self.chunk_hash = chunk_hash
        self.obtained = obtained
        self.required = required


class ChunkCorrupt(DataPathError):
    """Every combination of fragments tried rebuilt bytes whose SHA-256 is not the chunk's hash.

    Attribute: ``chunk_hash`` (hex). Never returned as data: the read fails instead.
    """

    retryable = True

    def __init__(self, chunk_hash: str, detail: str = "") -> None:
        message = f"chunk {chunk_hash}: rebuilt bytes do not match the chunk hash"
        super().__init__(f"{message} ({detail})" if detail else message)
        self.chunk_hash = chunk_hash


class ChunkBeingCollected(DataPathError):
    """A write needs a chunk that garbage collection is still deleting, and it did not finish
    within the wait (answered 503 SlowDown; the retry writes the chunk afresh).

    Attributes: ``chunk_hash`` (hex), ``waited_seconds``.
    """

    retryable = True

    def __init__(self, chunk_hash: str, waited_seconds: float) -> None:
        super().__init__(f"chunk {chunk_hash} is being garbage collected (waited {waited_seconds:g} s)")
        self.chunk_hash = chunk_hash
        self.waited_seconds = waited_seconds


class EntityTooLarge(DataPathError):
    """An object body exceeded the allowed size (``max_size`` bytes)."""

    def __init__(self, max_size: int) -> None:
        super().__init__(f"body exceeds the maximum allowed size of {max_size} bytes")
        self.max_size = max_size
