"""Coffer's metadata index: buckets, objects, chunk lists and reference counts, multipart uploads
and S3 access keys, behind the `MetadataStore` interface (`SqliteMetadataStore` is the embedded
implementation). Imports nothing of Coffer's but `common`."""

from metadata.records import (
    AccessKey,
    AccessKeyAlreadyExists,
    AccessKeyNotFound,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    BucketRecord,
    ChunkRef,
    InvalidPart,
    ListResult,
    MetadataError,
    MultipartUpload,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    ObjectRecord,
    ObjectSummary,
    PartRecord,
    PreconditionFailed,
    WriteCondition,
    ZeroRefcountChunk,
)
from metadata.sqlite_store import SqliteMetadataStore
from metadata.store import MetadataStore

__all__ = [
    "AccessKey",
    "AccessKeyAlreadyExists",
    "AccessKeyNotFound",
    "BucketAlreadyExists",
    "BucketAlreadyOwnedByYou",
    "BucketNotEmpty",
    "BucketRecord",
    "ChunkRef",
    "InvalidPart",
    "ListResult",
    "MetadataError",
    "MetadataStore",
    "MultipartUpload",
    "NoSuchBucket",
    "NoSuchKey",
    "NoSuchUpload",
    "ObjectRecord",
    "ObjectSummary",
    "PartRecord",
    "PreconditionFailed",
    "SqliteMetadataStore",
    "WriteCondition",
    "ZeroRefcountChunk",
]
