"""The sync planner: a pure function of (remote tree, local tree, base tree) -> actions (contracts section 5).

The three-tree design of Dropbox's Nucleus ("Rewriting the heart of our sync engine", Dropbox tech blog,
2020; "Testing sync at Dropbox", 2020): the base tree (last synced) tells which side changed a path.
"Changed" means differs in content from base (`tree.same_content`: kind, and digest for files).

Rules, per path (absent / file / folder on each side):

- neither side changed: nothing (a `RecordSynced` if only the server's ids moved, e.g. a new version
  with the same content, so the next upload names the current version as its base);
- only local changed: push (`Upload`, `MakeRemoteFolder`, `DeleteRemote`);
- only remote changed: pull (`Download`, `MakeLocalFolder`, `DeleteLocal`);
- both changed to the same thing: `RecordSynced` (or `ForgetBase` when both deleted it);
- both changed, one deleted it: the edit wins (never delete a changed entry) and is pushed or pulled;
  a local edit of a file the server deleted is uploaded as a new file (`base_version` None);
- both changed to different files: `Conflict` (the local content goes up as the server's conflicted
  copy, the remote content comes down to the path);
- both changed to different kinds (file vs folder): the **remote entry wins the path**; the local
  entry (file, or folder with everything in it) is renamed locally to a conflicted-copy name
  (`MoveLocalAside`) and synced from there as new on the next round.

Folders: a folder deleted on one side whose other side still holds something that survives (new or
changed content, at any depth) is kept: it is re-created on the deleting side and the content is
pushed/pulled. A folder replaced by a file on one side while the other side added content inside it is
a kind conflict as above (the local entry moves aside). Moves are delete + create (chunk reuse makes
them cheap).

Order (the executor runs the list in order): `MoveLocalAside`; deletes that make room for a create at the
same path or above it (a kind change), children first; creates (folders, uploads, downloads, conflicts),
parents first; the other deletes, children first (so files deleted by a move can lend their chunks to
the download of the new path); then base bookkeeping. Ties are broken by path and action type, so the
same inputs always give the same list.

Most plans converge in one round; conflicts and kind conflicts take two (the conflicted copy is pulled,
the moved-aside entry is pushed, on the next plan). The daemon re-plans until the plan is empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from client.tree import (
    Kind,
    Node,
    Tree,
    conflicted_copy_name,
    is_under,
    parents,
    path_key,
    same_content,
    with_parents,
)


@dataclass(frozen=True)
class Upload:
    """Upload the local file at `path` (`digest` = its content digest when planned) as a new version.

    `base_version`: the version the local content was edited from (None = a new file: the server
    makes a conflicted copy if a live file appeared at `path` meanwhile). `file_id`: the remote file at
    `path`, or None. The executor chunks the file when it uploads; it records in base what it committed:
    `Node(FILE, committed digest, file_id, version_id)` if the commit answers `conflict: false`, else
    `Node(FILE, committed digest)` without ids ("this content is safe on the server", so the next plan
    pulls the remote version to `path` instead of uploading it again).
    """

    path: str
    base_version: int | None
    file_id: int | None
    digest: str | None


@dataclass(frozen=True)
class Download:
    """Download version `version_id` of file `file_id` (content `digest`) to `path`.

    Only if the local `path` still holds `local_digest_expected` (None: nothing at `path`); otherwise
    the local entry changed since the scan and the executor skips (the next plan sees the change).
    Missing parent folders were created by earlier actions. Afterwards base[path] =
    `Node(FILE, digest, file_id, version_id)`.
    """

    path: str
    file_id: int | None
    version_id: int | None
    digest: str | None
    local_digest_expected: str | None


@dataclass(frozen=True)
class DeleteLocal:
    """Delete the local entry at `path` (the remote side deleted it, or replaced it with another kind).

    A file only if its digest still equals `digest_expected` (the base content: the local side never
    changed it). A folder (`digest_expected` None) only if it is empty by then (its contents were
    deleted by earlier actions; ignored files may be removed with it). Otherwise skip. Afterwards the
    base entry of `path` is removed.
    """

    path: str
    digest_expected: str | None
    kind: Kind


@dataclass(frozen=True)
class DeleteRemote:
    """Soft-delete the remote entry `file_id` at `path` (the local side deleted it or changed its kind).

    A file only if its current version is still `version_expected` (the base content: the remote side
    never changed it). A folder (`version_expected` None): the server deletes everything under it, so
    only if it has no live entry under it by then (its contents were deleted by earlier actions). If
    `file_id` is None (a folder only implied by its contents) nothing is sent. Afterwards the base entry
    of `path` is removed.
    """

    path: str
    file_id: int | None
    version_expected: int | None
    kind: Kind


@dataclass(frozen=True)
class MakeLocalFolder:
    """Create the local folder `path` (the remote folder `file_id`); base[path] = `Node(FOLDER, None, file_id)`.

    Skip if a file is at `path` locally by then.
    """

    path: str
    file_id: int | None


@dataclass(frozen=True)
class MakeRemoteFolder:
    """Create the remote folder `path` (`POST /folders`); base[path] = `Node(FOLDER, None, returned file_id)`.

    409 PathExists (a live file appeared there) -> skip.
    """

    path: str


@dataclass(frozen=True)
class RecordSynced:
    """Both sides already hold the same thing at `path`: base[path] = `node` (the remote node)."""

    path: str
    node: Node


@dataclass(frozen=True)
class ForgetBase:
    """Both sides deleted `path`: remove its base entry."""

    path: str


@dataclass(frozen=True)
class Conflict:
    """Both sides changed the file at `path` differently.

    1. Upload the local file (content `local_digest`) with `base_version` (stale: the base version, or
       None while a live file is at `path`), so the server stores it as `name (<device>'s conflicted
       copy YYYY-MM-DD).ext`. If the commit answers `conflict: false` (the remote file vanished
       meanwhile), record it like an `Upload` and stop.
    2. Record base[path] = `Node(FILE, local_digest)` (safe on the server, no ids).
    3. Download `remote_version` of `file_id` (content `remote_digest`) to `path` if the local file still
       holds `local_digest`; base[path] = `Node(FILE, remote_digest, file_id, remote_version)`.
    The conflicted copy comes down on the next plan as a new remote file.
    """

    path: str
    remote_version: int | None
    file_id: int | None
    remote_digest: str | None
    local_digest: str | None
    base_version: int | None


@dataclass(frozen=True)
class MoveLocalAside:
    """Kind conflict at `path`: rename the local entry (`kind`; a folder with everything in it) to `to_path`.

    `to_path` is a conflicted-copy name free in all three trees. Then remove the base entries of `path`
    and everything under it, so the next plan pulls the remote entry to `path` and pushes `to_path` as
    new. Skip (and forget nothing) if `to_path` exists locally by then.
    """

    path: str
    to_path: str
    kind: Kind


Action = (
    Upload
    | Download
    | DeleteLocal
    | DeleteRemote
    | MakeLocalFolder
    | MakeRemoteFolder
    | RecordSynced
    | ForgetBase
    | Conflict
    | MoveLocalAside
)

_LOCAL_CREATES = (Download, MakeLocalFolder, Conflict)
_REMOTE_CREATES = (Upload, MakeRemoteFolder)
_CREATES = (MakeLocalFolder, MakeRemoteFolder, Upload, Download, Conflict)
_TYPE_ORDER: dict[type, int] = {
    action_type: rank
    for rank, action_type in enumerate(
        (
            MoveLocalAside,
            DeleteLocal,
            DeleteRemote,
            MakeLocalFolder,
            MakeRemoteFolder,
            Upload,
            Download,
            Conflict,
            RecordSynced,
            ForgetBase,
        )
    )
}


@dataclass
class _Decision:
    """What one path gets: its actions, and what will be at `path` afterwards (`final`)."""

    actions: list[Action]
    final: Kind | None
    aside: bool = False


def plan(remote: Tree, local: Tree, base: Tree, device: str, *, now: float | None = None) -> list[Action]:
    """The actions that bring `local`, `remote` and `base` into agreement, in execution order.

    `remote`: the server's tree (ids set); `local`: the folder's tree (no ids); `base`: the last-synced
    tree; implied parent folders may be left out of any of them. `device`: this device's name, and
    `now` (unix seconds, or None for no date) the time, both only for naming a moved-aside local entry
    like the server names conflicted copies. Pure and deterministic. Raises ValueError if a tree has an
    entry under a file.
    """
    remote_tree, local_tree, base_tree = with_parents(remote), with_parents(local), with_parents(base)
    paths = sorted(set(remote_tree) | set(local_tree) | set(base_tree), key=path_key)
    decisions = {
        path: _decide(path, remote_tree.get(path), local_tree.get(path), base_tree.get(path)) for path in paths
    }
    _keep_folders_with_survivors(paths, decisions, remote_tree, local_tree)
    taken = set(paths)
    actions: list[Action] = []
    aside_paths: list[str] = []
    for path in paths:
        if any(is_under(path, aside) for aside in aside_paths):
            continue  # the whole local subtree moves; the next plan deals with what is under it
        decision = decisions[path]
        if decision.aside:
            aside_paths.append(path)
            to_path = _free_name(path, device, now, taken)
            taken.add(to_path)
            local_node = local_tree[path]
            actions.append(MoveLocalAside(path, to_path, local_node.kind))
            continue
        actions.extend(decision.actions)
    return _order(actions)


def _decide(path: str, remote: Node | None, local: Node | None, base: Node | None) -> _Decision:
    """The decision for one path from its three entries alone (folders are fixed up afterwards)."""
    local_changed = not same_content(local, base)
    remote_changed = not same_content(remote, base)
    if not local_changed and not remote_changed:
        if remote is not None and base is not None and remote != base:
            return _Decision([RecordSynced(path, remote)], remote.kind)  # same content, new ids
        return _Decision([], None if remote is None else remote.kind)
    if local_changed and not remote_changed:
        return _push(path, remote, local)
    if remote_changed and not local_changed:
        return _pull(path, remote, local)
    if same_content(local, remote):
        if remote is None:
            return _Decision([ForgetBase(path)], None)
        return _Decision([RecordSynced(path, remote)], remote.kind)
    if local is None:
        return _pull(path, remote, local)  # remote edit beats local delete
    if remote is None:
        return _push(path, remote, local)  # local edit beats remote delete
    if local.kind == Kind.FILE and remote.kind == Kind.FILE:
        base_version = base.version_id if base is not None and base.kind == Kind.FILE else None
        conflict = Conflict(path, remote.version_id, remote.file_id, remote.digest, local.digest, base_version)
        return _Decision([conflict], Kind.FILE)
    return _Decision([], remote.kind, aside=True)  # file vs folder: the remote entry wins the path


def _push(path: str, remote: Node | None, local: Node | None) -> _Decision:
    """Make the remote side hold what the local side holds at `path`."""
    actions: list[Action] = []
    if remote is not None and (local is None or local.kind != remote.kind):
        actions.append(DeleteRemote(path, remote.file_id, remote.version_id, remote.kind))
        remote = None
    if local is None:
        return _Decision(actions, None)
    if local.kind == Kind.FOLDER:
        if remote is None:
            actions.append(MakeRemoteFolder(path))
        return _Decision(actions, Kind.FOLDER)
    if remote is None:
        actions.append(Upload(path, None, None, local.digest))
    else:
        actions.append(Upload(path, remote.version_id, remote.file_id, local.digest))
    return _Decision(actions, Kind.FILE)


def _pull(path: str, remote: Node | None, local: Node | None) -> _Decision:
    """Make the local side hold what the remote side holds at `path`."""
    actions: list[Action] = []
    if local is not None and (remote is None or local.kind != remote.kind):
        actions.append(DeleteLocal(path, local.digest, local.kind))
        local = None
    if remote is None:
        return _Decision(actions, None)
    if remote.kind == Kind.FOLDER:
        if local is None:
            actions.append(MakeLocalFolder(path, remote.file_id))
        return _Decision(actions, Kind.FOLDER)
    expected = None if local is None else local.digest
    actions.append(Download(path, remote.file_id, remote.version_id, remote.digest, expected))
    return _Decision(actions, Kind.FILE)


def _keep_folders_with_survivors(
    paths: list[str], decisions: dict[str, _Decision], remote: dict[str, Node], local: dict[str, Node]
) -> None:
    """Fix up folders whose contents survive: never delete (or replace by a file) a folder that keeps content.

    Deepest paths first, so a folder sees its children's final decisions. A folder deleted on one side
    is re-created there; a folder replaced by a file on one side is a kind conflict (local entry aside).
    """
    parents_of_survivors: set[str] = set()
    for path in reversed(paths):  # path_key order reversed: everything under a folder comes before it
        decision = decisions[path]
        if path in parents_of_survivors and not decision.aside:
            if decision.final is None:
                if local.get(path) is None:
                    decision.actions = [MakeLocalFolder(path, remote[path].file_id)]
                else:
                    decision.actions = [MakeRemoteFolder(path)]
                decision.final = Kind.FOLDER
            elif decision.final == Kind.FILE:
                decision.actions = []
                decision.aside = True
        if decision.aside or decision.final is not None:
            parents_of_survivors.add(path.rpartition("/")[0])


def _free_name(path: str, device: str, now: float | None, taken: set[str]) -> str:
    """The first conflicted-copy name of `path` not in `taken` (nor a folder above something taken)."""
    attempt = 1
    while True:
        candidate = conflicted_copy_name(path, device, now, attempt)
        if candidate not in taken and not any(is_under(other, candidate) for other in taken):
            return candidate
        attempt += 1


def _order(actions: Iterable[Action]) -> list[Action]:
    """Sort actions into execution order (module docstring): aside, blocking deletes, creates, deletes, records."""
    actions = list(actions)
    local_creates = {action.path for action in actions if isinstance(action, _LOCAL_CREATES)}
    remote_creates = {action.path for action in actions if isinstance(action, _REMOTE_CREATES)}

    def blocks_a_create(action: DeleteLocal | DeleteRemote) -> bool:
        creates = local_creates if isinstance(action, DeleteLocal) else remote_creates
        return action.path in creates or any(parent in creates for parent in parents(action.path))

    def sort_key(action: Action) -> tuple[int, tuple[str, ...], int]:
        rank = _TYPE_ORDER[type(action)]
        key = path_key(action.path)
        if isinstance(action, MoveLocalAside):
            return (0, key, rank)
        if isinstance(action, DeleteLocal | DeleteRemote):
            # Children first: negate by sorting on a reversed key below.
            return (1 if blocks_a_create(action) else 3, key, rank)
        if isinstance(action, _CREATES):
            return (2, key, rank)
        return (4, key, rank)

    keyed = [(sort_key(action), action) for action in actions]
    phases: dict[int, list[tuple[tuple[str, ...], int, Action]]] = {}
    for (phase, key, rank), action in keyed:
        phases.setdefault(phase, []).append((key, rank, action))
    ordered: list[Action] = []
    for phase in sorted(phases):
        entries = phases[phase]
        children_first = phase in (1, 3)
        entries.sort(key=lambda entry: (entry[0], entry[1]), reverse=children_first)
        ordered.extend(action for _, _, action in entries)
    return ordered
