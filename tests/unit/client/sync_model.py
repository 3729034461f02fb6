"""A pure in-memory model of the sync server, devices' folders and the daemon's executor, for planner tests.

The model server follows contracts section 1: files and folders with stable `file_id`s, immutable
versions (kept forever: deletes are soft), commits with a base version, and the conflict rule (a stale
base stores the content as a sibling conflicted copy). Missing parent folders are created on commit;
a commit under a live file is refused (409). A folder delete deletes everything under it.

The model executor runs each planner action with the guards described in client/planner.py (what the
real daemon must do): it re-checks local digests before replacing or deleting a local file, re-checks
the remote version before deleting a remote file, and records in the base tree what really happened.

A file's content is represented by its digest alone (a unique token per write).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from client.planner import (
    Action,
    Conflict,
    DeleteLocal,
    DeleteRemote,
    Download,
    ForgetBase,
    MakeLocalFolder,
    MakeRemoteFolder,
    MoveLocalAside,
    RecordSynced,
    Upload,
    plan,
)
from client.tree import Kind, Node, conflicted_copy_name, is_under, parents

CONFLICT_TIME = 1_790_000_000.0  # a fixed clock: the model has no time


@dataclass
class ServerEntry:
    """One live entry of the model server."""

    file_id: int
    kind: Kind
    version_id: int | None = None
    digest: str | None = None


@dataclass
class ModelServer:
    """The server: live entries by path, every version ever committed, and one id counter."""

    entries: dict[str, ServerEntry] = field(default_factory=dict)
    versions: dict[int, str] = field(default_factory=dict)  # version_id -> digest
    last_id: int = 0

    def _next_id(self) -> int:
        self.last_id += 1
        return self.last_id

    def tree(self) -> dict[str, Node]:
        """The remote tree as the daemon's replica would hold it."""
        entries = self.entries.items()
        return {path: Node(entry.kind, entry.digest, entry.file_id, entry.version_id) for path, entry in entries}

    def live_digests(self) -> set[str]:
        """Contents of every live file."""
        return {entry.digest for entry in self.entries.values() if entry.kind == Kind.FILE and entry.digest}

    def _parents_ok(self, path: str) -> bool:
        return all(self.entries[p].kind == Kind.FOLDER for p in parents(path) if p in self.entries)

    def _make_parents(self, path: str) -> None:
        for parent in parents(path):
            if parent not in self.entries:
                self.entries[parent] = ServerEntry(self._next_id(), Kind.FOLDER)

    def commit(self, path: str, digest: str, base_version: int | None, device: str) -> tuple[str, ServerEntry, bool]:
        """Commit `digest` at `path`: (path stored at, entry, conflict). Raises PermissionError on 409."""
        if not self._parents_ok(path):
            raise PermissionError(f"{path} is under a file")
        existing = self.entries.get(path)
        if existing is None:
            stale = base_version is not None  # the file was deleted since base
        elif existing.kind == Kind.FOLDER:
            stale = True
        else:
            stale = existing.version_id != base_version
        target = path
        if stale:
            attempt = 1
            while True:
                target = conflicted_copy_name(path, device, CONFLICT_TIME, attempt)
                if target not in self.entries:
                    break
                attempt += 1
        self._make_parents(target)
        version_id = self._next_id()
        self.versions[version_id] = digest
        current = self.entries.get(target)
        if current is not None and not stale:
            current.version_id, current.digest = version_id, digest
            return target, current, False
        entry = ServerEntry(self._next_id(), Kind.FILE, version_id, digest)
        self.entries[target] = entry
        return target, entry, stale

    def make_folder(self, path: str) -> ServerEntry:
        """`POST /folders`: the live folder at path (made if absent). PermissionError if a file is there."""
        if not self._parents_ok(path) or (path in self.entries and self.entries[path].kind == Kind.FILE):
            raise PermissionError(f"{path} is a file or under one")
        self._make_parents(path)
        if path not in self.entries:
            self.entries[path] = ServerEntry(self._next_id(), Kind.FOLDER)
        return self.entries[path]

    def path_of(self, file_id: int) -> str | None:
        """The live path of `file_id`, or None."""
        for path, entry in self.entries.items():
            if entry.file_id == file_id:
                return path
        return None

    def delete(self, file_id: int) -> None:
        """Soft delete: the entry and (folder) everything under it stop being live."""
        path = self.path_of(file_id)
        if path is None:
            return
        for other in [p for p in self.entries if p == path or is_under(p, path)]:
            del self.entries[other]


@dataclass
class Device:
    """One synced folder: its local tree (folders explicit), its base tree, and a planned-not-run plan."""

    name: str
    local: dict[str, Node] = field(default_factory=dict)
    base: dict[str, Node] = field(default_factory=dict)
    pending: list[Action] = field(default_factory=list)

    def local_parents_ok(self, path: str) -> bool:
        """Whether every folder above `path` exists locally as a folder."""
        return all(p in self.local and self.local[p].kind == Kind.FOLDER for p in parents(path))


class Executor:
    """Runs planner actions of one device against the model server with the daemon's guards."""

    def __init__(self, server: ModelServer, device: Device) -> None:
        self.server = server
        self.device = device

    def run(self, action: Action) -> None:
        """Execute one action; a failed guard skips it (the next plan sees why)."""
        handler = getattr(self, "_" + type(action).__name__)
        handler(action)

    def _local_file(self, path: str) -> Node | None:
        node = self.device.local.get(path)
        return node if node is not None and node.kind == Kind.FILE else None

    def _upload(self, path: str, base_version: int | None) -> tuple[str, ServerEntry, bool] | None:
        local = self._local_file(path)
        if local is None or local.digest is None:
            return None
        try:
            stored_at, entry, conflict = self.server.commit(path, local.digest, base_version, self.device.name)
        except PermissionError:
            return None
        if conflict:
            self.device.base[path] = Node(Kind.FILE, local.digest)  # safe on the server, as a copy
        else:
            self.device.base[path] = Node(Kind.FILE, local.digest, entry.file_id, entry.version_id)
        return stored_at, entry, conflict

    def _Upload(self, action: Upload) -> None:
        self._upload(action.path, action.base_version)

    def _download(self, path: str, node: Node, expected: str | None) -> None:
        current = self.device.local.get(path)
        if current is None:
            if expected is not None or not self.device.local_parents_ok(path):
                return
        elif current.kind != Kind.FILE or current.digest != expected:
            return
        if node.version_id is not None:
            assert self.server.versions[node.version_id] == node.digest  # versions are immutable
        self.device.local[path] = Node(Kind.FILE, node.digest)
        self.device.base[path] = node

    def _Download(self, action: Download) -> None:
        node = Node(Kind.FILE, action.digest, action.file_id, action.version_id)
        self._download(action.path, node, action.local_digest_expected)

    def _Conflict(self, action: Conflict) -> None:
        local = self._local_file(action.path)
        if local is None or local.digest != action.local_digest:
            return  # changed since the plan: re-plan
        result = self._upload(action.path, action.base_version)
        if result is None or not result[2]:
            return
        remote = Node(Kind.FILE, action.remote_digest, action.file_id, action.remote_version)
        self._download(action.path, remote, action.local_digest)

    def _DeleteLocal(self, action: DeleteLocal) -> None:
        current = self.device.local.get(action.path)
        if current is None:
            self.device.base.pop(action.path, None)
            return
        if current.kind != action.kind:
            return
        if current.kind == Kind.FILE and current.digest != action.digest_expected:
            return
        if current.kind == Kind.FOLDER and any(is_under(p, action.path) for p in self.device.local):
            return
        del self.device.local[action.path]
        self.device.base.pop(action.path, None)

    def _DeleteRemote(self, action: DeleteRemote) -> None:
        if action.file_id is not None:
            path = self.server.path_of(action.file_id)
            if path is not None:
                entry = self.server.entries[path]
                if entry.kind == Kind.FILE and entry.version_id != action.version_expected:
                    return
                if entry.kind == Kind.FOLDER and any(is_under(p, path) for p in self.server.entries):
                    return
                self.server.delete(action.file_id)
        self.device.base.pop(action.path, None)

    def _MakeLocalFolder(self, action: MakeLocalFolder) -> None:
        current = self.device.local.get(action.path)
        if current is not None and current.kind == Kind.FILE:
            return
        if not self.device.local_parents_ok(action.path):
            return
        self.device.local[action.path] = Node(Kind.FOLDER, None)
        self.device.base[action.path] = Node(Kind.FOLDER, None, action.file_id)

    def _MakeRemoteFolder(self, action: MakeRemoteFolder) -> None:
        try:
            entry = self.server.make_folder(action.path)
        except PermissionError:
            return
        self.device.base[action.path] = Node(Kind.FOLDER, None, entry.file_id)

    def _RecordSynced(self, action: RecordSynced) -> None:
        self.device.base[action.path] = action.node

    def _ForgetBase(self, action: ForgetBase) -> None:
        self.device.base.pop(action.path, None)

    def _MoveLocalAside(self, action: MoveLocalAside) -> None:
        local = self.device.local
        if action.path not in local or action.to_path in local:
            return
        moved = [p for p in local if p == action.path or is_under(p, action.path)]
        for old in moved:
            local[action.to_path + old[len(action.path) :]] = local.pop(old)
        for old in [p for p in self.device.base if p == action.path or is_under(p, action.path)]:
            del self.device.base[old]


@dataclass
class World:
    """A server, devices, and the contents that must never be lost."""

    server: ModelServer
    devices: list[Device]
    must_survive: set[str] = field(default_factory=set)
    written: int = 0

    @classmethod
    def with_devices(cls, count: int) -> World:
        """A fresh world with devices named d0, d1, ..."""
        return cls(ModelServer(), [Device(f"d{index}") for index in range(count)])

    # --- local edits (a user at a device) --------------------------------------------------------------

    def _file_or_folder_blocks(self, device: Device, path: str) -> bool:
        return any(p in device.local and device.local[p].kind == Kind.FILE for p in parents(path))

    def _add_parents(self, device: Device, path: str) -> None:
        for parent in parents(path):
            device.local.setdefault(parent, Node(Kind.FOLDER, None))

    def write(self, index: int, path: str) -> None:
        """Create or overwrite the file at `path` with new content (no-op if a folder is in the way)."""
        device = self.devices[index]
        current = device.local.get(path)
        if self._file_or_folder_blocks(device, path) or (current is not None and current.kind == Kind.FOLDER):
            return
        if current is not None and current.digest is not None:
            self.must_survive.discard(current.digest)  # deliberately overwritten by someone who saw it
        self.written += 1
        digest = f"{device.name}-c{self.written}"
        self._add_parents(device, path)
        device.local[path] = Node(Kind.FILE, digest)
        self.must_survive.add(digest)

    def mkdir(self, index: int, path: str) -> None:
        """Create the folder `path` (and parents) if nothing is in the way."""
        device = self.devices[index]
        if path in device.local or self._file_or_folder_blocks(device, path):
            return
        self._add_parents(device, path)
        device.local[path] = Node(Kind.FOLDER, None)

    def delete(self, index: int, path: str) -> None:
        """Delete the file or folder (recursively) at `path`."""
        device = self.devices[index]
        for other in [p for p in device.local if p == path or is_under(p, path)]:
            node = device.local.pop(other)
            if node.digest is not None:
                self.must_survive.discard(node.digest)

    def rename(self, index: int, source: str, target: str) -> None:
        """Move `source` (and everything under it) to `target` if `target` is free and not inside it."""
        device = self.devices[index]
        if source not in device.local or target in device.local or target == source or is_under(target, source):
            return
        if self._file_or_folder_blocks(device, target):
            return
        self._add_parents(device, target)
        for old in [p for p in device.local if p == source or is_under(p, source)]:
            device.local[target + old[len(source) :]] = device.local.pop(old)

    # --- the daemon -------------------------------------------------------------------------------------

    def plan(self, index: int) -> list[Action]:
        """The device plans against the server's current tree; the plan runs later (`execute`)."""
        device = self.devices[index]
        device.pending = plan(self.server.tree(), device.local, device.base, device.name, now=CONFLICT_TIME)
        return device.pending

    def execute(self, index: int, stop_after: int | None = None) -> None:
        """Run the device's pending plan against the server as it is now.

        `stop_after`: the daemon dies after that many actions (the rest of the plan is lost).
        """
        device = self.devices[index]
        executor = Executor(self.server, device)
        for action in device.pending[:stop_after]:
            executor.run(action)
        device.pending = []

    def sync(self, index: int) -> list[Action]:
        """Plan and execute at once; returns the plan."""
        actions = self.plan(index)
        self.execute(index)
        return actions

    def settle(self, max_rounds: int = 12) -> int:
        """Every device syncs in turn until a whole pass plans nothing; returns the passes used.

        Raises AssertionError if that takes more than `max_rounds` passes.
        """
        for device in self.devices:
            device.pending = []  # a stale plan is dropped on restart
        for round_number in range(1, max_rounds + 1):
            busy = False
            for index in range(len(self.devices)):
                if self.sync(index):
                    busy = True
            if not busy:
                return round_number
        raise AssertionError(f"no convergence after {max_rounds} rounds")


def contents(tree: dict[str, Node]) -> dict[str, tuple[Kind, str | None]]:
    """A tree without server ids, for comparing local trees with the server's."""
    return {path: (node.kind, node.digest) for path, node in tree.items()}
