"""client.scanner: real folders on disk, the stat cache, symlinks/special files, unstable files."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import chunking, scanner
from client.chunking import ChunkerSettings, FileChunk, content_digest
from client.ignore import IGNORE_FILE, IgnoreRules
from client.index import BaseRecord, LocalIndex
from client.scanner import LocalEntry, scan, scan_paths

SETTINGS = ChunkerSettings(min_size=64 * 1024, avg_size=256 * 1024, max_size=1024 * 1024)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[LocalIndex]:
    with LocalIndex(tmp_path / "index.db") as opened:
        yield opened


def age(root: Path, seconds: float = 60.0) -> None:
    """Set every file's mtime `seconds` in the past: older than the scanner's racy window."""
    when = time.time_ns() - int(seconds * 1e9)
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, ns=(when, when))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "sync"
    (root / "docs" / "empty").mkdir(parents=True)
    (root / "docs" / "a.txt").write_bytes(b"alpha")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (root / "zero").write_bytes(b"")
    (root / ".coffer").mkdir()
    (root / ".coffer" / "state").write_bytes(b"daemon")
    (root / "x.coffer-tmp").write_bytes(b"partial")
    age(root)
    return root


def test_full_scan_lists_files_and_folders(folder: Path, index: LocalIndex) -> None:
    result = scan(folder, index, IgnoreRules.load(folder), SETTINGS)
    assert sorted(result.entries) == ["big.bin", "docs", "docs/a.txt", "docs/empty", "zero"]
    assert result.entries["docs"] == LocalEntry("folder")
    text = result.entries["docs/a.txt"]
    assert text.kind == "file"
    assert text.size == 5
    assert text.chunks == (FileChunk(hashlib.sha256(b"alpha").hexdigest(), 0, 5),)
    assert text.digest == content_digest(text.chunks)
    assert text.inode == os.stat(folder / "docs" / "a.txt").st_ino
    assert result.entries["zero"].chunks == ()
    assert len(result.entries["big.bin"].chunks) > 1
    assert result.hashed_files == 3
    assert result.unstable == []
    assert result.skipped == []


def test_stat_cache_avoids_rehashing(folder: Path, index: LocalIndex) -> None:
    rules = IgnoreRules.load(folder)
    first = scan(folder, index, rules, SETTINGS)
    second = scan(folder, index, rules, SETTINGS)
    assert second.hashed_files == 0
    assert second.entries == first.entries

    # A synced file's base record serves as its cache too; a changed file is re-hashed.
    entry = first.entries["docs/a.txt"]
    index.put_base(BaseRecord("docs/a.txt", "file", entry.size, entry.mtime_ns, entry.inode, entry.chunks,
                              entry.digest, 1, 1))
    (folder / "big.bin").write_bytes(b"replaced")
    age(folder / "big.bin", 30.0)
    third = scan(folder, index, rules, SETTINGS)
    assert third.hashed_files == 1
    assert third.hashed_bytes == len(b"replaced")
    assert third.entries["big.bin"].size == len(b"replaced")


def test_symlinks_and_special_files_are_skipped(folder: Path, index: LocalIndex) -> None:
    os.symlink(folder / "docs", folder / "link-to-docs")
    os.symlink("/etc/passwd", folder / "docs" / "passwd")
    os.mkfifo(folder / "pipe")
    result = scan(folder, index, IgnoreRules.load(folder), SETTINGS)
    assert sorted(result.skipped) == [("docs/passwd", "symlink"), ("link-to-docs", "symlink"),
                                      ("pipe", "special file")]
    assert "link-to-docs" not in result.entries
    assert "docs/passwd" not in result.entries


def test_cofferignore_applies(folder: Path, index: LocalIndex) -> None:
    rules = IgnoreRules.load(folder)
    (folder / IGNORE_FILE).write_text("docs/\n*.bin\n")
    result = scan(folder, index, rules, SETTINGS)  # the rules are reloaded by the scan
    assert sorted(result.entries) == [IGNORE_FILE, "zero"]


def test_unstable_file_is_reported_not_hashed(folder: Path, index: LocalIndex,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real_chunk_file = chunking.chunk_file

    def chunk_while_appending(path: str | os.PathLike[str], settings: ChunkerSettings) -> list[FileChunk]:
        chunks = real_chunk_file(path, settings)
        if Path(path).name == "big.bin":
            with open(path, "ab") as file:  # an application is still writing it
                file.write(b"tail")
        return chunks

    monkeypatch.setattr(chunking, "chunk_file", chunk_while_appending)
    result = scan(folder, index, IgnoreRules.load(folder), SETTINGS)
    assert result.unstable == ["big.bin"]
    assert "big.bin" not in result.entries
    assert result.unknown == {"big.bin"}
    assert "docs/a.txt" in result.entries


def test_scan_paths(folder: Path, index: LocalIndex) -> None:
    rules = IgnoreRules.load(folder)
    (folder / "docs" / "a.txt").unlink()
    (folder / "docs" / "new.txt").write_bytes(b"new")
    result = scan_paths(folder, ["docs/a.txt", "docs", "zero", ".coffer/state"], index, rules, SETTINGS)
    assert result.missing == ["docs/a.txt"]
    assert sorted(result.entries) == ["docs", "docs/empty", "docs/new.txt", "zero"]


def test_recently_modified_file_is_rehashed_despite_equal_stat(folder: Path, index: LocalIndex) -> None:
    rules = IgnoreRules.load(folder)
    target = folder / "docs" / "a.txt"
    recent = time.time_ns()
    os.utime(target, ns=(recent, recent))
    first = scan(folder, index, rules, SETTINGS).entries["docs/a.txt"]
    # The daemon records it as synced with this stat...
    index.put_base(BaseRecord("docs/a.txt", "file", first.size, first.mtime_ns, first.inode, first.chunks,
                              first.digest, 1, 1))
    # ...then an editor rewrites it in place within the same timestamp tick: the stat is unchanged.
    with open(target, "r+b") as file:
        file.write(b"ALPHA")
    os.utime(target, ns=(recent, recent))
    second = scan(folder, index, rules, SETTINGS).entries["docs/a.txt"]
    assert (second.size, second.mtime_ns, second.inode) == (first.size, first.mtime_ns, first.inode)
    assert second.chunks == (FileChunk(hashlib.sha256(b"ALPHA").hexdigest(), 0, 5),)


class _RenameWhenDecided(IgnoreRules):
    """Real rules that also rename `source` to `target` on disk the moment the walk asks about `trigger`:
    a rename landing between a folder's listing and the walk reading what it listed."""

    def __init__(self, folder: Path, trigger: str, source: str, target: str) -> None:
        super().__init__(folder)
        self.trigger, self.source, self.target = trigger, folder / source, folder / target
        self.fired = False

    def ignored(self, path: str, is_dir: bool) -> bool:
        if path == self.trigger and not self.fired:
            self.fired = True
            self.source.rename(self.target)
        return super().ignored(path, is_dir)


def test_folder_renamed_between_listing_and_reading_is_noted_not_dropped(folder: Path, index: LocalIndex) -> None:
    (folder / "docs" / "deep").mkdir()
    (folder / "docs" / "deep" / "b.txt").write_bytes(b"beta")
    # The root is listed (it holds "docs"); "docs" is renamed before the walk lists it.
    rules = _RenameWhenDecided(folder, "docs", "docs", "papers")
    result = scan(folder, index, rules, SETTINGS)
    assert rules.fired
    assert result.moved_during_scan == ["docs"]
    assert "docs" in result.unknown
    assert sorted(result.entries) == ["big.bin", "zero"]  # neither name: the next scan sees "papers"
    again = scan(folder, index, IgnoreRules.load(folder), SETTINGS)
    assert again.moved_during_scan == []
    assert {"papers", "papers/a.txt", "papers/deep/b.txt"} <= set(again.entries)


def test_file_moved_into_a_folder_not_yet_walked_is_noted_at_both_paths(folder: Path, index: LocalIndex) -> None:
    # "big.bin" is read first; before "docs" is listed it moves there: one file (one link) at two paths.
    rules = _RenameWhenDecided(folder, "zero", "big.bin", "docs/big.bin")
    result = scan(folder, index, rules, SETTINGS)
    assert sorted(result.moved_during_scan) == ["big.bin", "docs/big.bin"]
    assert "big.bin" not in result.entries and "docs/big.bin" not in result.entries
    assert "docs/a.txt" in result.entries


def test_hard_links_are_two_files_not_a_move(folder: Path, index: LocalIndex) -> None:
    os.link(folder / "docs" / "a.txt", folder / "linked.txt")
    result = scan(folder, index, IgnoreRules.load(folder), SETTINGS)
    assert result.moved_during_scan == []
    assert result.entries["linked.txt"].digest == result.entries["docs/a.txt"].digest


def _scandir_that_adds_files(monkeypatch: pytest.MonkeyPatch, folder: Path, times: int) -> list[int]:
    """Make the walker's listings of `folder` create a new file there while listing, `times` times."""
    real_scandir = os.scandir
    listings = [0]

    def scandir_while_writing(path: str | os.PathLike[str]) -> object:
        iterator = real_scandir(path)
        if Path(path) == folder and listings[0] < times:
            listings[0] += 1
            (folder / f"new-{listings[0]}.txt").write_bytes(b"written during the listing")
        return iterator

    monkeypatch.setattr(os, "scandir", scandir_while_writing)  # os.scandir itself: the walker calls it
    return listings


def test_folder_changed_during_its_listing_is_listed_again(folder: Path, index: LocalIndex,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    listings = _scandir_that_adds_files(monkeypatch, folder / "docs", times=1)
    result = scan(folder, index, IgnoreRules.load(folder), SETTINGS)
    assert listings == [1]
    assert result.moved_during_scan == []
    assert {"docs/a.txt", "docs/new-1.txt"} <= set(result.entries)


def test_folder_that_never_settles_is_noted_with_everything_under_it(folder: Path, index: LocalIndex,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _scandir_that_adds_files(monkeypatch, folder / "docs", times=scanner.LISTING_ATTEMPTS)
    result = scan(folder, index, IgnoreRules.load(folder), SETTINGS)
    assert result.moved_during_scan == ["docs"]
    assert not any(path == "docs" or path.startswith("docs/") for path in result.entries)
    assert "big.bin" in result.entries
