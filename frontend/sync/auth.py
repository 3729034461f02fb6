"""Bearer-token authentication of sync API calls and the API's JSON error type.

``Authorization: Bearer <token>`` names a device; the store keeps only SHA-256(token) and answers
``device_for_token`` (None when unknown or revoked). Anything else is 401 Unauthorized.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from frontend.sync.services import SyncServices
from metadata.sync_records import Device


class ApiError(Exception):
    """A sync API failure answered as ``{"error": code, "message": message, **extra}`` with HTTP
    ``status`` (contracts section 1: InvalidRequest 400, Unauthorized 401, Forbidden 403, ...)."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def invalid_request(message: str) -> ApiError:
    """400 InvalidRequest with ``message``."""
    return ApiError(400, "InvalidRequest", message)


def forbidden(what: str) -> ApiError:
    """403 Forbidden: ``what`` (a file, upload or cursor) belongs to another namespace."""
    return ApiError(403, "Forbidden", f"{what} belongs to another namespace")


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), or None."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def authenticate(request: web.Request, services: SyncServices) -> Device:
    """The device whose bearer token authorizes ``request`` (the store is read in a thread).

    Raises:
        ApiError: 401 Unauthorized when the header is missing or malformed, or the token is
            unknown or revoked.
    """
    token = bearer_token(request)
    if token is None:
        raise ApiError(401, "Unauthorized", "An Authorization: Bearer <token> header is required")
    device = await services.s3.meta(services.store.device_for_token, token)
    if device is None:
        raise ApiError(401, "Unauthorized", "The token is unknown or revoked")
    return device


def require_namespace(device: Device, namespace_id: int, what: str) -> None:
    """Allow access to ``namespace_id`` only for its own devices (no sharing between users yet).

    Raises:
        ApiError: 403 Forbidden naming ``what``.
    """
    if namespace_id != device.namespace_id:
        raise forbidden(what)
