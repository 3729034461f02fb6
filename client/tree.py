"""Trees of a synced folder: what the planner compares (contracts section 5). Pure, no I/O.

A tree maps a relative '/'-separated path (the server's path rules: no leading/trailing '/', no empty,
'.' or '..' component) to a `Node`. Three trees describe one synced folder:

- the **remote** tree: what the server holds (`file_id`, `version_id` set; folders have no version);
- the **local** tree: what the folder on disk holds now (`file_id`/`version_id` None);
- the **base** tree: what both sides last agreed on (the last-synced state, with the server's ids).

Folders are listed explicitly, but every parent of an entry is implied to be a folder:
`with_parents` makes the implied folders explicit so the planner sees every level.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """The kind of an entry: the server's `kind` strings."""

    FILE = "file"
    FOLDER = "folder"


@dataclass(frozen=True)
class Node:
    """One entry of a tree.

    `digest`: for files the `client.chunking.content_digest` of the chunk list (64 hex chars; equal iff
    same content), for folders None. `file_id` / `version_id`: the server's ids (remote and base trees);
    None in the local tree, for folders' `version_id`, and for a base entry that records only "this
    content is safe on the server" (e.g. after an upload the server stored as a conflicted copy).
    """

    kind: Kind
    digest: str | None
    file_id: int | None = None
    version_id: int | None = None


Tree = Mapping[str, Node]


def same_content(first: Node | None, second: Node | None) -> bool:
    """Whether two tree entries hold the same thing: both absent, both folders, or files with one digest.

    Server ids are ignored: the local tree has none, and a new version with unchanged content is no change.
    """
    if first is None or second is None:
        return first is None and second is None
    if first.kind != second.kind:
        return False
    return first.kind == Kind.FOLDER or first.digest == second.digest


def path_key(path: str) -> tuple[str, ...]:
    """Sort key that puts a folder right before everything under it ("a" < "a/b" < "a b").

    Plain string order would put "a b" between "a" and "a/b" (' ' < '/'); component tuples do not.
    """
    return tuple(path.split("/"))


def parents(path: str) -> list[str]:
    """The folders above `path`, outermost first: "a/b/c" -> ["a", "a/b"]; "a" -> []."""
    parts = path.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


def is_under(path: str, folder: str) -> bool:
    """Whether `path` is strictly inside `folder` ("a/b" is under "a"; "a" and "ab" are not)."""
    return path.startswith(folder + "/")


def within(path: str, roots: AbstractSet[str]) -> bool:
    """Whether `path` is one of `roots` or under one of them ("" among `roots` is the whole tree).

    Costs one set lookup per folder above `path`, not one per root."""
    return path in roots or "" in roots or any(parent in roots for parent in parents(path))


def hold_unknown(local: Tree, base: Tree, unknown: AbstractSet[str]) -> dict[str, Node]:
    """`local` with every path `within` `unknown` given its `base` state (or left out if base lacks it).

    For local paths whose state a scan could not know (a file being written, an unreadable folder, a
    folder renamed during the walk): the planner then sees them unchanged, so their absence from the
    scan never reads as a delete."""
    held = {path: node for path, node in local.items() if not within(path, unknown)}
    held.update((path, node) for path, node in base.items() if within(path, unknown))
    return held


def with_parents(tree: Tree) -> dict[str, Node]:
    """A copy of `tree` with every implied parent folder listed (as `Node(Kind.FOLDER, None)`).

    Raises ValueError if an entry sits under a file (no tree on disk or on the server has that shape).
    """
    complete = dict(tree)
    implied = Node(Kind.FOLDER, None)
    for path in tree:
        parent = path.rpartition("/")[0]
        while parent:
            node = complete.get(parent)
            if node is not None:
                if node.kind != Kind.FOLDER:
                    raise ValueError(f"{path!r} is under the file {parent!r}")
                break  # its own parents are checked (or were added) when it is visited
            complete[parent] = implied
            parent = parent.rpartition("/")[0]
    return complete


def subtree(paths: Iterable[str], folder: str) -> list[str]:
    """The paths among `paths` equal to `folder` or under it, in `path_key` order."""
    return sorted((path for path in paths if path == folder or is_under(path, folder)), key=path_key)


def conflicted_copy_name(path: str, device: str, when: float | None, attempt: int) -> str:
    """A conflicted-copy name for `path` in the server's format (metadata/sync_records.py).

    "docs/report.pdf", "laptop", 2026-11-22 -> "docs/report (laptop's conflicted copy 2026-11-22).pdf"
    (UTC date of `when`, unix seconds; `when` None leaves the date out). Attempt n >= 2 adds " (n)"
    before the extension (the last '.'-suffix of the last component, unless the '.' is its first
    character). Dropbox's naming. Raises ValueError if attempt < 1.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    folder, slash, name = path.rpartition("/")
    dot = name.rfind(".")
    stem, extension = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    date = "" if when is None else " " + datetime.datetime.fromtimestamp(when, tz=datetime.UTC).strftime("%Y-%m-%d")
    counter = f" ({attempt})" if attempt > 1 else ""
    return f"{folder}{slash}{stem} ({device}'s conflicted copy{date}){counter}{extension}"
