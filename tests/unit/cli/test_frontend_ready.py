"""``frontend_ready``: the dev cluster's wait for the S3 frontend, against real sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from cli.dev_cluster import frontend_ready


@pytest.fixture
def not_http() -> Iterator[int]:
    """A listener on 127.0.0.1 that answers every connection with bytes that are not HTTP (as a
    gRPC server does), like a process that took the port meant for the frontend."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                connection, _address = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x7f\xff\xff\xff\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)


def test_something_that_is_not_http_is_not_ready(not_http: int) -> None:
    assert frontend_ready(not_http) is False


def test_nothing_listening_is_not_ready() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        assert frontend_ready(port) is False
