"""Fixtures for the metadata store tests: real SQLite files in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from metadata import SqliteMetadataStore


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "metadata.sqlite3"


@pytest.fixture
def store(store_path: Path) -> Iterator[SqliteMetadataStore]:
    opened = SqliteMetadataStore(store_path)
    yield opened
    opened.close()
