"""The fragment store of one storage node: RocksDB databases (one per volume) holding fragments.

Blocking API, no gRPC: the servicer calls it from a thread pool.

Record layout (docs/architecture.md, storagenode section):

* key: ``placement group (4 bytes, big-endian) + chunk hash (32 bytes) + fragment index (1 byte)``,
  so one placement group is one contiguous key range;
* header, in the ``fragment_headers`` column family: ``format_version u8, crc32c u32, length u64,
  chunk_size u64, written_at_ms u64`` (big-endian, packed, 29 bytes; format version 3);
* value, in the default column family: the fragment bytes alone.

Both are written in one atomic batch. Keeping the data bare spares a put the 420 KB copy that
prepending the header would take and a get the copy of slicing it off; listing a placement group
reads only the small headers. ``written_at_ms`` is when the node stored the record (Unix
milliseconds, issued ``max(now, last issued + 1)`` per engine and put_many call, so a rewrite of a
key always gets a later time): garbage collection deletes conditionally on it
(``delete(..., written_before_ms)``). Formats 1 and 2 (still read, never written; write time 0)
had the 21-byte header without ``written_at_ms``; format 1 also stored a copy of it in front of
the data in the default column family.

Each volume has a write lock held around every ``db.write``: a conditional delete (or a
quarantine) checks the header and deletes under it, so no put of the same key can land between
the check and the delete.

Placement-group summaries (``summarize``, ``summarize_by_index``) are kept in memory per
(placement group, fragment index) and recomputed from the headers of a placement group only
after a put or delete touched it: a put only marks its placement group (no extra read).

The volume of a fragment is ``int.from_bytes(chunk_hash[8:16], "big") % len(volumes)`` (bytes 0..7
already pick the placement group). A put has reached the disk before it returns: ``put_many`` is
group commit. Each fragment is its own write batch (header, then data: a batch of several 420 KB
values grows its buffer by doubling and copies it ~1.5 times over), appended to the WAL without a
sync; then one WAL sync per volume (``flush_wal(sync=True)``) makes all of them durable, since
RocksDB syncs every record before the last. Unlike a synced write, a fragment is readable before
that sync; a put that fails may leave fragments behind, as one the frontend gave up on does (its
chunk is not referenced; garbage collection removes them). CRC32C comes from
``awscrt.checksums`` (hardware accelerated, ~25 GB/s).

Fragment data does not go through the page cache: flushes write blob files with ``O_DIRECT``
and gets read them with ``O_DIRECT`` (where the volume's filesystem allows it), as purpose-built
object stores do. The WAL cannot (this RocksDB has no direct I/O for it), yet it is written and
synced, then never read again unless the node crashes; so each volume drops its current WAL
files' pages (``posix_fadvise(DONTNEED)``, clean pages only) after every ``WAL_CACHE_DROP_BYTES``
written, i.e. after every group of large fragments. Both matter most on a VM whose idle memory
goes back to the host (this machine: free page reporting, DAMON page-out), where every fresh page
costs a host fault: writing 1 GB into new page-cache pages took 2.4 CPU-s against 0.2 into
just-freed ones. Dropping at once is what keeps the pages warm: freed pages go to the CPU's
free-page lists, and the next writes take them back while the host still backs them. Dropped only
every 8 MiB, they drifted to the buddy allocator and free page reporting, and the kernel's copy
into the WAL took 15-23% of storage-node CPU on 256 MiB PUTs instead of 3-6%.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import struct
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from awscrt.checksums import crc32c
from prometheus_client import Counter
from rocksdict import (
    BottommostLevelCompaction,
    CompactOptions,
    DBCompressionType,
    Env,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from common.layout import CHUNK_HASH_BYTES, STRIPE_WIDTH
from storagenode.errors import FragmentCorrupt, FragmentNotFound, InvalidFragment, StorageError, StorageFull
from storagenode.records import FragmentEntry, StoredFragment, VolumeStats

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3
# Version 1 records carry a copy of their header in front of the data in the default column family.
_FORMAT_VERSION_HEADER_IN_VALUE = 1
_FORMAT_VERSION_BARE_DATA = 2
HEADER = struct.Struct(">BIQQQ")  # format_version (3), crc32c, length, chunk_size, written_at_ms
LEGACY_HEADER = struct.Struct(">BIQQ")  # formats 1 and 2: format_version, crc32c, length, chunk_size
KEY_BYTES = 4 + CHUNK_HASH_BYTES + 1
HEADERS_COLUMN_FAMILY = "fragment_headers"
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024
# statvfs per batch is a syscall per fragment on a lightly loaded node; free space is re-read at
# most this often and the bytes written since are subtracted in between.
FREE_SPACE_REFRESH_SECONDS = 1.0
#: Header records ``list_all`` reads per engine call.
LIST_ALL_PAGE = 1024
#: Bytes written to a volume between two drops of its WAL files' pages from the page cache (a
#: group of 420 KB fragments always reaches it; small puts drop once per MiB, not per syscall).
WAL_CACHE_DROP_BYTES = 1024 * 1024
#: RocksDB names WAL files ``<number>.log`` in the database directory (no ``wal_dir`` is set).
WAL_FILE_SUFFIX = ".log"
_CAN_DROP_CACHE = hasattr(os, "posix_fadvise")
# RocksDB's defaults for NewGenericRateLimiter: refill every 100 ms; a low-priority (compaction)
# request goes first once in 10 times, so compactions are never starved by flushes.
_RATE_LIMIT_REFILL_MICROSECONDS = 100_000
_RATE_LIMIT_FAIRNESS = 10
_MAX_PLACEMENT_GROUP = 2**32 - 1
_MAX_U64 = 2**64 - 1
_MAX_U32 = 2**32 - 1
#: Bytes of a placement-group summary digest (``summarize``).
SUMMARY_DIGEST_BYTES = 16
_SUMMARY_MODULUS = 2 ** (8 * SUMMARY_DIGEST_BYTES)
_SUMMARY_ITEM = struct.Struct(">QQ")  # chunk_size, length
#: RocksDB properties (include/rocksdb/db.h, ``DB::Properties``): bytes of the live blob files, and
#: bytes in them known to be garbage (blobs whose keys a compaction has dropped).
_BLOB_FILE_BYTES_PROPERTY = "rocksdb.live-blob-file-size"
_BLOB_GARBAGE_BYTES_PROPERTY = "rocksdb.live-blob-file-garbage-size"
_BLOB_FILE_COUNT_PROPERTY = "rocksdb.num-blob-files"

CORRUPT_FRAGMENTS = Counter(
    "coffer_storagenode_corrupt_fragments_total",
    "Fragments whose stored bytes failed their CRC32C (or whose record was malformed) on read",
)


@dataclass(frozen=True, slots=True)
class FragmentWrite:
    """One fragment to store with ``FragmentEngine.put_many``.

    ``chunk_hash`` 32 bytes (SHA-256 of the chunk), ``index`` 0..13, ``pg`` the placement group
    (u32), ``data`` the fragment bytes, ``checksum`` the CRC32C of ``data`` computed by the sender,
    ``chunk_size`` bytes of the original chunk.
    """

    chunk_hash: bytes
    index: int
    pg: int
    data: bytes | memoryview
    checksum: int
    chunk_size: int


@dataclass(frozen=True, slots=True)
class BlobSpace:
    """A volume's ``files`` blob files (where fragment data lives): ``total_bytes`` on disk, of
    which ``garbage_bytes`` hold deleted fragments. A deleted fragment counts as garbage only once
    a compaction has dropped its key (``FragmentEngine.compact``)."""

    files: int
    total_bytes: int
    garbage_bytes: int

    @property
    def garbage_ratio(self) -> float:
        """``garbage_bytes / total_bytes`` (0.0 without blob files)."""
        return self.garbage_bytes / self.total_bytes if self.total_bytes > 0 else 0.0


def fragment_key(chunk_hash: bytes, index: int, pg: int) -> bytes:
    """Return the 37-byte record key ``pg (u32 BE) + chunk_hash + index (u8)``.

    Raises:
        InvalidFragment: if the hash is not 32 bytes, the index is outside 0..13 or the placement
            group outside the u32 range.
    """
    if len(chunk_hash) != CHUNK_HASH_BYTES:
        raise InvalidFragment(f"chunk hash must be {CHUNK_HASH_BYTES} bytes, got {len(chunk_hash)}")
    if not 0 <= index < STRIPE_WIDTH:
        raise InvalidFragment(f"fragment index must be in 0..{STRIPE_WIDTH - 1}, got {index}")
    if not 0 <= pg <= _MAX_PLACEMENT_GROUP:
        raise InvalidFragment(f"placement group must be a u32, got {pg}")
    return pg.to_bytes(4, "big") + bytes(chunk_hash) + index.to_bytes(1, "big")


def supports_direct_io(directory: str) -> bool:
    """Whether files in ``directory`` can be opened with ``O_DIRECT`` (tmpfs before Linux 6.6 and
    some FUSE filesystems cannot; neither can systems without the flag). Creates and removes a
    probe file. Raises ``OSError`` for other failures (e.g. the directory is not writable)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    probe = os.path.join(directory, f".direct-io-probe-{os.getpid()}")
    try:
        descriptor = os.open(probe, os.O_CREAT | os.O_WRONLY | flag, 0o600)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    os.close(descriptor)
    os.unlink(probe)
    return True


def _volume_options(direct_io: bool, background_write_max_bytes_per_second: int = 0) -> Options:
    """RocksDB options for ~420 KB values (perf-notes: blob files + no blob GC -> 2x write amp);
    ``direct_io``: fragment data bypasses the page cache (see below);
    ``background_write_max_bytes_per_second``: the rate limit of flushes and compactions (0: none)."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    options.increase_parallelism(2)
    options.set_max_background_jobs(2)
    # Large values go to blob files, so compaction rewrites only small keys and blob indexes.
    options.set_enable_blob_files(True)
    options.set_min_blob_size(64 * 1024)
    options.set_blob_file_size(256 * 1024 * 1024)
    # On only for the compactor's relocations (``compact``, storagenode/compaction.py).
    options.set_enable_blob_gc(False)
    # Fragments are erasure-coded compressed-or-random data: compression only burns CPU.
    options.set_compression_type(DBCompressionType.none())
    options.set_blob_compression_type(DBCompressionType.none())
    options.set_write_buffer_size(64 * 1024 * 1024)
    options.set_max_write_buffer_number(3)
    options.set_max_total_wal_size(512 * 1024 * 1024)
    options.set_bytes_per_sync(1024 * 1024)
    # Every put syncs the WAL. Reusing old WAL files overwrites blocks that are already allocated,
    # so fdatasync need not log an inode size change per write (RocksDB options.h,
    # recycle_log_file_num); records carry their log number, so stale tails are not replayed.
    options.set_recycle_log_file_num(4)
    # Obsolete-file deletion moves to the background threads instead of the writing thread.
    options.set_avoid_unnecessary_blocking_io(True)
    # Flushes and compactions run at nice 19 (RocksDB's Env::LowerThreadPoolCPUPriority, kLow):
    # they take the CPU that requests leave idle (a PUT's client-side hashing, waits on fsync)
    # instead of an equal share of a busy one. A flush costs ~1 CPU-s per GB flushed; at equal
    # priority, the PUT that filled the memtables paid for all of it (256 MiB PUTs on the dev
    # cluster: mean 103 and 116 MB/s over two runs of ten, 113 and 118 niced).
    # Starved long enough, a flush lets the memtables fill, puts stall, and the CPU they free runs
    # it: deferred, never skipped. Only RocksDB's own threads: a niced Python thread could hold the
    # GIL while it waits for CPU.
    background = Env()
    background.lower_high_priority_thread_pool_cpu_priority()
    background.lower_thread_pool_cpu_priority()
    options.set_env(background)
    if direct_io:
        # Fragment data bypasses the page cache, as in purpose-built object stores: flushes write
        # blob files with O_DIRECT and gets read them with O_DIRECT into RocksDB's own buffers.
        # Through the page cache, every flush filled fresh pages (on this VM each costs a host
        # fault: flush threads took 1-7 CPU-s per GB) and evicted what was worth keeping.
        options.set_use_direct_io_for_flush_and_compaction(True)
        options.set_use_direct_reads(True)
    if background_write_max_bytes_per_second > 0:
        # RocksDB's rate limiter (include/rocksdb/rate_limiter.h): one per volume, i.e. per disk.
        # Flushes are served before compactions (puts wait on a flush when the memtables are
        # full), so a relocation compaction that rewrites a quarter of a volume takes the disk
        # bandwidth left under the cap instead of all of it. Refilled every 100 ms (RocksDB's
        # default period).
        options.set_ratelimiter(background_write_max_bytes_per_second, _RATE_LIMIT_REFILL_MICROSECONDS,
                                _RATE_LIMIT_FAIRNESS)
    return options


def _headers_options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    return options


class _Volume:
    """One open RocksDB database and its ``fragment_headers`` column family."""

    def __init__(self, path: str, wal_cache_drop_bytes: int = WAL_CACHE_DROP_BYTES, direct_io: bool = True,
                 background_write_max_bytes_per_second: int = 0) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.direct_io = direct_io and supports_direct_io(path)
        if direct_io and not self.direct_io:
            logger.warning("volume's filesystem has no direct I/O: fragment data goes through the page cache",
                           extra={"fields": {"volume": path}})
        self.db = Rdict(path, _volume_options(self.direct_io, background_write_max_bytes_per_second),
                        column_families={HEADERS_COLUMN_FAMILY: _headers_options()})
        self.headers = self.db.get_column_family(HEADERS_COLUMN_FAMILY)
        self.headers_handle = self.db.get_column_family_handle(HEADERS_COLUMN_FAMILY)
        # Held around every write to this volume, so a check-then-delete under it is atomic with
        # respect to puts of the same key (RocksDB serialises writes to one database anyway).
        self.write_lock = threading.Lock()
        self._free_lock = threading.Lock()
        self._free_bytes = 0
        self._free_checked_at = -FREE_SPACE_REFRESH_SECONDS  # monotonic seconds; forces a first read
        self._wal_cache_drop_bytes = wal_cache_drop_bytes
        self._written_since_drop = 0
        # One drop at a time; the newest WAL file seen by the last drop: older ones take no more
        # writes, so their pages are gone already (a recycled file comes back under a new number).
        self._drop_lock = threading.Lock()
        self._newest_wal_dropped = -1
        # Fragments deleted since the last ``take_deletes_since_compaction`` (under write_lock).
        self.deletes_since_compaction = 0
        # One compaction at a time: a relocation switches blob GC on for its duration.
        self.compaction_lock = threading.Lock()

    def free_bytes(self) -> int:
        """Bytes free on the volume's disk: statvfs at most every ``FREE_SPACE_REFRESH_SECONDS``,
        minus what this process wrote since. Raises ``OSError`` when the volume cannot be read."""
        with self._free_lock:
            now = time.monotonic()
            if now - self._free_checked_at >= FREE_SPACE_REFRESH_SECONDS:
                self._free_bytes = shutil.disk_usage(self.path).free
                self._free_checked_at = now
            return self._free_bytes

    def wrote(self, size: int) -> None:
        """Account ``size`` bytes just written (and synced) against the cached free space; every
        ``wal_cache_drop_bytes`` of them (0: never), drop the WAL's pages from the page cache."""
        with self._free_lock:
            self._free_bytes -= size
            self._written_since_drop += size
            drop = 0 < self._wal_cache_drop_bytes <= self._written_since_drop
            if drop:
                self._written_since_drop = 0
        if drop:
            self.drop_wal_cache()

    def drop_wal_cache(self) -> None:
        """Ask the kernel to drop the cached pages of this volume's current WAL files: the newest
        one at the previous drop and any newer. Only clean pages go (what was synced), so a write
        in progress in another thread loses nothing; a file RocksDB removes meanwhile is skipped;
        a drop already running in another thread makes this one a no-op. Best effort: errors are
        logged, never raised."""
        if not _CAN_DROP_CACHE or not self._drop_lock.acquire(blocking=False):
            return
        try:
            with os.scandir(self.path) as entries:
                wal_files = [(_wal_number(entry.name), entry.path) for entry in entries
                             if entry.name.endswith(WAL_FILE_SUFFIX)]
            for number, wal_path in wal_files:
                if number < self._newest_wal_dropped:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    descriptor = os.open(wal_path, os.O_RDONLY)
                    try:
                        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
                    finally:
                        os.close(descriptor)
            self._newest_wal_dropped = max((number for number, _path in wal_files), default=-1)
        except OSError as exc:
            logger.warning("cannot drop WAL pages from the page cache",
                           extra={"fields": {"volume": self.path, "error": str(exc)}})
        finally:
            self._drop_lock.release()

    def close(self) -> None:
        # rocksdict keeps the database LOCK while any column-family object is alive: drop them first.
        del self.headers
        del self.headers_handle
        self.db.close()


class FragmentEngine:
    """Stores fragments in one RocksDB database per volume path. Thread-safe; every method blocks.

    ``volume_paths``: directories (created if missing), one RocksDB database each. A fragment's
    volume is fixed by its chunk hash, so the list (and its order) must not change between runs.
    ``min_free_bytes``: puts are refused with ``StorageFull`` when the volume's disk has less free.
    ``wal_cache_drop_bytes``: a volume drops its WAL files' pages from the page cache every time
    this many bytes have been written to it (0: never; see the module docstring).
    ``direct_io``: fragment data is flushed and read with ``O_DIRECT``, bypassing the page cache,
    on volumes whose filesystem allows it (others fall back to buffered I/O, with a warning).
    ``background_write_max_bytes_per_second``: each volume's flushes and compactions together write
    at most this many bytes per second, flushes first (RocksDB's rate limiter; 0: no limit). Set it
    above the volume's sustained write rate: a flush held back long enough stalls puts.

    Raises (constructor):
        ValueError: if ``volume_paths`` is empty or the write rate is negative.
        StorageError: if a database cannot be opened (e.g. locked by another process).
    """

    def __init__(
        self,
        volume_paths: list[str],
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        wal_cache_drop_bytes: int = WAL_CACHE_DROP_BYTES,
        direct_io: bool = True,
        background_write_max_bytes_per_second: int = 0,
    ) -> None:
        if not volume_paths:
            raise ValueError("a storage node needs at least one volume")
        if background_write_max_bytes_per_second < 0:
            raise ValueError(f"a write rate cannot be negative, got {background_write_max_bytes_per_second}")
        self._min_free_bytes = min_free_bytes
        self._volumes: list[_Volume] = []
        try:
            for path in volume_paths:
                self._volumes.append(_Volume(path, wal_cache_drop_bytes, direct_io,
                                             background_write_max_bytes_per_second))
        except Exception as exc:
            for volume in self._volumes:
                volume.close()
            raise StorageError(f"cannot open volume: {exc}") from exc
        self._sync_writes = WriteOptions()
        self._sync_writes.sync = True
        # Puts append without a sync and sync once per group (``_write_group``).
        self._unsynced_writes = WriteOptions()
        # Our CRC32C covers every fragment's data; RocksDB's own (software) checksum of the same
        # ~420 KB value on read costs ~0.8 CPU-s/GB more and catches nothing extra that matters.
        self._fragment_reads = ReadOptions()
        self._fragment_reads.set_verify_checksums(False)
        # Scrub reads check RocksDB's checksums too (they also cover the blob record framing) and
        # stay out of the block cache, which serves client reads.
        self._verify_reads = ReadOptions()
        self._verify_reads.set_verify_checksums(True)
        self._verify_reads.fill_cache(False)  # type: ignore[call-arg]  # the stub omits the argument
        self._corrupt_detected = 0
        self._clock_lock = threading.Lock()
        self._last_written_at_ms = 0
        # Close must wait for calls running in other threads: RocksDB handles die with close().
        self._gate = threading.Condition()
        self._active_calls = 0
        self._closed = False
        # Summaries: pg -> index -> [fragments, digest as an int]. ``_summary_lock`` guards them
        # and the dirty set; ``_summarize_lock`` lets one computation run at a time, so an older
        # scan can never overwrite the result of a newer one.
        self._summary_lock = threading.Lock()
        self._summarize_lock = threading.Lock()
        self._summaries: dict[int, dict[int, list[int]]] = {}
        self._summaries_complete = False  # every placement group on the node is in _summaries
        self._dirty_pgs: set[int] = set()

    @property
    def min_free_bytes(self) -> int:
        """Bytes each volume's disk keeps free: puts are refused below it."""
        return self._min_free_bytes

    @property
    def volume_paths(self) -> list[str]:
        """The volume directories, in placement order."""
        return [volume.path for volume in self._volumes]

    @property
    def corrupt_fragments_detected(self) -> int:
        """Reads that found a corrupt fragment since this engine was opened."""
        return self._corrupt_detected

    def volume_index(self, chunk_hash: bytes) -> int:
        """Index into ``volume_paths`` of the volume holding fragments of ``chunk_hash``."""
        return int.from_bytes(chunk_hash[8:16], "big") % len(self._volumes)

    # -- writes ---------------------------------------------------------------------------------

    def put(
        self,
        chunk_hash: bytes,
        index: int,
        pg: int,
        data: bytes | memoryview,
        checksum: int,
        chunk_size: int,
    ) -> None:
        """Store one fragment durably (synced WAL) before returning; an existing copy is replaced.

        ``checksum`` is the CRC32C the sender computed over ``data``; it is verified first.

        Raises:
            InvalidFragment: malformed key fields, or ``data`` does not match ``checksum``.
            StorageFull: the volume's disk has less than ``min_free_bytes`` free, or RocksDB
                reported no space.
            StorageError: the engine is closed or RocksDB failed.
        """
        error = self.put_many([FragmentWrite(chunk_hash, index, pg, data, checksum, chunk_size)])[0]
        if error is not None:
            raise error

    def put_many(self, fragments: Sequence[FragmentWrite]) -> list[StorageError | None]:
        """Store several fragments with one WAL sync per volume (group commit; see the module
        docstring).

        Each fragment is validated on its own; returns one entry per input, in order: ``None`` once
        that fragment is durable, otherwise the error (``InvalidFragment``, ``StorageFull`` or
        ``StorageError``) that kept it out. A failed volume write fails only that volume's
        fragments. Raises ``StorageError`` only if the engine is closed.
        """
        self._enter()
        try:
            return self._put_many(fragments)
        finally:
            self._exit()

    def _next_write_time(self) -> int:
        """A write time (Unix ms) later than every one issued before by this engine."""
        now_ms = time.time_ns() // 1_000_000
        with self._clock_lock:
            written_at_ms = max(now_ms, self._last_written_at_ms + 1)
            self._last_written_at_ms = written_at_ms
        return written_at_ms

    def _put_many(self, fragments: Sequence[FragmentWrite]) -> list[StorageError | None]:
        results: list[StorageError | None] = [None] * len(fragments)
        groups: dict[int, tuple[list[WriteBatch], list[int], int]] = {}
        # One write time per call, not per fragment: per fragment, a busy node's times would run
        # ahead of the clock by a millisecond per fragment.
        written_at_ms = self._next_write_time()
        for position, fragment in enumerate(fragments):
            try:
                key, header = self._encode(fragment, written_at_ms)
            except StorageError as exc:
                results[position] = exc
                continue
            volume_number = self.volume_index(fragment.chunk_hash)
            batches, positions, size = groups.setdefault(volume_number, ([], [], 0))
            volume = self._volumes[volume_number]
            data = fragment.data
            # One batch per fragment, header first: the batch's buffer is then allocated once at
            # its final size. rocksdict's raw mode accepts only bytes and a put parsed from a Stream
            # batch is a view of the received message, so this copies it (and the write batch
            # copies it again: no way around either through rocksdict).
            batch = WriteBatch(raw_mode=True)
            batch.put(key, header, volume.headers_handle)
            batch.put(key, data if isinstance(data, bytes) else bytes(data))
            batches.append(batch)
            positions.append(position)
            groups[volume_number] = (batches, positions, size + len(data) + HEADER.size)
        for volume_number, (batches, positions, size) in groups.items():
            error = self._write_group(self._volumes[volume_number], batches, size)
            if error is not None:
                for position in positions:
                    results[position] = error
            else:
                # After the write is visible: a summary computed from now on includes it.
                self._mark_dirty({fragments[position].pg for position in positions})
        return results

    def _encode(self, fragment: FragmentWrite, written_at_ms: int) -> tuple[bytes, bytes]:
        """Validate ``fragment``; return its key and its (format 3) header record."""
        key = fragment_key(fragment.chunk_hash, fragment.index, fragment.pg)
        if not 0 <= fragment.chunk_size <= _MAX_U64:
            raise InvalidFragment(f"chunk size must be a u64, got {fragment.chunk_size}")
        actual = crc32c(fragment.data)
        if actual != fragment.checksum:
            raise InvalidFragment(
                f"fragment {fragment.chunk_hash.hex()}/{fragment.index}: CRC32C of data is {actual:#010x}, "
                f"sender said {fragment.checksum & _MAX_U32:#010x}"
            )
        return key, HEADER.pack(FORMAT_VERSION, actual, len(fragment.data), fragment.chunk_size, written_at_ms)

    def _write_group(self, volume: _Volume, batches: Sequence[WriteBatch], size: int) -> StorageError | None:
        """Append ``batches`` to ``volume``'s WAL, then sync it once: all of them are durable when
        this returns None. ``size``: their bytes, checked against the volume's free space first."""
        try:
            free = volume.free_bytes()
        except OSError as exc:
            return StorageError(f"volume {volume.path} unusable: {exc}")
        if free - size < self._min_free_bytes:
            return StorageFull(f"volume {volume.path} has {free} bytes free, keeps {self._min_free_bytes}")
        try:
            with volume.write_lock:
                for batch in batches:
                    volume.db.write(batch, self._unsynced_writes)
                volume.db.flush_wal(sync=True)
        except Exception as exc:
            if "space" in str(exc).lower():
                return StorageFull(f"volume {volume.path}: {exc}")
            logger.exception("volume write failed", extra={"fields": {"volume": volume.path}})
            return StorageError(f"volume {volume.path}: {exc}")
        volume.wrote(size)
        return None

    def delete(self, chunk_hash: bytes, index: int, pg: int, written_before_ms: int = 0) -> bool:
        """Remove a fragment durably (synced WAL). Returns whether a record was deleted.

        ``written_before_ms`` 0 deletes unconditionally. Otherwise (Unix ms, this node's clock) only
        a record written before that time is deleted; a newer one is kept and False returned.
        Records of formats 1 and 2 carry no write time and count as old. Check and delete happen
        under the volume's write lock, so a put of the same key lands either before the check (and
        is kept if new) or after the delete.

        Raises:
            InvalidFragment: malformed key fields or a negative ``written_before_ms``.
            StorageError: the engine is closed or RocksDB failed.
        """
        key = fragment_key(chunk_hash, index, pg)
        if written_before_ms < 0:
            raise InvalidFragment(f"written_before_ms must not be negative, got {written_before_ms}")
        volume = self._volumes[self.volume_index(chunk_hash)]
        self._enter()
        try:
            with volume.write_lock:
                header = volume.headers.get(key)
                if header is not None and written_before_ms > 0 and _written_at_ms(header) >= written_before_ms:
                    return False
                self._delete_record(volume, key)
            if header is not None:
                self._mark_dirty((pg,))
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"volume {volume.path}: delete failed: {exc}") from exc
        finally:
            self._exit()
        return header is not None

    def _delete_record(self, volume: _Volume, key: bytes) -> None:
        """Delete data and header of ``key`` in one synced batch; caller holds the write lock."""
        batch = WriteBatch(raw_mode=True)
        batch.delete(key)
        batch.delete(key, volume.headers_handle)
        volume.db.write(batch, self._sync_writes)
        volume.deletes_since_compaction += 1

    def quarantine(self, chunk_hash: bytes, index: int, pg: int) -> bool:
        """Remove a corrupt fragment (data and header, one synced batch) after re-verifying, under
        the volume's write lock, that it is still bad. Returns True if it was removed; False if it
        is gone or now checks out (rewritten meanwhile). Repair then finds the position missing and
        rebuilds it. Logged at warning level.

        Raises:
            InvalidFragment: malformed key fields.
            StorageError: the engine is closed or RocksDB failed.
        """
        key = fragment_key(chunk_hash, index, pg)
        volume = self._volumes[self.volume_index(chunk_hash)]
        self._enter()
        try:
            with volume.write_lock:
                problem = self._verify_record(volume, key)
                if problem is None:
                    return False
                self._delete_record(volume, key)
            self._mark_dirty((pg,))
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"volume {volume.path}: quarantine failed: {exc}") from exc
        finally:
            self._exit()
        logger.warning(
            "corrupt fragment removed",
            extra={"fields": {"chunk_hash": chunk_hash.hex(), "index": index, "pg": pg, "volume": volume.path,
                              "problem": problem}},
        )
        return True

    # -- reads ----------------------------------------------------------------------------------

    def get(self, chunk_hash: bytes, index: int, pg: int) -> StoredFragment:
        """Read a fragment and verify its CRC32C.

        Raises:
            InvalidFragment: malformed key fields.
            FragmentNotFound: no such fragment on this node.
            FragmentCorrupt: the stored record is malformed or its data fails its CRC32C (also
                counted in ``coffer_storagenode_corrupt_fragments_total`` and logged).
            StorageError: the engine is closed or RocksDB failed.
        """
        key = fragment_key(chunk_hash, index, pg)
        volume = self._volumes[self.volume_index(chunk_hash)]
        self._enter()
        try:
            header, value = self._read_record(volume, key)
            problem = _check_record(header, value)
            if problem is not None and value is not None:
                # Header and data are two reads of one atomic batch: a put or delete of the same
                # fragment in between can pair an old header with new data. Read once more before
                # calling it corrupt; real corruption fails again.
                header, value = self._read_record(volume, key)
                problem = _check_record(header, value)
        except Exception as exc:
            raise StorageError(f"volume {volume.path}: read failed: {exc}") from exc
        finally:
            self._exit()
        if header is None:
            raise FragmentNotFound(f"fragment {chunk_hash.hex()}/{index} (pg {pg}) not on this node")
        if problem is not None:
            self._report_corrupt(volume.path, chunk_hash, index, problem)
            raise FragmentCorrupt(f"fragment {chunk_hash.hex()}/{index}: {problem}")
        assert value is not None  # _check_record reports a missing value
        version, checksum, _length, chunk_size, _written_at_ms = _unpack_header(header)
        if version == _FORMAT_VERSION_HEADER_IN_VALUE:
            value = value[LEGACY_HEADER.size :]
        return StoredFragment(data=value, checksum=checksum, chunk_size=chunk_size)

    def _read_record(self, volume: _Volume, key: bytes) -> tuple[bytes | None, bytes | None]:
        """Return ``(header, value)`` of ``key``; ``(None, None)`` when no header exists."""
        header = volume.headers.get(key)
        if header is None:
            return None, None
        value = volume.db.get(key, read_opt=self._fragment_reads)
        return header, value

    def _report_corrupt(self, volume_path: str, chunk_hash: bytes, index: int, problem: str) -> None:
        with self._gate:
            self._corrupt_detected += 1
        CORRUPT_FRAGMENTS.inc()
        logger.error(
            "corrupt fragment",
            extra={"fields": {"chunk_hash": chunk_hash.hex(), "index": index, "volume": volume_path,
                              "problem": problem}},
        )

    def list_pg(self, pg: int) -> Iterator[FragmentEntry]:
        """Every fragment of placement group ``pg`` on this node, volume by volume, each in key order.

        Reads only the ``fragment_headers`` column family (no fragment data, no CRC check).
        ``written_at_ms`` is 0 for records of formats 1 and 2; malformed headers are logged and
        left out.

        Raises:
            InvalidFragment: ``pg`` outside the u32 range.
            StorageError: the engine is closed or RocksDB failed.
        """
        if not 0 <= pg <= _MAX_PLACEMENT_GROUP:
            raise InvalidFragment(f"placement group must be a u32, got {pg}")
        lower = pg.to_bytes(4, "big")
        entries: list[FragmentEntry] = []
        self._enter()
        try:
            for volume in self._volumes:
                # Only the upper bound: rocksdict's lower-bound-only iterators come back empty.
                read_options = ReadOptions()
                if pg < _MAX_PLACEMENT_GROUP:
                    read_options.set_iterate_upper_bound((pg + 1).to_bytes(4, "big"))
                for raw_key, raw_header in volume.headers.items(from_key=lower, read_opt=read_options):
                    listed = _entry_of(volume.path, bytes(raw_key), bytes(raw_header))  # type: ignore[arg-type]
                    if listed is not None and listed[1] is not None:
                        entries.append(listed[1])
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"listing placement group {pg} failed: {exc}") from exc
        finally:
            self._exit()
        return iter(entries)

    def list_all(self) -> Iterator[tuple[int, FragmentEntry]]:
        """Every fragment on this node as ``(placement group, entry)``: volume by volume (in
        ``volume_paths`` order), each in key order (placement group, chunk hash, index).

        Reads only headers, ``LIST_ALL_PAGE`` at a time, lazily: each page is one engine call, so
        a pass over millions of fragments holds neither the engine nor much memory, and fragments
        written or deleted meanwhile may or may not appear. A header record that does not parse is
        listed with length, checksum and chunk size 0 (so ``verify`` reports it); a key that is
        not 37 bytes is logged and skipped.

        Raises (from the ``next()`` that reads a page):
            StorageError: the engine is closed or RocksDB failed.
        """
        for volume_number in range(len(self._volumes)):
            after: bytes | None = None
            while True:
                page = self._list_page(volume_number, after, LIST_ALL_PAGE)
                for key, pg, entry in page:
                    after = key
                    yield pg, entry
                if len(page) < LIST_ALL_PAGE:
                    break

    def _list_page(self, volume_number: int, after: bytes | None,
                   limit: int) -> list[tuple[bytes, int, FragmentEntry]]:
        """Up to ``limit`` records of a volume with keys after ``after`` (from the start if None)."""
        volume = self._volumes[volume_number]
        page: list[tuple[bytes, int, FragmentEntry]] = []
        self._enter()
        try:
            for raw_key, raw_header in volume.headers.items(from_key=after):
                key = bytes(raw_key)  # type: ignore[arg-type]  # raw mode
                if key == after:
                    continue
                listed = _entry_of(volume.path, key, bytes(raw_header))
                if listed is None:
                    continue
                pg, entry = listed
                page.append((key, pg, entry or FragmentEntry(chunk_hash=key[4:-1], index=key[-1], length=0,
                                                             checksum=0, chunk_size=0)))
                if len(page) >= limit:
                    break
        except Exception as exc:
            raise StorageError(f"volume {volume.path}: listing failed: {exc}") from exc
        finally:
            self._exit()
        return page

    # -- summaries ------------------------------------------------------------------------------

    def summarize_by_index(self, pgs: Collection[int] | None = None) -> dict[int, dict[int, tuple[int, bytes]]]:
        """``{pg: {fragment index: (fragments, digest)}}`` of the placement groups ``pgs`` (None:
        every placement group this node holds anything of); a placement group or index holding
        nothing is left out.

        ``digest`` (``SUMMARY_DIGEST_BYTES`` bytes, big-endian) is the sum modulo 2^128, over the
        fragments at that index, of ``summary_item(chunk_hash, chunk_size, length)``. The item
        leaves out the index and the checksum, so the complete positions of one placement group
        have equal digests on every member; a sum rather than an XOR, so equal items never cancel.
        Summaries are cached and a placement group's are recomputed from its header records (no
        fragment data) only after a put, delete or quarantine touched it. Malformed header
        records are left out, as ``list_pg`` does.

        Raises:
            InvalidFragment: a placement group outside the u32 range.
            StorageError: the engine is closed or RocksDB failed.
        """
        if pgs is not None:
            for pg in pgs:
                if not 0 <= pg <= _MAX_PLACEMENT_GROUP:
                    raise InvalidFragment(f"placement group must be a u32, got {pg}")
        self._enter()
        try:
            with self._summarize_lock:
                self._refresh_summaries(pgs)
                with self._summary_lock:
                    wanted = self._summaries.keys() if pgs is None else pgs
                    return {
                        pg: {index: (count, digest.to_bytes(SUMMARY_DIGEST_BYTES, "big"))
                             for index, (count, digest) in sorted(self._summaries[pg].items())}
                        for pg in sorted(set(wanted)) if self._summaries.get(pg)
                    }
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"summarizing placement groups failed: {exc}") from exc
        finally:
            self._exit()

    def summarize(self, pgs: Collection[int] | None = None) -> dict[int, tuple[int, bytes]]:
        """``{pg: (fragments, digest)}`` over every index: ``summarize_by_index`` with each
        placement group's counts and digests summed (digests modulo 2^128). Same errors."""
        result: dict[int, tuple[int, bytes]] = {}
        for pg, by_index in self.summarize_by_index(pgs).items():
            count = sum(fragments for fragments, _ in by_index.values())
            digest = sum(int.from_bytes(digest, "big") for _, digest in by_index.values()) % _SUMMARY_MODULUS
            result[pg] = (count, digest.to_bytes(SUMMARY_DIGEST_BYTES, "big"))
        return result

    def _mark_dirty(self, pgs: Collection[int]) -> None:
        with self._summary_lock:
            self._dirty_pgs.update(pgs)

    def _refresh_summaries(self, pgs: Collection[int] | None) -> None:
        """Recompute the cached summaries ``pgs`` needs; caller holds ``_summarize_lock``.

        A placement group is taken off the dirty set before its headers are read: a write that
        lands during the read marks it again, so the next call reads it once more.
        """
        with self._summary_lock:
            full = pgs is None and not self._summaries_complete
            if full:
                self._dirty_pgs.clear()
                stale: set[int] = set()
            else:
                wanted = self._summaries.keys() | self._dirty_pgs if pgs is None else set(pgs)
                stale = {pg for pg in wanted
                         if pg in self._dirty_pgs or (not self._summaries_complete and pg not in self._summaries)}
                self._dirty_pgs -= stale
        if full:
            fresh = self._scan_summaries(None)
            with self._summary_lock:
                self._summaries = fresh
                self._summaries_complete = True
            return
        for pg in stale:
            by_index = self._scan_summaries(pg).get(pg, {})
            with self._summary_lock:
                self._summaries[pg] = by_index

    def _scan_summaries(self, pg: int | None) -> dict[int, dict[int, list[int]]]:
        """Summaries read from the header records of placement group ``pg`` (None: all)."""
        summaries: dict[int, dict[int, list[int]]] = {}
        for volume in self._volumes:
            read_options = ReadOptions()
            lower: bytes | None = None
            if pg is not None:
                lower = pg.to_bytes(4, "big")
                if pg < _MAX_PLACEMENT_GROUP:
                    read_options.set_iterate_upper_bound((pg + 1).to_bytes(4, "big"))
            for raw_key, raw_header in volume.headers.items(from_key=lower, read_opt=read_options):
                key = bytes(raw_key)  # type: ignore[arg-type]  # raw mode
                if len(key) != KEY_BYTES:
                    continue
                try:
                    _version, _checksum, length, chunk_size, _written = _unpack_header(bytes(raw_header))
                except ValueError:
                    continue
                slot = summaries.setdefault(int.from_bytes(key[:4], "big"), {}).setdefault(key[-1], [0, 0])
                slot[0] += 1
                slot[1] = (slot[1] + summary_item(key[4:-1], chunk_size, length)) % _SUMMARY_MODULUS
        return summaries

    def verify(self, chunk_hash: bytes, index: int, pg: int) -> str | None:
        """Re-read a fragment and check it: header format, length, CRC32C of the data, RocksDB's
        own block checksums. Returns what is wrong, or None when it checks out or is not on this
        node (deleted since it was listed). Not a client get: nothing is counted or logged.

        Raises:
            InvalidFragment: malformed key fields.
            StorageError: the engine is closed or RocksDB failed other than with corruption.
        """
        key = fragment_key(chunk_hash, index, pg)
        volume = self._volumes[self.volume_index(chunk_hash)]
        self._enter()
        try:
            return self._verify_record(volume, key)
        finally:
            self._exit()

    def _verify_record(self, volume: _Volume, key: bytes) -> str | None:
        problem = self._verify_once(volume, key)
        if problem is not None:
            # As in get: a put between the header read and the data read can pair an old header
            # with new data; real corruption fails twice.
            problem = self._verify_once(volume, key)
        return problem

    def _verify_once(self, volume: _Volume, key: bytes) -> str | None:
        try:
            header = volume.headers.get(key, read_opt=self._verify_reads)
            if header is None:
                return None
            value = volume.db.get(key, read_opt=self._verify_reads)
        except Exception as exc:
            if "corrupt" in str(exc).lower():
                return f"RocksDB read failed: {exc}"
            raise StorageError(f"volume {volume.path}: read failed: {exc}") from exc
        return _check_record(header, value)

    def stats(self) -> list[VolumeStats]:
        """Per volume: fragment count (RocksDB's estimate of keys), bytes of its files, bytes free.

        Raises:
            StorageError: the engine is closed.
        """
        result: list[VolumeStats] = []
        self._enter()
        try:
            for volume in self._volumes:
                fragments = volume.headers.property_int_value("rocksdb.estimate-num-keys") or 0
                result.append(VolumeStats(path=volume.path, fragments=fragments,
                                          bytes_used=_directory_bytes(volume.path),
                                          bytes_free=shutil.disk_usage(volume.path).free))
        finally:
            self._exit()
        return result

    # -- space reclamation ----------------------------------------------------------------------

    def blob_space(self, volume_index: int) -> BlobSpace:
        """Volume ``volume_index``'s blob files: how many, their bytes and the garbage in them
        (RocksDB's ``num-blob-files``, ``live-blob-file-size`` and ``live-blob-file-garbage-size``).

        Raises:
            IndexError: no such volume.
            StorageError: the engine is closed or RocksDB failed.
        """
        volume = self._volumes[volume_index]
        self._enter()
        try:
            files = volume.db.property_int_value(_BLOB_FILE_COUNT_PROPERTY)
            total = volume.db.property_int_value(_BLOB_FILE_BYTES_PROPERTY)
            garbage = volume.db.property_int_value(_BLOB_GARBAGE_BYTES_PROPERTY)
        except Exception as exc:
            raise StorageError(f"volume {volume.path}: cannot read blob file sizes: {exc}") from exc
        finally:
            self._exit()
        return BlobSpace(files=files or 0, total_bytes=total or 0, garbage_bytes=garbage or 0)

    def free_bytes(self, volume_index: int) -> int:
        """Bytes free on volume ``volume_index``'s disk, as puts see them (re-read at most every
        ``FREE_SPACE_REFRESH_SECONDS``, minus what was written since).

        Raises:
            IndexError: no such volume.
            StorageError: the volume's disk cannot be read.
        """
        volume = self._volumes[volume_index]
        try:
            return volume.free_bytes()
        except OSError as exc:
            raise StorageError(f"volume {volume.path}: cannot read free space: {exc}") from exc

    def take_deletes_since_compaction(self, volume_index: int) -> int:
        """Fragments deleted from volume ``volume_index`` since the previous call (the count
        restarts at 0). Raises ``IndexError`` for no such volume."""
        volume = self._volumes[volume_index]
        with volume.write_lock:
            deletes, volume.deletes_since_compaction = volume.deletes_since_compaction, 0
        return deletes

    def compact(self, volume_index: int, *, relocate_oldest: int = 0) -> None:
        """Compact all records of volume ``volume_index`` (blocking, for as long as RocksDB takes
        to rewrite the table files, and the moved fragments; one compaction per volume at a time,
        others wait). Flushes, automatic compactions, puts and gets go on meanwhile.

        Deleted fragments' keys are dropped, so their bytes count as garbage (``blob_space``) and a
        blob file left with nothing but garbage is deleted. With ``relocate_oldest`` N > 0, blob
        garbage collection runs for this compaction only (it stays off otherwise: always on, it
        rewrites live fragments over and over, 4.5-5.8x write amplification against 2x, see
        perf-notes): the live fragments of the N oldest blob files move to a new blob file and the
        N files are deleted. Source: RocksDB wiki, "Integrated BlobDB" (garbage collection;
        ``blob_garbage_collection_age_cutoff``: the oldest ``int(cutoff * files)`` files are
        collected). There is no key range to pass: a compaction rewrites whole table files, so a
        range would not bound the work.

        Raises:
            ValueError: ``relocate_oldest`` negative.
            IndexError: no such volume.
            StorageError: the engine is closed or RocksDB failed.
        """
        if relocate_oldest < 0:
            raise ValueError(f"relocate_oldest must not be negative, got {relocate_oldest}")
        volume = self._volumes[volume_index]
        options = CompactOptions()
        # Automatic compactions keep running: a manual one must not stall the writes behind L0.
        options.set_exclusive_manual_compaction(False)
        if relocate_oldest:
            # Relocation happens only where a compaction rewrites the references; on the last
            # level that takes "force".
            options.set_bottommost_level_compaction(BottommostLevelCompaction.force())
        self._enter()
        try:
            with volume.compaction_lock:
                if not relocate_oldest:
                    volume.db.compact_range(None, None, options)
                    return
                files = volume.db.property_int_value(_BLOB_FILE_COUNT_PROPERTY) or 0
                if files == 0:
                    return
                # Half a file over N so that int(cutoff * files) is exactly N (at most all files).
                cutoff = min(1.0, (relocate_oldest + 0.5) / files)
                volume.db.set_options({"enable_blob_garbage_collection": "true",
                                       "blob_garbage_collection_age_cutoff": repr(cutoff)})
                try:
                    volume.db.compact_range(None, None, options)
                finally:
                    volume.db.set_options({"enable_blob_garbage_collection": "false"})
        except Exception as exc:
            raise StorageError(f"volume {volume.path}: compaction failed: {exc}") from exc
        finally:
            self._exit()

    # -- lifecycle ------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every volume's memtables out to blob and table files and wait until they are.
        Nothing becomes more durable (the WAL already holds every put); it shortens the WAL
        replay of the next start. Raises ``StorageError`` if the engine is closed or RocksDB
        failed."""
        self._enter()
        try:
            for volume in self._volumes:
                volume.db.flush(wait=True)
                volume.headers.flush(wait=True)
        except Exception as exc:
            raise StorageError(f"flush failed: {exc}") from exc
        finally:
            self._exit()

    def close(self) -> None:
        """Wait for calls in progress, then close every database. Idempotent."""
        with self._gate:
            if self._closed:
                return
            self._closed = True
            self._gate.wait_for(lambda: self._active_calls == 0)
        for volume in self._volumes:
            volume.close()

    def _enter(self) -> None:
        with self._gate:
            if self._closed:
                raise StorageError("storage engine is closed")
            self._active_calls += 1

    def _exit(self) -> None:
        with self._gate:
            self._active_calls -= 1
            if self._active_calls == 0:
                self._gate.notify_all()


def summary_item(chunk_hash: bytes, chunk_size: int, length: int) -> int:
    """One fragment's term of a summary digest: BLAKE2b-128 (RFC 7693) of ``chunk_hash (32
    bytes) + chunk_size (u64 BE) + length (u64 BE)``, as a big-endian integer."""
    digest = hashlib.blake2b(chunk_hash + _SUMMARY_ITEM.pack(chunk_size, length), digest_size=SUMMARY_DIGEST_BYTES)
    return int.from_bytes(digest.digest(), "big")


def _unpack_header(header: bytes) -> tuple[int, int, int, int, int]:
    """``(format_version, crc32c, length, chunk_size, written_at_ms)`` of a header record of any
    readable format (written_at_ms 0 for formats 1 and 2).

    Raises:
        ValueError: the record's size or format version is not one this code reads (the message
            says which).
    """
    if len(header) == HEADER.size:
        fields: tuple[int, int, int, int, int] = HEADER.unpack(header)
        if fields[0] != FORMAT_VERSION:
            raise ValueError(f"unknown record format version {fields[0]} in a {HEADER.size}-byte header")
        return fields
    if len(header) == LEGACY_HEADER.size:
        version, checksum, length, chunk_size = LEGACY_HEADER.unpack(header)
        if version not in (_FORMAT_VERSION_HEADER_IN_VALUE, _FORMAT_VERSION_BARE_DATA):
            raise ValueError(f"unknown record format version {version} in a {LEGACY_HEADER.size}-byte header")
        return version, checksum, length, chunk_size, 0
    raise ValueError(f"header record of {len(header)} bytes, expected {HEADER.size} or {LEGACY_HEADER.size}")


def _written_at_ms(header: bytes) -> int:
    """The write time in a header record; 0 (older than any time) for formats 1 and 2 and for a
    header that does not parse."""
    try:
        return _unpack_header(header)[4]
    except ValueError:
        return 0


def _entry_of(volume_path: str, key: bytes, header: bytes) -> tuple[int, FragmentEntry | None] | None:
    """``(placement group, entry)`` of a header record; the entry is None when the header does not
    parse, and the whole is None (logged) when the key is malformed."""
    if len(key) != KEY_BYTES:
        logger.error("malformed record key", extra={"fields": {"volume": volume_path, "key": key.hex()}})
        return None
    pg = int.from_bytes(key[:4], "big")
    try:
        _version, checksum, length, chunk_size, written_at_ms = _unpack_header(header)
    except ValueError as exc:
        logger.error("malformed header record", extra={"fields": {"volume": volume_path, "key": key.hex(),
                                                                     "problem": str(exc)}})
        return pg, None
    return pg, FragmentEntry(chunk_hash=key[4:-1], index=key[-1], length=length, checksum=checksum,
                             chunk_size=chunk_size, written_at_ms=written_at_ms)


def _check_record(header: bytes | None, value: bytes | None) -> str | None:
    """Return why a stored record (header + value) is bad, or None when it checks out.

    A missing header means "not found" and is not a problem; a header without a value is.
    """
    if header is None:
        return None
    try:
        version, checksum, length, _chunk_size, _written_at_ms = _unpack_header(header)
    except ValueError as exc:
        return str(exc)
    if value is None:
        return "header present but fragment data missing"
    data = memoryview(value)
    if version == _FORMAT_VERSION_HEADER_IN_VALUE:
        if len(value) < LEGACY_HEADER.size or value[: LEGACY_HEADER.size] != header:
            return "format 1 record: header in value differs from header record"
        data = data[LEGACY_HEADER.size :]
    if length != len(data):
        return f"header says {length} bytes of data, record holds {len(data)}"
    actual = crc32c(data)
    if actual != checksum:
        return f"CRC32C is {actual:#010x}, stored {checksum:#010x}"
    return None


def _wal_number(name: str) -> int:
    """The log number of a RocksDB WAL file name (``000123.log`` -> 123); -1 if it has none."""
    stem = name[: -len(WAL_FILE_SUFFIX)]
    return int(stem) if stem.isdigit() else -1


def _directory_bytes(path: str) -> int:
    total = 0
    for entry in os.scandir(path):
        if entry.is_file(follow_symlinks=False):
            try:
                total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:  # RocksDB deletes obsolete files concurrently
                continue
    return total
