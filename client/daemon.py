"""The sync daemon: keeps one folder and one namespace on a Coffer server in agreement.

One **cycle** (`SyncDaemon.sync_once`): catch the remote replica up with the journal
(`GET /changes` from the saved cursor), scan the folder (only files whose size/mtime/inode changed are
re-chunked), run the pure planner (client/planner.py) on (remote, local, base) and execute its actions
in order. The daemon repeats cycles until a plan is empty ("idle"), then waits for a reason to run
again: a local change (watchdog events, debounced), a remote change (a long-poll on `/changes`
returns entries), the periodic full rescan, or a retry after a failure.

What makes it safe:
- The base tree (what both sides last agreed on) is only written after the server or the disk
  confirmed the step, so a daemon killed at any instant re-plans from a true state.
- Uploads: chunks are read again from the file and checked against their planned SHA-256 before they
  are sent (a file changed since the scan is not uploaded torn); the upload session id is saved per
  path, so a restarted daemon asks the server which chunks are still missing and sends only those.
- Downloads go to a temp file in the same folder, are fsync'd and renamed over the target only if the
  target still is what the plan saw (a file being written locally is never clobbered: the next plan
  sees a conflict). Chunks already present in a synced local file are copied, not downloaded; every
  chunk is checked against its SHA-256 either way.
- Deletes of local files happen only if the file still has the content the plan saw.
- Offline: while the server is unreachable, local edits simply stay ahead of the base tree; the first
  cycle after it returns uploads them (the "offline queue" is the difference between local and base).

Files being written while the daemon scans (stat changes during chunking) are left alone until
they settle. Conflicts follow the server: an upload whose base version is stale is stored by the
server as "name (<device>'s conflicted copy YYYY-MM-DD).ext" and comes down like any other file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import stat as stat_module
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.api import ChunkHashMismatch, ServerUnreachable, SyncApi, SyncApiError
from client.chunking import ChunkerSettings, FileChunk, chunk_file_stable, content_digest, read_chunk
from client.ignore import IgnoreRules
from client.index import BaseRecord, LocalIndex, RemoteRecord
from client.planner import (
    Action,
    Conflict,
    DeleteLocal,
    DeleteRemote,
    Download,
    ForgetBase,
    MakeLocalFolder,
    MakeRemoteFolder,
    MoveLocalAside,
    RecordSynced,
    Upload,
    plan,
)
from client.scanner import LocalEntry, ScanResult, scan
from client.status import STATE_DIRECTORY, SyncStatus, write_status
from client.tree import Kind, Node, hold_unknown, is_under, within
from client.watcher import FolderWatcher
from common.jitter import jittered

log = logging.getLogger("sync")

INDEX_FILE = "index.sqlite3"
LOCK_FILE = "daemon.lock"
TEMP_SUFFIX = ".coffer-tmp"
MAX_CYCLES_IN_A_ROW = 20  # a plan that never empties (a bug or a hostile server) still yields


class DaemonError(Exception):
    """The daemon cannot run (folder locked by another daemon, token refused, ...): say what to do."""


class FolderChanged(Exception):
    """A local file changed while an action was using it; the next cycle sees the change."""


@dataclass(frozen=True)
class DaemonSettings:
    """How the daemon behaves. Sizes in bytes, times in seconds.

    ``chunker``: FastCDC sizes. ``rescan_interval``: full rescan even without events (catches what
    inotify cannot see, e.g. edits while the daemon was stopped are caught by the scan at start).
    ``poll_wait``: long-poll duration. ``parallel_transfers``: chunks in flight (all files together;
    each holds up to ``chunker.max_size`` bytes in memory). ``parallel_files``: files transferred at
    once.
    ``quiet_period``: how long a path must be quiet before its events trigger a cycle.
    ``retry_max``: the longest pause between attempts while the server is unreachable.
    """

    chunker: ChunkerSettings = field(default_factory=ChunkerSettings)
    rescan_interval: float = 60.0
    poll_wait: float = 30.0
    parallel_transfers: int = 4
    parallel_files: int = 8
    quiet_period: float = 0.2
    retry_max: float = 10.0
    watch: bool = True


def _node_from_base(record: BaseRecord) -> Node:
    return Node(Kind(record.kind), record.digest, record.file_id, record.version_id)


def _node_from_remote(record: RemoteRecord) -> Node:
    return Node(Kind(record.kind), record.digest, record.file_id, record.version_id)


def _node_from_local(entry: LocalEntry) -> Node:
    return Node(Kind(entry.kind), entry.digest)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _same_stat(stat: os.stat_result, record: BaseRecord | LocalEntry | None) -> bool:
    return (record is not None and record.size == stat.st_size and record.mtime_ns == stat.st_mtime_ns
            and record.inode == stat.st_ino)


class SyncDaemon:
    """Syncs ``folder`` through ``api`` (a SyncApi for this device's token).

    Its state lives in ``folder/.coffer/`` (the index, the status file, a lock: one daemon per
    folder). Use ``run(stop)`` for the long-running daemon or ``sync_until_idle()`` for one pass.

    Raises DaemonError from ``open`` if another daemon holds the folder.
    """

    def __init__(self, folder: Path, api: SyncApi, settings: DaemonSettings = DaemonSettings(),
                 *, on_progress: Callable[[SyncStatus], None] | None = None) -> None:
        self.folder = folder.resolve()
        self.api = api
        self.settings = settings
        self.state_directory = self.folder / STATE_DIRECTORY
        self.index: LocalIndex | None = None
        self.ignore = IgnoreRules.load(self.folder)
        self.status = SyncStatus(folder=str(self.folder), server=api.server_url)
        self.device = ""
        self._on_progress = on_progress
        self._wake = asyncio.Event()
        self._chunk_slots = asyncio.Semaphore(settings.parallel_transfers)
        self._replica_lock = asyncio.Lock()
        self._lock_handle: Any = None
        self._last_status_write = 0.0
        self._transfer_started = 0.0
        self._transferred = 0

    # Lifecycle --------------------------------------------------------------------------------

    def open(self) -> None:
        """Create ``.coffer/``, take the folder's lock and open the index. Raises DaemonError."""
        self.state_directory.mkdir(parents=True, exist_ok=True)
        handle = (self.state_directory / LOCK_FILE).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DaemonError(f"another coffer sync daemon is already syncing {self.folder} "
                              f"(see `coffer sync status {self.folder}`)") from None
        self._lock_handle = handle
        self.index = LocalIndex(self.state_directory / INDEX_FILE)
        self._publish(force=True)

    def close(self) -> None:
        """Write the final status and release the index and the lock."""
        self.status.state = "stopped"
        self._publish(force=True)
        if self.index is not None:
            self.index.close()
            self.index = None
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def _index(self) -> LocalIndex:
        if self.index is None:
            raise DaemonError("the daemon is not open")
        return self.index

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_status_write < 1.0:
            return
        self._last_status_write = now
        if self._transfer_started:
            elapsed = max(time.monotonic() - self._transfer_started, 1e-3)
            self.status.rate_bytes_per_second = self._transferred / elapsed
        with contextlib.suppress(OSError):
            write_status(self.folder, self.status)
        if self._on_progress is not None:
            self._on_progress(self.status)

    async def connect(self) -> None:
        """Ask the server who this token is (device name for conflicted copies). Raises DaemonError
        if the token is refused; ServerUnreachable if the server does not answer."""
        try:
            account = await self.api.account()
        except SyncApiError as error:
            if error.status == 401:
                raise DaemonError("the server refused this token (revoked or mistyped): create a new one with "
                                  "`coffer token create --user USER --device DEVICE`") from error
            raise
        self.device = str(account.get("device") or "device")
        self.status.user = str(account.get("user") or "")
        self.status.device = self.device

    async def run(self, stop: asyncio.Event) -> None:
        """Sync until ``stop`` is set: cycles on local events, remote changes, rescans and retries."""
        watcher: FolderWatcher | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._connect_until_online(stop)
            if stop.is_set():
                return
            if self.settings.watch:
                watcher = FolderWatcher(self.folder, self.ignore, quiet_period=self.settings.quiet_period)
                watcher.start()
                tasks.append(asyncio.create_task(self._forward_local_events(watcher)))
            tasks.append(asyncio.create_task(self._follow_remote_changes(stop)))
            retry_delay = 0.5
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.sync_until_idle()
                    retry_delay = 0.5
                    timeout = self.settings.rescan_interval
                except ServerUnreachable as error:
                    self._offline(error)
                    timeout = retry_delay
                    retry_delay = min(retry_delay * 2, self.settings.retry_max)
                except SyncApiError as error:
                    if error.status == 401:
                        raise DaemonError("the server refused this device's token (revoked?): create a new one with "
                                          "`coffer token create --user USER --device DEVICE` and run "
                                          "`coffer sync FOLDER --token NEW`") from error
                    log.warning("sync cycle failed; retrying", extra={"fields": {"error": repr(error)}})
                    self.status.last_error = repr(error)
                    self._publish(force=True)
                    timeout = retry_delay
                    retry_delay = min(retry_delay * 2, self.settings.retry_max)
                except (OSError, FolderChanged, ChunkHashMismatch) as error:
                    log.warning("sync cycle failed; retrying", extra={"fields": {"error": repr(error)}})
                    self.status.last_error = repr(error)
                    self._publish(force=True)
                    timeout = retry_delay
                    retry_delay = min(retry_delay * 2, self.settings.retry_max)
                await self._sleep_until_woken(stop, jittered(timeout))
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if watcher is not None:
                await asyncio.to_thread(watcher.stop)  # joins watchdog's thread

    async def _connect_until_online(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                await self.connect()
                return
            except ServerUnreachable as error:
                self._offline(error)
                await self._sleep_until_woken(stop, delay)
                delay = min(delay * 2, self.settings.retry_max)

    def _offline(self, error: Exception) -> None:
        if self.status.state != "offline":
            log.warning("server unreachable; local changes wait until it returns",
                        extra={"fields": {"error": repr(error)}})
        self.status.state = "offline"
        self.status.last_error = repr(error)
        self._publish(force=True)

    async def _sleep_until_woken(self, stop: asyncio.Event, timeout: float) -> None:
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _forward_local_events(self, watcher: FolderWatcher) -> None:
        async for _path in watcher.events():
            self._wake.set()

    async def _follow_remote_changes(self, stop: asyncio.Event) -> None:
        """Long-poll ``/changes``; apply what arrives to the replica and wake the cycle."""
        delay = 0.5
        while not stop.is_set():
            index = self._index()
            cursor = await asyncio.to_thread(index.get_cursor)
            if cursor is None:
                await self._sleep_until_woken(stop, 0.5)  # the first cycle loads the tree
                continue
            try:
                page = await self.api.changes(since=cursor, wait=self.settings.poll_wait)
                delay = 0.5
            except ServerUnreachable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max)
                continue
            except SyncApiError as error:
                log.warning("long-poll failed", extra={"fields": {"error": repr(error)}})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max)
                continue
            if page.get("entries"):
                async with self._replica_lock:
                    # A cycle may have caught up meanwhile; then this page is already applied.
                    if await asyncio.to_thread(index.get_cursor) == cursor:
                        await asyncio.to_thread(index.apply_remote_entries, page["entries"], page["cursor"])
                self._wake.set()
            elif self.status.state == "offline":
                self._wake.set()  # the server is back: run the queued local changes now

    # Cycles -----------------------------------------------------------------------------------

    async def sync_until_idle(self) -> None:
        """Run cycles until a plan is empty (in sync), at most MAX_CYCLES_IN_A_ROW. Raises
        ServerUnreachable, SyncApiError, OSError, FolderChanged."""
        for _ in range(MAX_CYCLES_IN_A_ROW):
            if not await self.sync_once():
                return

    async def sync_once(self) -> bool:
        """One cycle; True if it executed any action or the folder moved under its scan (so another
        cycle is needed)."""
        index = self._index()
        self.status.state = "syncing"
        self.status.cycles += 1
        await self.catch_up()
        result = await asyncio.to_thread(scan, self.folder, index, self.ignore, self.settings.chunker)
        base_records = {record.path: record for record in await asyncio.to_thread(index.base_records)
                        if not self._ignored(record.path, record.kind)}
        remote_records = [record for record in await asyncio.to_thread(index.remote_records)
                          if not self._ignored(record.path, record.kind)]
        if await self._move_renamed_files(result, base_records, {record.path: record for record in remote_records}):
            return True  # the server moved them; re-plan from the caught-up replica
        base = {path: _node_from_base(record) for path, record in base_records.items()}
        remote = {record.path: _node_from_remote(record) for record in remote_records}
        local = {path: _node_from_local(entry) for path, entry in result.entries.items()}
        await self._recognise_other_chunkings(result, local, base_records,
                                              {record.path: record for record in remote_records})
        unknown = result.unknown
        if unknown:
            # Unknown local state (a file being written, an unreadable entry, a path that moved
            # during the scan; folders with everything under them): pretend it is unchanged and
            # decide on a later scan. Reading a folder renamed mid-scan, or one that cannot be
            # listed, as "its files were deleted" would delete them on the server.
            local = hold_unknown(local, base, unknown)
            log.info("local paths in an unknown state (being written, unreadable, or moved during the "
                     "scan); deciding them on a later scan",
                     extra={"fields": {"paths": sorted(unknown)[:10], "count": len(unknown)}})
        actions = [action for action in plan(remote, local, base, self.device, now=time.time())
                   if not within(action.path, unknown)]
        if not actions:
            if result.moved_during_scan:
                return True  # not in sync yet: scan again (sync_until_idle bounds the repeats)
            self.status.state = "idle"
            self.status.pending_files = 0
            self.status.pending_bytes = 0
            self.status.last_synced = time.time()
            self.status.last_error = None
            self._publish(force=True)
            return False
        self._begin_transfers(actions, result, {record.path: record for record in remote_records})
        # Transfers (uploads, downloads, conflicts) between two other actions touch different paths
        # and need nothing from each other (downloads create their parent folders), so they run
        # together, `parallel_files` at a time; chunk bytes in flight stay bounded by the shared
        # `parallel_transfers` slots. Everything else keeps the planner's order.
        batch: list[Action] = []
        for action in [*actions, None]:
            if isinstance(action, Upload | Download | Conflict):
                batch.append(action)
                continue
            if batch:
                files = asyncio.Semaphore(self.settings.parallel_files)

                async def transfer(item: Action, files: asyncio.Semaphore = files) -> None:
                    async with files:
                        await self._run_action(item, result, base_records)

                await self._gather(transfer(item) for item in batch)
                batch = []
            if action is not None:
                await self._run_action(action, result, base_records)
        return True

    async def _run_action(self, action: Action, result: ScanResult, base: dict[str, BaseRecord]) -> None:
        try:
            await self._execute(action, result, base)
        except FolderChanged as error:
            log.info("local file changed during sync; will retry", extra={"fields": {"error": str(error)}})
        if isinstance(action, Upload | Download | Conflict):
            self.status.pending_files = max(0, self.status.pending_files - 1)
        self._publish()

    async def _recognise_other_chunkings(self, result: ScanResult, local: dict[str, Node],
                                         base: dict[str, BaseRecord], remote: dict[str, RemoteRecord]) -> None:
        """Give a local file the base's or the server's digest when it holds exactly their bytes
        under another chunking.

        Digests compare chunk lists, and a chunk list depends on the FastCDC settings of whoever
        made it: a file downloaded from a device with other settings and re-chunked here would
        look edited and be uploaded again (and two such devices would trade versions forever).
        So when a file's digest differs from the base's (or the server's) but its size is equal, the
        file is checked against that chunk list (SHA-256 of each range; a real edit usually fails
        at its first changed chunk). Blocking reads run in a thread."""
        for path, entry in result.entries.items():
            if entry.kind != Kind.FILE or entry.digest is None:
                continue
            candidates: list[tuple[str | None, Sequence[FileChunk] | None]] = []
            known = base.get(path)
            if known is not None and known.kind == Kind.FILE and known.digest != entry.digest \
                    and known.size == entry.size:
                candidates.append((known.digest, known.chunks))
            server = remote.get(path)
            if server is not None and server.kind == Kind.FILE and server.digest != entry.digest \
                    and server.size == entry.size:
                candidates.append((server.digest, server.chunks))
            for digest, chunks in candidates:
                if digest is None or not chunks:
                    continue
                if await asyncio.to_thread(self._holds_chunks, path, chunks):
                    local[path] = Node(Kind.FILE, digest)
                    break

    def _holds_chunks(self, path: str, chunks: Sequence[FileChunk]) -> bool:
        local_path = self._local_path(path)
        return all(read_chunk(local_path, chunk.offset, chunk.size, chunk.hash) is not None for chunk in chunks)

    def _ignored(self, path: str, kind: str) -> bool:
        # The same rules filter all three trees: a remote file this device ignores must not look
        # like a local delete.
        return self.ignore.ignored(path, kind == Kind.FOLDER)

    async def _move_renamed_files(self, result: ScanResult, base: dict[str, BaseRecord],
                                  remote: dict[str, RemoteRecord]) -> bool:
        """Turn local renames of synced files into server moves, so a renamed file keeps its id and
        version history (the planner alone would see a delete and a new file). A rename is a base
        file gone from its path whose inode and content now sit at a path that neither base nor the
        server has, while the server still holds the base version. Returns True if it moved any."""
        by_inode = {record.inode: record for record in base.values()
                    if record.kind == Kind.FILE and record.inode is not None and record.path not in result.entries}
        moved = False
        for path, entry in sorted(result.entries.items()):
            if entry.kind != Kind.FILE or entry.inode is None:
                continue
            old = by_inode.get(entry.inode)
            if (old is None or path in base or path in remote or old.file_id is None
                    or entry.digest != old.digest):
                continue
            current = remote.get(old.path)
            if current is None or current.file_id != old.file_id or current.version_id != old.version_id:
                continue
            try:
                await self.api.move(old.file_id, path)
            except SyncApiError as error:
                if error.status in (400, 404, 409):
                    continue  # the planner handles it as a delete and a create
                raise
            index = self._index()
            await asyncio.to_thread(index.delete_base, old.path)
            await asyncio.to_thread(index.put_base, BaseRecord(
                path, Kind.FILE, entry.size, entry.mtime_ns, entry.inode, entry.chunks, entry.digest,
                old.file_id, old.version_id))
            del by_inode[entry.inode]
            moved = True
            log.info("moved remotely", extra={"fields": {"path": old.path, "to": path}})
        return moved

    def _begin_transfers(self, actions: Sequence[Action], result: ScanResult,
                         remote: dict[str, RemoteRecord]) -> None:
        pending_bytes = 0
        files = 0
        for action in actions:
            if isinstance(action, Upload | Conflict):
                entry = result.entries.get(action.path)
                pending_bytes += (entry.size or 0) if entry is not None else 0
                files += 1
            elif isinstance(action, Download):
                record = remote.get(action.path)
                pending_bytes += (record.size or 0) if record is not None else 0
                files += 1
        self.status.pending_files = files
        self.status.pending_bytes = pending_bytes
        self._transfer_started = time.monotonic()
        self._transferred = 0
        self._publish(force=True)

    async def catch_up(self) -> None:
        """Bring the remote replica up to the server's journal (the whole tree on first use).

        A cursor the server no longer accepts (400/403/404: e.g. the namespace was reset) is replaced
        by a fresh tree snapshot."""
        index = self._index()
        async with self._replica_lock:
            cursor = await asyncio.to_thread(index.get_cursor)
            if cursor is not None:
                try:
                    while True:
                        page = await self.api.changes(since=cursor, limit=1000)
                        if page.get("entries"):
                            await asyncio.to_thread(index.apply_remote_entries, page["entries"], page["cursor"])
                        cursor = page["cursor"]
                        if not page.get("has_more"):
                            return
                except SyncApiError as error:
                    if error.status not in (400, 403, 404):
                        raise
                    log.warning("cursor refused; reloading the whole tree", extra={"fields": {"error": repr(error)}})
            tree = await self.api.tree()
            await asyncio.to_thread(index.replace_remote, tree["entries"], tree["cursor"])

    # Actions ----------------------------------------------------------------------------------

    async def _execute(self, action: Action, result: ScanResult, base: dict[str, BaseRecord]) -> None:
        if isinstance(action, Upload):
            await self._upload(action.path, action.base_version, result)
        elif isinstance(action, Conflict):
            await self._conflict(action, result)
        elif isinstance(action, Download):
            await self._download(action.path, action.file_id, action.version_id, action.digest,
                                 action.local_digest_expected, base.get(action.path))
        elif isinstance(action, DeleteLocal):
            await self._delete_local(action, base.get(action.path))
        elif isinstance(action, DeleteRemote):
            await self._delete_remote(action)
        elif isinstance(action, MakeLocalFolder):
            await self._make_local_folder(action)
        elif isinstance(action, MakeRemoteFolder):
            await self._make_remote_folder(action)
        elif isinstance(action, RecordSynced):
            await self._record_synced(action, result)
        elif isinstance(action, ForgetBase):
            await asyncio.to_thread(self._index().delete_base, action.path)
        elif isinstance(action, MoveLocalAside):
            await self._move_aside(action)

    def _local_path(self, path: str) -> Path:
        return self.folder.joinpath(*path.split("/"))

    async def _upload(self, path: str, base_version: int | None, result: ScanResult) -> dict[str, Any]:
        """Upload the local file at ``path`` (resuming a saved session) and commit it; records base.
        Returns the commit answer. Raises FolderChanged if the file changed since the scan."""
        entry = result.entries.get(path)
        if entry is None or entry.kind != Kind.FILE or entry.digest is None:
            raise FolderChanged(f"{path} is no longer a scanned file")
        index = self._index()
        local_path = self._local_path(path)
        upload_id, missing = await self._open_upload(path, entry, base_version)
        by_hash = {chunk.hash: chunk for chunk in entry.chunks}

        async def send(item: dict[str, Any]) -> None:
            chunk = by_hash[item["hash"]]
            async with self._chunk_slots:
                data = await asyncio.to_thread(read_chunk, local_path, chunk.offset, chunk.size, chunk.hash)
                if data is None:
                    raise FolderChanged(f"{path} changed since it was scanned")
                await self.api.upload_chunk(item["url"], memoryview(data))
                await self.api.mark_chunk(upload_id, chunk.hash)
                self.status.bytes_uploaded += chunk.size
                self.status.chunks_uploaded += 1
                self._transferred += chunk.size
                self._publish()

        await self._gather(send(item) for item in missing)
        try:
            answer = await self.api.commit(upload_id)
        except SyncApiError as error:
            if error.code in ("UploadClosed", "ChunksMissing", "NotFound"):
                await asyncio.to_thread(index.delete_upload, path)  # start a fresh session next cycle
            raise
        await asyncio.to_thread(index.delete_upload, path)
        self.status.files_uploaded += 1
        stat = os.stat(local_path, follow_symlinks=False)
        unchanged = _same_stat(stat, entry)
        if answer.get("conflict"):
            self.status.conflicts += 1
            # The server kept our content as a conflicted copy; base says "this content is safe", so
            # the next plan brings the remote version to `path` and the copy down beside it.
            record = BaseRecord(path, Kind.FILE, entry.size, entry.mtime_ns, entry.inode, entry.chunks,
                                entry.digest) if unchanged else None
        else:
            record = BaseRecord(path, Kind.FILE, entry.size, entry.mtime_ns, entry.inode, entry.chunks,
                                entry.digest, int(answer["file_id"]), int(answer["version_id"]))
        if record is not None:
            await asyncio.to_thread(index.put_base, record)
        log.info("uploaded", extra={"fields": {"path": path, "version": answer.get("version_id"),
                                               "conflict": bool(answer.get("conflict")),
                                               "stored_as": answer.get("path")}})
        return answer

    async def _open_upload(self, path: str, entry: LocalEntry, base_version: int | None
                           ) -> tuple[str, list[dict[str, Any]]]:
        """(upload id, chunks the server still needs with their URLs): the saved session of this
        content if the server still has it open, else a new one."""
        index = self._index()
        saved = await asyncio.to_thread(index.get_upload, path)
        if saved is not None and saved.digest == entry.digest:
            try:
                state = await self.api.upload_state(saved.upload_id)
                if state.get("state") == "open":
                    log.info("resuming upload", extra={"fields": {"path": path, "upload": saved.upload_id,
                                                                  "missing": len(state["missing"])}})
                    return saved.upload_id, list(state["missing"])
            except SyncApiError as error:
                if error.status not in (403, 404, 409):
                    raise
        answer = await self.api.begin_upload(path, entry.size or 0, list(entry.chunks), base_version)
        upload_id = str(answer["upload_id"])
        await asyncio.to_thread(index.put_upload, path, upload_id, entry.digest or "")
        return upload_id, list(answer["missing"])

    async def _conflict(self, action: Conflict, result: ScanResult) -> None:
        answer = await self._upload(action.path, action.base_version, result)
        if not answer.get("conflict"):
            return  # the remote file vanished meanwhile: ours is simply the new version
        await self._download(action.path, action.file_id, action.remote_version, action.remote_digest,
                             action.local_digest, await asyncio.to_thread(self._index().get_base, action.path))

    async def _gather(self, coroutines: Iterable[Any]) -> None:
        tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
        if not tasks:
            return
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _current_digest(self, path: str, stat: os.stat_result, base: BaseRecord | None) -> str | None:
        """The digest of the local file at ``path`` now (from base if its stat is unchanged)."""
        if base is not None and _same_stat(stat, base):
            return base.digest
        chunked = await asyncio.to_thread(chunk_file_stable, self._local_path(path), self.settings.chunker)
        if chunked is None:
            raise FolderChanged(f"{path} is being written")
        return content_digest(chunked[0])

    async def _download(self, path: str, file_id: int | None, version_id: int | None, digest: str | None,
                        local_digest_expected: str | None, base: BaseRecord | None) -> None:
        """Fetch ``version_id`` of ``file_id`` into ``path`` atomically; records base."""
        if file_id is None:
            return
        index = self._index()
        answer = await self.api.get_file(file_id, version=version_id)
        chunks = answer.get("chunks") or []
        target = self._local_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        file_chunks: list[FileChunk] = []
        offset = 0
        for item in chunks:
            file_chunks.append(FileChunk(item["hash"], offset, int(item["size"])))
            offset += int(item["size"])
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            async def fetch(chunk: FileChunk, url: str) -> None:
                async with self._chunk_slots:
                    data: bytes | bytearray | None = await self._local_chunk(chunk)
                    if data is not None:
                        self.status.bytes_reused += chunk.size
                    else:
                        data = await self.api.download_chunk(url, chunk.hash, chunk.size)
                        self.status.bytes_downloaded += chunk.size
                        self.status.chunks_downloaded += 1
                    await asyncio.to_thread(os.pwrite, descriptor, data, chunk.offset)
                    self._transferred += chunk.size
                    self._publish()

            await self._gather(fetch(chunk, item["url"]) for chunk, item in zip(file_chunks, chunks, strict=True))
            os.ftruncate(descriptor, offset)
            await asyncio.to_thread(os.fsync, descriptor)
        except BaseException:
            os.close(descriptor)
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        os.close(descriptor)
        try:
            await self._check_unchanged(path, target, local_digest_expected, base)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        os.replace(temporary, target)
        await asyncio.to_thread(_fsync_directory, target.parent)
        stat = os.stat(target, follow_symlinks=False)
        await asyncio.to_thread(index.put_base, BaseRecord(
            path, Kind.FILE, stat.st_size, stat.st_mtime_ns, stat.st_ino, tuple(file_chunks),
            digest or content_digest(file_chunks), file_id, version_id))
        self.status.files_downloaded += 1
        log.info("downloaded", extra={"fields": {"path": path, "version": version_id}})

    async def _check_unchanged(self, path: str, target: Path, expected: str | None, base: BaseRecord | None) -> None:
        """Raise FolderChanged unless ``target`` still holds ``expected`` (None: nothing there)."""
        try:
            stat = os.stat(target, follow_symlinks=False)
        except FileNotFoundError:
            if expected is None:
                return
            raise FolderChanged(f"{path} was deleted locally meanwhile") from None
        if expected is None:
            raise FolderChanged(f"{path} appeared locally meanwhile")
        if not stat_module.S_ISREG(stat.st_mode) or await self._current_digest(path, stat, base) != expected:
            raise FolderChanged(f"{path} was changed locally meanwhile; not overwriting it")

    async def _local_chunk(self, chunk: FileChunk) -> bytearray | None:
        """The chunk's bytes from a synced local file if one still holds them (SHA-256 checked)."""
        location = await asyncio.to_thread(self._index().find_chunk, chunk.hash)
        if location is None or location.size != chunk.size:
            return None
        try:
            return await asyncio.to_thread(read_chunk, self._local_path(location.path), location.offset,
                                           location.size, chunk.hash)
        except OSError:
            return None  # unreadable: download it instead

    async def _delete_local(self, action: DeleteLocal, base: BaseRecord | None) -> None:
        target = self._local_path(action.path)
        index = self._index()
        try:
            stat = os.stat(target, follow_symlinks=False)
        except FileNotFoundError:
            await asyncio.to_thread(index.delete_base, action.path)
            return
        if action.kind == Kind.FOLDER:
            try:
                self._remove_folder(target)
            except OSError:
                return  # not empty (something new arrived): the next plan keeps it
        else:
            if await self._current_digest(action.path, stat, base) != action.digest_expected:
                return  # edited locally since the plan: the next plan uploads it instead
            target.unlink()
        await asyncio.to_thread(index.delete_base, action.path)
        log.info("deleted locally", extra={"fields": {"path": action.path}})

    def _remove_folder(self, target: Path) -> None:
        """Remove an empty folder, or one holding only ignored entries (raises OSError otherwise)."""
        relative = target.relative_to(self.folder).as_posix()
        for child in target.iterdir():
            name = f"{relative}/{child.name}"
            if not self.ignore.ignored(name, child.is_dir()):
                raise OSError(f"{target} is not empty")
        for child in target.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        target.rmdir()

    async def _delete_remote(self, action: DeleteRemote) -> None:
        index = self._index()
        if action.file_id is not None:
            remote = await asyncio.to_thread(index.get_remote, action.path)
            if action.kind == Kind.FILE and remote is not None and remote.version_id != action.version_expected:
                return  # changed remotely since the plan: the next plan downloads it
            if action.kind == Kind.FOLDER and any(
                    is_under(record.path, action.path) for record in await asyncio.to_thread(index.remote_records)):
                return  # something still lives under it remotely
            try:
                # The server checks again in the delete's own transaction: what changed after our
                # catch-up (a new version, a file added to the folder) is never deleted.
                await self.api.delete(action.file_id, version=action.version_expected if action.kind == Kind.FILE
                                      else None, if_empty=action.kind == Kind.FOLDER)
            except SyncApiError as error:
                if error.status == 412:
                    return  # changed remotely since the plan: the next plan pulls it
                if error.status != 404:
                    raise
        await asyncio.to_thread(index.delete_base, action.path)
        log.info("deleted remotely", extra={"fields": {"path": action.path}})

    async def _make_local_folder(self, action: MakeLocalFolder) -> None:
        target = self._local_path(action.path)
        if target.exists() and not target.is_dir():
            return
        target.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._index().put_base, BaseRecord(action.path, Kind.FOLDER,
                                                                   file_id=action.file_id))

    async def _make_remote_folder(self, action: MakeRemoteFolder) -> None:
        try:
            answer = await self.api.make_folder(action.path)
        except SyncApiError as error:
            if error.status == 409:
                return
            raise
        await asyncio.to_thread(self._index().put_base, BaseRecord(action.path, Kind.FOLDER,
                                                                   file_id=int(answer["file_id"])))

    async def _record_synced(self, action: RecordSynced, result: ScanResult) -> None:
        node = action.node
        entry = result.entries.get(action.path)
        if node.kind == Kind.FILE and entry is not None and entry.kind == Kind.FILE:
            record = BaseRecord(action.path, Kind.FILE, entry.size, entry.mtime_ns, entry.inode, entry.chunks,
                                node.digest, node.file_id, node.version_id)
        else:
            record = BaseRecord(action.path, node.kind, digest=node.digest, file_id=node.file_id,
                                version_id=node.version_id)
        await asyncio.to_thread(self._index().put_base, record)

    async def _move_aside(self, action: MoveLocalAside) -> None:
        source, target = self._local_path(action.path), self._local_path(action.to_path)
        if target.exists() or not source.exists():
            return
        os.rename(source, target)
        index = self._index()
        stale = [record.path for record in await asyncio.to_thread(index.base_records)
                 if record.path == action.path or is_under(record.path, action.path)]
        await asyncio.to_thread(index.delete_base, *stale)
        log.info("moved aside (kind conflict)", extra={"fields": {"path": action.path, "to": action.to_path}})
