"""client.watcher: real inotify events on a real folder, coalesced per path, ignores applied."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from client.ignore import IGNORE_FILE, IgnoreRules
from client.watcher import FolderWatcher

WAIT = 10.0  # generous: the test machine is shared


async def collect_until(watcher: FolderWatcher, sentinel: str) -> list[str]:
    """Every reported path (in order, with repeats) until `sentinel` is reported, then a short drain."""
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while sentinel not in seen:
        batch = await watcher.next_batch(timeout=max(0.0, deadline - loop.time()))
        assert batch, f"no {sentinel} within {WAIT} s; saw {seen}"
        seen.extend(sorted(batch))
    seen.extend(sorted(await watcher.next_batch(timeout=0.5)))
    return seen


def append_lines(path: Path, count: int) -> None:
    """A burst: `count` separate open/append/close cycles of one file."""
    for number in range(count):
        with open(path, "a") as file:
            file.write(f"line {number}\n")


def test_burst_of_writes_is_one_notification(tmp_path: Path) -> None:
    async def main() -> None:
        (tmp_path / "docs").mkdir()
        async with FolderWatcher(tmp_path, IgnoreRules.load(tmp_path)) as watcher:
            target = tmp_path / "docs" / "a.txt"
            append_lines(target, 30)
            (tmp_path / "sentinel").write_text("x")
            seen = await collect_until(watcher, "sentinel")
        assert seen.count("docs/a.txt") == 1
        assert "docs" not in seen  # a changed child does not report its folder

    asyncio.run(main())


def test_moves_deletes_folders_and_reads(tmp_path: Path) -> None:
    async def main() -> None:
        (tmp_path / "old").mkdir()
        (tmp_path / "old" / "f").write_text("f")
        (tmp_path / "gone.txt").write_text("g")
        (tmp_path / "read-only-use.txt").write_text("r")
        async with FolderWatcher(tmp_path, IgnoreRules.load(tmp_path)) as watcher:
            os.rename(tmp_path / "old", tmp_path / "new")
            (tmp_path / "gone.txt").unlink()
            (tmp_path / "made" / "deep").mkdir(parents=True)
            (tmp_path / "read-only-use.txt").read_text()  # reading is not a change
            (tmp_path / "sentinel").write_text("x")
            seen = set(await collect_until(watcher, "sentinel"))
        assert {"old", "new", "gone.txt", "made"} <= seen
        assert "read-only-use.txt" not in seen

    asyncio.run(main())


def test_ignored_paths_and_ignore_reload(tmp_path: Path) -> None:
    async def main() -> None:
        (tmp_path / ".coffer").mkdir()
        rules = IgnoreRules.load(tmp_path)
        async with FolderWatcher(tmp_path, rules) as watcher:
            (tmp_path / ".coffer" / "index.db").write_text("daemon state")
            (tmp_path / "download.coffer-tmp").write_text("partial")
            (tmp_path / IGNORE_FILE).write_text("*.log\n")
            (tmp_path / "sentinel").write_text("x")
            seen = await collect_until(watcher, "sentinel")
            assert IGNORE_FILE in seen
            assert not [path for path in seen if path.startswith(".coffer/") or path.endswith(".coffer-tmp")]
            assert rules.ignored("app.log", is_dir=False)  # reloaded by the watcher
            (tmp_path / "app.log").write_text("noise")
            (tmp_path / "sentinel2").write_text("x")
            seen = await collect_until(watcher, "sentinel2")
            assert "app.log" not in seen

    asyncio.run(main())
