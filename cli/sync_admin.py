"""`coffer user create|list` and `coffer token create|list|revoke`: sync users and device tokens.

A user owns one namespace (their synced root folder); each device of theirs gets its own bearer
token for the sync API. Tokens are printed once and stored only as a SHA-256 hash, so a lost token
is revoked and replaced, never recovered. These commands open the frontend's SQLite metadata file
directly (the dev cluster's by default), like `coffer keys`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cli.keys import check_exists, metadata_path

if TYPE_CHECKING:
    from metadata.sqlite_sync_store import SqliteSyncStore

__all__ = ["create_token", "create_user", "list_tokens", "list_users", "metadata_path", "revoke_token"]


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@contextlib.contextmanager
def _sync_store(path: Path) -> Iterator[SqliteSyncStore]:
    """The sync store on the metadata file at ``path`` (which must exist), closed afterwards."""
    from metadata.sqlite_store import SqliteMetadataStore
    from metadata.sqlite_sync_store import SqliteSyncStore

    with SqliteMetadataStore(path) as metadata:
        yield SqliteSyncStore(metadata)


def create_user(path: Path, name: str, as_json: bool) -> int:
    """Create sync user ``name`` (and its namespace) in the store at ``path``; exit status."""
    from metadata.sync_records import SyncError

    if not check_exists(path):
        return 1
    try:
        with _sync_store(path) as store:
            user = store.create_user(name)
            namespace_id = store.namespace_of(name)
    except SyncError as error:
        print(f"coffer: {error}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({"user": user.name, "user_id": user.user_id, "namespace_id": namespace_id}))
    else:
        print(f"user {user.name} created (namespace {namespace_id}); give each device a token:\n"
              f"  coffer token create --user {user.name} --device DEVICE-NAME")
    return 0


def list_users(path: Path, as_json: bool) -> int:
    """Print every sync user; exit status."""
    if not check_exists(path):
        return 1
    with _sync_store(path) as store:
        users = store.list_users()
    if as_json:
        print(json.dumps([{"user": user.name, "user_id": user.user_id, "created": user.created}
                          for user in users]))
    else:
        for user in users:
            print(f"{user.name:<24} created {_when(user.created)}")
    return 0


def create_token(path: Path, user: str, device: str, as_json: bool) -> int:
    """Create a device token for ``user``; print it once; exit status."""
    from metadata.sync_records import SyncError

    if not check_exists(path):
        return 1
    try:
        with _sync_store(path) as store:
            record, token = store.create_device(user, device)
    except SyncError as error:
        print(f"coffer: {error} (create the user first: coffer user create {user})", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({"token": token, "device": record.name, "device_id": record.device_id,
                          "user": record.user_name, "namespace_id": record.namespace_id}))
    else:
        print(f"token for {record.user_name}'s device {record.name} (shown once; store it safely):\n{token}\n"
              f"Sync a folder with it:\n  coffer sync FOLDER --server http://127.0.0.1:PORT --token {token}")
    return 0


def list_tokens(path: Path, user: str | None, as_json: bool) -> int:
    """Print the devices (tokens) of ``user`` or of everyone, never the token text; exit status."""
    if not check_exists(path):
        return 1
    with _sync_store(path) as store:
        devices = store.list_devices(user)
    rows = [{"device_id": device.device_id, "user": device.user_name, "device": device.name,
             "created": device.created, "revoked": device.revoked} for device in devices]
    if as_json:
        print(json.dumps(rows))
    else:
        for device in devices:
            state = f"revoked {_when(device.revoked)}" if device.revoked is not None else "active"
            print(f"{device.device_id:>6}  {device.user_name:<16} {device.name:<20} {state}")
    return 0


def revoke_token(path: Path, device_id: int) -> int:
    """Revoke one device's token (its requests get 401 from then on); exit status."""
    if not check_exists(path):
        return 1
    with _sync_store(path) as store:
        revoked = store.revoke_device(device_id)
    if not revoked:
        print(f"coffer: no device {device_id} (see `coffer token list`)", file=sys.stderr)
        return 1
    print(f"device {device_id}'s token revoked")
    return 0
