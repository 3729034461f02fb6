"""Fixtures for the metadata store tests: real SQLite files in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from metadata import SqliteMetadataStore
from tests.unit.metadata.builders import PinningStore


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "metadata.sqlite3"


@pytest.fixture
def store(store_path: Path) -> Iterator[SqliteMetadataStore]:
    """A store whose unpinned commits pin first (builders.PinningStore), as the frontend's do."""
    opened = PinningStore(store_path)
    yield opened
    opened.close()
