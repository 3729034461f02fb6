"""``coffer sync``: run the sync daemon on a folder, or show what it is doing.

    coffer sync FOLDER --server URL --token TOKEN   # first run; saved to FOLDER/.coffer/config.json
    coffer sync FOLDER                              # later runs reuse the saved server and token
    coffer sync FOLDER --once                       # sync until in agreement, then exit
    coffer sync status FOLDER [--json]              # the running daemon's state

Settings come from, in increasing priority: defaults, the settings saved by the last run
(``FOLDER/.coffer/config.json``), a TOML file (``--config FILE``; keys ``server``, ``token``,
``min_chunk``, ``avg_chunk``, ``max_chunk`` (bytes), ``rescan_interval``, ``poll_wait`` (seconds),
``parallel_transfers``, ``parallel_files``), and the command line; the result is saved for the
next run (mode 0600: it holds the token). Progress (files and bytes to go, rate) is shown on the
terminal when stderr is one; logs are logfmt lines on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from client.chunking import ChunkerSettings
from client.status import STATE_DIRECTORY, SyncStatus, read_status
from common.logs import setup_logging
from common.units import parse_size

CONFIG_FILE = "config.json"
_SETTING_KEYS = ("server", "token", "min_chunk", "avg_chunk", "max_chunk", "rescan_interval", "poll_wait",
                 "parallel_transfers", "parallel_files")


def build_parser() -> argparse.ArgumentParser:
    """The ``coffer sync FOLDER`` parser (``coffer sync status`` is parsed separately)."""
    parser = argparse.ArgumentParser(
        prog="coffer sync", description="Keep FOLDER in sync with a Coffer namespace "
        "(`coffer sync status FOLDER` shows a running daemon's state).")
    parser.add_argument("folder", type=Path, help="the folder to sync (created if missing)")
    parser.add_argument("--server", help="the Coffer endpoint, e.g. http://127.0.0.1:9000")
    parser.add_argument("--token", help="this device's token (`coffer token create`)")
    parser.add_argument("--config", type=Path, help="a TOML file with settings: server, token, min_chunk, "
                        "avg_chunk, max_chunk (bytes), rescan_interval, poll_wait (seconds), parallel_transfers, "
                        "parallel_files")
    parser.add_argument("--min-chunk", type=parse_size, help="FastCDC minimum chunk size (default 1MiB)")
    parser.add_argument("--avg-chunk", type=parse_size, help="FastCDC average chunk size (default 4MiB)")
    parser.add_argument("--max-chunk", type=parse_size, help="FastCDC maximum chunk size (default 16MiB)")
    parser.add_argument("--rescan-interval", type=float, help="seconds between full rescans (default 60)")
    parser.add_argument("--poll-wait", type=float, help="long-poll seconds (default 30)")
    parser.add_argument("--parallel-transfers", type=int, help="chunk transfers in flight (default 4)")
    parser.add_argument("--parallel-files", type=int, help="files transferred at once (default 8)")
    parser.add_argument("--once", action="store_true", help="sync until in agreement, then exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress display on the terminal")
    return parser


def _status_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coffer sync status", description="Show a sync daemon's state.")
    parser.add_argument("folder", type=Path, nargs="?", default=Path("."), help="the synced folder (default .)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def load_settings(arguments: argparse.Namespace) -> dict[str, Any]:
    """Merge defaults, ``--config``, the folder's saved config and the command line (see module doc).

    Raises ValueError with what to do when the server or token is missing or the TOML is invalid."""
    settings: dict[str, Any] = {}
    saved = arguments.folder / STATE_DIRECTORY / CONFIG_FILE
    if saved.exists():
        settings.update(json.loads(saved.read_text()))
    if arguments.config is not None:
        with arguments.config.open("rb") as handle:
            document = tomllib.load(handle)
        settings.update({key: document[key] for key in _SETTING_KEYS if key in document})
    for key in _SETTING_KEYS:
        value = getattr(arguments, key, None)
        if value is not None:
            settings[key] = value
    if not settings.get("server") or not settings.get("token"):
        raise ValueError(f"no server/token for {arguments.folder}: run `coffer sync {arguments.folder} --server URL "
                         "--token TOKEN` once (tokens come from `coffer token create`)")
    return settings


def _save_settings(folder: Path, settings: dict[str, Any]) -> None:
    directory = folder / STATE_DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_FILE
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({key: settings[key] for key in _SETTING_KEYS if key in settings}, handle, indent=1)
    os.replace(temporary, path)


class _Progress:
    """A rich status line on the terminal: state, files and bytes to go, rate, totals."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(stderr=True)
        self._live = Live(console=self._console, refresh_per_second=4, transient=False)
        self._live.start()

    def update(self, status: SyncStatus) -> None:
        from rich.text import Text

        def size(value: float) -> str:
            for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
                if value < 1024 or unit == "TiB":
                    return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
                value /= 1024
            return f"{value}"

        line = (f"[{status.state}] to go: {status.pending_files} files, {size(status.pending_bytes)}"
                f" | {size(status.rate_bytes_per_second)}/s | up {size(status.bytes_uploaded)}"
                f" down {size(status.bytes_downloaded)} reused {size(status.bytes_reused)}"
                f" | conflicts {status.conflicts}")
        self._live.update(Text(line))

    def stop(self) -> None:
        self._live.stop()


async def _run_daemon(folder: Path, settings: dict[str, Any], once: bool, progress: bool) -> int:
    from client.api import ServerUnreachable, SyncApi
    from client.daemon import DaemonError, DaemonSettings, SyncDaemon

    defaults = ChunkerSettings()
    chunker = ChunkerSettings(min_size=int(settings.get("min_chunk", defaults.min_size)),
                              avg_size=int(settings.get("avg_chunk", defaults.avg_size)),
                              max_size=int(settings.get("max_chunk", defaults.max_size)))
    daemon_settings = DaemonSettings(
        chunker=chunker, rescan_interval=float(settings.get("rescan_interval", 60.0)),
        poll_wait=float(settings.get("poll_wait", 30.0)),
        parallel_transfers=int(settings.get("parallel_transfers", 4)),
        parallel_files=int(settings.get("parallel_files", 8)), watch=not once)
    display = _Progress() if progress else None
    async with SyncApi(str(settings["server"]), str(settings["token"])) as api:
        daemon = SyncDaemon(folder, api, daemon_settings,
                            on_progress=display.update if display is not None else None)
        try:
            daemon.open()
        except DaemonError as error:
            print(f"coffer sync: {error}", file=sys.stderr)
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            if once:
                await daemon.connect()
                await daemon.sync_until_idle()
            else:
                await daemon.run(stop)
        except DaemonError as error:
            print(f"coffer sync: {error}", file=sys.stderr)
            return 1
        except ServerUnreachable as error:
            print(f"coffer sync: the server at {settings['server']} does not answer ({error}); "
                  "check --server, or leave the daemon running: it syncs when the server returns", file=sys.stderr)
            return 1
        finally:
            daemon.close()
            if display is not None:
                display.stop()
    return 0


def _show_status(arguments: argparse.Namespace) -> int:
    folder = arguments.folder.resolve()
    document = read_status(folder)
    if document is None:
        print(f"no sync daemon has run on {folder} (start one: coffer sync {folder} --server URL --token T)",
              file=sys.stderr)
        return 1
    if arguments.json:
        print(json.dumps(document))
        return 0
    when = document.get("last_synced")
    ago = f"{time.time() - when:.0f} s ago" if isinstance(when, (int, float)) else "never"
    daemon = f"running (pid {document['pid']})" if document["running"] else "not running"
    print(f"folder:   {document['folder']}\n"
          f"server:   {document['server']} as {document.get('user')} / {document.get('device')}\n"
          f"daemon:   {daemon}, "
          f"state {document['state']}\n"
          f"to go:    {document['pending_files']} files, {document['pending_bytes']} bytes "
          f"({document['rate_bytes_per_second']:.0f} B/s)\n"
          f"in sync:  {ago}\n"
          f"this run: uploaded {document['bytes_uploaded']} B in {document['files_uploaded']} files, "
          f"downloaded {document['bytes_downloaded']} B in {document['files_downloaded']} files, "
          f"reused {document['bytes_reused']} B, conflicts {document['conflicts']}")
    if document.get("last_error"):
        print(f"last error: {document['last_error']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``coffer sync``; returns the exit status."""
    arguments_list = list(sys.argv[1:] if argv is None else argv)
    if arguments_list and arguments_list[0] == "status":
        return _show_status(_status_parser().parse_args(arguments_list[1:]))
    arguments = build_parser().parse_args(arguments_list)
    folder: Path = arguments.folder
    try:
        settings = load_settings(arguments)
    except (ValueError, OSError, tomllib.TOMLDecodeError) as error:
        print(f"coffer sync: {error}", file=sys.stderr)
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    _save_settings(folder, settings)
    setup_logging("sync")
    logging.getLogger().setLevel(logging.INFO)
    progress = not arguments.no_progress and sys.stderr.isatty()
    import uvloop

    return uvloop.run(_run_daemon(folder, settings, arguments.once, progress))


if __name__ == "__main__":
    sys.exit(main())
