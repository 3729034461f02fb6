"""Two real sync daemons (``coffer sync`` processes) on two folders, one account, one real cluster.

Issue 4's acceptance 1-6: convergence of creates/edits/renames/deletes of files and folders on
either side within 5 seconds; delta uploads (one byte flipped, 1 KiB inserted at the start of a
100 MiB file: at most 2 chunks sent); concurrent offline edits end as a conflicted copy with nothing
lost; a daemon killed mid-upload of 1 GiB resumes without re-sending finished chunks; the frontend
restarted mid-sync loses no change; every commit is a version and a restore reaches both devices.

One cluster and one pair of daemons serve the module; the frontend-restart test runs last.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client.api import SyncApi, SyncApiError
from client.index import LocalIndex
from tests.fixtures.cluster import DevCluster, run_coffer

pytestmark = [pytest.mark.system, pytest.mark.coffer_cluster(nodes=14, pg_count=64)]

MiB = 1024 * 1024
CONVERGE_SECONDS = 5.0  # acceptance 1
STOP_SECONDS = 15.0
PARALLEL_TRANSFERS = 4  # the daemon's default: chunks in flight per file
MAX_CHUNK = 16 * MiB  # the daemon's default FastCDC maximum


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> SHA-256 of a file, or "folder", for everything but the daemon's own state."""
    tree: dict[str, str] = {}
    for root, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not (root == str(folder) and name == ".coffer")]
        relative_root = os.path.relpath(root, folder)
        for name in folders:
            tree[os.path.normpath(os.path.join(relative_root, name))] = "folder"
        for name in files:
            if name.endswith(".coffer-tmp"):
                continue
            path = os.path.join(root, name)
            digest = hashlib.sha256()
            try:
                with open(path, "rb") as handle:
                    while block := handle.read(4 * MiB):
                        digest.update(block)
            except FileNotFoundError:
                continue  # replaced while we looked: the next poll sees the new state
            tree[os.path.normpath(os.path.join(relative_root, name))] = digest.hexdigest()
    return tree


class Device:
    """One ``coffer sync`` daemon process on ``folder`` with ``token``; stopped by the fixture."""

    def __init__(self, name: str, folder: Path, endpoint: str, token: str, log_path: Path,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.extra_args = extra_args
        self.folder = folder
        self.endpoint = endpoint
        self.token = token
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the daemon (its first run saves server and token in the folder)."""
        assert self.process is None or self.process.poll() is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli", "sync", str(self.folder), "--server", self.endpoint,
                 "--token", self.token, "--poll-wait", "10", "--no-progress", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send ``sig`` and wait for the process to end (SIGKILL after STOP_SECONDS)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_SECONDS)

    def status(self) -> dict[str, Any]:
        """The daemon's status.json (empty dict before it wrote one)."""
        try:
            return dict(json.loads((self.folder / ".coffer" / "status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def log(self) -> str:
        """The daemon's output so far (for failure messages)."""
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


def wait_for(condition: Callable[[], bool], timeout: float, what: str, devices: tuple[Device, ...] = ()) -> float:
    """Poll ``condition`` every 50 ms; return the seconds it took. AssertionError (with the daemons'
    logs) after ``timeout`` seconds."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            logs = "\n".join(f"--- {device.name} log:\n{device.log()}" for device in devices)
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{logs}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def tokens(cluster: DevCluster) -> dict[str, str]:
    """Device tokens of one user (laptop, desktop) and of another user (mallory)."""
    data = str(cluster.data_dir)
    run_coffer("user", "create", "carol", "--data", data)
    run_coffer("user", "create", "mallory", "--data", data)
    result: dict[str, str] = {}
    for user, device in (("carol", "laptop"), ("carol", "desktop"), ("carol", "tablet"), ("mallory", "phone")):
        answer = run_coffer("token", "create", "--user", user, "--device", device, "--data", data, "--json")
        result[device] = json.loads(answer.stdout)["token"]
    return result


@pytest.fixture(scope="module")
def devices(cluster: DevCluster, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Device, Device]]:
    """Two running daemons (laptop on A, desktop on B) of one account; always stopped afterwards."""
    root = tmp_path_factory.mktemp("sync")
    laptop = Device("laptop", root / "A", cluster.endpoint, tokens["laptop"], root / "laptop.log")
    desktop = Device("desktop", root / "B", cluster.endpoint, tokens["desktop"], root / "desktop.log")
    try:
        laptop.start()
        desktop.start()
        wait_for(lambda: laptop.status().get("state") == "idle" and desktop.status().get("state") == "idle",
                 60, "both daemons to start", (laptop, desktop))
        yield laptop, desktop
    finally:
        laptop.stop(signal.SIGKILL)
        desktop.stop(signal.SIGKILL)


def converge(devices: tuple[Device, Device], source: Device, timeout: float = CONVERGE_SECONDS) -> float:
    """Wait until every device's folder equals ``source``'s; return the seconds it took."""
    expected = snapshot(source.folder)
    seconds = wait_for(lambda: all(snapshot(device.folder) == expected for device in devices), timeout,
                       f"both folders to equal {source.name}'s {sorted(expected)}", devices)
    print(f"converged in {seconds:.2f} s")
    return seconds


def agree(devices: tuple[Device, ...], condition: Callable[[dict[str, str]], bool], timeout: float,
          what: str) -> dict[str, str]:
    """Wait until every device's folder holds the same tree and that tree satisfies ``condition``
    (for changes that also alter the source folder, e.g. a conflicted copy coming down); return it."""
    found: dict[str, str] = {}

    def agreed() -> bool:
        trees = [snapshot(device.folder) for device in devices]
        found.clear()
        found.update(trees[0])
        return all(tree == trees[0] for tree in trees) and condition(trees[0])

    seconds = wait_for(agreed, timeout, what, devices)
    print(f"agreed in {seconds:.2f} s")
    return found


def write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as an editor would: a temp file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.swp"  # ignored by the daemon
    temporary.write_bytes(data)
    os.replace(temporary, path)


def test_create_edit_rename_delete_converge_within_5_seconds(devices: tuple[Device, Device]) -> None:
    laptop, desktop = devices
    a, b = laptop.folder, desktop.folder
    # Creates on A: files at several depths, a 6 MiB file (two chunks), an empty folder.
    write(a / "notes.txt", b"first line\n")
    write(a / "projects/alpha/plan.md", b"# plan\n")
    write(a / "projects/alpha/data.bin", os.urandom(6 * MiB))
    (a / "projects/empty").mkdir(parents=True)
    converge(devices, laptop)
    # Edits and creates on B.
    write(b / "notes.txt", b"first line\nsecond line from the desktop\n")
    write(b / "projects/beta/readme", b"beta")
    converge(devices, desktop)
    # Renames on A: a file, and a whole folder.
    os.rename(a / "notes.txt", a / "notes-renamed.txt")
    os.rename(a / "projects/alpha", a / "projects/gamma")
    converge(devices, laptop)
    assert (b / "projects/gamma/data.bin").stat().st_size == 6 * MiB
    # A renamed file is moved on the server: same file, history kept (created on A, edited on B).
    assert len(_file_info(laptop, "notes-renamed.txt")["versions"]) == 2
    # Deletes on B: a file, a folder tree, the empty folder.
    (b / "notes-renamed.txt").unlink()
    for path in sorted((b / "projects/beta").rglob("*"), reverse=True):
        path.unlink()
    (b / "projects/beta").rmdir()
    (b / "projects/empty").rmdir()
    converge(devices, desktop)
    assert snapshot(a) == {"projects": "folder", "projects/gamma": "folder",
                           "projects/gamma/plan.md": hashlib.sha256(b"# plan\n").hexdigest(),
                           "projects/gamma/data.bin": snapshot(b)["projects/gamma/data.bin"]}
    # A renamed file reached B without its bytes travelling again: B reused its local chunks.
    assert desktop.status()["bytes_reused"] >= 6 * MiB


def _file_info(device: Device, path: str) -> dict[str, Any]:
    async def ask() -> dict[str, Any]:
        async with SyncApi(device.endpoint, device.token) as api:
            return await api.get_file_by_path(path)
    return asyncio.run(ask())


def _counters(device: Device) -> tuple[int, int]:
    status = device.status()
    return int(status.get("bytes_uploaded", 0)), int(status.get("chunks_uploaded", 0))


def _settled(device: Device, since: float) -> bool:
    status = device.status()
    return status.get("state") == "idle" and float(status.get("last_synced") or 0) > since


def test_delta_sync_uploads_at_most_two_chunks(devices: tuple[Device, Device]) -> None:
    laptop, _desktop = devices
    path = laptop.folder / "large/hundred.bin"
    original = bytearray(os.urandom(100 * MiB))
    write(path, bytes(original))
    converge(devices, laptop, timeout=120)

    cases = {"one byte flipped in the middle": None, "1 KiB inserted at the start": None}
    for case in cases:
        if case.startswith("one byte"):
            original[50 * MiB] ^= 0xFF
            content = bytes(original)
        else:
            content = os.urandom(1024) + bytes(original)
        wait_for(lambda: _settled(laptop, 0), 30, "the laptop to be idle", devices)
        bytes_before, chunks_before = _counters(laptop)
        edited = time.time()
        write(path, content)
        converge(devices, laptop, timeout=60)
        wait_for(lambda: _settled(laptop, edited), 30, "the laptop to settle", devices)  # noqa: B023
        bytes_after, chunks_after = _counters(laptop)
        sent, chunks = bytes_after - bytes_before, chunks_after - chunks_before
        print(f"{case}: uploaded {sent / MiB:.2f} MiB of a {len(content) / MiB:.0f} MiB file ({chunks} chunks)")
        assert 1 <= chunks <= 2, f"{case}: {chunks} chunks uploaded"
        assert sent <= 2 * MAX_CHUNK


def test_offline_concurrent_edits_keep_both_versions(devices: tuple[Device, Device]) -> None:
    laptop, desktop = devices
    write(laptop.folder / "shared/report.txt", b"version 0\n")
    converge(devices, laptop)
    desktop.stop()
    try:
        write(laptop.folder / "shared/report.txt", b"laptop's edit while the desktop is offline\n")
        write(desktop.folder / "shared/report.txt", b"desktop's offline edit\n")
        write(desktop.folder / "shared/offline-new.txt", b"made offline\n")
        wait_for(lambda: _settled(laptop, time.time() - 0.5), 30, "the laptop to upload its edit", devices)
    finally:
        desktop.start()
    tree = agree(devices,
                 lambda tree: "shared/offline-new.txt" in tree and any("conflicted copy" in path for path in tree),
                 30, "the desktop's offline work and a conflicted copy on both devices")
    contents = {(laptop.folder / path).read_bytes() for path in tree if path.startswith("shared/report")}
    assert contents == {b"laptop's edit while the desktop is offline\n", b"desktop's offline edit\n"}
    copies = [path for path in tree if "conflicted copy" in path]
    assert copies == [next(path for path in copies if path.startswith("shared/report (desktop's conflicted copy "))]
    assert (laptop.folder / "shared/offline-new.txt").read_bytes() == b"made offline\n"


def _upload_state(endpoint: str, token: str, upload_id: str) -> dict[str, Any]:
    async def ask() -> dict[str, Any]:
        async with SyncApi(endpoint, token) as api:
            return await api.upload_state(upload_id)
    return asyncio.run(ask())


def test_killed_daemon_resumes_a_1_gib_upload(devices: tuple[Device, Device], tmp_path: Path) -> None:
    laptop, _desktop = devices
    size = 1024 * MiB
    staging = tmp_path / "big.bin"
    with staging.open("wb") as handle:
        for _ in range(size // (64 * MiB)):
            handle.write(os.urandom(64 * MiB))
    os.replace(staging, laptop.folder / "gigabyte.bin")
    wait_for(lambda: _counters(laptop)[0] >= 256 * MiB, 180, "a quarter of the upload", devices)
    laptop.stop(signal.SIGKILL)
    time.sleep(1)  # PUTs whose whole body reached the frontend still complete there: count them as stored
    with LocalIndex(laptop.folder / ".coffer" / "index.sqlite3") as index:
        session = index.get_upload("gigabyte.bin")
    assert session is not None, "the daemon saved no upload session"
    state = _upload_state(laptop.endpoint, laptop.token, session.upload_id)
    still_missing = sum(int(item["size"]) for item in state["missing"])
    assert state["state"] == "open" and 0 < still_missing < size
    laptop.start()
    converge(devices, laptop, timeout=240)
    wait_for(lambda: _settled(laptop, 0), 30, "the laptop to settle", devices)
    sent_after_restart = _counters(laptop)[0]
    resent = max(0, sent_after_restart - still_missing)
    print(f"killed with {(size - still_missing) / MiB:.0f} MiB stored; after restart sent "
          f"{sent_after_restart / MiB:.0f} MiB: {resent / MiB:.1f} MiB sent twice")
    assert sent_after_restart <= still_missing + PARALLEL_TRANSFERS * MAX_CHUNK
    (laptop.folder / "gigabyte.bin").unlink()
    converge(devices, laptop, timeout=30)


def test_version_history_and_restore_reach_both_devices(devices: tuple[Device, Device]) -> None:
    laptop, _desktop = devices
    path = laptop.folder / "history/doc.txt"
    for number in range(1, 4):
        write(path, f"revision {number}\n".encode())
        converge(devices, laptop)

    async def restore_first() -> tuple[list[int], list[int]]:
        async with SyncApi(laptop.endpoint, laptop.token) as api:
            info = await api.get_file_by_path("history/doc.txt")
            versions = [int(version["version_id"]) for version in info["versions"]]
            await api.restore(int(info["file_id"]), versions[0])
            after = await api.get_file(int(info["file_id"]))
            return versions, [int(version["version_id"]) for version in after["versions"]]

    versions, after = asyncio.run(restore_first())
    assert len(versions) == 3 and versions == sorted(versions)
    assert len(after) == 4 and after[:3] == versions
    wait_for(lambda: all((device.folder / "history/doc.txt").read_bytes() == b"revision 1\n" for device in devices),
             CONVERGE_SECONDS, "the restored version on both devices", devices)


def test_other_users_token_sees_nothing(devices: tuple[Device, Device], tokens: dict[str, str]) -> None:
    laptop, _desktop = devices

    async def probe() -> tuple[dict[str, Any], int]:
        async with SyncApi(laptop.endpoint, tokens["phone"], retries=1) as api:
            tree = await api.tree()
            async with SyncApi(laptop.endpoint, laptop.token) as owner:
                file_id = int((await owner.get_file_by_path("history/doc.txt"))["file_id"])
            try:
                await api.get_file(file_id)
            except SyncApiError as error:
                return tree, error.status
            return tree, 200

    tree, status = asyncio.run(probe())
    assert tree["entries"] == [] and status == 403


def test_a_device_with_other_chunk_sizes_does_not_trade_versions(
        cluster: DevCluster, devices: tuple[Device, Device], tokens: dict[str, str], tmp_path: Path) -> None:
    laptop, desktop = devices
    write(laptop.folder / "chunking/from-laptop.bin", os.urandom(20 * MiB))
    converge(devices, laptop, timeout=60)
    tablet = Device("tablet", tmp_path / "C", cluster.endpoint, tokens["tablet"], tmp_path / "tablet.log",
                    ("--min-chunk", "256KiB", "--avg-chunk", "1MiB", "--max-chunk", "4MiB"))
    everyone = (laptop, desktop, tablet)
    try:
        tablet.start()
        wait_for(lambda: snapshot(tablet.folder) == snapshot(laptop.folder), 120, "the tablet's first sync", everyone)
        write(tablet.folder / "chunking/from-tablet.bin", os.urandom(10 * MiB))
        tree = agree(everyone, lambda tree: "chunking/from-tablet.bin" in tree, 60, "the tablet's file everywhere")
        # Past the scanner's racy window every device re-chunks what it just downloaded with its own
        # settings: the same bytes under another chunking must not look like an edit.
        time.sleep(4)
        wait_for(lambda: all(device.status().get("state") == "idle" for device in everyone), 30,
                 "every daemon to be idle", everyone)
        assert snapshot(laptop.folder) == tree == snapshot(tablet.folder)
        assert sorted(path for path in tree if path.startswith("chunking/")) == [
            "chunking/from-laptop.bin", "chunking/from-tablet.bin"]
        for path in ("chunking/from-laptop.bin", "chunking/from-tablet.bin"):
            assert len(_file_info(laptop, path)["versions"]) == 1, path
    finally:
        tablet.stop(signal.SIGKILL)


def test_frontend_restart_mid_sync_misses_no_change(cluster: DevCluster, devices: tuple[Device, Device]) -> None:
    laptop, desktop = devices
    write(laptop.folder / "restart/large.bin", os.urandom(48 * MiB))
    time.sleep(0.5)  # the upload is under way
    cluster.kill("frontend")
    try:
        write(laptop.folder / "restart/while-down-laptop.txt", b"made while the server was down (laptop)\n")
        write(desktop.folder / "restart/while-down-desktop.txt", b"made while the server was down (desktop)\n")
        time.sleep(2)
    finally:
        cluster.start_process("frontend")
    cluster.wait_ready()
    made = {"restart/large.bin", "restart/while-down-laptop.txt", "restart/while-down-desktop.txt"}
    tree = agree(devices, lambda tree: made <= set(tree), 60, "both devices to hold everything made around the restart")
    assert tree["restart/large.bin"] == snapshot(laptop.folder)["restart/large.bin"]
