"""A minimal real HTTP server speaking just enough path-style S3 for the benchmark's requests.

Buckets and objects live in memory; signatures are not checked. ``fault`` makes it misbehave on
purpose so tests can see the benchmark catch it: ``"corrupt_get"`` flips one byte of every GET
body, ``"bad_etag"`` answers PUTs with a wrong ETag, ``"get_500"`` fails every GET.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class TinyS3:
    """In-memory S3 on 127.0.0.1 (free port): ``url``, ``objects``, ``buckets``, ``put_bodies``, ``stop``."""

    def __init__(self, fault: str | None = None) -> None:
        """Start serving in a background thread."""
        self.fault = fault
        self.buckets: set[str] = set()
        self.objects: dict[tuple[str, str], bytes] = {}
        self.put_bodies: list[bytes] = []  # every object body ever PUT, in arrival order
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue for botocore's PUTs

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _target(self) -> tuple[str, str]:
                path = unquote(urlsplit(self.path).path).lstrip("/")
                bucket, _, key = path.partition("/")
                return bucket, key

            def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int, code: str) -> None:
                body = f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()
                self._reply(status, body, {"Content-Type": "application/xml"})

            def do_PUT(self) -> None:
                bucket, key = self._target()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with owner.lock:
                    if not key:
                        owner.buckets.add(bucket)
                        return self._reply(200)
                    if bucket not in owner.buckets:
                        return self._error(404, "NoSuchBucket")
                    owner.objects[(bucket, key)] = body
                    owner.put_bodies.append(body)
                etag = hashlib.md5(body).hexdigest()
                if owner.fault == "bad_etag":
                    etag = "0" * 32
                return self._reply(200, headers={"ETag": f'"{etag}"'})

            def do_GET(self) -> None:
                bucket, key = self._target()
                with owner.lock:
                    body = owner.objects.get((bucket, key))
                if body is None:
                    return self._error(404, "NoSuchKey")
                if owner.fault == "get_500":
                    return self._error(500, "InternalError")
                if owner.fault == "corrupt_get":
                    body = body[:-1] + bytes([body[-1] ^ 1])
                return self._reply(200, body, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

            def do_HEAD(self) -> None:
                bucket, key = self._target()
                with owner.lock:
                    exists = bucket in owner.buckets if not key else (bucket, key) in owner.objects
                self._reply(200 if exists else 404)

            def do_DELETE(self) -> None:
                bucket, key = self._target()
                with owner.lock:
                    if key:
                        owner.objects.pop((bucket, key), None)
                    elif any(b == bucket for b, _ in owner.objects):
                        return self._error(409, "BucketNotEmpty")
                    else:
                        owner.buckets.discard(bucket)
                self._reply(204)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
