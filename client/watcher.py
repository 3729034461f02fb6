"""Changed paths of a synced folder, from watchdog (inotify on Linux), debounced for the event loop.

watchdog's Observer calls us on its own thread; each event's path(s) are handed to the asyncio loop
with `call_soon_threadsafe`. A path is reported once it has been quiet for `quiet_period` seconds
(an editor's save is a burst of create/modify/close/move events), or after `max_delay` seconds of
continuous events so a long write is still seen. Opens and reads cause no notification (the daemon
reads files itself). Ignored paths are dropped; a change of `.cofferignore` reloads the rules.

inotify can overflow its queue and misses changes made while the daemon is stopped, so the daemon
also rescans the whole folder at start and periodically; the watcher only makes changes fast.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from client.ignore import IGNORE_FILE, IgnoreRules

# Directory "modified" events (a child changed) are left out: the child's own event names it.
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileDeletedEvent, FileMovedEvent, FileClosedEvent,
    DirCreatedEvent, DirDeletedEvent, DirMovedEvent,
]


# watchdog's inotify backend warns when a recursive watch re-adds a folder it already watches (a
# folder created while the tree is being added); the callback it replaces is the same one, so no
# event is lost and the warning only alarms users.
warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)

class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.watcher._observed(event)


class FolderWatcher:
    """Watches `folder` recursively and reports changed relative paths ('/'-separated).

    `start()` must be called from the running event loop that consumes `events()`/`next_batch()`.
    quiet_period and max_delay are in seconds. A reported path may be a file or a folder (created,
    changed, deleted, or either end of a move); the daemon rescans it (`scanner.scan_paths`).
    """

    def __init__(self, folder: str | Path, ignore: IgnoreRules, *, quiet_period: float = 0.2,
                 max_delay: float = 2.0) -> None:
        self.folder = Path(os.path.abspath(folder))
        self.ignore = ignore
        self.quiet_period = quiet_period
        self.max_delay = max_delay
        self._prefix = str(self.folder) + os.sep
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: dict[str, tuple[float, asyncio.TimerHandle]] = {}

    def start(self) -> None:
        """Start watching (raises OSError if the folder cannot be watched, e.g. inotify limits)."""
        if self._observer is not None:
            return
        self._loop = asyncio.get_running_loop()
        observer = Observer()
        observer.schedule(_Handler(self), str(self.folder), recursive=True, event_filter=_EVENTS)
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        """Stop watching and drop pending (not yet reported) paths. Blocks until watchdog's thread ends."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()
        for _, handle in self._pending.values():
            handle.cancel()
        self._pending.clear()

    async def __aenter__(self) -> FolderWatcher:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # Runs on watchdog's thread.
    def _observed(self, event: FileSystemEvent) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = os.fsdecode(raw)
            if not path.startswith(self._prefix):
                continue  # the folder itself, or an empty dest_path
            relative = path[len(self._prefix):].replace(os.sep, "/")
            if relative == IGNORE_FILE:
                self.ignore.reload_if_changed()
            elif self.ignore.ignored(relative, is_dir=event.is_directory):
                continue
            try:
                loop.call_soon_threadsafe(self._touch, relative)
            except RuntimeError:
                return  # the loop closed meanwhile

    # Runs on the event loop.
    def _touch(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        first = now
        pending = self._pending.get(path)
        if pending is not None:
            first, handle = pending
            handle.cancel()
        delay = min(self.quiet_period, max(0.0, first + self.max_delay - now))
        self._pending[path] = (first, loop.call_later(delay, self._report, path))

    def _report(self, path: str) -> None:
        self._pending.pop(path, None)
        self._queue.put_nowait(path)

    async def events(self) -> AsyncIterator[str]:
        """Changed paths, one at a time, as they settle (forever; cancel the consumer to end)."""
        while True:
            yield await self._queue.get()

    async def next_batch(self, timeout: float | None = None) -> set[str]:
        """Wait for at least one settled path (up to `timeout` seconds; then an empty set) and
        return it with every other path already settled."""
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return set()
        batch = {first}
        while not self._queue.empty():
            batch.add(self._queue.get_nowait())
        return batch
