"""XML documents: built responses parse with botocore's own S3 parser; request parsing is hardened."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote_plus
from xml.etree import ElementTree

import botocore.session
import pytest
from botocore.handlers import parse_get_bucket_location
from botocore.parsers import create_parser

from frontend.s3 import errors, xml
from tests.unit.frontend.s3 import botocore_requests as boto

MODEL = botocore.session.get_session().get_service_model("s3")
WHEN = 1_795_000_000.25
WEIRD_KEY = 'a&b<c>"d\'/é/../%20 +'


def parse(operation: str, body: bytes, status: int = 200) -> dict[str, Any]:
    """Parse a response exactly as boto3 would."""
    shape = MODEL.operation_model(operation).output_shape
    result: dict[str, Any] = create_parser("rest-xml").parse(
        {"body": body, "headers": {}, "status_code": status}, shape)
    return result


def test_list_buckets() -> None:
    body = xml.list_all_my_buckets_result(owner_id="owner", owner_name="Owner & co",
                                          buckets=[("alpha", WHEN), ("beta", "2026-01-01T00:00:00.000Z")])
    parsed = parse("ListBuckets", body)
    assert [bucket["Name"] for bucket in parsed["Buckets"]] == ["alpha", "beta"]
    assert parsed["Buckets"][0]["CreationDate"] == datetime.fromtimestamp(WHEN, UTC)
    assert parsed["Owner"] == {"ID": "owner", "DisplayName": "Owner & co"}
    assert b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"' in body


def test_list_objects_v2() -> None:
    objects = [xml.ListedObject(key=WEIRD_KEY, last_modified=WHEN, etag='"abc"', size=5),
               xml.ListedObject(key="plain", last_modified=WHEN, etag="def-2", size=0)]
    body = xml.list_bucket_result_v2(
        bucket="bkt", prefix="", delimiter="/", max_keys=2, objects=objects, common_prefixes=["dir/"],
        is_truncated=True, continuation_token="tok", next_continuation_token="next+/=", start_after="s",
        fetch_owner=True, owner_id="me")
    parsed = parse("ListObjectsV2", body)
    assert [item["Key"] for item in parsed["Contents"]] == [WEIRD_KEY, "plain"]
    assert [item["ETag"] for item in parsed["Contents"]] == ['"abc"', '"def-2"']
    assert parsed["Contents"][0]["Owner"]["ID"] == "me"
    assert parsed["KeyCount"] == 3 and parsed["IsTruncated"] is True and parsed["MaxKeys"] == 2
    assert parsed["NextContinuationToken"] == "next+/="
    assert parsed["ContinuationToken"] == "tok" and parsed["StartAfter"] == "s"
    assert parsed["CommonPrefixes"] == [{"Prefix": "dir/"}]
    assert parsed["Contents"][0]["LastModified"] == datetime.fromtimestamp(WHEN, UTC)


def test_list_objects_v2_url_encoding_carries_any_key() -> None:
    key = "ctrl\x01char and+plus/é"
    body = xml.list_bucket_result_v2(
        bucket="bkt", prefix="ctrl\x01", delimiter="", max_keys=1000,
        objects=[xml.ListedObject(key=key, last_modified=WHEN, etag="e", size=1)], common_prefixes=[],
        is_truncated=False, encoding_type="url")
    parsed = parse("ListObjectsV2", body)
    assert parsed["EncodingType"] == "url"
    # botocore's decode_list_object_v2 handler applies unquote_plus for EncodingType=url.
    assert unquote_plus(parsed["Contents"][0]["Key"]) == key
    assert unquote_plus(parsed["Prefix"]) == "ctrl\x01"


def test_list_objects_v1() -> None:
    body = xml.list_bucket_result_v1(
        bucket="bkt", prefix="p", delimiter="/", max_keys=1, marker="m",
        objects=[xml.ListedObject(key="p1", last_modified=WHEN, etag="e", size=3)],
        common_prefixes=["p/"], is_truncated=True, next_marker="p/", owner_id="me")
    parsed = parse("ListObjects", body)
    assert parsed["Marker"] == "m" and parsed["NextMarker"] == "p/"
    assert parsed["Contents"][0]["Owner"]["ID"] == "me"
    assert parsed["Contents"][0]["Size"] == 3


def test_multipart_documents() -> None:
    parsed = parse("CreateMultipartUpload", xml.initiate_multipart_upload_result("bkt", WEIRD_KEY, "up-1"))
    assert parsed["Key"] == WEIRD_KEY and parsed["UploadId"] == "up-1"

    body = xml.complete_multipart_upload_result(location="http://h/bkt/k", bucket="bkt", key="k",
                                                etag='"abc-2"', checksums={"ChecksumCRC32": "AAAAAA==-2"},
                                                checksum_type="COMPOSITE")
    parsed = parse("CompleteMultipartUpload", body)
    assert parsed["ETag"] == '"abc-2"' and parsed["ChecksumCRC32"] == "AAAAAA==-2"
    assert parsed["ChecksumType"] == "COMPOSITE"

    body = xml.list_parts_result(
        bucket="bkt", key="k", upload_id="u", part_number_marker=0, next_part_number_marker=2, max_parts=2,
        is_truncated=True, owner_id="me", checksum_algorithm="SHA256",
        parts=[xml.ListedPart(part_number=1, last_modified=WHEN, etag="e1", size=5 << 20,
                              checksums={"SHA256": "x" * 43 + "="}),
               xml.ListedPart(part_number=2, last_modified=WHEN, etag='"e2"', size=1)])
    parsed = parse("ListParts", body)
    assert [part["PartNumber"] for part in parsed["Parts"]] == [1, 2]
    assert parsed["Parts"][0]["Size"] == 5 << 20 and parsed["Parts"][0]["ChecksumSHA256"] == "x" * 43 + "="
    assert parsed["NextPartNumberMarker"] == 2 and parsed["IsTruncated"] is True

    body = xml.list_multipart_uploads_result(
        bucket="bkt", prefix="", key_marker="", upload_id_marker="", next_key_marker="k",
        next_upload_id_marker="u", max_uploads=1, is_truncated=True,
        uploads=[xml.ListedUpload(key="k", upload_id="u", initiated=WHEN, owner_id="me")])
    parsed = parse("ListMultipartUploads", body)
    assert parsed["Uploads"][0]["UploadId"] == "u"
    assert parsed["Uploads"][0]["Initiated"] == datetime.fromtimestamp(WHEN, UTC)
    assert parsed["NextUploadIdMarker"] == "u"


def test_copy_delete_location_versioning() -> None:
    parsed = parse("CopyObject", xml.copy_object_result("abc", WHEN))
    assert parsed["CopyObjectResult"]["ETag"] == '"abc"'
    parsed = parse("UploadPartCopy", xml.copy_part_result('"abc"', WHEN, {"CRC32": "AAAAAA=="}))
    assert parsed["CopyPartResult"]["ChecksumCRC32"] == "AAAAAA=="
    parsed = parse("DeleteObjects", xml.delete_result(["a", WEIRD_KEY], [("c", "AccessDenied", "no")]))
    assert [item["Key"] for item in parsed["Deleted"]] == ["a", WEIRD_KEY]
    assert parsed["Errors"] == [{"Key": "c", "Code": "AccessDenied", "Message": "no"}]
    location: dict[str, Any] = {}
    parse_get_bucket_location(location, SimpleNamespace(raw=True, content=xml.location_constraint("eu-west-1")))
    assert location["LocationConstraint"] == "eu-west-1"
    assert "Status" not in parse("GetBucketVersioning", xml.versioning_configuration())


def test_iso8601() -> None:
    assert xml.iso8601(0) == "1970-01-01T00:00:00.000Z"
    assert xml.iso8601(1.9996) == "1970-01-01T00:00:02.000Z"
    assert xml.iso8601(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)) == "2026-01-02T03:04:05.678Z"


def test_error_documents_parse_as_boto3_errors() -> None:
    error = errors.NoSuchKey(key=WEIRD_KEY, resource="/bkt/k")
    parsed = parse("GetObject", error.to_xml("REQ123"), status=404)
    assert parsed["Error"]["Code"] == "NoSuchKey"
    assert parsed["Error"]["Key"] == WEIRD_KEY
    assert ElementTree.fromstring(error.to_xml("REQ123")).findtext("RequestId") == "REQ123"
    mismatch = errors.SignatureDoesNotMatch(StringToSign="AWS4-HMAC-SHA256\n<x>", CanonicalRequest="GET\n/")
    parsed = parse("PutObject", mismatch.to_xml("R"), status=403)
    assert parsed["Error"]["StringToSign"] == "AWS4-HMAC-SHA256\n<x>"
    assert mismatch.status == 403
    assert errors.ERROR_CLASSES["SlowDown"].status == 503
    assert all(cls.__name__ == code for code, cls in errors.ERROR_CLASSES.items())


# ----------------------------------------------------------------------------- request parsing


def test_parse_boto3_complete_multipart_upload() -> None:
    s3 = boto.client()
    request = boto.capture(lambda: s3.complete_multipart_upload(
        Bucket="bkt", Key="k", UploadId="u", MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": '"e1"', "ChecksumCRC32C": "AAAAAA=="},
            {"PartNumber": 2, "ETag": '"e2"'}]}))
    assert xml.parse_complete_multipart_upload(request.body) == [
        (1, '"e1"', {"CRC32C": "AAAAAA=="}), (2, '"e2"', {})]


def test_parse_boto3_delete_and_create_bucket() -> None:
    s3 = boto.client()
    request = boto.capture(lambda: s3.delete_objects(Bucket="bkt", Delete={
        "Objects": [{"Key": WEIRD_KEY}, {"Key": "b"}], "Quiet": True}))
    assert xml.parse_delete(request.body) == ([WEIRD_KEY, "b"], True)
    request = boto.capture(lambda: s3.create_bucket(
        Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}))
    assert xml.parse_create_bucket_configuration(request.body) == "eu-west-1"
    assert xml.parse_create_bucket_configuration(b"<CreateBucketConfiguration/>") == ""


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Delete><Object><Key>&lol3;</Key></Object></Delete>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><Delete><Object><Key>&x;</Key></Object></Delete>"""


@pytest.mark.parametrize("body", [
    BILLION_LAUGHS,
    EXTERNAL_ENTITY,
    b'<!DOCTYPE Delete SYSTEM "http://127.0.0.1:1/x.dtd"><Delete><Object><Key>k</Key></Object></Delete>',
    b"<Delete><Object><Key>k</Key></Object>",
    b"",
    b"not xml",
    b"<Other><Object><Key>k</Key></Object></Other>",
    b"<Delete></Delete>",
    b"<Delete><Object></Object></Delete>",
    b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>",
    b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",
    b"<Delete><Object><Key>" + b"k" * (xml.MAX_DOCUMENT_BYTES + 1) + b"</Key></Object></Delete>",
])
def test_hostile_or_malformed_delete(body: bytes) -> None:
    with pytest.raises(errors.MalformedXML):
        xml.parse_delete(body)


@pytest.mark.parametrize("body, error", [
    (b"<CompleteMultipartUpload></CompleteMultipartUpload>", errors.MalformedXML),
    (b"<CompleteMultipartUpload><Part><ETag>e</ETag></Part></CompleteMultipartUpload>", errors.MalformedXML),
    (b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>e</ETag></Part>"
     b"</CompleteMultipartUpload>", errors.MalformedXML),
    (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
     errors.MalformedXML),
    (b"<CompleteMultipartUpload><Part><PartNumber>10001</PartNumber><ETag>e</ETag></Part>"
     b"</CompleteMultipartUpload>", errors.InvalidArgument),
    (BILLION_LAUGHS.replace(b"Delete", b"CompleteMultipartUpload"), errors.MalformedXML),
])
def test_malformed_complete_multipart_upload(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        xml.parse_complete_multipart_upload(body)


def test_namespaced_request_documents() -> None:
    body = (b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part>'
            b"<PartNumber> 3 </PartNumber><ETag>&quot;e&quot;</ETag></Part></CompleteMultipartUpload>")
    assert xml.parse_complete_multipart_upload(body) == [(3, '"e"', {})]
