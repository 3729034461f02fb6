"""Progress of the benchmark on stderr, so stdout stays clean for the table and the JSON line."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_REDRAW_INTERVAL_SECONDS = 0.2


class Progress:
    """A one-line progress counter for a sequence of steps (``PUT 4KiB c=8 run 1/3: 120/200``).

    On a terminal the line is redrawn in place (at most 5 times a second); otherwise one line is
    written when a step starts and one when it ends, so logs stay short. ``advance`` is
    thread-safe (request threads call it). ``enabled=False`` makes every method a no-op.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        """Write to ``stream`` (default ``sys.stderr``)."""
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._interactive = enabled and self._stream.isatty()
        self._lock = threading.Lock()
        self._label = ""
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._last_draw = 0.0

    def start(self, label: str, total: int) -> None:
        """Begin a step of ``total`` units named ``label``."""
        with self._lock:
            self._label, self._total, self._done = label, total, 0
            self._started = time.monotonic()
            if self._enabled and not self._interactive:
                self._stream.write(f"{label}: {total} ...\n")
                self._stream.flush()
            self._draw(force=True)

    def advance(self, count: int = 1) -> None:
        """Record ``count`` more units done."""
        with self._lock:
            self._done += count
            self._draw(force=False)

    def finish(self, note: str = "") -> None:
        """End the current step; ``note`` (e.g. ``"85.2 MB/s"``) is appended to its line."""
        with self._lock:
            elapsed = time.monotonic() - self._started
            if not self._enabled:
                return
            line = f"{self._label}: {self._done}/{self._total} in {elapsed:.1f}s {note}".rstrip()
            prefix = "\r\x1b[K" if self._interactive else ""
            self._stream.write(f"{prefix}{line}\n")
            self._stream.flush()

    def message(self, text: str) -> None:
        """Write a free-standing line (a note or warning)."""
        if self._enabled:
            with self._lock:
                prefix = "\r\x1b[K" if self._interactive else ""
                self._stream.write(f"{prefix}{text}\n")
                self._stream.flush()

    def _draw(self, force: bool) -> None:
        if not self._interactive:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < _REDRAW_INTERVAL_SECONDS:
            return
        self._last_draw = now
        self._stream.write(f"\r\x1b[K{self._label}: {self._done}/{self._total}")
        self._stream.flush()
