"""Bucket-name and object-key validation.

Public API:
    validate_bucket_name(name: str) -> None   InvalidBucketName unless the S3 general purpose
                                              bucket naming rules hold
    validate_key(key: str) -> None            InvalidArgument (empty), KeyTooLongError (> 1024 bytes)
    MAX_KEY_BYTES = 1024

Sources: Amazon S3 User Guide, "General purpose bucket naming rules" and "Naming Amazon S3
objects" (keys are any UTF-8 sequence up to 1,024 bytes).
"""

from __future__ import annotations

import re

from frontend.s3.errors import InvalidArgument, InvalidBucketName, KeyTooLongError

__all__ = ["MAX_KEY_BYTES", "validate_bucket_name", "validate_key"]

MAX_KEY_BYTES = 1024
_BUCKET_SHAPE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
# Prefixes and suffixes AWS reserves for access points, Object Lambda, directory buckets, etc.
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def validate_bucket_name(name: str) -> None:
    """Raise InvalidBucketName unless ``name`` follows the general purpose bucket rules.

    Rules: 3-63 characters of lowercase letters, digits, ``.`` and ``-``; begins and ends with a
    letter or digit; no two adjacent periods; not formatted as an IPv4 address; none of the
    reserved prefixes (``xn--``, ``sthree-``, ``amzn-s3-demo-``) or suffixes (``-s3alias``,
    ``--ol-s3``, ``.mrap``, ``--x-s3``, ``--table-s3``).
    """
    if (
        not _BUCKET_SHAPE.fullmatch(name)
        or ".." in name
        or _IP_ADDRESS.fullmatch(name)
        or name.startswith(_RESERVED_PREFIXES)
        or name.endswith(_RESERVED_SUFFIXES)
    ):
        raise InvalidBucketName(bucket=name)


def validate_key(key: str) -> None:
    """Raise InvalidArgument for an empty key, KeyTooLongError for more than 1024 UTF-8 bytes.

    Any other content is allowed, including ``../``, ``//``, spaces, ``%`` and unicode: keys are
    opaque names, never file-system paths.
    """
    if not key:
        raise InvalidArgument("Object key must not be empty.", ArgumentName="key")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as error:  # lone surrogates cannot be stored as UTF-8
        raise InvalidArgument("Object key is not valid UTF-8.", ArgumentName="key") from error
    if size > MAX_KEY_BYTES:
        raise KeyTooLongError(Size=size, MaxSizeAllowed=MAX_KEY_BYTES)
