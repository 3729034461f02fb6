"""The sync daemon's state as others see it: ``<folder>/.coffer/status.json``.

The daemon rewrites the file (atomically: temp file + rename) whenever its state changes and at
least once per second while transferring; ``coffer sync status`` and the tests read it. Counters are
for the daemon's current run (they start at zero when it starts).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_DIRECTORY = ".coffer"
STATUS_FILE = "status.json"


@dataclass
class SyncStatus:
    """What one daemon is doing.

    ``state``: "starting", "syncing", "idle" (in sync), "offline" (server unreachable; local edits
    wait and sync when it returns) or "stopped". ``pending_files`` / ``pending_bytes``: transfers the
    current plan still has to do. ``rate_bytes_per_second``: recent transfer rate. Counters since the
    daemon started: ``bytes_uploaded`` (chunk bytes sent), ``bytes_downloaded`` (chunk bytes
    received), ``bytes_reused`` (chunk bytes taken from local files instead of downloading),
    ``chunks_uploaded``, ``chunks_downloaded``, ``files_uploaded``, ``files_downloaded``,
    ``conflicts``, ``cycles``. ``last_synced``: unix seconds of the last cycle that ended in sync.
    ``last_error``: the last failure, or None.
    """

    pid: int = field(default_factory=os.getpid)
    folder: str = ""
    server: str = ""
    user: str = ""
    device: str = ""
    state: str = "starting"
    pending_files: int = 0
    pending_bytes: int = 0
    rate_bytes_per_second: float = 0.0
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0
    bytes_reused: int = 0
    chunks_uploaded: int = 0
    chunks_downloaded: int = 0
    files_uploaded: int = 0
    files_downloaded: int = 0
    conflicts: int = 0
    cycles: int = 0
    last_synced: float | None = None
    last_error: str | None = None
    updated: float = field(default_factory=time.time)


def status_path(folder: Path) -> Path:
    """Where the daemon syncing ``folder`` writes its status."""
    return folder / STATE_DIRECTORY / STATUS_FILE


def write_status(folder: Path, status: SyncStatus) -> None:
    """Replace the status file atomically (readers never see half a document). Raises OSError."""
    status.updated = time.time()
    path = status_path(folder)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(asdict(status), indent=1))
    os.replace(temporary, path)


def read_status(folder: Path) -> dict[str, Any] | None:
    """The last status the daemon of ``folder`` wrote, plus ``running`` (its pid is alive); None if
    no daemon ever ran there."""
    path = status_path(folder)
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    running = False
    pid = document.get("pid")
    if isinstance(pid, int) and pid > 0:
        with contextlib.suppress(OSError):
            os.kill(pid, 0)
            running = True
    document["running"] = running and document.get("state") != "stopped"
    return document
