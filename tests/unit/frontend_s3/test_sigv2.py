"""SigV2 verification against requests signed by botocore's own SigV2 signers (HmacV1Auth and the
query form boto3's generate_presigned_url uses by default)."""

from __future__ import annotations

import datetime
import urllib.parse

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest

from frontend.s3 import errors, sigv2
from frontend.s3.dispatch import split_target

ACCESS_KEY = "CKTESTACCESSKEY00001"
SECRET = "secret/with+odd=chars0123456789abcdefghij"
CREDENTIALS = botocore.credentials.Credentials(ACCESS_KEY, SECRET)


def lookup(access_key_id: str) -> str | None:
    return SECRET if access_key_id == ACCESS_KEY else None


def presign(url: str, method: str = "GET", expires: int = 300) -> str:
    request = botocore.awsrequest.AWSRequest(method=method, url=url)
    botocore.auth.HmacV1QueryAuth(CREDENTIALS, expires=expires).add_auth(request)
    return str(request.url)


def verify_url(url: str, method: str = "GET", now: datetime.datetime | None = None) -> sigv2.AuthContext:
    target = url.split("://", 1)[1]
    target = target[target.index("/"):]
    raw_path, query = split_target(target)
    return sigv2.verify_request(method, raw_path, query, {}, lookup, now or datetime.datetime.now(datetime.UTC))


@pytest.mark.parametrize("key", ["plain", "with%20space", "uni%C3%A7ode/%E9%8D%B5", "a/../b", "plus%2Bsign"])
def test_presigned_urls_from_botocore_verify(key: str) -> None:
    url = presign(f"http://127.0.0.1:9000/bucket/{key}?response-content-type=text%2Fplain")
    context = verify_url(url)
    assert context.access_key_id == ACCESS_KEY and context.presigned
    assert context.payload_hash == "UNSIGNED-PAYLOAD"


def test_tampered_presigned_url_fails() -> None:
    url = presign("http://127.0.0.1:9000/bucket/key")
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify_url(url.replace("/key?", "/other?"))
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify_url(url, method="PUT")


def test_expired_presigned_url_is_access_denied() -> None:
    url = presign("http://127.0.0.1:9000/bucket/key", expires=10)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=60)
    with pytest.raises(errors.AccessDenied, match="expired"):
        verify_url(url, now=later)


def test_unknown_access_key() -> None:
    url = presign("http://127.0.0.1:9000/bucket/key").replace(ACCESS_KEY, "CKUNKNOWN")
    with pytest.raises(errors.InvalidAccessKeyId):
        verify_url(url)


def test_header_signed_request_with_subresources_verifies() -> None:
    request = botocore.awsrequest.AWSRequest(
        method="PUT", url="http://127.0.0.1:9000/bucket/key?partNumber=2&uploadId=abc",
        headers={"Content-Type": "application/octet-stream", "x-amz-meta-color": "blue"})
    botocore.auth.HmacV1Auth(CREDENTIALS).add_auth(request)
    raw_path, query = split_target(urllib.parse.urlsplit(request.url).path + "?partNumber=2&uploadId=abc")
    headers = dict(request.headers.items())
    context = sigv2.verify_request("PUT", raw_path, query, headers, lookup, datetime.datetime.now(datetime.UTC))
    assert not context.presigned
    headers["x-amz-meta-color"] = "red"
    with pytest.raises(errors.SignatureDoesNotMatch):
        sigv2.verify_request("PUT", raw_path, query, headers, lookup, datetime.datetime.now(datetime.UTC))


def test_split_target_keeps_plus_and_order() -> None:
    assert split_target("/b/k?x=a+b&y=%2B&flag&z=") == ("/b/k", [("x", "a+b"), ("y", "+"), ("flag", ""),
                                                              ("z", "")])
