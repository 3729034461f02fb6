"""frontend/sync/presign.py: our presigned URLs verify with our own SigV4 verifier, only for the
signed method, path, query and lifetime, and equal botocore's presigner for the same inputs."""

from __future__ import annotations

import datetime
import urllib.parse
from unittest import mock

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest

from frontend.s3 import errors, sigv4
from frontend.s3.dispatch import split_target
from frontend.sync.presign import canonical_host, presign_url

ACCESS_KEY = "CKSYNCPRESIGN0000001"
SECRET = "s3cr3tS3cr3ts3cr3tS3cr3ts3cr3tS3cr3tabcd"
REGION = "us-east-1"
SIGNED_AT = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
HASH = "ab" * 32


def make_url(method: str = "PUT", base: str = "http://127.0.0.1:9000", expires_in: int = 900,
             query: dict[str, str] | None = None) -> str:
    return presign_url(method, base, f"/-/chunks/{HASH}", query if query is not None else {"upload": "u0123"},
                       ACCESS_KEY, SECRET, REGION, expires_in, now=SIGNED_AT)


def verify(url: str, method: str = "PUT", now: datetime.datetime | None = None,
           host: str | None = None) -> sigv4.AuthContext:
    """Verify ``url`` as the frontend does: raw target split as on the wire, Host from the URL."""
    parts = urllib.parse.urlsplit(url)
    raw_path, pairs = split_target(parts.path + "?" + parts.query)
    headers = {"host": host if host is not None else parts.netloc}
    return sigv4.verify_request(method, raw_path, pairs, headers,
                                lambda key: SECRET if key == ACCESS_KEY else None,
                                now or SIGNED_AT + datetime.timedelta(seconds=10), region=REGION)


def test_our_verifier_accepts_the_url() -> None:
    auth = verify(make_url())
    assert auth.presigned
    assert auth.access_key_id == ACCESS_KEY
    assert auth.signed_headers == ("host",)
    assert auth.payload_hash == sigv4.UNSIGNED_PAYLOAD


def test_the_url_carries_the_query_and_lifetime() -> None:
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(make_url(expires_in=60)).query))
    assert query["upload"] == "u0123"
    assert query["X-Amz-Expires"] == "60"
    assert query["X-Amz-Date"] == "20260301T120000Z"
    assert query["X-Amz-Credential"] == f"{ACCESS_KEY}/20260301/{REGION}/s3/aws4_request"


def test_rejected_after_expiry() -> None:
    url = make_url(expires_in=900)
    verify(url, now=SIGNED_AT + datetime.timedelta(seconds=899))
    with pytest.raises(errors.AccessDenied, match="expired"):
        verify(url, now=SIGNED_AT + datetime.timedelta(seconds=901))


def test_rejected_with_another_path() -> None:
    url = make_url().replace(HASH, "cd" * 32)
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(url)


@pytest.mark.parametrize("tamper", [
    lambda url: url.replace("upload=u0123", "upload=u9999"),
    lambda url: url + "&namespace=1",
    lambda url: url.replace("X-Amz-Expires=900", "X-Amz-Expires=901"),
])
def test_rejected_with_a_changed_query(tamper: object) -> None:
    url = tamper(make_url())  # type: ignore[operator]
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(url)


def test_rejected_for_another_method_or_host() -> None:
    url = make_url("GET")
    verify(url, method="GET")
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(url, method="PUT")
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(url, method="GET", host="127.0.0.1:9001")


def test_rejected_with_another_secret() -> None:
    url = presign_url("GET", "http://h:1", "/-/chunks/x", {}, ACCESS_KEY, "other", REGION, 900, now=SIGNED_AT)
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(url, method="GET")


def test_default_port_is_not_part_of_the_host() -> None:
    assert canonical_host("http://example.com:80") == "example.com"
    assert canonical_host("https://example.com:443") == "example.com"
    assert canonical_host("http://example.com:9000") == "example.com:9000"
    url = presign_url("GET", "http://example.com:80", "/-/chunks/x", {}, ACCESS_KEY, SECRET, REGION, 900,
                      now=SIGNED_AT)
    verify(url, method="GET", host="example.com")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_url(expires_in=0)
    with pytest.raises(ValueError):
        make_url(expires_in=604_801)
    with pytest.raises(ValueError):
        make_url(query={"X-Amz-Date": "x"})


@pytest.mark.parametrize(("method", "base", "path", "query"), [
    ("PUT", "http://127.0.0.1:9000", f"/-/chunks/{HASH}", {"upload": "u0123456789abcdef01234567"}),
    ("GET", "https://sync.example.com", f"/-/chunks/{HASH}", {"namespace": "17"}),
    ("GET", "http://localhost:8080", "/-/chunks/a b+c~d", {"odd name": "v/a+l=ue&"}),
])
def test_same_url_as_botocore(method: str, base: str, path: str, query: dict[str, str]) -> None:
    credentials = botocore.credentials.Credentials(ACCESS_KEY, SECRET)
    url = base + urllib.parse.quote(path, safe="/~") + "?" + urllib.parse.urlencode(
        query, quote_via=urllib.parse.quote)
    request = botocore.awsrequest.AWSRequest(method=method, url=url)
    with mock.patch("botocore.auth.get_current_datetime", return_value=SIGNED_AT.replace(tzinfo=None)):
        botocore.auth.S3SigV4QueryAuth(credentials, "s3", REGION, expires=900).add_auth(request)
    theirs = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.url).query))
    ours_url = presign_url(method, base, path, query, ACCESS_KEY, SECRET, REGION, 900, now=SIGNED_AT)
    ours = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ours_url).query))
    assert ours == theirs
    assert urllib.parse.urlsplit(ours_url).path == urllib.parse.urlsplit(request.url).path
    verify(ours_url, method=method)
