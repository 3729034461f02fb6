"""SigV4 verification against AWS's published examples and requests signed by real boto3."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from multidict import CIMultiDict

from frontend.s3 import errors, sigv4
from tests.unit.frontend.s3 import botocore_requests as boto
from tests.unit.frontend.s3.botocore_requests import ACCESS_KEY, SECRET_KEY, CapturedRequest

# AWS documentation example credentials ("Authenticating Requests: Using the Authorization Header").
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_TIME = datetime(2013, 5, 24, 0, 0, 0, tzinfo=UTC)
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
AWS_CREDENTIAL = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"


def aws_secrets(access_key: str) -> str | None:
    return {AWS_KEY: AWS_SECRET}.get(access_key)


def our_secrets(access_key: str) -> str | None:
    return {ACCESS_KEY: SECRET_KEY}.get(access_key)


def verify(request: CapturedRequest, *, now: datetime | None = None, region: str | None = "us-east-1",
           headers: dict[str, str] | None = None, raw_path: str | None = None,
           query: list[tuple[str, str]] | None = None, method: str | None = None) -> sigv4.AuthContext:
    return sigv4.verify_request(
        method or request.method, request.raw_path if raw_path is None else raw_path,
        request.query if query is None else query, request.headers if headers is None else headers,
        our_secrets, now or datetime.now(UTC), region=region)


# ----------------------------------------------------------------------------- AWS known answers


def test_aws_example_get_object_with_range() -> None:
    headers = {
        "host": "examplebucket.s3.amazonaws.com",
        "range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY,
        "x-amz-date": "20130524T000000Z",
        "authorization": AWS_CREDENTIAL + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                         "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    }
    auth = sigv4.verify_request("GET", "/test.txt", [], headers, aws_secrets, AWS_TIME)
    assert auth.access_key_id == AWS_KEY
    assert auth.scope == "20130524/us-east-1/s3/aws4_request"
    assert auth.payload_hash == EMPTY
    assert not auth.presigned

    headers["range"] = "bytes=0-10"
    with pytest.raises(errors.SignatureDoesNotMatch) as failure:
        sigv4.verify_request("GET", "/test.txt", [], headers, aws_secrets, AWS_TIME)
    assert "range:bytes=0-10" in failure.value.extra["CanonicalRequest"]


def test_aws_example_list_objects_query_is_canonicalized() -> None:
    headers = {
        "host": "examplebucket.s3.amazonaws.com",
        "x-amz-content-sha256": EMPTY,
        "x-amz-date": "20130524T000000Z",
        "authorization": AWS_CREDENTIAL + "SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
                         "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
    }
    # Sent as ?max-keys=2&prefix=J; the order on the wire must not matter.
    for query in ([("max-keys", "2"), ("prefix", "J")], [("prefix", "J"), ("max-keys", "2")]):
        sigv4.verify_request("GET", "/", query, headers, aws_secrets, AWS_TIME)
    with pytest.raises(errors.SignatureDoesNotMatch):
        sigv4.verify_request("GET", "/", [("max-keys", "3"), ("prefix", "J")], headers, aws_secrets, AWS_TIME)


def test_aws_example_presigned_get() -> None:
    query = [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"),
        ("X-Amz-Date", "20130524T000000Z"),
        ("X-Amz-Expires", "86400"),
        ("X-Amz-SignedHeaders", "host"),
        ("X-Amz-Signature", "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"),
    ]
    headers = {"host": "examplebucket.s3.amazonaws.com"}
    auth = sigv4.verify_request("GET", "/test.txt", query, headers, aws_secrets,
                                AWS_TIME + timedelta(hours=23))
    assert auth.presigned
    assert auth.payload_hash == sigv4.UNSIGNED_PAYLOAD

    with pytest.raises(errors.AccessDenied, match="Request has expired"):
        sigv4.verify_request("GET", "/test.txt", query, headers, aws_secrets,
                             AWS_TIME + timedelta(seconds=86401))
    with pytest.raises(errors.SignatureDoesNotMatch):
        sigv4.verify_request("GET", "/test2.txt", query, headers, aws_secrets, AWS_TIME)


def test_aws_example_streaming_seed_signature() -> None:
    """The seed request of "Transferring Payload in Multiple Chunks", Example: PUT Object."""
    seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    headers = {
        "host": "s3.amazonaws.com",
        "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": sigv4.STREAMING_SIGNED,
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560",
        "content-length": "66824",
        "authorization": AWS_CREDENTIAL + "SignedHeaders=content-encoding;content-length;host;"
                         "x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,"
                         f"Signature={seed}",
    }
    auth = sigv4.verify_request("PUT", "/examplebucket/chunkObject.txt", [], headers, aws_secrets,
                                AWS_TIME)
    assert auth.signature == seed
    assert auth.payload_hash == sigv4.STREAMING_SIGNED
    assert auth.amz_date == "20130524T000000Z"


def test_aws_example_signing_key_and_chunk_signatures() -> None:
    key = sigv4.signing_key(AWS_SECRET, "20130524", "us-east-1", "s3")
    scope = "20130524/us-east-1/s3/aws4_request"

    first = sigv4.chunk_signature(key, "20130524T000000Z", scope,
                                  "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
                                  hashlib.sha256(b"a" * 65536).hexdigest())
    assert first == "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    second = sigv4.chunk_signature(key, "20130524T000000Z", scope, first,
                                   hashlib.sha256(b"a" * 1024).hexdigest())
    assert second == "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    final = sigv4.chunk_signature(key, "20130524T000000Z", scope, second, EMPTY)
    assert final == "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
    # aws-crt's trailing-header vector (awslabs/aws-crt-swift ChunkSignerTests) continues the chain.
    trailer = sigv4.trailer_signature(key, "20130524T000000Z", scope, final,
                                      b"first:1st\nsecond:2nd\nthird:3rd\n")
    assert trailer == "df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c"


# ----------------------------------------------------------------------------- boto3-signed requests

AWKWARD_KEYS = ["plain.txt", "a b/../c%d+é", "//double//slashes/", "../../etc/passwd", "ü?#&=;,$@!'()*~",
                "tab\there", "x" * 900]


@pytest.mark.parametrize("key", AWKWARD_KEYS)
@pytest.mark.parametrize("style", ["path", "virtual"])
def test_boto3_put_object_verifies(key: str, style: str) -> None:
    endpoint = "http://s3.coffer.test:9000" if style == "virtual" else "http://127.0.0.1:9000"
    s3 = boto.client(endpoint, addressing_style=style)
    request = boto.capture(lambda: s3.put_object(Bucket="bkt", Key=key, Body=b"hello world",
                                                 Metadata={"colour": "blue  green"}))
    auth = verify(request)
    assert auth.access_key_id == ACCESS_KEY
    assert auth.payload_hash == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    assert auth.signing_key == sigv4.signing_key(SECRET_KEY, auth.amz_date[:8], "us-east-1")


@pytest.mark.parametrize("call", [
    lambda s3: s3.list_objects_v2(Bucket="bkt", Prefix="dir with space/+plus&amp", Delimiter="/",
                                  StartAfter="é", MaxKeys=7, EncodingType="url"),
    lambda s3: s3.list_buckets(),
    lambda s3: s3.create_multipart_upload(Bucket="bkt", Key="big"),
    lambda s3: s3.upload_part(Bucket="bkt", Key="big", UploadId="u/p+id=", PartNumber=3, Body=b"part"),
    lambda s3: s3.get_object(Bucket="bkt", Key="k", Range="bytes=1-2"),
    lambda s3: s3.delete_objects(Bucket="bkt", Delete={"Objects": [{"Key": "a"}, {"Key": "b"}]}),
    lambda s3: s3.copy_object(Bucket="bkt", Key="dst", CopySource={"Bucket": "src", "Key": "s p/ace"}),
    lambda s3: s3.head_bucket(Bucket="bkt"),
], ids=["list_v2", "list_buckets", "create_mpu", "upload_part", "get_range", "delete_objects", "copy",
        "head_bucket"])
def test_boto3_operations_verify(call: object) -> None:
    s3 = boto.client()
    request = boto.capture(lambda: call(s3))  # type: ignore[operator]
    verify(request)


def test_boto3_streaming_unsigned_trailer_request_verifies() -> None:
    s3 = boto.client("https://127.0.0.1:9443")
    request = boto.capture(lambda: s3.put_object(Bucket="bkt", Key="k", Body=boto.stream(b"hello world")))
    auth = verify(request)
    assert auth.payload_hash == sigv4.STREAMING_UNSIGNED_TRAILER


def test_multidict_headers_with_repeated_values() -> None:
    s3 = boto.client()
    request = boto.capture(lambda: s3.put_object(Bucket="bkt", Key="k", Body=b"x"))
    headers = CIMultiDict((name.title(), value) for name, value in request.headers.items())
    verify(request, headers=headers)  # type: ignore[arg-type]
    headers.add("X-Amz-Date", request.headers["x-amz-date"])  # a repeated header joins with ","
    with pytest.raises((errors.SignatureDoesNotMatch, errors.AccessDenied)):
        verify(request, headers=headers)  # type: ignore[arg-type]


def test_sigv2_presigned_url_is_refused() -> None:
    s3 = boto.client()  # boto3 presigns with SigV2 unless told otherwise
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    host, raw_path, query = boto.split_url(url)
    assert "AWSAccessKeyId" in dict(query)
    with pytest.raises(errors.InvalidRequest, match="AWS4-HMAC-SHA256"):
        sigv4.verify_request("GET", raw_path, query, {"host": host}, our_secrets, datetime.now(UTC))


def test_presigned_urls_from_boto3() -> None:
    s3 = boto.client(signature_version="s3v4")
    for method, params in (("get_object", {"Bucket": "bkt", "Key": "a b/../é"}),
                           ("put_object", {"Bucket": "bkt", "Key": "up"})):
        url = s3.generate_presigned_url(method, Params=params, ExpiresIn=600)
        host, raw_path, query = boto.split_url(url)
        http_method = "GET" if method == "get_object" else "PUT"
        auth = sigv4.verify_request(http_method, raw_path, query, {"host": host}, our_secrets,
                                    datetime.now(UTC))
        assert auth.presigned and auth.payload_hash == sigv4.UNSIGNED_PAYLOAD
        with pytest.raises(errors.AccessDenied, match="Request has expired"):
            sigv4.verify_request(http_method, raw_path, query, {"host": host}, our_secrets,
                                 datetime.now(UTC) + timedelta(seconds=700))
        with pytest.raises(errors.SignatureDoesNotMatch):
            sigv4.verify_request(http_method, raw_path + "x", query, {"host": host}, our_secrets,
                                 datetime.now(UTC))
        with pytest.raises(errors.SignatureDoesNotMatch):
            sigv4.verify_request("DELETE", raw_path, query, {"host": host}, our_secrets, datetime.now(UTC))


def test_presigned_expiry_longer_than_a_week_is_refused() -> None:
    s3 = boto.client(signature_version="s3v4")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=604801)
    host, raw_path, query = boto.split_url(url)
    with pytest.raises(errors.AuthorizationQueryParametersError):
        sigv4.verify_request("GET", raw_path, query, {"host": host}, our_secrets, datetime.now(UTC))


def test_presigned_and_header_auth_together_are_refused() -> None:
    s3 = boto.client(signature_version="s3v4")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    host, raw_path, query = boto.split_url(url)
    with pytest.raises(errors.InvalidArgument):
        sigv4.verify_request("GET", raw_path, query, {"host": host, "authorization": "AWS4-HMAC-SHA256 x"},
                             our_secrets, datetime.now(UTC))


# ----------------------------------------------------------------------------- tampering


@pytest.fixture
def signed_put() -> CapturedRequest:
    s3 = boto.client()
    return boto.capture(lambda: s3.put_object(Bucket="bkt", Key="dir/key", Body=b"payload",
                                              ContentType="text/plain"))


def _with_header(request: CapturedRequest, name: str, value: str | None) -> CapturedRequest:
    headers = dict(request.headers)
    if value is None:
        headers.pop(name, None)
    else:
        headers[name] = value
    return dataclasses.replace(request, headers=headers)


def test_tampered_signature(signed_put: CapturedRequest) -> None:
    authorization = signed_put.headers["authorization"]
    flipped = authorization[:-1] + ("0" if authorization[-1] != "0" else "1")
    with pytest.raises(errors.SignatureDoesNotMatch) as failure:
        verify(_with_header(signed_put, "authorization", flipped))
    assert failure.value.status == 403
    assert "StringToSign" in failure.value.extra and "CanonicalRequest" in failure.value.extra


@pytest.mark.parametrize("change", [
    {"raw_path": "/bkt/dir/kex"},
    {"raw_path": "/bkt/dir//key"},
    {"method": "POST"},
    {"query": [("acl", "")]},
])
def test_tampered_request_parts(signed_put: CapturedRequest, change: dict[str, object]) -> None:
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(signed_put, **change)  # type: ignore[arg-type]


def test_tampered_signed_header_and_payload_hash(signed_put: CapturedRequest) -> None:
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(_with_header(signed_put, "content-type", "text/html"))
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(_with_header(signed_put, "x-amz-content-sha256", sigv4.UNSIGNED_PAYLOAD))


def test_unsigned_amz_header_is_refused(signed_put: CapturedRequest) -> None:
    with pytest.raises(errors.AccessDenied) as failure:
        verify(_with_header(signed_put, "x-amz-meta-injected", "1"))
    assert failure.value.extra["HeadersNotSigned"] == "x-amz-meta-injected"


def test_unknown_access_key(signed_put: CapturedRequest) -> None:
    s3 = boto.client(access_key="AKIDUNKNOWN")
    request = boto.capture(lambda: s3.head_bucket(Bucket="bkt"))
    with pytest.raises(errors.InvalidAccessKeyId):
        verify(request)


def test_wrong_secret() -> None:
    s3 = boto.client(secret_key="not-the-secret")
    with pytest.raises(errors.SignatureDoesNotMatch):
        verify(boto.capture(lambda: s3.head_bucket(Bucket="bkt")))


def test_anonymous_request() -> None:
    with pytest.raises(errors.AccessDenied, match="Anonymous access is forbidden"):
        sigv4.verify_request("GET", "/bkt/k", [], {"host": "h"}, our_secrets, datetime.now(UTC))


def test_clock_skew(signed_put: CapturedRequest) -> None:
    verify(signed_put, now=datetime.now(UTC) + timedelta(minutes=14))
    for skew in (timedelta(minutes=16), -timedelta(minutes=16)):
        with pytest.raises(errors.RequestTimeTooSkewed):
            verify(signed_put, now=datetime.now(UTC) + skew)


def test_wrong_region(signed_put: CapturedRequest) -> None:
    with pytest.raises(errors.AuthorizationHeaderMalformed):
        verify(signed_put, region="eu-west-1")
    verify(signed_put, region=None)


@pytest.mark.parametrize("authorization, error", [
    ("AWS4-HMAC-SHA256 Credential=x", errors.AuthorizationHeaderMalformed),
    ("AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=zz",
     errors.AuthorizationHeaderMalformed),
    ("AWS4-HMAC-SHA256 Credential=AKID/2026/us-east-1/s3/aws4_request, SignedHeaders=host, Signature="
     + "a" * 64, errors.AuthorizationHeaderMalformed),
    ("AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature="
     + "a" * 64, errors.AuthorizationHeaderMalformed),
    ("AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, SignedHeaders=date, Signature="
     + "a" * 64, errors.AuthorizationHeaderMalformed),
    ("AWS AKID:c2lnbmF0dXJl", errors.InvalidRequest),
    ("Bearer token", errors.AuthorizationHeaderMalformed),
])
def test_malformed_authorization(signed_put: CapturedRequest, authorization: str,
                                 error: type[Exception]) -> None:
    with pytest.raises(error):
        verify(_with_header(signed_put, "authorization", authorization))


def test_missing_date_and_payload_hash(signed_put: CapturedRequest) -> None:
    with pytest.raises(errors.AccessDenied):
        verify(_with_header(signed_put, "x-amz-date", None))
    with pytest.raises(errors.InvalidRequest):
        verify(_with_header(signed_put, "x-amz-content-sha256", None))
    with pytest.raises(errors.InvalidArgument):
        verify(_with_header(signed_put, "x-amz-content-sha256", "not-a-hash"))


def test_date_header_instead_of_x_amz_date() -> None:
    """A client may sign with Date (RFC 7231) instead of x-amz-date; the string to sign then
    carries the Date converted to ISO 8601 basic format (as botocore does)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url="http://127.0.0.1:9000/bkt/k",
                         headers={"Date": "placeholder"})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers["host"] = "127.0.0.1:9000"
    assert "x-amz-date" not in headers
    auth = sigv4.verify_request("GET", "/bkt/k", [], headers, our_secrets, datetime.now(UTC))
    assert auth.amz_date.endswith("Z")


def test_canonical_uri_keeps_dots_and_slashes() -> None:
    assert sigv4.canonical_uri("/b/a%20b/../c//d%2Fe") == "/b/a%20b/../c//d/e"
    assert sigv4.canonical_uri("/b/%C3%A9%21") == "/b/%C3%A9%21"
    assert sigv4.canonical_uri("") == "/"
    assert sigv4.canonical_query_string([("b", "2"), ("a", "x y"), ("a", "1"), ("uploads", "")]) == \
        "a=1&a=x%20y&b=2&uploads="
