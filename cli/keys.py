"""`coffer keys create|list`: S3 access keys in a metadata store (the dev cluster's by default)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path


def metadata_path(data_dir: Path | None, metadata: Path | None) -> Path:
    """The SQLite metadata file: ``--metadata PATH`` if given, else ``DIR/metadata.sqlite3``."""
    if metadata is not None:
        return metadata
    return (data_dir or Path(".coffer")) / "metadata.sqlite3"


def check_exists(path: Path) -> bool:
    """True if the metadata store at ``path`` exists; else say how to get one (stderr) and False."""
    if path.exists():
        return True
    print(f"no metadata store at {path}: start a cluster first (`coffer dev up --data DIR`) or point "
          "at the frontend's store with --metadata PATH", file=sys.stderr)
    return False


def create(path: Path, owner: str, as_json: bool) -> int:
    """Create an access key for ``owner`` in the SQLite store at ``path``; print id and secret."""
    from metadata.sqlite_store import SqliteMetadataStore

    if not check_exists(path):
        return 1
    with SqliteMetadataStore(path) as store:
        key = store.create_access_key(owner)
    if as_json:
        print(json.dumps({"access_key": key.access_key_id, "secret_key": key.secret_key,
                          "owner": key.owner, "created": key.created}))
    else:
        print(f"access key: {key.access_key_id}\nsecret key: {key.secret_key}\nowner:      {key.owner}")
    return 0


def list_keys(path: Path, as_json: bool) -> int:
    """Print every access key in the store at ``path`` (id, owner, creation time; no secrets)."""
    from metadata.sqlite_store import SqliteMetadataStore

    if not check_exists(path):
        return 1
    with SqliteMetadataStore(path) as store:
        keys = store.list_access_keys()
    if as_json:
        print(json.dumps([{"access_key": key.access_key_id, "owner": key.owner, "created": key.created}
                          for key in keys], indent=2))
        return 0
    print(f"{'ACCESS KEY':<22}  {'OWNER':<16}  CREATED (UTC)")
    for key in keys:
        created = datetime.fromtimestamp(key.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{key.access_key_id:<22}  {key.owner:<16}  {created}")
    return 0
