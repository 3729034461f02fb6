"""S3 XML documents: response builders (bytes out) and hardened request parsers.

Public API (builders return UTF-8 bytes with the S3 namespace, values escaped; the list_*_result
and complete_multipart_upload_result builders take keyword arguments only):
    ListedObject(key, last_modified, etag, size, storage_class="STANDARD", owner_id=None)
    ListedPart(part_number, last_modified, etag, size, checksums={})
    ListedUpload(key, upload_id, initiated, owner_id="", storage_class="STANDARD")
    list_all_my_buckets_result(owner_id, owner_name, buckets: Iterable[(name, created)])
    list_bucket_result_v2(bucket, prefix, delimiter, max_keys, objects, common_prefixes,
        is_truncated, continuation_token=None, next_continuation_token=None, start_after=None,
        encoding_type=None, fetch_owner=False, owner_id="")
    list_bucket_result_v1(bucket, prefix, delimiter, max_keys, marker, objects, common_prefixes,
        is_truncated, next_marker=None, encoding_type=None, owner_id="")
    initiate_multipart_upload_result(bucket, key, upload_id)
    complete_multipart_upload_result(location, bucket, key, etag, checksums={}, checksum_type=None)
    list_parts_result(bucket, key, upload_id, part_number_marker, next_part_number_marker,
        max_parts, is_truncated, parts, owner_id="", checksum_algorithm=None, storage_class="STANDARD")
    list_multipart_uploads_result(bucket, prefix, key_marker, upload_id_marker, next_key_marker,
        next_upload_id_marker, max_uploads, is_truncated, uploads, delimiter="", common_prefixes=(),
        encoding_type=None)
    copy_object_result(etag, last_modified, checksums={}), copy_part_result(etag, last_modified, checksums={})
    delete_result(deleted: Iterable[str], errors: Iterable[(key, code, message)])
    location_constraint(region: str), versioning_configuration()
    iso8601(value: float | str | datetime) -> str     "2026-11-22T05:30:00.000Z"
  Parsers (defusedxml; MalformedXML on anything malformed, hostile or over MAX_DOCUMENT_BYTES):
    parse_complete_multipart_upload(body) -> list[(part_number, etag, {algorithm: base64})]
    parse_delete(body) -> (keys: list[str], quiet: bool)
    parse_create_bucket_configuration(body) -> str    location constraint, "" when absent

Timestamps (``last_modified``, ``created``, ``initiated``) may be unix seconds, datetimes or
already formatted strings. ``checksums`` maps XML element names (``ChecksumCRC32``...) or algorithm
names (``CRC32``...) to base64 values. Source: Amazon S3 API Reference, the Response Syntax /
Request Syntax of each operation; "encoding-type=url" semantics from ListObjectsV2.
"""

from __future__ import annotations

import datetime as _datetime
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as safe_tree
from defusedxml import DefusedXmlException

from frontend.s3.errors import InvalidArgument, MalformedXML

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "S3_NAMESPACE",
    "ListedObject",
    "ListedPart",
    "ListedUpload",
    "complete_multipart_upload_result",
    "copy_object_result",
    "copy_part_result",
    "delete_result",
    "initiate_multipart_upload_result",
    "iso8601",
    "list_all_my_buckets_result",
    "list_bucket_result_v1",
    "list_bucket_result_v2",
    "list_multipart_uploads_result",
    "list_parts_result",
    "location_constraint",
    "parse_complete_multipart_upload",
    "parse_create_bucket_configuration",
    "parse_delete",
    "versioning_configuration",
]

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024  # 10,000 parts or 1,000 keys of 1 KiB fit comfortably
MAX_PART_NUMBER = 10_000
MAX_DELETE_KEYS = 1000
_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
_CHECKSUM_ELEMENTS = ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1",
                      "ChecksumSHA256")
# Characters XML 1.0 cannot carry literally; S3 writes them as character references.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


# ----------------------------------------------------------------------------- building


def _escape(value: object) -> str:
    text = str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    text = text.replace("\r", "&#13;")  # keep CR: a raw one would be normalized away by parsers
    return _CONTROL.sub(lambda match: f"&#{ord(match.group()):d};", text)


def _element(name: str, value: object) -> str:
    return f"<{name}>{_escape(value)}</{name}>"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _document(root: str, body: Iterable[str]) -> bytes:
    return (f'{_DECLARATION}<{root} xmlns="{S3_NAMESPACE}">' + "".join(body) + f"</{root}>").encode("utf-8")


def iso8601(value: float | str | _datetime.datetime) -> str:
    """S3's timestamp form, UTC with milliseconds: ``2026-11-22T05:30:00.000Z``.

    Accepts unix seconds, an aware datetime (naive = UTC) or a string (returned unchanged).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, _datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=_datetime.UTC)
        value = moment.timestamp()
    whole = int(value // 1)
    millis = round((value - whole) * 1000)
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def _etag(value: str) -> str:
    """ETags are always sent quoted."""
    return value if value.startswith('"') else f'"{value}"'


def _url(value: str, encoding_type: str | None) -> str:
    """``encoding-type=url``: percent-encode names (``/`` kept) so any byte survives XML."""
    return quote(value, safe="/") if encoding_type == "url" else value


def _checksum_elements(checksums: Mapping[str, str]) -> list[str]:
    out = []
    for name, value in checksums.items():
        element = name if name.startswith("Checksum") else f"Checksum{name.upper()}"
        if element in _CHECKSUM_ELEMENTS:
            out.append(_element(element, value))
    return out


def _owner(owner_id: str, display_name: str | None = None) -> str:
    return (f"<Owner>{_element('ID', owner_id)}"
            f"{_element('DisplayName', display_name if display_name is not None else owner_id)}</Owner>")


@dataclass(frozen=True)
class ListedObject:
    """One ``<Contents>`` entry of a listing; ``size`` in bytes."""

    key: str
    last_modified: float | str | _datetime.datetime
    etag: str
    size: int
    storage_class: str = "STANDARD"
    owner_id: str | None = None


@dataclass(frozen=True)
class ListedPart:
    """One ``<Part>`` of ListParts; ``size`` in bytes; ``checksums`` element/algorithm -> base64."""

    part_number: int
    last_modified: float | str | _datetime.datetime
    etag: str
    size: int
    checksums: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ListedUpload:
    """One ``<Upload>`` of ListMultipartUploads."""

    key: str
    upload_id: str
    initiated: float | str | _datetime.datetime
    owner_id: str = ""
    storage_class: str = "STANDARD"


def list_all_my_buckets_result(owner_id: str, owner_name: str,
                               buckets: Iterable[tuple[str, float | str | _datetime.datetime]]) -> bytes:
    """ListBuckets response; ``buckets`` are (name, creation time)."""
    entries = "".join(f"<Bucket>{_element('Name', name)}{_element('CreationDate', iso8601(created))}</Bucket>"
                      for name, created in buckets)
    return _document("ListAllMyBucketsResult",
                     [_owner(owner_id, owner_name), f"<Buckets>{entries}</Buckets>"])


def _contents(objects: Iterable[ListedObject], encoding_type: str | None, with_owner: bool,
              owner_id: str) -> list[str]:
    out = []
    for item in objects:
        owner = _owner(item.owner_id or owner_id) if with_owner else ""
        out.append(f"<Contents>{_element('Key', _url(item.key, encoding_type))}"
                   f"{_element('LastModified', iso8601(item.last_modified))}"
                   f"{_element('ETag', _etag(item.etag))}{_element('Size', item.size)}{owner}"
                   f"{_element('StorageClass', item.storage_class)}</Contents>")
    return out


def _common_prefixes(prefixes: Iterable[str], encoding_type: str | None) -> list[str]:
    return [f"<CommonPrefixes>{_element('Prefix', _url(prefix, encoding_type))}</CommonPrefixes>"
            for prefix in prefixes]


def list_bucket_result_v2(
    *,
    bucket: str,
    prefix: str,
    delimiter: str,
    max_keys: int,
    objects: Iterable[ListedObject],
    common_prefixes: Iterable[str],
    is_truncated: bool,
    continuation_token: str | None = None,
    next_continuation_token: str | None = None,
    start_after: str | None = None,
    encoding_type: str | None = None,
    fetch_owner: bool = False,
    owner_id: str = "",
) -> bytes:
    """ListObjectsV2 response. KeyCount counts Contents plus CommonPrefixes. With
    ``encoding_type="url"`` Key, Prefix, Delimiter, StartAfter and CommonPrefixes are URL-encoded."""
    objects = list(objects)
    common_prefixes = list(common_prefixes)
    body = [_element("Name", bucket), _element("Prefix", _url(prefix, encoding_type))]
    if delimiter:
        body.append(_element("Delimiter", _url(delimiter, encoding_type)))
    body.append(_element("MaxKeys", max_keys))
    if encoding_type:
        body.append(_element("EncodingType", encoding_type))
    body.append(_element("KeyCount", len(objects) + len(common_prefixes)))
    body.append(_element("IsTruncated", _bool(is_truncated)))
    if continuation_token is not None:
        body.append(_element("ContinuationToken", continuation_token))
    if next_continuation_token is not None:
        body.append(_element("NextContinuationToken", next_continuation_token))
    if start_after:
        body.append(_element("StartAfter", _url(start_after, encoding_type)))
    body.extend(_contents(objects, encoding_type, fetch_owner, owner_id))
    body.extend(_common_prefixes(common_prefixes, encoding_type))
    return _document("ListBucketResult", body)


def list_bucket_result_v1(
    *,
    bucket: str,
    prefix: str,
    delimiter: str,
    max_keys: int,
    marker: str,
    objects: Iterable[ListedObject],
    common_prefixes: Iterable[str],
    is_truncated: bool,
    next_marker: str | None = None,
    encoding_type: str | None = None,
    owner_id: str = "",
) -> bytes:
    """ListObjects (version 1) response; Owner is always listed, as S3 does for V1."""
    body = [_element("Name", bucket), _element("Prefix", _url(prefix, encoding_type)),
            _element("Marker", _url(marker, encoding_type))]
    if next_marker is not None:
        body.append(_element("NextMarker", _url(next_marker, encoding_type)))
    if delimiter:
        body.append(_element("Delimiter", _url(delimiter, encoding_type)))
    body.append(_element("MaxKeys", max_keys))
    if encoding_type:
        body.append(_element("EncodingType", encoding_type))
    body.append(_element("IsTruncated", _bool(is_truncated)))
    body.extend(_contents(objects, encoding_type, True, owner_id))
    body.extend(_common_prefixes(common_prefixes, encoding_type))
    return _document("ListBucketResult", body)


def initiate_multipart_upload_result(bucket: str, key: str, upload_id: str) -> bytes:
    """CreateMultipartUpload response."""
    return _document("InitiateMultipartUploadResult",
                     [_element("Bucket", bucket), _element("Key", key), _element("UploadId", upload_id)])


def complete_multipart_upload_result(*, location: str, bucket: str, key: str, etag: str,
                                      checksums: Mapping[str, str] | None = None,
                                      checksum_type: str | None = None) -> bytes:
    """CompleteMultipartUpload response (ETag quoted, optional ChecksumXXX and ChecksumType)."""
    body = [_element("Location", location), _element("Bucket", bucket), _element("Key", key),
            _element("ETag", _etag(etag))]
    body.extend(_checksum_elements(checksums or {}))
    if checksum_type:
        body.append(_element("ChecksumType", checksum_type))
    return _document("CompleteMultipartUploadResult", body)


def list_parts_result(
    *,
    bucket: str,
    key: str,
    upload_id: str,
    part_number_marker: int,
    next_part_number_marker: int,
    max_parts: int,
    is_truncated: bool,
    parts: Iterable[ListedPart],
    owner_id: str = "",
    checksum_algorithm: str | None = None,
    storage_class: str = "STANDARD",
) -> bytes:
    """ListParts response."""
    body = [_element("Bucket", bucket), _element("Key", key), _element("UploadId", upload_id),
            _element("PartNumberMarker", part_number_marker),
            _element("NextPartNumberMarker", next_part_number_marker), _element("MaxParts", max_parts),
            _element("IsTruncated", _bool(is_truncated))]
    if checksum_algorithm:
        body.append(_element("ChecksumAlgorithm", checksum_algorithm))
    body.append(_owner(owner_id))
    body.append(f"<Initiator>{_element('ID', owner_id)}{_element('DisplayName', owner_id)}</Initiator>")
    body.append(_element("StorageClass", storage_class))
    for part in parts:
        body.append(f"<Part>{_element('PartNumber', part.part_number)}"
                    f"{_element('LastModified', iso8601(part.last_modified))}"
                    f"{_element('ETag', _etag(part.etag))}{_element('Size', part.size)}"
                    + "".join(_checksum_elements(part.checksums)) + "</Part>")
    return _document("ListPartsResult", body)


def list_multipart_uploads_result(
    *,
    bucket: str,
    prefix: str,
    key_marker: str,
    upload_id_marker: str,
    next_key_marker: str,
    next_upload_id_marker: str,
    max_uploads: int,
    is_truncated: bool,
    uploads: Iterable[ListedUpload],
    delimiter: str = "",
    common_prefixes: Iterable[str] = (),
    encoding_type: str | None = None,
) -> bytes:
    """ListMultipartUploads response."""
    body = [_element("Bucket", bucket), _element("KeyMarker", _url(key_marker, encoding_type)),
            _element("UploadIdMarker", upload_id_marker),
            _element("NextKeyMarker", _url(next_key_marker, encoding_type)),
            _element("NextUploadIdMarker", next_upload_id_marker),
            _element("Prefix", _url(prefix, encoding_type))]
    if delimiter:
        body.append(_element("Delimiter", _url(delimiter, encoding_type)))
    body.append(_element("MaxUploads", max_uploads))
    if encoding_type:
        body.append(_element("EncodingType", encoding_type))
    body.append(_element("IsTruncated", _bool(is_truncated)))
    for upload in uploads:
        body.append(f"<Upload>{_element('Key', _url(upload.key, encoding_type))}"
                    f"{_element('UploadId', upload.upload_id)}"
                    f"<Initiator>{_element('ID', upload.owner_id)}{_element('DisplayName', upload.owner_id)}"
                    f"</Initiator>{_owner(upload.owner_id)}{_element('StorageClass', upload.storage_class)}"
                    f"{_element('Initiated', iso8601(upload.initiated))}</Upload>")
    body.extend(_common_prefixes(common_prefixes, encoding_type))
    return _document("ListMultipartUploadsResult", body)


def copy_object_result(etag: str, last_modified: float | str | _datetime.datetime,
                       checksums: Mapping[str, str] | None = None) -> bytes:
    """CopyObject response."""
    body = [_element("ETag", _etag(etag)), _element("LastModified", iso8601(last_modified))]
    body.extend(_checksum_elements(checksums or {}))
    return _document("CopyObjectResult", body)


def copy_part_result(etag: str, last_modified: float | str | _datetime.datetime,
                     checksums: Mapping[str, str] | None = None) -> bytes:
    """UploadPartCopy response."""
    body = [_element("ETag", _etag(etag)), _element("LastModified", iso8601(last_modified))]
    body.extend(_checksum_elements(checksums or {}))
    return _document("CopyPartResult", body)


def delete_result(deleted: Iterable[str], errors: Iterable[tuple[str, str, str]]) -> bytes:
    """DeleteObjects response: ``<Deleted><Key/></Deleted>`` per key, ``<Error>`` per failure
    given as (key, code, message)."""
    body = [f"<Deleted>{_element('Key', key)}</Deleted>" for key in deleted]
    body.extend(f"<Error>{_element('Key', key)}{_element('Code', code)}{_element('Message', message)}</Error>"
                for key, code, message in errors)
    return _document("DeleteResult", body)


def location_constraint(region: str) -> bytes:
    """GetBucketLocation response; AWS answers an empty element for us-east-1 (caller's choice)."""
    return (f'{_DECLARATION}<LocationConstraint xmlns="{S3_NAMESPACE}">{_escape(region)}'
            "</LocationConstraint>").encode()


def versioning_configuration() -> bytes:
    """GetBucketVersioning response for a bucket that never had versioning: an empty document."""
    return _document("VersioningConfiguration", [])


# ----------------------------------------------------------------------------- parsing


def _parse(body: bytes | bytearray | memoryview, root_name: str) -> Element:
    """Parse a request document with defusedxml (no DTDs, entities or external references)."""
    if len(body) > MAX_DOCUMENT_BYTES:
        raise MalformedXML("The XML you provided was larger than the maximum allowed size.")
    try:
        root = safe_tree.fromstring(bytes(body), forbid_dtd=True, forbid_entities=True,
                                    forbid_external=True)
    except (DefusedXmlException, SyntaxError, ValueError) as error:  # ParseError is a SyntaxError
        raise MalformedXML() from error
    if _local(root.tag) != root_name:
        raise MalformedXML()
    return root


def _local(tag: Any) -> str:
    """Element name without its namespace (clients send the S3 namespace or none)."""
    return str(tag).rpartition("}")[2]


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: Element, name: str) -> str | None:
    found = _children(element, name)
    if len(found) > 1:
        raise MalformedXML()
    if not found:
        return None
    return found[0].text or ""


def parse_complete_multipart_upload(
        body: bytes | bytearray | memoryview) -> list[tuple[int, str, dict[str, str]]]:
    """CompleteMultipartUpload request -> [(part_number, etag, {algorithm: base64 checksum})].

    ``etag`` is returned as sent (quotes and all); algorithms are CRC32, CRC32C, CRC64NVME, SHA1,
    SHA256. Order is preserved (the caller checks it: InvalidPartOrder). Raises MalformedXML
    (not well formed, hostile, no parts, part number outside 1..10000, missing ETag).
    """
    root = _parse(body, "CompleteMultipartUpload")
    parts: list[tuple[int, str, dict[str, str]]] = []
    for part in _children(root, "Part"):
        number_text = _text(part, "PartNumber")
        etag = _text(part, "ETag")
        if number_text is None or etag is None or not number_text.strip().isdigit():
            raise MalformedXML()
        number = int(number_text.strip())
        if not 1 <= number <= MAX_PART_NUMBER:
            raise InvalidArgument("Part number must be an integer between 1 and 10000, inclusive",
                                  ArgumentName="PartNumber", ArgumentValue=number)
        checksums = {}
        for element in _CHECKSUM_ELEMENTS:
            value = _text(part, element)
            if value is not None:
                checksums[element.removeprefix("Checksum")] = value.strip()
        parts.append((number, etag.strip(), checksums))
    if not parts or len(parts) > MAX_PART_NUMBER:
        raise MalformedXML()
    return parts


def parse_delete(body: bytes | bytearray | memoryview) -> tuple[list[str], bool]:
    """DeleteObjects request -> (keys in order, quiet). Raises MalformedXML (not well formed,
    hostile, no objects, more than 1000 objects, an Object without Key)."""
    root = _parse(body, "Delete")
    quiet_text = _text(root, "Quiet")
    quiet = quiet_text is not None and quiet_text.strip().lower() == "true"
    keys: list[str] = []
    for item in _children(root, "Object"):
        key = _text(item, "Key")
        if key is None:
            raise MalformedXML()
        keys.append(key)
    if not keys or len(keys) > MAX_DELETE_KEYS:
        raise MalformedXML()
    return keys, quiet


def parse_create_bucket_configuration(body: bytes | bytearray | memoryview) -> str:
    """CreateBucketConfiguration request -> its LocationConstraint ("" when absent).
    Raises MalformedXML."""
    root = _parse(body, "CreateBucketConfiguration")
    return (_text(root, "LocationConstraint") or "").strip()
