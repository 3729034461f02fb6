"""Choosing free TCP ports on 127.0.0.1 for processes we are about to start.

Ports asked of the kernel with ``bind(port 0)`` come from its ephemeral range, the same range it
hands to outgoing connections: between choosing such a port and the child binding it, any client
connection (gRPC, etcd, HTTP) may take it. Ports are therefore chosen below that range, where the
kernel never allocates on its own, and checked free by binding them.
"""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Above the well-known and most registered service ports, below Linux's default ephemeral range.
LOWEST_PORT = 20000
DEFAULT_EPHEMERAL_START = 32768


def _ephemeral_start() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_START
    return low


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports on ``host`` that were free a moment ago and lie outside the
    kernel's ephemeral range (so no outgoing connection can take them before they are bound).

    Raises:
        OSError: not enough free ports found below the ephemeral range.
    """
    high = _ephemeral_start()
    low = min(LOWEST_PORT, max(1024, high - 4096))
    candidates = list(range(low, high))
    random.shuffle(candidates)  # concurrent choosers rarely pick the same port
    chosen: list[int] = []
    with ExitStack() as held:
        for port in candidates:
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind((host, port))
            except OSError:
                continue
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise OSError(f"found only {len(chosen)} free ports in {low}-{high - 1}, needed {count}")


def free_port(host: str = LOOPBACK) -> int:
    """One free TCP port, as :func:`free_ports`."""
    return free_ports(1, host)[0]
