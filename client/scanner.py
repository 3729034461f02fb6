"""The local tree of a synced folder: a walk with a stat cache, hashing only files that changed.

A file is re-chunked only if its (size, mtime_ns, inode) differ from what the index recorded (the
base tree's stat fields, or the stat cache of unsynced files), as git's index does, or if it was
modified less than RACY_WINDOW_NS ago (its stat cannot yet be trusted). Symlinks are
not followed (their targets may lie outside the folder) and are reported with special files
(devices, FIFOs, sockets) as skipped. A file whose stat changes while it is chunked is reported
as unstable and not hashed: the daemon retries it later and must keep its last-synced state
meanwhile, never reading its absence as a delete (`ScanResult.unknown`).

Blocking (os.scandir, file reads, SQLite): the daemon runs `scan`/`scan_paths` in a thread.
"""

from __future__ import annotations

import os
import stat as stat_module
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from client.chunking import ChunkerSettings, FileChunk, chunk_file_stable, content_digest
from client.ignore import IgnoreRules
from client.index import FILE, FOLDER, LocalIndex, StatCacheRow

MAX_PATH_BYTES = 4096  # contracts section 0: longer paths are refused by the server
_CACHE_BATCH_ROWS = 1000
_CACHE_BATCH_BYTES = 1 << 30  # a file this large took seconds to hash: save it at once
# A file modified this recently (ns) may change again within the same mtime tick without changing
# its stat ("racy clean", see git's Documentation/technical/racy-git.txt): it is re-hashed rather
# than trusted from the cache, and its hash is not cached. 2 s covers coarse (FAT) timestamps.
RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True)
class LocalEntry:
    """One entry of the local tree. kind "file" | "folder"; files carry size (bytes), mtime_ns,
    inode, chunks and digest (`content_digest(chunks)`); folders have them None / ()."""

    kind: str
    size: int | None = None
    mtime_ns: int | None = None
    inode: int | None = None
    digest: str | None = None
    chunks: tuple[FileChunk, ...] = ()


@dataclass
class ScanResult:
    """What a scan found.

    entries: relative '/'-separated path -> LocalEntry for every synced-eligible file and folder.
    unstable: files that changed while being chunked (not in entries; rescan later).
    skipped: (path, reason) for symlinks ("symlink"), special files ("special file"), names that
      are not UTF-8 or too long ("invalid name"), and unreadable entries ("error: ...").
    missing: paths given to `scan_paths` that no longer exist (deleted locally).
    hashed_files / hashed_bytes: files chunked because the stat cache did not match, and their bytes.
    """

    entries: dict[str, LocalEntry] = field(default_factory=dict)
    unstable: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    hashed_files: int = 0
    hashed_bytes: int = 0

    @property
    def unknown(self) -> set[str]:
        """Paths whose current state is unknown (unstable, or unreadable): keep their base state."""
        return set(self.unstable) | {path for path, reason in self.skipped if reason.startswith("error")}


class _Walker:
    def __init__(self, folder: Path, index: LocalIndex, ignore: IgnoreRules, settings: ChunkerSettings) -> None:
        self.folder = folder
        self.index = index
        self.ignore = ignore
        self.settings = settings
        self.result = ScanResult()
        self._cache_rows: list[StatCacheRow] = []
        self._cache_bytes = 0

    def flush_cache(self) -> None:
        """Write the stat cache rows gathered so far (one transaction)."""
        if self._cache_rows:
            self.index.put_stat_cache_many(self._cache_rows)
            self._cache_rows = []
            self._cache_bytes = 0

    def walk(self, relative_dir: str) -> None:
        """Add everything under the folder `relative_dir` ("" = the root), depth first."""
        pending = [relative_dir]
        while pending:
            current = pending.pop()
            try:
                with os.scandir(self.folder / current if current else self.folder) as iterator:
                    children = sorted(iterator, key=lambda item: item.name)
            except FileNotFoundError:
                continue  # removed while walking
            except OSError as exc:
                self.result.skipped.append((current, f"error: {exc.strerror or exc}"))
                continue
            for child in children:
                path = f"{current}/{child.name}" if current else child.name
                if not self._valid_name(path):
                    continue
                try:
                    if child.is_symlink():
                        self.result.skipped.append((path, "symlink"))
                    elif child.is_dir(follow_symlinks=False):
                        if not self.ignore.ignored(path, is_dir=True):
                            self.result.entries[path] = LocalEntry(FOLDER)
                            pending.append(path)
                    elif child.is_file(follow_symlinks=False):
                        if not self.ignore.ignored(path, is_dir=False):
                            self.add_file(path, child.stat(follow_symlinks=False))
                    else:
                        self.result.skipped.append((path, "special file"))
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    self.result.skipped.append((path, f"error: {exc.strerror or exc}"))

    def _valid_name(self, path: str) -> bool:
        try:
            encoded = path.encode("utf-8")  # names that are not UTF-8 decode to lone surrogates
        except UnicodeEncodeError:
            self.result.skipped.append((path, "invalid name"))
            return False
        if len(encoded) > MAX_PATH_BYTES:
            self.result.skipped.append((path, "invalid name"))
            return False
        return True

    def add_file(self, path: str, stat: os.stat_result) -> None:
        """Add the regular file `path` with `stat`, from the stat cache or by chunking it."""
        racy = time.time_ns() - stat.st_mtime_ns < RACY_WINDOW_NS
        cached = None if racy else self.index.cached_hash(path, stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if cached is not None:
            self.result.entries[path] = LocalEntry(FILE, stat.st_size, stat.st_mtime_ns, stat.st_ino,
                                                   cached.digest, cached.chunks)
            return
        try:
            chunked = chunk_file_stable(self.folder / path, self.settings)
        except FileNotFoundError:
            return
        if chunked is None:
            self.result.unstable.append(path)
            return
        chunks, before = chunked
        digest = content_digest(chunks)
        self.result.hashed_files += 1
        self.result.hashed_bytes += before.st_size
        if time.time_ns() - before.st_mtime_ns >= RACY_WINDOW_NS:
            self._cache_rows.append(StatCacheRow(path, before.st_size, before.st_mtime_ns, before.st_ino,
                                                 tuple(chunks), digest))
            self._cache_bytes += before.st_size
            # Written in batches; a large hash is saved at once so a restart never repeats it.
            if len(self._cache_rows) >= _CACHE_BATCH_ROWS or self._cache_bytes >= _CACHE_BATCH_BYTES:
                self.flush_cache()
        self.result.entries[path] = LocalEntry(FILE, before.st_size, before.st_mtime_ns, before.st_ino,
                                               digest, tuple(chunks))

    def add_path(self, path: str) -> None:
        """Add one path given by the caller (a file, or a folder with everything under it)."""
        if not self._valid_name(path):
            return
        try:
            stat = os.lstat(self.folder / path)
        except FileNotFoundError:
            self.result.missing.append(path)
            return
        except OSError as exc:
            self.result.skipped.append((path, f"error: {exc.strerror or exc}"))
            return
        if stat_module.S_ISLNK(stat.st_mode):
            self.result.skipped.append((path, "symlink"))
        elif stat_module.S_ISDIR(stat.st_mode):
            if not self.ignore.ignored(path, is_dir=True):
                self.result.entries[path] = LocalEntry(FOLDER)
                self.walk(path)
        elif stat_module.S_ISREG(stat.st_mode):
            if not self.ignore.ignored(path, is_dir=False):
                self.add_file(path, stat)
        else:
            self.result.skipped.append((path, "special file"))


def scan(folder: str | Path, index: LocalIndex, ignore: IgnoreRules,
         settings: ChunkerSettings = ChunkerSettings()) -> ScanResult:
    """Walk the whole `folder` and return its local tree. Blocking.

    Files whose (size, mtime_ns, inode) match the index are not read; the others are chunked and
    their hashes stored in the index's stat cache (whose rows for vanished paths are pruned).
    Reloads the ignore rules first if `.cofferignore` changed. Ignored paths are left out silently.
    Raises OSError only if `folder` itself cannot be listed.
    """
    root = Path(folder)
    os.scandir(root).close()  # fail loudly if the folder itself is gone or unreadable
    ignore.reload_if_changed()
    walker = _Walker(root, index, ignore, settings)
    walker.walk("")
    walker.flush_cache()
    index.prune_stat_cache(walker.result.entries)
    return walker.result


def scan_paths(folder: str | Path, paths: Iterable[str], index: LocalIndex, ignore: IgnoreRules,
               settings: ChunkerSettings = ChunkerSettings()) -> ScanResult:
    """Scan only `paths` (relative, '/'-separated; e.g. from the watcher). Blocking.

    A folder path is scanned with everything under it; a path that does not exist is listed in
    `missing` (the daemon treats it, and anything under it that the base tree has, as deleted
    locally). Ignored paths are left out silently.
    """
    walker = _Walker(Path(folder), index, ignore, settings)
    for path in sorted(set(paths)):
        if path in walker.result.entries:
            continue  # already added under a folder scanned earlier in this call
        walker.add_path(path)
    walker.flush_cache()
    return walker.result
