"""S3 behaviour through real clients (boto3, the aws CLI) against a real dev cluster.

One cluster (etcd, 14 storage-node processes, placement service, frontend) serves the whole module.
Covers issue 2's acceptance 1 (aws CLI 1 GiB multipart round trip; boto3 put/get/head/delete/list
with pagination; ranged GETs), 6 (dedup and reference counts) and 7 (bad input changes nothing and
gets the right S3 error).
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.exceptions
import pytest

from common.layout import CHUNK_SIZE
from frontend.s3 import sigv4
from metadata.sqlite_store import SqliteMetadataStore
from tests.fixtures.cluster import DevCluster

pytestmark = pytest.mark.system

MiB = 1024 * 1024


def error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def http_status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


@pytest.fixture(scope="module")
def s3(cluster: DevCluster) -> Any:
    return cluster.s3_client()


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket="acceptance")
    return "acceptance"


def refcount(cluster: DevCluster, chunk_hash: str) -> int:
    """Read a chunk's reference count from the cluster's metadata database."""
    return SqliteMetadataStore(cluster.data_dir / "metadata.sqlite3").chunk_refcount(chunk_hash)


# --- acceptance 1: aws CLI and boto3 -------------------------------------------------------------

def test_aws_cli_round_trips_a_1_gib_file(cluster: DevCluster, tmp_path: Path) -> None:
    aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
    assert aws, "the aws CLI is a dev dependency (pip's awscli)"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": cluster.access_key, "AWS_SECRET_ACCESS_KEY": cluster.secret_key,
           "AWS_DEFAULT_REGION": cluster.region, "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    base = [aws, "--endpoint-url", cluster.endpoint, "s3"]
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with source.open("wb") as out:
        for _ in range(1024 // 16):
            block = os.urandom(16 * MiB)
            digest.update(block)
            out.write(block)
    subprocess.run([*base, "mb", "s3://cli-bucket"], env=env, check=True, capture_output=True)
    subprocess.run([*base, "cp", str(source), "s3://cli-bucket/dir/big.bin"], env=env, check=True,
                   capture_output=True)
    listing = subprocess.run([*base, "ls", "s3://cli-bucket/dir/"], env=env, check=True,
                             capture_output=True, text=True).stdout
    assert "big.bin" in listing and str(1024 * MiB) in listing
    source.unlink()
    target = tmp_path / "back.bin"
    subprocess.run([*base, "cp", "s3://cli-bucket/dir/big.bin", str(target)], env=env, check=True,
                   capture_output=True)
    back = hashlib.sha256()
    with target.open("rb") as data:
        while block := data.read(16 * MiB):
            back.update(block)
    assert back.hexdigest() == digest.hexdigest()
    subprocess.run([*base, "rm", "s3://cli-bucket/dir/big.bin"], env=env, check=True, capture_output=True)


def test_boto3_put_get_head_delete(s3: Any, bucket: str) -> None:
    body = os.urandom(3 * MiB + 17)
    put = s3.put_object(Bucket=bucket, Key="obj", Body=body, ContentType="text/x-test",
                        Metadata={"color": "blue"})
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    head = s3.head_object(Bucket=bucket, Key="obj")
    assert head["ContentLength"] == len(body)
    assert head["ContentType"] == "text/x-test"
    assert head["Metadata"] == {"color": "blue"}
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["Body"].read() == body
    s3.delete_object(Bucket=bucket, Key="obj")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="obj")
    assert error_code(caught.value) == "NoSuchKey"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.head_object(Bucket=bucket, Key="obj")
    assert http_status(caught.value) == 404


def test_empty_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    assert s3.head_object(Bucket=bucket, Key="empty")["ContentLength"] == 0


def test_list_paginates_over_more_than_1000_keys(s3: Any) -> None:
    s3.create_bucket(Bucket="many-keys")
    keys = [f"k/{i:05d}" for i in range(1105)] + ["other/x", "top"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="many-keys", Key=k, Body=k.encode()), keys))
    listed = [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="many-keys")
              for obj in page.get("Contents", [])]
    assert listed == sorted(keys)
    first = s3.list_objects_v2(Bucket="many-keys")
    assert first["IsTruncated"] and first["KeyCount"] == 1000
    grouped = s3.list_objects_v2(Bucket="many-keys", Delimiter="/")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["k/", "other/"]
    assert [o["Key"] for o in grouped["Contents"]] == ["top"]
    small = s3.list_objects_v2(Bucket="many-keys", Prefix="k/", MaxKeys=7, StartAfter="k/00100")
    assert [o["Key"] for o in small["Contents"]] == [f"k/{i:05d}" for i in range(101, 108)]
    v1 = [obj["Key"] for page in s3.get_paginator("list_objects").paginate(Bucket="many-keys")
          for obj in page.get("Contents", [])]
    assert v1 == sorted(keys)


def test_ranged_gets_at_chunk_boundaries_and_inside_fragments(s3: Any, bucket: str) -> None:
    body = os.urandom(2 * CHUNK_SIZE + 12345)
    s3.put_object(Bucket=bucket, Key="ranges", Body=body)
    fragment = -(-CHUNK_SIZE // 10)
    cases = [
        (0, 0), (0, 99), (CHUNK_SIZE - 1, CHUNK_SIZE), (CHUNK_SIZE - 10, CHUNK_SIZE + 10),
        (CHUNK_SIZE, CHUNK_SIZE), (2 * CHUNK_SIZE, len(body) - 1), (fragment + 5, fragment + 500),
        (3 * fragment - 3, 3 * fragment + 3), (100, 2 * CHUNK_SIZE + 100), (len(body) - 1, len(body) - 1),
    ]
    for start, end in cases:
        got = s3.get_object(Bucket=bucket, Key="ranges", Range=f"bytes={start}-{end}")
        assert got["Body"].read() == body[start:end + 1], (start, end)
        assert got["ContentRange"] == f"bytes {start}-{end}/{len(body)}"
    suffix = s3.get_object(Bucket=bucket, Key="ranges", Range="bytes=-1000")["Body"].read()
    assert suffix == body[-1000:]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="ranges", Range=f"bytes={len(body)}-")
    assert error_code(caught.value) == "InvalidRange"


def test_multipart_upload_with_boto3(s3: Any, bucket: str) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 3), os.urandom(1234)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    etags = []
    for number, data in enumerate(parts, start=1):
        etags.append(s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload["UploadId"], PartNumber=number,
                                    Body=data)["ETag"])
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload["UploadId"])
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3]
    uploads = s3.list_multipart_uploads(Bucket=bucket)
    assert upload["UploadId"] in [u["UploadId"] for u in uploads.get("Uploads", [])]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-3"'
    # A retried completion (its first response lost) answers the same success, as AWS does.
    again = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    assert again["ETag"] == done["ETag"]
    whole = b"".join(parts)
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == whole
    start = 5 * MiB - 10
    ranged = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={start}-{start + 20}")["Body"].read()
    assert ranged == whole[start:start + 21]


def test_get_by_part_number(s3: Any, bucket: str) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 1), os.urandom(77)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="by-part")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="by-part", UploadId=upload, PartNumber=n, Body=p)["ETag"]
             for n, p in enumerate(parts, start=1)]
    s3.complete_multipart_upload(Bucket=bucket, Key="by-part", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]})
    for number, part in enumerate(parts, start=1):
        got = s3.get_object(Bucket=bucket, Key="by-part", PartNumber=number)
        assert got["PartsCount"] == 3 and got["ContentLength"] == len(part)
        assert got["Body"].read() == part
    assert "PartsCount" not in s3.head_object(Bucket=bucket, Key="by-part")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="by-part", PartNumber=4)
    assert error_code(caught.value) == "InvalidPartNumber"


def test_conditional_writes(s3: Any, bucket: str) -> None:
    first = s3.put_object(Bucket=bucket, Key="conditional", Body=b"one", IfNoneMatch="*")["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="conditional", Body=b"two", IfNoneMatch="*")
    assert http_status(caught.value) == 412
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="conditional", Body=b"two", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert http_status(caught.value) == 412
    s3.put_object(Bucket=bucket, Key="conditional", Body=b"three", IfMatch=first)
    assert s3.get_object(Bucket=bucket, Key="conditional")["Body"].read() == b"three"


def test_refused_upload_is_answered_before_the_body(cluster: DevCluster, bucket: str) -> None:
    """Expect: 100-continue: a PUT to a missing bucket, or with a bad signature, gets its error as the
    first answer, never a "100 Continue" inviting the body."""
    endpoint = urllib.parse.urlsplit(cluster.endpoint)
    for path, secret, status in (("/no-such-bucket-here/key", None, b"404"),
                                 (f"/{bucket}/key", "wrong" * 8, b"403")):
        request = signed_request(cluster, "PUT", path, b"x" * 1000, headers={"Expect": "100-continue"},
                                 secret=secret)
        head = f"PUT {path} HTTP/1.1\r\nHost: {endpoint.netloc}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in request.header_items()) + "\r\n"
        with socket.create_connection((str(endpoint.hostname), int(endpoint.port or 80)), timeout=10) as sock:
            sock.sendall(head.encode())  # headers only: the body is held back until 100 Continue
            first_line = sock.makefile("rb").readline()
        assert first_line.split()[1] == status, first_line


def test_presigned_url_refuses_unsigned_amz_headers(cluster: DevCluster, s3: Any, bucket: str) -> None:
    v4 = cluster.s3_client(signature_version="s3v4")
    s3.put_object(Bucket=bucket, Key="secret-source", Body=b"secret")
    url = v4.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "innocent"}, ExpiresIn=60)
    hijack = urllib.request.Request(url, data=b"", method="PUT",
                                    headers={"x-amz-copy-source": f"{bucket}/secret-source"})
    status, body = send(hijack)
    assert status == 403 and b"not signed" in body
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="innocent")


def test_copy_object_shares_chunks(s3: Any, bucket: str) -> None:
    body = os.urandom(MiB)
    s3.put_object(Bucket=bucket, Key="copy-src", Body=body)
    s3.copy_object(Bucket=bucket, Key="copy-dst", CopySource={"Bucket": bucket, "Key": "copy-src"})
    assert s3.get_object(Bucket=bucket, Key="copy-dst")["Body"].read() == body


def test_upload_part_copy_ranges(s3: Any, bucket: str) -> None:
    source = os.urandom(2 * CHUNK_SIZE + 5 * MiB)
    s3.put_object(Bucket=bucket, Key="part-copy-src", Body=source)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="part-copy-dst")["UploadId"]
    ranges = [(0, CHUNK_SIZE + 2 * MiB), (CHUNK_SIZE + 2 * MiB, len(source))]  # unaligned on purpose
    parts = []
    for number, (start, end) in enumerate(ranges, start=1):
        result = s3.upload_part_copy(Bucket=bucket, Key="part-copy-dst", UploadId=upload, PartNumber=number,
                                     CopySource={"Bucket": bucket, "Key": "part-copy-src"},
                                     CopySourceRange=f"bytes={start}-{end - 1}")
        etag = result["CopyPartResult"]["ETag"]
        assert etag == f'"{hashlib.md5(source[start:end]).hexdigest()}"'
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key="part-copy-dst", UploadId=upload,
                                 MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="part-copy-dst")["Body"].read() == source
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.upload_part_copy(Bucket=bucket, Key="part-copy-dst", UploadId="nope", PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": "part-copy-src"})
    assert error_code(caught.value) == "NoSuchUpload"


def test_aws_cli_copies_between_buckets(cluster: DevCluster, s3: Any, bucket: str, tmp_path: Path) -> None:
    body = os.urandom(20 * MiB)  # above the CLI's 8 MiB multipart threshold: UploadPartCopy
    s3.put_object(Bucket=bucket, Key="cli-copy-src", Body=body)
    s3.create_bucket(Bucket="cli-copy-target")
    aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
    assert aws
    env = {**os.environ, "AWS_ACCESS_KEY_ID": cluster.access_key, "AWS_SECRET_ACCESS_KEY": cluster.secret_key,
           "AWS_DEFAULT_REGION": cluster.region, "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    subprocess.run([aws, "--endpoint-url", cluster.endpoint, "s3", "cp", f"s3://{bucket}/cli-copy-src",
                    "s3://cli-copy-target/copied"], env=env, check=True, capture_output=True)
    assert s3.get_object(Bucket="cli-copy-target", Key="copied")["Body"].read() == body


# --- acceptance 6: dedup ---------------------------------------------------------------------------

def test_same_content_under_two_keys_is_stored_once(cluster: DevCluster, s3: Any, bucket: str) -> None:
    body = os.urandom(CHUNK_SIZE + 1000)
    hashes = [hashlib.sha256(body[:CHUNK_SIZE]).hexdigest(), hashlib.sha256(body[CHUNK_SIZE:]).hexdigest()]
    s3.put_object(Bucket=bucket, Key="dedup/a", Body=body)
    assert [refcount(cluster, h) for h in hashes] == [1, 1]
    s3.put_object(Bucket=bucket, Key="dedup/b", Body=body)
    assert [refcount(cluster, h) for h in hashes] == [2, 2]
    s3.delete_object(Bucket=bucket, Key="dedup/a")
    assert [refcount(cluster, h) for h in hashes] == [1, 1]
    assert s3.get_object(Bucket=bucket, Key="dedup/b")["Body"].read() == body


# --- acceptance 7: bad input -----------------------------------------------------------------------

def signed_request(cluster: DevCluster, method: str, path: str, body: bytes = b"",
                   headers: dict[str, str] | None = None, secret: str | None = None,
                   access_key: str | None = None) -> urllib.request.Request:
    """A request signed by botocore's SigV4 signer (optionally with a wrong key)."""
    credentials = botocore.credentials.Credentials(access_key or cluster.access_key, secret or cluster.secret_key)
    request = botocore.awsrequest.AWSRequest(method=method, url=cluster.endpoint + path, data=body,
                                             headers=headers or {})
    botocore.auth.S3SigV4Auth(credentials, "s3", cluster.region).add_auth(request)
    prepared = request.prepare()
    return urllib.request.Request(prepared.url, data=body or None, method=method,
                                  headers=dict(prepared.headers.items()))


def send(request: urllib.request.Request) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def assert_s3_error(result: tuple[int, bytes], status: int, code: str) -> None:
    got_status, body = result
    assert got_status == status, body
    assert f"<Code>{code}</Code>".encode() in body, body


def test_missing_and_wrong_signatures(cluster: DevCluster, s3: Any, bucket: str) -> None:
    anonymous = urllib.request.Request(f"{cluster.endpoint}/{bucket}/x", data=b"data", method="PUT")
    assert_s3_error(send(anonymous), 403, "AccessDenied")
    assert_s3_error(send(signed_request(cluster, "PUT", f"/{bucket}/x", b"data", secret="wrong" * 8)),
                    403, "SignatureDoesNotMatch")
    assert_s3_error(send(signed_request(cluster, "PUT", f"/{bucket}/x", b"data", access_key="CKNOSUCHKEY")),
                    403, "InvalidAccessKeyId")
    tampered = signed_request(cluster, "PUT", f"/{bucket}/x", b"data")
    tampered.data = b"DATA"
    assert_s3_error(send(tampered), 400, "XAmzContentSHA256Mismatch")
    assert "x" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_presigned_urls(cluster: DevCluster, bucket: str) -> None:
    s3 = cluster.s3_client(signature_version="s3v4")
    s3.put_object(Bucket=bucket, Key="presigned", Body=b"hello")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "presigned"}, ExpiresIn=60)
    assert send(urllib.request.Request(url)) == (200, b"hello")
    expired = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "presigned"},
                                        ExpiresIn=1)
    time.sleep(2.1)
    status, body = send(urllib.request.Request(expired))
    assert status == 403 and b"AccessDenied" in body and b"expired" in body
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "via-url"}, ExpiresIn=60)
    assert send(urllib.request.Request(put_url, data=b"uploaded", method="PUT"))[0] == 200
    assert s3.get_object(Bucket=bucket, Key="via-url")["Body"].read() == b"uploaded"


def test_boto3_default_presigned_urls_sigv2(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="presigned-v2", Body=b"legacy")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "presigned-v2"}, ExpiresIn=60)
    assert "AWSAccessKeyId=" in url  # boto3's default presigning is SigV2
    assert send(urllib.request.Request(url)) == (200, b"legacy")
    status, body = send(urllib.request.Request(url.replace("presigned-v2", "presigned-v3")))
    assert status == 403 and b"SignatureDoesNotMatch" in body


def test_digest_mismatches_store_nothing(cluster: DevCluster, s3: Any, bucket: str) -> None:
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    assert_s3_error(send(signed_request(cluster, "PUT", f"/{bucket}/bad-md5", b"payload",
                                        headers={"Content-MD5": wrong_md5})), 400, "BadDigest")
    assert_s3_error(send(signed_request(cluster, "PUT", f"/{bucket}/bad-md5", b"payload",
                                        headers={"Content-MD5": "not base64!"})), 400, "InvalidDigest")
    wrong_crc = base64.b64encode(b"\x00\x00\x00\x00").decode()
    assert_s3_error(send(signed_request(cluster, "PUT", f"/{bucket}/bad-crc", b"payload",
                                        headers={"x-amz-checksum-crc32": wrong_crc})), 400, "BadDigest")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="bad-sha", Body=b"payload", ChecksumSHA256=base64.b64encode(
            hashlib.sha256(b"other").digest()).decode())
    assert error_code(caught.value) in ("BadDigest", "InvalidRequest")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not {"bad-md5", "bad-crc", "bad-sha"} & set(keys)


def test_boto3_default_checksums_are_verified_and_returned(s3: Any, bucket: str) -> None:
    body = os.urandom(100_000)
    for algorithm in ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"):
        s3.put_object(Bucket=bucket, Key=f"sum-{algorithm}", Body=body, ChecksumAlgorithm=algorithm)
        got = s3.get_object(Bucket=bucket, Key=f"sum-{algorithm}", ChecksumMode="ENABLED")
        assert got["Body"].read() == body
        assert got.get(f"Checksum{algorithm}"), algorithm


def test_missing_resources(s3: Any, bucket: str) -> None:
    cases = [
        (lambda: s3.get_object(Bucket="no-such-bucket", Key="k"), "NoSuchBucket"),
        (lambda: s3.put_object(Bucket="no-such-bucket", Key="k", Body=b"x"), "NoSuchBucket"),
        (lambda: s3.list_objects_v2(Bucket="no-such-bucket"), "NoSuchBucket"),
        (lambda: s3.get_object(Bucket=bucket, Key="never-written"), "NoSuchKey"),
        (lambda: s3.upload_part(Bucket=bucket, Key="k", UploadId="nope", PartNumber=1, Body=b"x"),
         "NoSuchUpload"),
        (lambda: s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId="nope"), "NoSuchUpload"),
        (lambda: s3.list_parts(Bucket=bucket, Key="k", UploadId="nope"), "NoSuchUpload"),
    ]
    for call, code in cases:
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            call()
        assert error_code(caught.value) == code


def test_multipart_errors_change_nothing(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp-bad")["UploadId"]
    small = s3.upload_part(Bucket=bucket, Key="mp-bad", UploadId=upload, PartNumber=1, Body=b"a" * 100)["ETag"]
    last = s3.upload_part(Bucket=bucket, Key="mp-bad", UploadId=upload, PartNumber=2, Body=b"b" * 100)["ETag"]

    def complete(parts: list[dict[str, Any]]) -> str:
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            s3.complete_multipart_upload(Bucket=bucket, Key="mp-bad", UploadId=upload,
                                         MultipartUpload={"Parts": parts})
        return error_code(caught.value)

    assert complete([{"PartNumber": 1, "ETag": small}, {"PartNumber": 2, "ETag": last}]) == "EntityTooSmall"
    assert complete([{"PartNumber": 2, "ETag": last}, {"PartNumber": 1, "ETag": small}]) == "InvalidPartOrder"
    assert complete([{"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}]) == "InvalidPart"
    assert complete([{"PartNumber": 3, "ETag": small}]) == "InvalidPart"
    # The upload survives failed completions and still completes with valid parts.
    s3.complete_multipart_upload(Bucket=bucket, Key="mp-bad", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": last}]})
    assert s3.get_object(Bucket=bucket, Key="mp-bad")["Body"].read() == b"b" * 100


def test_malformed_xml(cluster: DevCluster, bucket: str, s3: Any) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="xml")["UploadId"]
    for body in (b"<CompleteMultipartUpload><Part>", b"not xml at all",
                 b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><CompleteMultipartUpload>&a;'
                 b"</CompleteMultipartUpload>"):
        result = send(signed_request(cluster, "POST", f"/{bucket}/xml?uploadId={upload}", body))
        assert_s3_error(result, 400, "MalformedXML")


@pytest.mark.parametrize("name", ["ab", "UPPER", "has_underscore", "-start", "end-", "a..b", "192.168.1.1",
                                  "x" * 64, "xn--punycode", "bucket-s3alias"])
def test_invalid_bucket_names(s3: Any, name: str) -> None:
    with pytest.raises((botocore.exceptions.ClientError, botocore.exceptions.ParamValidationError)) as caught:
        s3.create_bucket(Bucket=name)
    if isinstance(caught.value, botocore.exceptions.ClientError):
        assert error_code(caught.value) == "InvalidBucketName"


def test_invalid_bucket_name_over_raw_http(cluster: DevCluster) -> None:
    assert_s3_error(send(signed_request(cluster, "PUT", "/Bad_Name")), 400, "InvalidBucketName")


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "with space", "ünïcødé/ключ/鍵", "a//b", "./.",
                                 "percent%20sign", "plus+sign", "tab\tand?question#hash", "é" * 512])
def test_unusual_keys_round_trip(s3: Any, bucket: str, key: str) -> None:
    assert len(key.encode()) <= 1024
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    assert key in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]]
    s3.delete_object(Bucket=bucket, Key=key)


def test_key_too_long(s3: Any, bucket: str) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x")
    assert error_code(caught.value) == "KeyTooLongError"


def test_bucket_lifecycle_errors(s3: Any) -> None:
    s3.create_bucket(Bucket="lifecycle")
    s3.create_bucket(Bucket="lifecycle")  # us-east-1 answers 200 when you already own it, as AWS does
    assert s3.get_bucket_versioning(Bucket="lifecycle").get("Status") is None
    s3.put_object(Bucket="lifecycle", Key="k", Body=b"x")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.delete_bucket(Bucket="lifecycle")
    assert error_code(caught.value) == "BucketNotEmpty"
    s3.delete_object(Bucket="lifecycle", Key="k")
    s3.delete_bucket(Bucket="lifecycle")
    assert "lifecycle" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


# --- bodies and addressing that boto3 over plain http never sends ------------------------------------

class _FixedPayloadAuth(botocore.auth.S3SigV4Auth):
    """SigV4 with a chosen x-amz-content-sha256 (the streaming modes of aws-chunked uploads)."""

    def __init__(self, credentials: botocore.credentials.Credentials, region: str, payload_hash: str) -> None:
        super().__init__(credentials, "s3", region)
        self._payload_hash = payload_hash

    def payload(self, request: botocore.awsrequest.AWSRequest) -> str:
        return self._payload_hash


def _send_raw(cluster: DevCluster, method: str, url: str, body: bytes, headers: dict[str, str],
              payload_hash: str) -> tuple[int, bytes, botocore.awsrequest.AWSRequest]:
    """Sign ``url`` (its host may be virtual) and send it to the cluster's address directly."""
    credentials = botocore.credentials.Credentials(cluster.access_key, cluster.secret_key)
    request = botocore.awsrequest.AWSRequest(method=method, url=url, data=body, headers=headers)
    _FixedPayloadAuth(credentials, cluster.region, payload_hash).add_auth(request)
    split = urllib.parse.urlsplit(url)
    endpoint = urllib.parse.urlsplit(cluster.endpoint)
    connection = http.client.HTTPConnection(str(endpoint.hostname), endpoint.port, timeout=30)
    try:
        target = split.path + (f"?{split.query}" if split.query else "")
        # The Host header is what was signed (SigV4 signs it), not the address we connect to.
        connection.request(method, target, body=body, headers={"Host": split.netloc, **request.headers})
        response = connection.getresponse()
        return response.status, response.read(), request
    finally:
        connection.close()


def _aws_chunked_unsigned(pieces: list[bytes], trailer: str) -> bytes:
    framed = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces)
    return framed + b"0\r\n" + trailer.encode() + b"\r\n\r\n"


def test_aws_chunked_unsigned_payload_with_trailing_checksum(cluster: DevCluster, s3: Any, bucket: str) -> None:
    pieces = [os.urandom(64 * 1024), os.urandom(1000), os.urandom(5 * MiB)]
    data = b"".join(pieces)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
               "x-amz-trailer": "x-amz-checksum-crc32"}
    url = f"{cluster.endpoint}/{bucket}/chunked-unsigned"
    status, body, _ = _send_raw(cluster, "PUT", url, _aws_chunked_unsigned(pieces, f"x-amz-checksum-crc32:{crc}"),
                                headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert status == 200, body
    got = s3.get_object(Bucket=bucket, Key="chunked-unsigned", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got["ChecksumCRC32"] == crc
    wrong = base64.b64encode(b"\x00\x00\x00\x01").decode()
    status, body, _ = _send_raw(cluster, "PUT", f"{url}-bad", _aws_chunked_unsigned(
        pieces, f"x-amz-checksum-crc32:{wrong}"), headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert status == 400 and b"BadDigest" in body
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="chunked-unsigned-bad")


def test_aws_chunked_signed_payload(cluster: DevCluster, s3: Any, bucket: str) -> None:
    pieces = [os.urandom(64 * 1024), os.urandom(64 * 1024), os.urandom(7)]
    data = b"".join(pieces)
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))}
    url = f"{cluster.endpoint}/{bucket}/chunked-signed"

    def framed(tamper: bool) -> tuple[int, bytes]:
        # The chunk signatures chain from the request's seed signature, so sign the headers first
        # with a placeholder body of the right length, then build the body from that signature.
        sizes = [len(p) for p in pieces] + [0]
        length = sum(len(f"{n:x};chunk-signature={'0' * 64}\r\n") + n + 2 for n in sizes)
        placeholder = b"\0" * length
        credentials = botocore.credentials.Credentials(cluster.access_key, cluster.secret_key)
        request = botocore.awsrequest.AWSRequest(method="PUT", url=url, data=placeholder, headers=headers)
        _FixedPayloadAuth(credentials, cluster.region, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD").add_auth(request)
        authorization = request.headers["Authorization"]
        previous = authorization.rsplit("Signature=", 1)[1]
        amz_date = request.headers["X-Amz-Date"]
        scope = authorization.split("Credential=", 1)[1].split(",", 1)[0].split("/", 1)[1]
        key = sigv4.signing_key(cluster.secret_key, amz_date[:8], cluster.region, "s3")
        body = b""
        for piece in [*pieces, b""]:
            signature = sigv4.chunk_signature(key, amz_date, scope, previous, hashlib.sha256(piece).hexdigest())
            sent = piece[:-1] + b"X" if tamper and piece else piece
            body += f"{len(piece):x};chunk-signature={signature}\r\n".encode() + sent + b"\r\n"
            previous = signature
        assert len(body) == length
        endpoint = urllib.parse.urlsplit(cluster.endpoint)
        connection = http.client.HTTPConnection(str(endpoint.hostname), endpoint.port, timeout=30)
        try:
            connection.request("PUT", urllib.parse.urlsplit(url).path, body=body,
                               headers=dict(request.headers.items()))
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    status, body = framed(tamper=False)
    assert status == 200, body
    assert s3.get_object(Bucket=bucket, Key="chunked-signed")["Body"].read() == data
    s3.delete_object(Bucket=bucket, Key="chunked-signed")
    status, body = framed(tamper=True)
    assert status == 403 and b"SignatureDoesNotMatch" in body
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="chunked-signed")


def test_virtual_hosted_style_addressing(cluster: DevCluster, s3: Any, bucket: str) -> None:
    port = urllib.parse.urlsplit(cluster.endpoint).port
    url = f"http://{bucket}.localhost:{port}/virtual/key"
    status, body, _ = _send_raw(cluster, "PUT", url, b"virtually", {}, hashlib.sha256(b"virtually").hexdigest())
    assert status == 200, body
    assert s3.get_object(Bucket=bucket, Key="virtual/key")["Body"].read() == b"virtually"
    status, body, _ = _send_raw(cluster, "GET", f"http://{bucket}.localhost:{port}/?list-type=2&prefix=virtual%2F",
                                b"", {}, hashlib.sha256(b"").hexdigest())
    assert status == 200, body
    assert b"<Key>virtual/key</Key>" in body
