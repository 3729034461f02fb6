"""PUT/GET runs against an S3 endpoint with boto3: throughput, latency and CPU cost.

For each case (object size, concurrency) and run: PUT ``ops`` distinct objects with ``concurrency``
threads, then GET them all back (every body compared byte for byte with what was PUT, every PUT's
ETag with the MD5 of its body), then delete them (not timed). A phase's throughput is payload
bytes / wall-clock seconds from its first request to its last response; a request's latency is
the time from the call until its whole response body has been read (and, for GET, compared).

Payloads: one buffer of ``os.urandom`` bytes per size, a little longer than the object; object
``n`` is the window starting at byte ``n``. Every object is therefore different (a store that
deduplicates chunks by hash, like Coffer, cannot skip the work) while the random data is
generated once. boto3 needs ``bytes`` to compute checksums, so PUT bodies are copied out of the
buffer, with their MD5, before the phase's clock starts (a 256 MiB copy takes ~0.17 s here, 7% of
a PUT: the harness's work, not the store's). A phase whose bodies together exceed
``PREPARED_BODIES_MAX_BYTES`` copies each just before its request instead: outside the request's
latency, inside the phase's wall time.

Client: path-style addressing, SigV4, no retries (a failure must surface, not be hidden by a
retry), connection pool as large as the concurrency, flexible checksums per ``checksum_mode``
(None keeps botocore's defaults).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import resource
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from bench.progress import Progress
from bench.server_cpu import ServerCpuMeter
from common.units import format_size, parse_size

READ_PIECE_BYTES = 1024 * 1024
#: The most bytes of PUT bodies a phase copies before its clock starts (default phases: <= 768 MiB).
PREPARED_BODIES_MAX_BYTES = 2 * 1024**3
DELETE_THREADS = 8
CHECKSUM_MODES = ("when_required", "when_supported")


class BenchFailure(Exception):
    """A request failed or returned wrong data; the message names the operation and the key."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the S3 service: ``url`` like ``http://127.0.0.1:9000``."""

    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


@dataclass(frozen=True)
class CaseSpec:
    """One measured configuration: ``ops`` objects of ``size`` bytes at ``concurrency`` threads."""

    size: int
    concurrency: int
    ops: int

    @property
    def label(self) -> str:
        """Short name such as ``4KiB c=8``."""
        return f"{format_size(self.size)} c={self.concurrency}"


@dataclass
class PhaseRun:
    """One timed phase (``put`` or ``get``) of one run of a case.

    ``wall_seconds``: first request start to last response end. ``latencies_seconds``: one per
    request. ``server_cpu_seconds``: CPU seconds per server group over the phase (None when no
    server PIDs are known). ``client_cpu_seconds``: CPU of this benchmark process over the phase.
    """

    phase: str
    size: int
    concurrency: int
    ops: int
    wall_seconds: float
    latencies_seconds: list[float]
    client_cpu_seconds: float
    server_cpu_seconds: dict[str, float] | None = None

    @property
    def payload_bytes(self) -> int:
        """Object bytes moved in the phase."""
        return self.size * self.ops


@dataclass
class CaseResult:
    """All runs of one case: ``runs`` holds ``(put, get)`` pairs in run order."""

    spec: CaseSpec
    runs: list[tuple[PhaseRun, PhaseRun]] = field(default_factory=list)


@dataclass
class BenchResult:
    """Everything one benchmark invocation measured; ``report.results_to_json`` serialises it."""

    endpoint: str
    bucket: str
    checksum_mode: str | None
    server_groups: dict[str, list[int]]
    started_at: float
    cases: list[CaseResult] = field(default_factory=list)
    finished_at: float | None = None
    error: str | None = None


# ---------------------------------------------------------------- planning


def default_ops(size: int) -> int:
    """Objects per run when ``--ops`` says nothing for a size: bounded bytes and request count.

    4 KiB: 200, 1 MiB: 50, 64 MiB: 6, 256 MiB: 3 (a default run stays within a few minutes
    on 2 cores against a store doing ~100 MB/s and ~300 small PUT/s).
    """
    if size <= 64 * 1024:
        return 200
    if size <= 4 * 1024 * 1024:
        return 50
    if size <= 64 * 1024 * 1024:
        return 6
    return 3


@dataclass(frozen=True)
class OpsSpec:
    """Per-case object counts from ``--ops``: items ``N`` (all cases), ``SIZE=N`` (all concurrencies
    of a size) or ``SIZE:CONC=N`` (one case); the most specific item wins, then ``default_ops``.
    A concurrency above the count raises the count to the concurrency (every thread gets work).
    """

    everywhere: int | None = None
    by_size: tuple[tuple[int, int], ...] = ()
    by_case: tuple[tuple[int, int, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> OpsSpec:
        """Parse ``"200"``, ``"4KiB=200,1MiB=50"``, ``"4KiB:8=400"`` (comma-separated, mixable).

        Raises ``ValueError`` on a malformed item or a count below 1.
        """
        everywhere: int | None = None
        by_size: list[tuple[int, int]] = []
        by_case: list[tuple[int, int, int]] = []
        for raw_item in text.split(","):
            item = raw_item.strip()
            if not item:
                continue
            if "=" not in item:
                everywhere = _positive(item)
                continue
            target, count_text = item.split("=", 1)
            count = _positive(count_text)
            if ":" in target:
                size_text, concurrency_text = target.split(":", 1)
                by_case.append((parse_size(size_text), _positive(concurrency_text), count))
            else:
                by_size.append((parse_size(target), count))
        return cls(everywhere=everywhere, by_size=tuple(by_size), by_case=tuple(by_case))

    def ops_for(self, size: int, concurrency: int) -> int:
        """Objects per run for the case (size bytes, concurrency threads)."""
        count: int | None = None
        for case_size, case_concurrency, case_count in self.by_case:
            if case_size == size and case_concurrency == concurrency:
                count = case_count
        if count is None:
            for spec_size, spec_count in self.by_size:
                if spec_size == size:
                    count = spec_count
        if count is None:
            count = self.everywhere if self.everywhere is not None else default_ops(size)
        return max(count, concurrency)


def _positive(text: str) -> int:
    value = int(text.strip())
    if value < 1:
        raise ValueError(f"need a count of at least 1, got {text!r}")
    return value


def plan_cases(
    sizes: list[int], concurrencies: list[int], concurrency_max_size: int, ops: OpsSpec
) -> list[CaseSpec]:
    """The cases to run, sizes in the given order, each with its concurrency levels.

    Concurrency 1 always runs; higher levels only for sizes <= ``concurrency_max_size`` bytes (so
    large objects are not multiplied in memory and time). A size whose every level is filtered out
    still runs at the smallest given level.
    """
    cases: list[CaseSpec] = []
    for size in sizes:
        levels = [c for c in dict.fromkeys(concurrencies) if c == 1 or size <= concurrency_max_size]
        if not levels:
            levels = [min(concurrencies)]
        cases.extend(CaseSpec(size, level, ops.ops_for(size, level)) for level in levels)
    return cases


# ---------------------------------------------------------------- payloads


class PayloadSource:
    """Distinct objects of one size cut from one random buffer: object ``n`` = bytes ``[n, n+size)``.

    ``capacity`` is how many distinct objects it can yield (raises ``IndexError`` beyond).
    """

    def __init__(self, size: int, capacity: int) -> None:
        """Generate ``size + capacity - 1`` random bytes (``os.urandom``) once."""
        if size < 1 or capacity < 1:
            raise ValueError("size and capacity must be positive")
        self.size = size
        self.capacity = capacity
        self._buffer = memoryview(os.urandom(size + capacity - 1))

    def view(self, index: int) -> memoryview:
        """Zero-copy view of object ``index``'s bytes."""
        if not 0 <= index < self.capacity:
            raise IndexError(f"payload index {index} outside 0..{self.capacity - 1}")
        return self._buffer[index : index + self.size]


@dataclass(frozen=True)
class BenchObject:
    """One object of a run: its ``key``, its body (``view`` of the payload buffer) and the body's
    MD5 (``md5_hex``), which its PUT's ETag must equal."""

    key: str
    view: memoryview
    md5_hex: str


# ---------------------------------------------------------------- client and requests


def make_client(endpoint: Endpoint, checksum_mode: str | None, max_connections: int) -> Any:
    """A boto3 S3 client: path-style, SigV4, no retries, ``max_connections`` pooled connections.

    ``checksum_mode`` (``when_required`` / ``when_supported``) sets both botocore's request checksum
    calculation and response checksum validation; None keeps botocore's defaults. Raises
    ``ValueError`` for another mode.
    """
    options: dict[str, Any] = {
        "region_name": endpoint.region,
        "signature_version": "s3v4",
        "s3": {"addressing_style": "path"},
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "max_pool_connections": max(10, max_connections),
        "connect_timeout": 10,
        "read_timeout": 600,
    }
    if checksum_mode is not None:
        if checksum_mode not in CHECKSUM_MODES:
            raise ValueError(f"checksum mode must be one of {CHECKSUM_MODES}, got {checksum_mode!r}")
        options["request_checksum_calculation"] = checksum_mode
        options["response_checksum_validation"] = checksum_mode
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        config=Config(**options),
    )


def prepared_bodies(objects: list[BenchObject], max_bytes: int) -> dict[str, bytes]:
    """Each object's body as ``bytes``, by key, copied out of the payload buffer now, so that a
    PUT phase's clock does not count the copies; empty when together they exceed ``max_bytes``
    bytes (then each request copies its own body). The caller passes the limit (normally
    ``PREPARED_BODIES_MAX_BYTES``, read at call time)."""
    if sum(len(obj.view) for obj in objects) > max_bytes:
        return {}
    return {obj.key: bytes(obj.view) for obj in objects}


def _put(client: Any, bucket: str, obj: BenchObject, body: bytes | None = None) -> float:
    """PUT ``obj`` (``body``: its bytes, prepared beforehand; None copies them here, before the
    timer: botocore's checksums want bytes); returns the request's latency in seconds."""
    if body is None:
        body = bytes(obj.view)
    started = time.perf_counter()
    try:
        response = client.put_object(Bucket=bucket, Key=obj.key, Body=body)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise BenchFailure(f"PUT {obj.key}: {error}") from error
    elapsed = time.perf_counter() - started
    etag = str(response.get("ETag", "")).strip('"')
    if etag != obj.md5_hex:
        raise BenchFailure(f"PUT {obj.key}: ETag {etag!r} is not the body's MD5 {obj.md5_hex}")
    return elapsed


def _get(client: Any, bucket: str, obj: BenchObject) -> float:
    started = time.perf_counter()
    offset = 0
    try:
        response = client.get_object(Bucket=bucket, Key=obj.key)
        for piece in response["Body"].iter_chunks(READ_PIECE_BYTES):
            end = offset + len(piece)
            # bytes == memoryview compares item by item (~0.2 GB/s); copying the expected slice
            # out and comparing bytes to bytes is a memcpy + memcmp (~15 GB/s).
            if end > len(obj.view) or piece != obj.view[offset:end].tobytes():
                raise BenchFailure(f"GET {obj.key}: body differs from what was PUT near byte {offset}")
            offset = end
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise BenchFailure(f"GET {obj.key}: {error}") from error
    elapsed = time.perf_counter() - started
    if offset != len(obj.view):
        raise BenchFailure(f"GET {obj.key}: {offset} bytes received, {len(obj.view)} were PUT")
    return elapsed


def _client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_requests(
    request: Callable[[BenchObject], float], objects: list[BenchObject], concurrency: int, progress: Progress
) -> tuple[float, list[float]]:
    """Run ``request`` over ``objects`` with ``concurrency`` threads; (wall seconds, latencies).

    The first failure cancels requests not yet started and is raised (``BenchFailure``).
    """
    latencies: list[float] = []
    started = time.perf_counter()
    if concurrency == 1:
        for obj in objects:
            latencies.append(request(obj))
            progress.advance()
        return time.perf_counter() - started, latencies
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(request, obj) for obj in objects]
        try:
            for future in concurrent.futures.as_completed(futures):
                latencies.append(future.result())
                progress.advance()
        except BaseException:
            for pending in futures:
                pending.cancel()
            raise
    return time.perf_counter() - started, latencies


# ---------------------------------------------------------------- the benchmark


class S3Bench:
    """Runs cases against one bucket of one endpoint.

    ``meter`` (optional) measures server CPU per phase. Not thread-safe itself; it runs the
    request threads.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        meter: ServerCpuMeter | None,
        progress: Progress,
        key_prefix: str = "coffer-bench",
    ) -> None:
        """Use ``client`` (from ``make_client``) on existing bucket ``bucket``."""
        self._client = client
        self._bucket = bucket
        self._meter = meter
        self._progress = progress
        self._prefix = key_prefix

    def run_case(
        self, spec: CaseSpec, payload: PayloadSource, first_index: int, run_number: int, runs: int
    ) -> tuple[PhaseRun, PhaseRun]:
        """One run of ``spec``: PUT phase, GET phase, untimed delete. Returns (put, get).

        Objects use payload indexes ``first_index .. first_index + spec.ops - 1``. Raises
        ``BenchFailure`` on any failed request or wrong data (objects already written are
        deleted first, best effort).
        """
        tag = f"{spec.label} run {run_number}/{runs}"
        objects = [self._object(spec, payload.view(first_index + n), run_number, n) for n in range(spec.ops)]
        keys = [obj.key for obj in objects]
        bodies = prepared_bodies(objects, PREPARED_BODIES_MAX_BYTES)
        try:
            put = self._phase("put", spec, objects, tag,
                              lambda obj: _put(self._client, self._bucket, obj, bodies.get(obj.key)))
            bodies.clear()  # the GET phase compares against the payload buffer, not these copies
            get = self._phase("get", spec, objects, tag, lambda obj: _get(self._client, self._bucket, obj))
        except BaseException:
            # Best-effort cleanup; the original failure is what must be reported.
            with contextlib.suppress(BenchFailure):
                self.delete_keys(keys)
            raise
        self.delete_keys(keys)
        return put, get

    def _object(self, spec: CaseSpec, view: memoryview, run_number: int, index: int) -> BenchObject:
        key = f"{self._prefix}/{format_size(spec.size)}/c{spec.concurrency}/r{run_number}/{index:06d}"
        return BenchObject(key=key, view=view, md5_hex=hashlib.md5(view).hexdigest())

    def _phase(
        self,
        phase: str,
        spec: CaseSpec,
        objects: list[BenchObject],
        tag: str,
        request: Callable[[BenchObject], float],
    ) -> PhaseRun:
        self._progress.start(f"{phase.upper()} {tag}", len(objects))
        cpu_before = self._meter.snapshot() if self._meter else None
        client_before = _client_cpu_seconds()
        wall, latencies = _run_requests(request, objects, spec.concurrency, self._progress)
        client_cpu = _client_cpu_seconds() - client_before
        server_cpu = None
        if self._meter and cpu_before is not None:
            server_cpu = self._meter.delta(cpu_before, self._meter.snapshot())
        result = PhaseRun(
            phase=phase,
            size=spec.size,
            concurrency=spec.concurrency,
            ops=len(objects),
            wall_seconds=wall,
            latencies_seconds=latencies,
            client_cpu_seconds=client_cpu,
            server_cpu_seconds=server_cpu,
        )
        self._progress.finish(
            f"{result.payload_bytes / wall / 1e6:.1f} MB/s, {len(objects) / wall:.1f} ops/s"
        )
        return result

    def delete_keys(self, keys: list[str]) -> None:
        """Delete ``keys`` with a few threads (untimed cleanup). Raises ``BenchFailure`` on an error
        (S3 answers 204 for a key that does not exist, so a missing key is no error)."""

        def delete(key: str) -> None:
            try:
                self._client.delete_object(Bucket=self._bucket, Key=key)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
                raise BenchFailure(f"DELETE {key}: {error}") from error

        with concurrent.futures.ThreadPoolExecutor(max_workers=DELETE_THREADS) as pool:
            list(pool.map(delete, keys))


def new_bucket_name() -> str:
    """A fresh bucket name ``coffer-bench-<12 hex>`` (valid S3 bucket name)."""
    return f"coffer-bench-{uuid.uuid4().hex[:12]}"


def ensure_bucket(client: Any, bucket: str) -> bool:
    """Create ``bucket`` unless it exists and is ours; True when this call created it.

    Raises ``BenchFailure`` when it can neither be found nor created.
    """
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except botocore.exceptions.ClientError:
        pass  # absent (404) or not ours (403): try to create it, which reports the real problem
    except botocore.exceptions.BotoCoreError as error:
        raise BenchFailure(f"HEAD bucket {bucket}: {error}") from error
    try:
        client.create_bucket(Bucket=bucket)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise BenchFailure(f"create bucket {bucket}: {error}") from error
    return True


def delete_bucket(client: Any, bucket: str) -> None:
    """Delete ``bucket`` (must be empty). Raises ``BenchFailure``."""
    try:
        client.delete_bucket(Bucket=bucket)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise BenchFailure(f"delete bucket {bucket}: {error}") from error


def _payload_plan(cases: list[CaseSpec], runs: int) -> dict[int, int]:
    """Objects needed per size over the whole benchmark (each object is distinct)."""
    needed: dict[int, int] = {}
    for spec in cases:
        needed[spec.size] = needed.get(spec.size, 0) + spec.ops * runs
    return needed


def iterate_runs(cases: list[CaseSpec], runs: int) -> Iterator[tuple[CaseSpec, int, int]]:
    """(case, run number from 1, first payload index) in execution order: all runs of a case
    back to back, payload indexes never reused within a size."""
    next_index: dict[int, int] = {}
    for spec in cases:
        for run_number in range(1, runs + 1):
            first = next_index.get(spec.size, 0)
            next_index[spec.size] = first + spec.ops
            yield spec, run_number, first


def run_benchmark(
    endpoint: Endpoint,
    cases: list[CaseSpec],
    *,
    runs: int,
    checksum_mode: str | None,
    meter: ServerCpuMeter | None,
    progress: Progress,
    bucket: str | None = None,
) -> BenchResult:
    """Run every case ``runs`` times against ``endpoint`` and return what was measured.

    ``bucket`` None: a fresh ``coffer-bench-<random>`` bucket is created and deleted at the end;
    a named bucket is created if missing and kept. A failure stops the benchmark: the result
    then carries ``error`` and the runs completed so far (cleanup still happens).
    """
    client = make_client(endpoint, checksum_mode, max(spec.concurrency for spec in cases))
    bucket_name = bucket or new_bucket_name()
    result = BenchResult(
        endpoint=endpoint.url,
        bucket=bucket_name,
        checksum_mode=checksum_mode,
        server_groups=meter.groups if meter else {},
        started_at=time.time(),
    )
    try:
        created = ensure_bucket(client, bucket_name)
    except BenchFailure as failure:
        result.error = str(failure)
        result.finished_at = time.time()
        return result
    bench = S3Bench(client, bucket_name, meter, progress)
    payloads: dict[int, PayloadSource] = {}
    try:
        for size, count in _payload_plan(cases, runs).items():
            payloads[size] = PayloadSource(size, count)
        case_results: dict[CaseSpec, CaseResult] = {}
        for spec, run_number, first_index in iterate_runs(cases, runs):
            pair = bench.run_case(spec, payloads[spec.size], first_index, run_number, runs)
            if spec not in case_results:  # only cases with a completed run appear in the result
                case_results[spec] = CaseResult(spec)
                result.cases.append(case_results[spec])
            case_results[spec].runs.append(pair)
    except BenchFailure as failure:
        result.error = str(failure)
    finally:
        if created and bucket is None:
            try:
                delete_bucket(client, bucket_name)
            except BenchFailure as failure:
                progress.message(f"warning: {failure}")
        result.finished_at = time.time()
    return result
