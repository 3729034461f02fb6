"""Table-driven tests of the planner's rules (client/planner.py), plus an exhaustive two-path sweep."""

from __future__ import annotations

import itertools

import pytest

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
from client.tree import (
    Kind,
    Node,
    conflicted_copy_name,
    hold_unknown,
    is_under,
    parents,
    path_key,
    same_content,
    with_parents,
    within,
)
from tests.unit.client.sync_model import Device, ModelServer, ServerEntry, World, contents

FILE, FOLDER = Kind.FILE, Kind.FOLDER
WHEN = 1_790_000_000.0  # 2026-09-21 UTC
P = "f.txt"
ASIDE_FILE = "f (dev's conflicted copy 2026-09-21).txt"


def local_file(digest: str) -> Node:
    return Node(FILE, digest)


LOCAL_FOLDER = Node(FOLDER, None)
BASE_1 = Node(FILE, "d1", 1, 10)  # base and remote share ids when the remote did not change
REMOTE_2 = Node(FILE, "d2", 1, 11)
REMOTE_3 = Node(FILE, "d3", 1, 12)
REMOTE_1_NEW_VERSION = Node(FILE, "d1", 1, 13)
REMOTE_FOLDER = Node(FOLDER, None, 2)


def one_path(base: Node | None, local: Node | None, remote: Node | None) -> list[Action]:
    def tree(node: Node | None) -> dict[str, Node]:
        return {} if node is None else {P: node}

    return plan(tree(remote), tree(local), tree(base), "dev", now=WHEN)


# (name, base, local, remote, expected plan)
SINGLE_PATH_RULES: list[tuple[str, Node | None, Node | None, Node | None, list[Action]]] = [
    ("all absent", None, None, None, []),
    ("unchanged", BASE_1, local_file("d1"), BASE_1, []),
    ("new remote file", None, None, REMOTE_2, [Download(P, 1, 11, "d2", None)]),
    ("new local file", None, local_file("d1"), None, [Upload(P, None, None, "d1")]),
    ("local edit", BASE_1, local_file("d2"), BASE_1, [Upload(P, 10, 1, "d2")]),
    ("remote edit", BASE_1, local_file("d1"), REMOTE_2, [Download(P, 1, 11, "d2", "d1")]),
    ("same edit both sides", BASE_1, local_file("d2"), REMOTE_2, [RecordSynced(P, REMOTE_2)]),
    ("different edits", BASE_1, local_file("d2"), REMOTE_3, [Conflict(P, 12, 1, "d3", "d2", 10)]),
    ("both created differently", None, local_file("d1"), REMOTE_2, [Conflict(P, 11, 1, "d2", "d1", None)]),
    ("both created the same", None, local_file("d2"), REMOTE_2, [RecordSynced(P, REMOTE_2)]),
    ("local delete", BASE_1, None, BASE_1, [DeleteRemote(P, 1, 10, FILE)]),
    ("remote delete", BASE_1, local_file("d1"), None, [DeleteLocal(P, "d1", FILE)]),
    ("both deleted", BASE_1, None, None, [ForgetBase(P)]),
    ("local edit beats remote delete", BASE_1, local_file("d2"), None, [Upload(P, None, None, "d2")]),
    ("remote edit beats local delete", BASE_1, None, REMOTE_2, [Download(P, 1, 11, "d2", None)]),
    ("new version, same content", BASE_1, local_file("d1"), REMOTE_1_NEW_VERSION,
     [RecordSynced(P, REMOTE_1_NEW_VERSION)]),
    ("local edit on a same-content new version", BASE_1, local_file("d2"), REMOTE_1_NEW_VERSION,
     [Upload(P, 13, 1, "d2")]),
    ("new remote folder", None, None, REMOTE_FOLDER, [MakeLocalFolder(P, 2)]),
    ("new local folder", None, LOCAL_FOLDER, None, [MakeRemoteFolder(P)]),
    ("both made the folder", None, LOCAL_FOLDER, REMOTE_FOLDER, [RecordSynced(P, REMOTE_FOLDER)]),
    ("local folder deleted", Node(FOLDER, None, 2), None, REMOTE_FOLDER, [DeleteRemote(P, 2, None, FOLDER)]),
    ("remote folder deleted", Node(FOLDER, None, 2), LOCAL_FOLDER, None, [DeleteLocal(P, None, FOLDER)]),
    ("local file became a folder", BASE_1, LOCAL_FOLDER, BASE_1,
     [DeleteRemote(P, 1, 10, FILE), MakeRemoteFolder(P)]),
    ("remote file became a folder", BASE_1, local_file("d1"), REMOTE_FOLDER,
     [DeleteLocal(P, "d1", FILE), MakeLocalFolder(P, 2)]),
    ("local folder became a file", Node(FOLDER, None, 2), local_file("d1"), REMOTE_FOLDER,
     [DeleteRemote(P, 2, None, FOLDER), Upload(P, None, None, "d1")]),
    ("remote folder became a file", Node(FOLDER, None, 2), LOCAL_FOLDER, REMOTE_2,
     [DeleteLocal(P, None, FOLDER), Download(P, 1, 11, "d2", None)]),
    ("both turned a folder into different files", Node(FOLDER, None, 2), local_file("d1"), REMOTE_2,
     [Conflict(P, 11, 1, "d2", "d1", None)]),
    ("both turned a file into a folder", BASE_1, LOCAL_FOLDER, REMOTE_FOLDER, [RecordSynced(P, REMOTE_FOLDER)]),
    ("kind conflict: new local file, new remote folder", None, local_file("d1"), REMOTE_FOLDER,
     [MoveLocalAside(P, ASIDE_FILE, FILE)]),
    ("kind conflict: new local folder, new remote file", None, LOCAL_FOLDER, REMOTE_2,
     [MoveLocalAside(P, ASIDE_FILE, FOLDER)]),
    ("kind conflict: local edit, remote folder", BASE_1, local_file("d2"), REMOTE_FOLDER,
     [MoveLocalAside(P, ASIDE_FILE, FILE)]),
    ("kind conflict: local folder, remote edit", BASE_1, LOCAL_FOLDER, REMOTE_2,
     [MoveLocalAside(P, ASIDE_FILE, FOLDER)]),
    ("folder deleted locally, made a file remotely", Node(FOLDER, None, 2), None, REMOTE_2,
     [Download(P, 1, 11, "d2", None)]),
]


@pytest.mark.parametrize(("base", "local", "remote", "expected"),
                         [row[1:] for row in SINGLE_PATH_RULES], ids=[row[0] for row in SINGLE_PATH_RULES])
def test_single_path_rule(base: Node | None, local: Node | None, remote: Node | None, expected: list[Action]) -> None:
    assert one_path(base, local, remote) == expected


def test_remote_folder_delete_keeps_the_folder_when_local_added_inside() -> None:
    base = {"a": Node(FOLDER, None, 1), "a/old": Node(FILE, "o", 2, 20)}
    local = {"a": LOCAL_FOLDER, "a/old": local_file("o"), "a/new": local_file("n")}
    assert plan({}, local, base, "dev") == [
        MakeRemoteFolder("a"),
        Upload("a/new", None, None, "n"),
        DeleteLocal("a/old", "o", FILE),
    ]


def test_local_folder_delete_keeps_the_folder_when_remote_added_inside() -> None:
    base = {"a": Node(FOLDER, None, 1), "a/old": Node(FILE, "o", 2, 20)}
    remote = {**base, "a/new": Node(FILE, "n", 3, 30)}
    assert plan(remote, {}, base, "dev") == [
        MakeLocalFolder("a", 1),
        Download("a/new", 3, 30, "n", None),
        DeleteRemote("a/old", 2, 20, FILE),
    ]


def test_local_edit_inside_a_remotely_deleted_folder_is_kept_at_any_depth() -> None:
    base = {"a/b/c": Node(FILE, "c1", 3, 30), "a": Node(FOLDER, None, 1), "a/b": Node(FOLDER, None, 2)}
    local = {"a/b/c": local_file("c2")}
    assert plan({}, local, base, "dev") == [
        MakeRemoteFolder("a"),
        MakeRemoteFolder("a/b"),
        Upload("a/b/c", None, None, "c2"),
    ]


def test_remote_folder_replaced_by_file_while_local_added_inside_moves_the_local_folder_aside() -> None:
    base = {"a": Node(FOLDER, None, 1), "a/old": Node(FILE, "o", 2, 20)}
    local = {"a": LOCAL_FOLDER, "a/old": local_file("o"), "a/new": local_file("n")}
    remote = {"a": Node(FILE, "f", 5, 50)}
    assert plan(remote, local, base, "dev", now=WHEN) == [
        MoveLocalAside("a", "a (dev's conflicted copy 2026-09-21)", FOLDER)
    ]


def test_local_folder_replaced_by_file_while_remote_added_inside_moves_the_local_file_aside() -> None:
    base = {"a": Node(FOLDER, None, 1), "a/old": Node(FILE, "o", 2, 20)}
    remote = {**base, "a/new": Node(FILE, "n", 3, 30)}
    local = {"a": local_file("f")}
    assert plan(remote, local, base, "dev") == [MoveLocalAside("a", "a (dev's conflicted copy)", FILE)]


def test_aside_name_skips_taken_names() -> None:
    taken = conflicted_copy_name(P, "dev", WHEN, 1)
    local = {P: local_file("d1"), taken: local_file("x")}
    remote = {P: REMOTE_FOLDER, taken: Node(FILE, "x", 9, 90)}
    base = {taken: Node(FILE, "x", 9, 90)}
    assert plan(remote, local, base, "dev", now=WHEN) == [
        MoveLocalAside(P, "f (dev's conflicted copy 2026-09-21) (2).txt", FILE)
    ]


def test_remote_move_downloads_before_deleting_and_orders_folders() -> None:
    base = {"a": Node(FOLDER, None, 1), "a/x": Node(FILE, "x", 2, 20)}
    local = {"a": LOCAL_FOLDER, "a/x": local_file("x")}
    remote = {"b": Node(FOLDER, None, 3), "b/x": Node(FILE, "x", 2, 21)}
    assert plan(remote, local, base, "dev") == [
        MakeLocalFolder("b", 3),
        Download("b/x", 2, 21, "x", None),
        DeleteLocal("a/x", "x", FILE),
        DeleteLocal("a", None, FOLDER),
    ]


def test_local_move_uploads_before_deleting_remote() -> None:
    base = {"a": Node(FOLDER, None, 1), "a/x": Node(FILE, "x", 2, 20)}
    local = {"b": LOCAL_FOLDER, "b/x": local_file("x")}
    assert plan(base, local, base, "dev") == [
        MakeRemoteFolder("b"),
        Upload("b/x", None, None, "x"),
        DeleteRemote("a/x", 2, 20, FILE),
        DeleteRemote("a", 1, None, FOLDER),
    ]


def test_folder_moved_during_the_scan_is_held_at_base_not_deleted() -> None:
    # The scan listed "p" (holding "p/a"), then "p/a" was renamed to "p/g" before the walk read it:
    # the scan has neither, and notes "p/a" as moved during the scan.
    base = {"p": Node(FOLDER, None, 1), "p/a": Node(FOLDER, None, 2), "p/a/x": Node(FILE, "x", 3, 30),
            "p/a/y": Node(FILE, "y", 4, 40), "p/ab": Node(FILE, "z", 5, 50)}
    local = {"p": LOCAL_FOLDER, "p/ab": local_file("z")}
    assert DeleteRemote("p/a/x", 3, 30, FILE) in plan(base, local, base, "dev")  # what a bare plan would do
    held = hold_unknown(local, base, {"p/a"})
    assert held == {"p": LOCAL_FOLDER, "p/ab": local_file("z"), "p/a": base["p/a"], "p/a/x": base["p/a/x"],
                    "p/a/y": base["p/a/y"]}
    assert plan(base, held, base, "dev") == []


def test_unknown_paths_keep_base_state_and_hide_new_local_entries() -> None:
    base = {"d": Node(FOLDER, None, 1), "d/x": Node(FILE, "x", 2, 20)}
    local = {"d": LOCAL_FOLDER, "d/new": local_file("n"), "e": local_file("e")}
    assert hold_unknown(local, base, {"d"}) == {"d": base["d"], "d/x": base["d/x"], "e": local_file("e")}
    assert hold_unknown(local, base, {""}) == base  # the root itself unknown: nothing local is trusted
    assert hold_unknown(local, base, set()) == local


def test_kind_change_deletes_make_room_first_children_first() -> None:
    base = {"a": Node(FOLDER, None, 1), "a/x": Node(FILE, "x", 2, 20), "a/x2": Node(FILE, "y", 4, 40)}
    local = {"a": LOCAL_FOLDER, "a/x": local_file("x"), "a/x2": local_file("y")}
    remote = {"a": Node(FILE, "f", 3, 30)}
    assert plan(remote, local, base, "dev") == [
        DeleteLocal("a/x2", "y", FILE),
        DeleteLocal("a/x", "x", FILE),
        DeleteLocal("a", None, FOLDER),
        Download("a", 3, 30, "f", None),
    ]


def test_remote_file_became_folder_with_content() -> None:
    base = {"a": Node(FILE, "f", 1, 10)}
    local = {"a": local_file("f")}
    remote = {"a": Node(FOLDER, None, 2), "a/x": Node(FILE, "x", 3, 30)}
    assert plan(remote, local, base, "dev") == [
        DeleteLocal("a", "f", FILE),
        MakeLocalFolder("a", 2),
        Download("a/x", 3, 30, "x", None),
    ]


def test_both_deleted_a_folder() -> None:
    base = {"a": Node(FOLDER, None, 1), "a/x": Node(FILE, "x", 2, 20)}
    assert plan({}, {}, base, "dev") == [ForgetBase("a"), ForgetBase("a/x")]


def test_implied_parent_folders_are_planned() -> None:
    remote = {"a/b/x": Node(FILE, "x", 3, 30)}
    assert plan(remote, {}, {}, "dev") == [
        MakeLocalFolder("a", None),
        MakeLocalFolder("a/b", None),
        Download("a/b/x", 3, 30, "x", None),
    ]


def test_sibling_named_like_a_folder_prefix_is_not_inside_it() -> None:
    base = {"a": Node(FOLDER, None, 1), "a b": Node(FILE, "s", 2, 20), "a/x": Node(FILE, "x", 3, 30)}
    local = {"a b": local_file("s"), "a": LOCAL_FOLDER, "a/x": local_file("x")}
    remote = {"a b": Node(FILE, "s", 2, 20)}  # the remote deleted folder "a" only
    assert plan(remote, local, base, "dev") == [DeleteLocal("a/x", "x", FILE), DeleteLocal("a", None, FOLDER)]


def test_same_inputs_same_plan_whatever_the_mapping_order() -> None:
    base = {f"d{i}/f{j}": Node(FILE, f"x{i}{j}", i * 10 + j, 100 + i * 10 + j) for i in range(3) for j in range(3)}
    local = {path: local_file(str(node.digest) + ("!" if path.endswith("1") else "")) for path, node in base.items()}
    remote = {path: node for path, node in base.items() if not path.startswith("d2")}
    forward = plan(remote, local, base, "dev")
    backward = plan(dict(reversed(remote.items())), dict(reversed(local.items())), dict(reversed(base.items())), "dev")
    assert forward == backward
    assert forward  # the example does plan something


def test_entry_under_a_file_is_refused() -> None:
    with pytest.raises(ValueError, match="under the file"):
        plan({"a": Node(FILE, "x", 1, 1), "a/b": Node(FILE, "y", 2, 2)}, {}, {}, "dev")
    with pytest.raises(ValueError, match="under the file"):
        plan({}, {"a/b/c": local_file("x"), "a/b": LOCAL_FOLDER, "a": local_file("y")}, {}, "dev")


def test_tree_helpers() -> None:
    assert parents("a/b/c") == ["a", "a/b"]
    assert parents("a") == []
    assert is_under("a/b", "a") and not is_under("a", "a") and not is_under("ab", "a")
    assert within("a", {"a"}) and within("a/b/c", {"a/b"}) and within("z", {""})
    assert not within("ab", {"a"}) and not within("a", {"a/b"}) and not within("a", set())
    assert sorted(["a/b", "a b", "a"], key=path_key) == ["a", "a/b", "a b"]
    assert same_content(None, None) and not same_content(None, LOCAL_FOLDER)
    assert same_content(Node(FILE, "x", 1, 1), local_file("x")) and not same_content(local_file("x"), LOCAL_FOLDER)
    assert with_parents({"a/b": local_file("x")}) == {"a/b": local_file("x"), "a": LOCAL_FOLDER}
    assert conflicted_copy_name("docs/r.pdf", "lap", WHEN, 1) == "docs/r (lap's conflicted copy 2026-09-21).pdf"
    assert conflicted_copy_name(".bashrc", "lap", None, 3) == ".bashrc (lap's conflicted copy) (3)"
    with pytest.raises(ValueError, match="attempt"):
        conflicted_copy_name("x", "lap", None, 0)


# --- exhaustive: every consistent (base, local, remote) over the paths "a" and "a/x" ------------------------

STATES: list[tuple[Kind, str | None] | None] = [None, (FILE, "d1"), (FILE, "d2"), (FOLDER, None)]


def _shapes() -> list[dict[str, tuple[Kind, str | None]]]:
    """Every consistent tree over "a" and "a/x": 1 empty + 2 files + 4 under a folder = 7."""
    shapes: list[dict[str, tuple[Kind, str | None]]] = []
    for top, child in itertools.product(STATES, STATES):
        if top is None and child is not None:
            continue
        if top is not None and top[0] == FILE and child is not None:
            continue
        shape = {} if top is None else {"a": top}
        if child is not None:
            shape["a/x"] = child
        shapes.append(shape)
    return shapes


def _version(path: str, digest: str | None) -> int | None:
    return None if digest is None else 100 + 10 * ["a", "a/x"].index(path) + int(digest[1:])


def _with_ids(shape: dict[str, tuple[Kind, str | None]]) -> dict[str, Node]:
    return {
        path: Node(kind, digest, 1 + ["a", "a/x"].index(path) + (2 if kind == FOLDER else 0), _version(path, digest))
        for path, (kind, digest) in shape.items()
    }


COMBINATIONS = list(itertools.product(_shapes(), repeat=3))


def test_exhaustive_two_path_combinations_are_safe_and_converge() -> None:
    assert len(COMBINATIONS) == 343
    for base_shape, local_shape, remote_shape in COMBINATIONS:
        case = f"base={base_shape} local={local_shape} remote={remote_shape}"
        base, remote = _with_ids(base_shape), _with_ids(remote_shape)
        local = {path: Node(kind, digest) for path, (kind, digest) in local_shape.items()}
        actions = plan(remote, local, base, "dev")
        for action in actions:
            if isinstance(action, DeleteLocal):
                assert same_content(with_parents(local).get(action.path), with_parents(base).get(action.path)), case
            uploads_over = isinstance(action, Upload) and action.base_version is not None
            overwrites = isinstance(action, DeleteRemote) or uploads_over
            if overwrites and action.path in remote:
                assert same_content(remote[action.path], base.get(action.path)), case
            if isinstance(action, Download) and action.local_digest_expected is not None:
                assert same_content(local[action.path], base.get(action.path)), case
        # Run it: one device against a server holding `remote`.
        server = ModelServer(last_id=1000)
        for path, node in remote.items():
            server.entries[path] = ServerEntry(int(node.file_id or 0), node.kind, node.version_id, node.digest)
        for node in [*remote.values(), *base.values()]:
            if node.version_id is not None:
                server.versions[node.version_id] = str(node.digest)
        world = World(server, [Device("dev", local=dict(with_parents(local)), base=dict(base))])
        world.settle(max_rounds=4)
        assert contents(world.devices[0].local) == contents(server.tree()), case
        survivors = server.live_digests()
        for path, node in local.items():  # local changes survive
            if not same_content(node, base.get(path)) and node.digest is not None:
                assert node.digest in survivors, case
        for path, node in remote.items():  # remote changes survive
            if not same_content(node, base.get(path)) and node.digest is not None:
                assert node.digest in survivors, case
