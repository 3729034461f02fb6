"""Routing table: method, host, path, query and headers -> S3 action, bucket and key."""

from __future__ import annotations

import pytest

from frontend.s3 import errors
from frontend.s3.router import OPERATIONS, Operation, route
from tests.unit.frontend.s3 import botocore_requests as boto

SUFFIXES = ["s3.coffer.test"]
COPY = {"x-amz-copy-source": "/src/key"}

TABLE = [
    ("GET", "/", [], {}, "ListBuckets", None, None),
    ("GET", "/bkt", [], {}, "ListObjects", "bkt", None),
    ("GET", "/bkt/", [("prefix", "a")], {}, "ListObjects", "bkt", None),
    ("GET", "/bkt", [("list-type", "2")], {}, "ListObjectsV2", "bkt", None),
    ("GET", "/bkt", [("location", "")], {}, "GetBucketLocation", "bkt", None),
    ("GET", "/bkt", [("versioning", "")], {}, "GetBucketVersioning", "bkt", None),
    ("GET", "/bkt", [("uploads", "")], {}, "ListMultipartUploads", "bkt", None),
    ("PUT", "/bkt", [], {}, "CreateBucket", "bkt", None),
    ("DELETE", "/bkt", [], {}, "DeleteBucket", "bkt", None),
    ("HEAD", "/bkt", [], {}, "HeadBucket", "bkt", None),
    ("POST", "/bkt", [("delete", "")], {}, "DeleteObjects", "bkt", None),
    ("PUT", "/bkt/k", [], {}, "PutObject", "bkt", "k"),
    ("PUT", "/bkt/k", [], COPY, "CopyObject", "bkt", "k"),
    ("GET", "/bkt/k", [], {}, "GetObject", "bkt", "k"),
    ("HEAD", "/bkt/k", [], {}, "HeadObject", "bkt", "k"),
    ("DELETE", "/bkt/k", [], {}, "DeleteObject", "bkt", "k"),
    ("POST", "/bkt/k", [("uploads", "")], {}, "CreateMultipartUpload", "bkt", "k"),
    ("PUT", "/bkt/k", [("partNumber", "1"), ("uploadId", "u")], {}, "UploadPart", "bkt", "k"),
    ("PUT", "/bkt/k", [("partNumber", "1"), ("uploadId", "u")], COPY, "UploadPartCopy", "bkt", "k"),
    ("POST", "/bkt/k", [("uploadId", "u")], {}, "CompleteMultipartUpload", "bkt", "k"),
    ("DELETE", "/bkt/k", [("uploadId", "u")], {}, "AbortMultipartUpload", "bkt", "k"),
    ("GET", "/bkt/k", [("uploadId", "u")], {}, "ListParts", "bkt", "k"),
    ("GET", "/bkt/k", [("x-id", "GetObject")], {}, "GetObject", "bkt", "k"),
    # Keys are decoded once and never normalized.
    ("GET", "/bkt/a%20b/../c%25d%2Be", [], {}, "GetObject", "bkt", "a b/../c%d+e"),
    ("GET", "/bkt//lead//double/", [], {}, "GetObject", "bkt", "/lead//double/"),
    ("GET", "/bkt/%C3%A9t%C3%A9", [], {}, "GetObject", "bkt", "été"),
    ("GET", "/bkt/%252F", [], {}, "GetObject", "bkt", "%2F"),
    ("GET", "/bkt/a%2Fb", [], {}, "GetObject", "bkt", "a/b"),
    ("GET", "/bkt/..", [], {}, "GetObject", "bkt", ".."),
]


@pytest.mark.parametrize("method, path, query, headers, name, bucket, key", TABLE)
def test_path_style(method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str], name: str,
                    bucket: str | None, key: str | None) -> None:
    operation = route(method, "127.0.0.1:9000", path, query, headers, virtual_host_suffixes=SUFFIXES)
    assert operation == Operation(name, bucket, key)
    assert operation.name in OPERATIONS


@pytest.mark.parametrize("method, path, query, headers, name, bucket, key",
                         [row for row in TABLE if row[5] == "bkt"])
def test_virtual_hosted_style(method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
                              name: str, bucket: str | None, key: str | None) -> None:
    vhost_path = path.removeprefix("/bkt")
    vhost_path = vhost_path if vhost_path.startswith("/") else "/" + vhost_path
    if vhost_path == "/" and key is not None:
        pytest.skip("not expressible")
    operation = route(method, "BKT.s3.coffer.test:9000", vhost_path, query, headers,
                      virtual_host_suffixes=SUFFIXES)
    assert operation == Operation(name, "bkt", key)


def test_endpoint_host_itself_is_path_style() -> None:
    assert route("GET", "s3.coffer.test", "/bkt/k", [], virtual_host_suffixes=SUFFIXES) == \
        Operation("GetObject", "bkt", "k")
    assert route("GET", "[::1]:9000", "/bkt/k", {}, virtual_host_suffixes=SUFFIXES).bucket == "bkt"


@pytest.mark.parametrize("method, path, query, error", [
    ("GET", "/bkt", [("acl", "")], errors.NotImplemented),
    ("GET", "/bkt", [("versions", "")], errors.NotImplemented),
    ("PUT", "/bkt", [("tagging", "")], errors.NotImplemented),
    ("DELETE", "/bkt", [("cors", "")], errors.NotImplemented),
    ("GET", "/bkt/k", [("acl", "")], errors.NotImplemented),
    ("PUT", "/bkt/k", [("tagging", "")], errors.NotImplemented),
    ("POST", "/bkt/k", [("restore", "")], errors.NotImplemented),
    ("POST", "/bkt", [], errors.NotImplemented),
    ("POST", "/bkt/k", [], errors.MethodNotAllowed),
    ("PATCH", "/bkt/k", [], errors.MethodNotAllowed),
    ("PUT", "/", [], errors.MethodNotAllowed),
    ("PUT", "/bkt/k", [("partNumber", "1")], errors.InvalidRequest),
    ("GET", "/Bad_Bucket/k", [], errors.InvalidBucketName),
    ("GET", "/ab", [], errors.InvalidBucketName),
    ("GET", "/bkt/%FF", [], errors.InvalidURI),
    ("GET", "bkt/k", [], errors.InvalidURI),
])
def test_refusals(method: str, path: str, query: list[tuple[str, str]], error: type[Exception]) -> None:
    with pytest.raises(error):
        route(method, "127.0.0.1", path, query, {}, virtual_host_suffixes=SUFFIXES)


@pytest.mark.parametrize("call, name", [
    (lambda s3: s3.list_objects_v2(Bucket="bkt"), "ListObjectsV2"),
    (lambda s3: s3.list_objects(Bucket="bkt"), "ListObjects"),
    (lambda s3: s3.get_bucket_location(Bucket="bkt"), "GetBucketLocation"),
    (lambda s3: s3.create_multipart_upload(Bucket="bkt", Key="k"), "CreateMultipartUpload"),
    (lambda s3: s3.upload_part_copy(Bucket="bkt", Key="k", UploadId="u", PartNumber=2,
                                    CopySource="src/s"), "UploadPartCopy"),
    (lambda s3: s3.complete_multipart_upload(Bucket="bkt", Key="k", UploadId="u", MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": "e"}]}), "CompleteMultipartUpload"),
    (lambda s3: s3.delete_objects(Bucket="bkt", Delete={"Objects": [{"Key": "a"}]}), "DeleteObjects"),
    (lambda s3: s3.list_multipart_uploads(Bucket="bkt"), "ListMultipartUploads"),
    (lambda s3: s3.abort_multipart_upload(Bucket="bkt", Key="k", UploadId="u"), "AbortMultipartUpload"),
    (lambda s3: s3.copy_object(Bucket="bkt", Key="k", CopySource="src/s"), "CopyObject"),
    (lambda s3: s3.get_bucket_versioning(Bucket="bkt"), "GetBucketVersioning"),
])
@pytest.mark.parametrize("style", ["path", "virtual"])
def test_boto3_requests_route_to_their_action(call: object, name: str, style: str) -> None:
    endpoint = "http://s3.coffer.test:9000"
    request = boto.capture(lambda: call(boto.client(endpoint, addressing_style=style)))  # type: ignore[operator]
    operation = route(request.method, request.host, request.raw_path, request.query, request.headers,
                      virtual_host_suffixes=SUFFIXES)
    assert operation.name == name
    assert operation.bucket == "bkt"
