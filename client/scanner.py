"""The local tree of a synced folder: a walk with a stat cache, hashing only files that changed.

A file is re-chunked only if its (size, mtime_ns, inode) differ from what the index recorded (the
base tree's stat fields, or the stat cache of unsynced files), as git's index does, or if it was
modified less than RACY_WINDOW_NS ago (its stat cannot yet be trusted). Symlinks are
not followed (their targets may lie outside the folder) and are reported with special files
(devices, FIFOs, sockets) as skipped. A file whose stat changes while it is chunked is reported
as unstable and not hashed: the daemon retries it later and must keep its last-synced state
meanwhile, never reading its absence as a delete (`ScanResult.unknown`).

A walk is not a snapshot: a folder renamed while the walk runs can be listed under its old name and
then be gone, or missed under both names, and its files would read as deleted. So the walk notes
what moved under it (`ScanResult.moved_during_scan`) and the daemon keeps those paths, and all that
sits under them, at their last-synced state until a later scan sees them settled:
- a folder whose own stat changed while it was listed (or within the file clock's last tick) is
  listed again, since POSIX leaves it unspecified whether readdir returns an entry added or removed
  during the listing; it is noted if it never settles;
- an entry listed by its folder but gone before it could be read is noted;
- a file with a single link seen at two paths was moved during the walk: both paths are noted.

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
# How often a folder that changed while it was listed is listed again before the walk gives up on it
# for this scan (each listing takes microseconds; an application rewriting the folder without pause
# only delays that folder to a later scan).
LISTING_ATTEMPTS = 3
# Linux stamps files from a coarse clock that advances once per timer tick (1-10 ms by CONFIG_HZ):
# a folder changed less than this long ago may change again without its timestamps moving.
FILE_CLOCK_TICK_NS = 20_000_000


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
    moved_during_scan: paths that were renamed or removed while the walk read them, or folders whose
      listing never settled (not in entries; a folder stands for everything under it; rescan later).
    hashed_files / hashed_bytes: files chunked because the stat cache did not match, and their bytes.
    """

    entries: dict[str, LocalEntry] = field(default_factory=dict)
    unstable: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    moved_during_scan: list[str] = field(default_factory=list)
    hashed_files: int = 0
    hashed_bytes: int = 0

    @property
    def unknown(self) -> set[str]:
        """Paths whose current state is unknown (unstable, unreadable, or moved during the scan): keep
        their base state, and that of everything under them (`client.tree.within`)."""
        return (set(self.unstable) | set(self.moved_during_scan)
                | {path for path, reason in self.skipped if reason.startswith("error")})


class _Walker:
    def __init__(self, folder: Path, index: LocalIndex, ignore: IgnoreRules, settings: ChunkerSettings) -> None:
        self.folder = folder
        self.index = index
        self.ignore = ignore
        self.settings = settings
        self.result = ScanResult()
        self._cache_rows: list[StatCacheRow] = []
        self._cache_bytes = 0
        # (device, inode) -> path of every file with a single link seen so far: a second path for
        # one of them means the file moved while the walk ran (hard links have st_nlink > 1).
        self._single_link_paths: dict[tuple[int, int], str] = {}

    def flush_cache(self) -> None:
        """Write the stat cache rows gathered so far (one transaction)."""
        if self._cache_rows:
            self.index.put_stat_cache_many(self._cache_rows)
            self._cache_rows = []
            self._cache_bytes = 0

    def walk(self, relative_dir: str) -> None:
        """Add everything under the folder `relative_dir` ("" = the root), depth first.

        Raises FileNotFoundError if the root itself vanishes (an empty walk would read as "delete
        everything")."""
        pending = [relative_dir]
        while pending:
            current = pending.pop()
            try:
                children = self._list(current)
            except FileNotFoundError:
                if not current:
                    raise
                self._moved(current)  # listed by its parent, gone before it could be read
                continue
            except OSError as exc:
                self.result.skipped.append((current, f"error: {exc.strerror or exc}"))
                continue
            if children is None:
                self._moved(current)  # kept changing while listed
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
                    self._moved(path)
                except OSError as exc:
                    self.result.skipped.append((path, f"error: {exc.strerror or exc}"))

    def _list(self, relative_dir: str) -> list[os.DirEntry[str]] | None:
        """The entries of `relative_dir` sorted by name, from a listing during which the folder did not
        change; None if it changed in every one of LISTING_ATTEMPTS listings. Raises OSError.

        "Did not change": its stat (inode, mtime, ctime) is the same before and after the listing, and
        older than one tick of the kernel's coarse file clock, since two changes within one tick leave
        the same timestamps (then the listing is repeated after that tick)."""
        directory = self.folder / relative_dir if relative_dir else self.folder
        for _attempt in range(LISTING_ATTEMPTS):
            before = os.stat(directory)
            with os.scandir(directory) as iterator:
                children = sorted(iterator, key=lambda item: item.name)
            after = os.stat(directory)
            if _stamp(before) != _stamp(after):
                continue
            if time.time_ns() - max(after.st_mtime_ns, after.st_ctime_ns) >= FILE_CLOCK_TICK_NS:
                return children
            time.sleep(FILE_CLOCK_TICK_NS / 1e9)
        return None

    def _moved(self, path: str) -> None:
        """Note `path` as moved during the scan and drop what the walk had added for it."""
        self.result.moved_during_scan.append(path)
        self.result.entries.pop(path, None)

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
        if stat.st_nlink == 1:
            first = self._single_link_paths.setdefault((stat.st_dev, stat.st_ino), path)
            if first != path:  # the same file at two paths: it moved while the walk ran
                self._moved(first)
                self._moved(path)
                return
        racy = time.time_ns() - stat.st_mtime_ns < RACY_WINDOW_NS
        cached = None if racy else self.index.cached_hash(path, stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if cached is not None:
            self.result.entries[path] = LocalEntry(FILE, stat.st_size, stat.st_mtime_ns, stat.st_ino,
                                                   cached.digest, cached.chunks)
            return
        try:
            chunked = chunk_file_stable(self.folder / path, self.settings)
        except FileNotFoundError:
            self._moved(path)
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


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    """What changes when a folder's entries change: its inode (replaced), mtime and ctime (ns)."""
    return stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns


def scan(folder: str | Path, index: LocalIndex, ignore: IgnoreRules,
         settings: ChunkerSettings = ChunkerSettings()) -> ScanResult:
    """Walk the whole `folder` and return its local tree. Blocking.

    Files whose (size, mtime_ns, inode) match the index are not read; the others are chunked and
    their hashes stored in the index's stat cache (whose rows for vanished paths are pruned).
    Reloads the ignore rules first if `.cofferignore` changed. Ignored paths are left out silently.
    Raises OSError only if `folder` itself cannot be listed (or vanishes during the walk).
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
