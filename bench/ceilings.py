"""Single-core speed ceilings of the primitives an S3 PUT or GET pays for, per byte.

Measured in the benchmark's own run so the figures share its machine state:

* ``sha256`` and ``md5`` (``hashlib``): every PUT hashes each chunk with SHA-256 (chunk identity)
  and the object with MD5 (the S3 ETag); every GET verifies chunks against their SHA-256.
* ``rs_encode``: pyeclib Reed-Solomon 10+4 (``isa_l_rs_vand``) encoding of 4 MiB chunks, with
  glibc's malloc thresholds raised as in ``common.malloc`` (without them encode is ~5x slower:
  ../shared/perf-notes.md).

Each primitive runs in the calling thread, i.e. on one core, over a buffer of random bytes larger
than the CPU caches; the speed is bytes / CPU time of that thread (``time.thread_time``), which a
busy shared machine perturbs far less than wall-clock time. Best of ``repeats`` passes.

A PUT's bytes pass every PUT primitive once, so the PUT ceiling is the slowest of them (the
bottleneck primitive); a GET's ceiling is SHA-256 (healthy reads never decode).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.malloc import tune_malloc

CHUNK_BYTES = 4 * 1024 * 1024
DATA_FRAGMENTS = 10
PARITY_FRAGMENTS = 4
EC_TYPE = "isa_l_rs_vand"
PUT_PRIMITIVES = ("sha256", "md5", "rs_encode")
GET_PRIMITIVES = ("sha256",)


@dataclass(frozen=True)
class Ceilings:
    """Single-core speeds in GB/s (10**9 bytes per CPU-second) of each primitive.

    ``gb_per_s`` maps a primitive name (``sha256``, ``md5``, ``rs_encode``) to its speed;
    ``errors`` maps a primitive that could not be measured (e.g. pyeclib without ISA-L) to why.
    """

    gb_per_s: dict[str, float]
    errors: dict[str, str]

    def bottleneck(self, primitives: tuple[str, ...]) -> tuple[str, float] | None:
        """The slowest measured primitive among ``primitives`` as (name, GB/s); None if none measured."""
        measured = [(name, self.gb_per_s[name]) for name in primitives if name in self.gb_per_s]
        if not measured:
            return None
        return min(measured, key=lambda item: item[1])

    def put_ceiling(self) -> tuple[str, float] | None:
        """The bottleneck primitive of a PUT (min over SHA-256, MD5, RS encode) as (name, GB/s)."""
        return self.bottleneck(PUT_PRIMITIVES)

    def get_ceiling(self) -> tuple[str, float] | None:
        """The bottleneck primitive of a GET (SHA-256 verification) as (name, GB/s)."""
        return self.bottleneck(GET_PRIMITIVES)

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict: speeds, errors and the PUT/GET bottlenecks."""
        put = self.put_ceiling()
        get = self.get_ceiling()
        return {
            "gb_per_s": dict(self.gb_per_s),
            "errors": dict(self.errors),
            "put": {"primitive": put[0], "gb_per_s": put[1]} if put else None,
            "get": {"primitive": get[0], "gb_per_s": get[1]} if get else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Ceilings:
        """Inverse of ``to_json`` (derived fields are recomputed). Raises ``KeyError``/``TypeError``."""
        speeds = data["gb_per_s"]
        errors = data.get("errors") or {}
        if not isinstance(speeds, dict) or not isinstance(errors, dict):
            raise TypeError("ceilings: gb_per_s and errors must be objects")
        return cls(
            gb_per_s={str(k): float(v) for k, v in speeds.items()},
            errors={str(k): str(v) for k, v in errors.items()},
        )


def _best_speed(work: Callable[[], int], repeats: int) -> float:
    """Run ``work`` (returns bytes processed) ``repeats`` times; best bytes per thread-CPU-second, in GB/s."""
    best = 0.0
    for _ in range(repeats):
        start = time.thread_time()
        processed = work()
        elapsed = time.thread_time() - start
        # thread_time has clock-tick resolution on some kernels; an empty interval is unmeasurable.
        if elapsed > 0:
            best = max(best, processed / elapsed / 1e9)
    return best


def _hash_speed(algorithm: str, buffer: memoryview, piece_bytes: int, repeats: int) -> float:
    def work() -> int:
        digest = hashlib.new(algorithm)
        for offset in range(0, len(buffer), piece_bytes):
            digest.update(buffer[offset : offset + piece_bytes])
        digest.digest()
        return len(buffer)

    return _best_speed(work, repeats)


def _rs_encode_speed(chunks: list[bytes], repeats: int) -> float:
    from pyeclib.ec_iface import ECDriver

    driver = ECDriver(k=DATA_FRAGMENTS, m=PARITY_FRAGMENTS, ec_type=EC_TYPE)
    driver.encode(chunks[0])  # warm-up: first call loads the backend and grows the heap

    def work() -> int:
        for chunk in chunks:
            driver.encode(chunk)
        return sum(len(chunk) for chunk in chunks)

    return _best_speed(work, repeats)


def measure_ceilings(total_bytes: int = 256 * 1024 * 1024, repeats: int = 3) -> Ceilings:
    """Measure SHA-256, MD5 and RS 10+4 encode speeds on one core (this thread).

    ``total_bytes`` (rounded up to whole 4 MiB chunks) of random data are processed per pass,
    ``repeats`` passes per primitive, best pass kept. Takes about ``repeats * total_bytes *
    (1/1.4 + 1/0.6 + 1/3) GB/s`` of CPU: ~2.5 s for the defaults on the reference machine. Applies
    ``common.malloc.tune_malloc()`` to this process first (it only raises glibc thresholds).
    An RS encoder that cannot be loaded is reported in ``Ceilings.errors``, not raised.
    """
    tune_malloc()
    chunk_count = max(1, -(-total_bytes // CHUNK_BYTES))
    # pyeclib's encode accepts bytes only, so the chunks are separate bytes objects.
    chunks = [os.urandom(CHUNK_BYTES) for _ in range(chunk_count)]
    joined = memoryview(b"".join(chunks))
    speeds: dict[str, float] = {}
    errors: dict[str, str] = {}
    speeds["sha256"] = _hash_speed("sha256", joined, 1024 * 1024, repeats)
    speeds["md5"] = _hash_speed("md5", joined, 1024 * 1024, repeats)
    try:
        speeds["rs_encode"] = _rs_encode_speed(chunks, repeats)
    except Exception as error:  # pyeclib raises several unrelated types when a backend is missing
        errors["rs_encode"] = f"{type(error).__name__}: {error}"
    return Ceilings(gb_per_s=speeds, errors=errors)
