"""Requests exactly as boto3 would send them, captured before they reach the network.

A real boto3 client serializes and signs each call (its own serializer, checksum and SigV4 code);
an event hook on ``before-send`` raises with the prepared request so nothing is sent. Tests feed
the captured method, raw path, query, headers and body to the code under test.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
from botocore.config import Config

ACCESS_KEY = "AKIDCOFFERTEST"
SECRET_KEY = "coffer/secret+key/FOR-TESTS-ONLY"
REGION = "us-east-1"


class _Captured(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


@dataclass(frozen=True)
class CapturedRequest:
    """One request as it would go on the wire."""

    method: str
    url: str
    host: str
    raw_path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lowercase names, as a server would see them
    body: bytes


def client(endpoint: str = "http://127.0.0.1:9000", *, addressing_style: str = "path",
           access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, **config: Any) -> Any:
    """A boto3 S3 client whose requests are captured instead of sent."""
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        region_name=REGION,
        config=Config(s3={"addressing_style": addressing_style}, retries={"max_attempts": 1}, **config))

    def capture(request: Any, **_: Any) -> None:
        raise _Captured(request)

    s3.meta.events.register("before-send.s3.*", capture)
    return s3


def split_url(url: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(host, raw path, decoded query pairs) of a URL, as an HTTP server would see them."""
    parts = urlsplit(url)
    return parts.netloc, parts.path, parse_qsl(parts.query, keep_blank_values=True)


def capture(call: Callable[[], Any]) -> CapturedRequest:
    """Run a boto3 client call and return the request it would have sent."""
    try:
        call()
    except _Captured as captured:
        request = captured.request
    else:  # pragma: no cover - the hook always fires
        raise AssertionError("the call sent nothing")
    headers = {}
    for name, value in request.headers.items():
        headers[name.lower()] = value.decode() if isinstance(value, bytes) else str(value)
    host, raw_path, query = split_url(request.url)
    headers.setdefault("host", host)
    body = request.body
    if body is None:
        data = b""
    elif isinstance(body, bytes | bytearray):
        data = bytes(body)
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = body.read()
    return CapturedRequest(request.method, request.url, host, raw_path, query, headers, data)


def stream(data: bytes) -> io.BytesIO:
    """A seekable body: boto3 sends such bodies aws-chunked with a trailing checksum over HTTPS."""
    return io.BytesIO(data)
