"""Structured logging shared by every Coffer process.

One line per event, logfmt style: ``ts=... level=... process=... logger=... msg="..." key=value``.
Extra fields come from ``logger.info("msg", extra={"fields": {...}})``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

_PROCESS_NAME = "coffer"


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    """Formats records as logfmt lines with UTC timestamps (milliseconds)."""

    def format(self, record: logging.LogRecord) -> str:
        """Return one logfmt line for ``record``, including any ``extra={"fields": {...}}``."""
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"process={_quote(_PROCESS_NAME)}",
            f"logger={_quote(record.name)}",
            f"msg={_quote(record.getMessage())}",
        ]
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            parts.extend(f"{key}={_quote(value)}" for key, value in fields.items())
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def setup_logging(process_name: str, level: str = "INFO") -> None:
    """Send every logger's records to stderr as logfmt, tagged with ``process_name``.

    ``process_name`` names the role and instance (e.g. ``storagenode/node-03``).
    """
    global _PROCESS_NAME
    _PROCESS_NAME = process_name
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpc and aiohttp access logs are noisy at INFO; our own request metrics replace them.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
