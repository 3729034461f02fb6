"""S3 error codes as exceptions, rendered as the AWS error document.

Public API:
    S3Error(message=None, *, resource=None, bucket=None, key=None, **extra)
        .code: str, .status: int (HTTP status), .message: str,
        .resource, .bucket, .key: str | None, .extra: dict[str, str]
        .to_xml(request_id: str) -> bytes
    One subclass per AWS error code, named after the code (AccessDenied, NoSuchKey, ...).
    ERROR_CLASSES: dict[str, type[S3Error]] (code -> class).

Source: Amazon S3 API Reference, "Error responses" (list of error codes, HTTP status codes and the
``<Error><Code/><Message/><Resource/><RequestId/></Error>`` document). A ``HEAD`` response carries
no body; the caller decides whether to send ``to_xml()``.
"""

from __future__ import annotations


def _escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` for XML character data."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

__all__ = ["ERROR_CLASSES", "S3Error"]


class S3Error(Exception):
    """An S3 API error: an AWS error code, its HTTP status and a message.

    Args:
        message: human-readable text; defaults to the class's AWS message.
        resource: the resource named in the document (e.g. ``/bucket/key``).
        bucket, key: rendered as ``<BucketName>`` / ``<Key>`` when set (as AWS does for
            NoSuchBucket / NoSuchKey).
        extra: further elements rendered in order, e.g. ``StringToSign=...`` for
            SignatureDoesNotMatch; values are converted with ``str()``.
    """

    code: str = "InternalError"
    status: int = 500
    message: str = "We encountered an internal error. Please try again."

    def __init__(
        self,
        message: str | None = None,
        *,
        resource: str | None = None,
        bucket: str | None = None,
        key: str | None = None,
        **extra: object,
    ) -> None:
        self.message = message if message is not None else type(self).message
        self.resource = resource
        self.bucket = bucket
        self.key = key
        self.extra: dict[str, str] = {name: str(value) for name, value in extra.items()}
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def to_xml(self, request_id: str) -> bytes:
        """Render the AWS error document as UTF-8 bytes.

        ``<?xml version="1.0" encoding="UTF-8"?><Error><Code>..</Code><Message>..</Message>
        [<BucketName/>][<Key/>][<Resource/>][extra...]<RequestId>..</RequestId></Error>``.
        """
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
            f"<Code>{_escape(self.code)}</Code>",
            f"<Message>{_escape(self.message)}</Message>",
        ]
        if self.bucket is not None:
            parts.append(f"<BucketName>{_escape(self.bucket)}</BucketName>")
        if self.key is not None:
            parts.append(f"<Key>{_escape(self.key)}</Key>")
        if self.resource is not None:
            parts.append(f"<Resource>{_escape(self.resource)}</Resource>")
        for name, value in self.extra.items():
            parts.append(f"<{name}>{_escape(value)}</{name}>")
        parts.append(f"<RequestId>{_escape(request_id)}</RequestId></Error>")
        return "".join(parts).encode("utf-8")


class AccessDenied(S3Error):
    """403: access denied; also expired presigned URLs ("Request has expired") as AWS does."""

    code, status, message = "AccessDenied", 403, "Access Denied"


class InvalidAccessKeyId(S3Error):
    """403: the access key id is not known."""

    code, status = "InvalidAccessKeyId", 403
    message = "The AWS Access Key Id you provided does not exist in our records."


class SignatureDoesNotMatch(S3Error):
    """403: the computed signature differs from the one sent."""

    code, status = "SignatureDoesNotMatch", 403
    message = ("The request signature we calculated does not match the signature you provided. "
               "Check your key and signing method.")


class RequestTimeTooSkewed(S3Error):
    """403: the request time is too far from the server's clock (15 minutes)."""

    code, status = "RequestTimeTooSkewed", 403
    message = "The difference between the request time and the current time is too large."


class ExpiredToken(S3Error):
    """400: the provided token has expired (temporary credentials)."""

    code, status, message = "ExpiredToken", 400, "The provided token has expired."


class MissingSecurityHeader(S3Error):
    """400: a required header is missing."""

    code, status, message = "MissingSecurityHeader", 400, "Your request is missing a required header."


class AuthorizationHeaderMalformed(S3Error):
    """400: the Authorization header cannot be parsed or names a wrong scope."""

    code, status, message = ("AuthorizationHeaderMalformed", 400,
                             "The authorization header you provided is invalid.")


class AuthorizationQueryParametersError(S3Error):
    """400: the presigned-URL query parameters are malformed."""

    code, status = "AuthorizationQueryParametersError", 400
    message = "Error parsing the X-Amz-Credential parameter."


class BadDigest(S3Error):
    """400: Content-MD5 or x-amz-checksum-* did not match the body."""

    code, status, message = "BadDigest", 400, "The Content-MD5 you specified did not match what we received."


class InvalidDigest(S3Error):
    """400: Content-MD5 or checksum header is not valid base64 of the right length."""

    code, status, message = "InvalidDigest", 400, "The Content-MD5 you specified is not valid."


class InvalidRequest(S3Error):
    """400: the request is not valid (generic)."""

    code, status, message = "InvalidRequest", 400, "Invalid Request"


class InvalidArgument(S3Error):
    """400: an argument is not valid."""

    code, status, message = "InvalidArgument", 400, "Invalid Argument"


class XAmzContentSHA256Mismatch(S3Error):
    """400: the body's SHA-256 differs from x-amz-content-sha256."""

    code, status = "XAmzContentSHA256Mismatch", 400
    message = "The provided 'x-amz-content-sha256' header does not match what was computed."


class IncompleteBody(S3Error):
    """400: fewer bytes arrived than Content-Length / x-amz-decoded-content-length said."""

    code, status = "IncompleteBody", 400
    message = "You did not provide the number of bytes specified by the Content-Length HTTP header."


class MalformedXML(S3Error):
    """400: the request XML is not well formed or not valid against the schema."""

    code, status = "MalformedXML", 400
    message = "The XML you provided was not well-formed or did not validate against our published schema."


class InvalidBucketName(S3Error):
    """400: the bucket name breaks the naming rules."""

    code, status, message = "InvalidBucketName", 400, "The specified bucket is not valid."


class KeyTooLongError(S3Error):
    """400: the key is longer than 1024 bytes of UTF-8."""

    code, status, message = "KeyTooLongError", 400, "Your key is too long."


class EntityTooSmall(S3Error):
    """400: a multipart part other than the last is below the minimum size (5 MiB)."""

    code, status = "EntityTooSmall", 400
    message = "Your proposed upload is smaller than the minimum allowed object size."


class EntityTooLarge(S3Error):
    """400: the upload exceeds the maximum allowed size."""

    code, status = "EntityTooLarge", 400
    message = "Your proposed upload exceeds the maximum allowed object size."


class InvalidPart(S3Error):
    """400: a listed part was not uploaded or its ETag does not match."""

    code, status = "InvalidPart", 400
    message = ("One or more of the specified parts could not be found. The part might not have been "
               "uploaded, or the specified entity tag might not have matched the part's entity tag.")


class InvalidPartOrder(S3Error):
    """400: parts in CompleteMultipartUpload are not in ascending order."""

    code, status = "InvalidPartOrder", 400
    message = "The list of parts was not in ascending order. The parts list must be specified in order."


class InvalidRange(S3Error):
    """416: the Range cannot be satisfied."""

    code, status, message = "InvalidRange", 416, "The requested range is not satisfiable"


class InvalidStorageClass(S3Error):
    """400: unknown storage class."""

    code, status, message = "InvalidStorageClass", 400, "The storage class you specified is not valid"


class TooManyParts(S3Error):
    """400: more than 10,000 parts."""

    code, status, message = "TooManyParts", 400, "You have attempted to upload more than 10000 parts."


class MalformedPOSTRequest(S3Error):
    """400: the body of a POST request is not well-formed."""

    code, status = "MalformedPOSTRequest", 400
    message = "The body of your POST request is not well-formed multipart/form-data."


class InvalidURI(S3Error):
    """400: the URI cannot be parsed."""

    code, status, message = "InvalidURI", 400, "Couldn't parse the specified URI."


class MetadataTooLarge(S3Error):
    """400: user metadata headers exceed 2 KiB."""

    code, status = "MetadataTooLarge", 400
    message = "Your metadata headers exceed the maximum allowed metadata size."


class InvalidLocationConstraint(S3Error):
    """400: the CreateBucketConfiguration names a location this endpoint does not serve."""

    code, status = "InvalidLocationConstraint", 400
    message = "The specified location-constraint is not valid."


class NoSuchBucket(S3Error):
    """404: the bucket does not exist."""

    code, status, message = "NoSuchBucket", 404, "The specified bucket does not exist"


class NoSuchKey(S3Error):
    """404: the key does not exist."""

    code, status, message = "NoSuchKey", 404, "The specified key does not exist."


class NoSuchUpload(S3Error):
    """404: the multipart upload does not exist (aborted or completed)."""

    code, status = "NoSuchUpload", 404
    message = ("The specified upload does not exist. The upload ID may be invalid, or the upload may "
               "have been aborted or completed.")


class BucketAlreadyExists(S3Error):
    """409: another account owns the bucket name."""

    code, status = "BucketAlreadyExists", 409
    message = ("The requested bucket name is not available. The bucket namespace is shared by all users "
               "of the system. Please select a different name and try again.")


class BucketAlreadyOwnedByYou(S3Error):
    """409: the caller already owns the bucket."""

    code, status = "BucketAlreadyOwnedByYou", 409
    message = "Your previous request to create the named bucket succeeded and you already own it."


class BucketNotEmpty(S3Error):
    """409: the bucket still holds objects (or uploads)."""

    code, status, message = "BucketNotEmpty", 409, "The bucket you tried to delete is not empty"


class MethodNotAllowed(S3Error):
    """405: the method is not allowed against this resource."""

    code, status = "MethodNotAllowed", 405
    message = "The specified method is not allowed against this resource."


class NotImplemented(S3Error):
    """501: the operation is not implemented by Coffer (shadows the builtin on purpose: AWS's name)."""

    code, status = "NotImplemented", 501
    message = "A header or query you provided implies functionality that is not implemented."


class PreconditionFailed(S3Error):
    """412: an If-Match / If-Unmodified-Since (or similar) precondition failed."""

    code, status = "PreconditionFailed", 412
    message = "At least one of the preconditions you specified did not hold."


class MissingContentLength(S3Error):
    """411: Content-Length is required."""

    code, status, message = "MissingContentLength", 411, "You must provide the Content-Length HTTP header."


class InternalError(S3Error):
    """500: an unexpected server error."""

    code, status, message = "InternalError", 500, "We encountered an internal error. Please try again."


class ServiceUnavailable(S3Error):
    """503: the service cannot handle the request now (SDKs retry)."""

    code, status, message = "ServiceUnavailable", 503, "Service is unable to handle request."


class InvalidPartNumber(S3Error):
    """416: the requested part number is not within the object's parts."""

    code, status, message = "InvalidPartNumber", 416, "The requested partnumber is not satisfiable"


class SlowDown(S3Error):
    """503: reduce the request rate (SDKs retry with backoff)."""

    code, status, message = "SlowDown", 503, "Please reduce your request rate."


ERROR_CLASSES: dict[str, type[S3Error]] = {
    cls.code: cls
    for cls in [
        AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch, RequestTimeTooSkewed, ExpiredToken,
        MissingSecurityHeader, AuthorizationHeaderMalformed, AuthorizationQueryParametersError,
        BadDigest, InvalidDigest, InvalidRequest, InvalidArgument, XAmzContentSHA256Mismatch,
        IncompleteBody, MalformedXML, InvalidBucketName, KeyTooLongError, EntityTooSmall,
        EntityTooLarge, InvalidPart, InvalidPartOrder, InvalidRange, InvalidStorageClass,
        TooManyParts, MalformedPOSTRequest, InvalidURI, MetadataTooLarge, InvalidLocationConstraint,
        NoSuchBucket, NoSuchKey, NoSuchUpload,
        BucketAlreadyExists, BucketAlreadyOwnedByYou, BucketNotEmpty, MethodNotAllowed,
        NotImplemented, PreconditionFailed, MissingContentLength, InternalError,
        ServiceUnavailable, SlowDown,
    ]
}
