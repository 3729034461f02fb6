"""Prometheus exposition for every Coffer process."""

from __future__ import annotations

from prometheus_client import start_http_server


def serve_metrics(host: str, port: int) -> int:
    """Expose the default Prometheus registry over HTTP on ``host:port``.

    ``port`` 0 picks a free port. Returns the port actually bound. Runs in a daemon thread.

    Raises:
        OSError: if the address cannot be bound.
    """
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)
