"""What the sync API's handlers share: the S3 services, the sync store, the notifier, the presign key."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from frontend.s3.context import S3Services
from frontend.sync.notifier import ChangeNotifier
from frontend.sync.presign import SYNC_PRESIGN_OWNER
from metadata.records import AccessKey
from metadata.store import AccessKeyAlreadyExists, MetadataStore
from metadata.sync_records import MAX_SYNC_CHUNK_SIZE
from metadata.sync_store import SyncStore

log = logging.getLogger("frontend.sync")

#: The largest sync chunk (bytes): the client's FastCDC maximum.
MAX_SYNC_CHUNK_BYTES = MAX_SYNC_CHUNK_SIZE


@dataclass(frozen=True)
class SyncSettings:
    """Sync API settings (seconds): ``url_expires_seconds`` is the lifetime of a presigned chunk
    URL, ``upload_expires_seconds`` how long an upload session lives after its last activity,
    ``longpoll_max_seconds`` the longest ``wait`` a ``/-/sync/changes`` call may ask for,
    ``expire_interval_seconds`` the period of the expired-session sweep."""

    url_expires_seconds: int = 900
    upload_expires_seconds: float = 86400.0
    longpoll_max_seconds: float = 60.0
    expire_interval_seconds: float = 600.0


@dataclass
class SyncServices:
    """Long-lived services of the sync API in one frontend process."""

    s3: S3Services
    store: SyncStore
    notifier: ChangeNotifier
    presign_key: AccessKey
    settings: SyncSettings


def ensure_presign_key(metadata: MetadataStore) -> AccessKey:
    """The sync presign key: the oldest access key owned by ``coffer-sync``, created if none exists.

    Blocking (SQLite): call in a thread. Two frontends starting together may each create one; both
    then work (verification looks the key up by id) and both are refused for S3 requests.
    """
    keys = [key for key in metadata.list_access_keys() if key.owner == SYNC_PRESIGN_OWNER]
    if keys:
        return min(keys, key=lambda key: (key.created, key.access_key_id))
    try:
        key = metadata.create_access_key(SYNC_PRESIGN_OWNER)
    except AccessKeyAlreadyExists:  # a generated id collided: astronomically unlikely; retry once
        key = metadata.create_access_key(SYNC_PRESIGN_OWNER)
    log.info("created the sync presign key", extra={"fields": {"access_key_id": key.access_key_id}})
    return key
