"""Property tests of the planner (issue 4 acceptance 8): generated trees and event orders.

Two families:
- plans of generated (remote, local, base) trees: quiescence, determinism, safety (nothing changed is
  deleted or overwritten), execution order, idempotence;
- a model world (tests/unit/client/sync_model.py: a server with the conflict rule, two or three
  devices, the daemon's executor) driven by random interleavings of local edits (write, mkdir, delete,
  rename), syncs, plans executed later (stale against the server and the folder), and daemons dying
  in the middle of a plan; afterwards every device syncs until nothing is planned: all folders equal the server
  (convergence) and every content written and not deliberately deleted or overwritten by a device that
  had it is live on the server (no loss).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.planner import (
    Action,
    Conflict,
    DeleteLocal,
    DeleteRemote,
    Download,
    MakeLocalFolder,
    MakeRemoteFolder,
    MoveLocalAside,
    Upload,
    plan,
)
from client.tree import Kind, Node, is_under, path_key, same_content, with_parents
from tests.unit.client.sync_model import Device, ModelServer, ServerEntry, World, contents

PATHS = ["a", "b.txt", "a/x.txt", "a/b", "a/b/c.txt", "a/b/d", "c"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def shapes(draw: st.DrawFn) -> dict[str, tuple[Kind, str | None]]:
    """A consistent tree over PATHS: each path absent, a file of one of three contents, or a folder."""
    states = st.sampled_from([None, (Kind.FILE, "d1"), (Kind.FILE, "d2"), (Kind.FILE, "d3"), (Kind.FOLDER, None)])
    shape: dict[str, tuple[Kind, str | None]] = {}
    for path in sorted(PATHS, key=path_key):
        state = draw(states)
        if state is None:
            continue
        if any(shape.get(parent, (Kind.FOLDER, None))[0] == Kind.FILE for parent in _parents(path)):
            continue
        shape[path] = state
    complete = with_parents({path: Node(kind, digest) for path, (kind, digest) in shape.items()})
    return {path: (node.kind, node.digest) for path, node in complete.items()}


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


def _with_ids(shape: dict[str, tuple[Kind, str | None]], bump: int) -> dict[str, Node]:
    """Server ids: file_id by path (folders apart), version_id by (path, content, bump): one digest per version."""
    return {
        path: Node(
            kind,
            digest,
            10 * PATHS.index(path) + (5 if kind == Kind.FOLDER else 0) + 1,
            None if digest is None else 1000 * bump + 10 * PATHS.index(path) + int(digest[1:]),
        )
        for path, (kind, digest) in shape.items()
    }


@st.composite
def three_trees(draw: st.DrawFn) -> tuple[dict[str, Node], dict[str, Node], dict[str, Node]]:
    """(remote, local, base): the remote sometimes re-versions unchanged content (bump)."""
    base = _with_ids(draw(shapes()), 0)
    remote = _with_ids(draw(shapes()), draw(st.sampled_from([0, 0, 1])))
    local = {path: Node(kind, digest) for path, (kind, digest) in draw(shapes()).items()}
    return remote, local, base


def _server_holding(remote: dict[str, Node], base: dict[str, Node]) -> ModelServer:
    server = ModelServer(last_id=10_000)
    for path, node in remote.items():
        server.entries[path] = ServerEntry(int(node.file_id or 0), node.kind, node.version_id, node.digest)
    for node in [*remote.values(), *base.values()]:
        if node.version_id is not None:
            server.versions[node.version_id] = str(node.digest)
    return server


@FAST
@given(st.builds(lambda shape: _with_ids(shape, 0), shapes()))
def test_quiescence(tree: dict[str, Node]) -> None:
    local = {path: Node(node.kind, node.digest) for path, node in tree.items()}
    assert plan(tree, local, tree, "dev") == []


@FAST
@given(three_trees())
def test_plans_are_deterministic_safe_and_ordered(trees: tuple[dict[str, Node], ...]) -> None:
    remote, local, base = trees
    actions = plan(remote, local, base, "dev")
    assert actions == plan(dict(reversed(remote.items())), dict(reversed(local.items())), base, "dev")
    for action in actions:
        # Nothing the other side changed is ever deleted or overwritten.
        if isinstance(action, DeleteLocal):
            assert same_content(local.get(action.path), base.get(action.path))
            assert local[action.path].digest == action.digest_expected
        if isinstance(action, DeleteRemote):
            assert same_content(remote.get(action.path), base.get(action.path))
            assert remote[action.path].version_id == action.version_expected
        if isinstance(action, Download) and action.local_digest_expected is not None:
            assert same_content(local.get(action.path), base.get(action.path))
        if isinstance(action, Upload) and action.base_version is not None:
            assert same_content(remote.get(action.path), base.get(action.path))
            assert remote[action.path].version_id == action.base_version
        if isinstance(action, Conflict):
            assert action.base_version is None or action.base_version != remote[action.path].version_id
    _assert_order(actions)


def _assert_order(actions: list[Action]) -> None:
    """Creates: parents first; deletes: children first; nothing planned under a moved-aside path."""
    position = {(type(action), action.path): index for index, action in enumerate(actions)}
    asides = [action.path for action in actions if isinstance(action, MoveLocalAside)]
    for index, action in enumerate(actions):
        assert not any(is_under(action.path, aside) for aside in asides)
        if isinstance(action, MakeLocalFolder | Download | Conflict | MakeRemoteFolder | Upload):
            local_side = isinstance(action, MakeLocalFolder | Download | Conflict)
            folder_type = MakeLocalFolder if local_side else MakeRemoteFolder
            for parent in _parents(action.path):
                if (folder_type, parent) in position:
                    assert position[(folder_type, parent)] < index
        if isinstance(action, DeleteLocal | DeleteRemote):
            for other in actions[index + 1 :]:
                assert not (type(other) is type(action) and is_under(other.path, action.path))


@FAST
@given(three_trees())
def test_one_device_converges_without_loss(trees: tuple[dict[str, Node], ...]) -> None:
    """Executing a plan and re-planning converges (in one round unless there was a conflict)."""
    remote, local, base = trees
    server = _server_holding(remote, base)
    device = Device("dev", local=dict(with_parents(local)), base=dict(base))
    world = World(server, [device])
    first = world.sync(0)
    second = world.plan(0)
    if not any(isinstance(action, Conflict | MoveLocalAside) for action in first):
        assert second == []  # idempotence: nothing left after one execution
    world.settle(max_rounds=4)
    assert contents(device.local) == contents(server.tree())
    assert world.plan(0) == []
    survivors = server.live_digests()
    for side in (local, remote):
        for path, node in side.items():
            if node.digest is not None and not same_content(node, base.get(path)):
                assert node.digest in survivors


# --- the model world ---------------------------------------------------------------------------------------

WORLD_PATHS = st.sampled_from(["a", "a/x.txt", "a/b", "a/b/c.txt", "b.txt"])
DEVICE = st.sampled_from([0, 0, 1, 1, 2])  # the third device exists only in three-device worlds
EVENT = st.one_of(
    st.tuples(st.just("write"), DEVICE, WORLD_PATHS),
    st.tuples(st.just("mkdir"), DEVICE, WORLD_PATHS),
    st.tuples(st.just("delete"), DEVICE, WORLD_PATHS),
    st.tuples(st.just("rename"), DEVICE, WORLD_PATHS, WORLD_PATHS),
    st.tuples(st.just("sync"), DEVICE),
    st.tuples(st.just("sync"), DEVICE),
    st.tuples(st.just("plan"), DEVICE),
    st.tuples(st.just("execute"), DEVICE),
    st.tuples(st.just("crash"), DEVICE, st.integers(0, 3)),
)


def _run(world: World, events: list[tuple]) -> None:
    count = len(world.devices)
    for event in events:
        name, index = event[0], event[1] % count
        if name == "write":
            world.write(index, event[2])
        elif name == "mkdir":
            world.mkdir(index, event[2])
        elif name == "delete":
            world.delete(index, event[2])
        elif name == "rename":
            world.rename(index, event[2], event[3])
        elif name == "sync":
            world.sync(index)
        elif name == "plan":
            world.plan(index)  # executed later, maybe after other devices and local edits (a stale plan)
        elif name == "execute":
            world.execute(index)
        else:
            world.execute(index, stop_after=event[2])  # the daemon dies mid-plan


SETUP_EVENT = st.one_of(
    st.tuples(st.just("write"), DEVICE, WORLD_PATHS),
    st.tuples(st.just("mkdir"), DEVICE, WORLD_PATHS),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 3), st.lists(SETUP_EVENT, max_size=6), st.lists(EVENT, max_size=30))
def test_devices_converge_without_losing_anything(device_count: int, setup: list[tuple], events: list[tuple]) -> None:
    """A shared starting tree (so devices edit and delete the same files), then random interleavings."""
    world = World.with_devices(device_count)
    _run(world, setup)
    world.settle()
    _run(world, events)
    world.settle(max_rounds=3 * device_count + 4)
    server_tree = contents(world.server.tree())
    for device in world.devices:
        assert contents(device.local) == server_tree, device.name
        assert contents(device.base) == server_tree, device.name
    lost = world.must_survive - world.server.live_digests()
    assert not lost, f"lost contents {sorted(lost)}"


def test_concurrent_edits_offline_keep_both() -> None:
    """Acceptance 3 in the model: both edits of one file survive, one as a conflicted copy."""
    world = World.with_devices(2)
    world.write(0, "a/x.txt")
    world.settle()
    world.write(0, "a/x.txt")  # device 1 is offline: it does not sync
    world.sync(0)
    world.write(1, "a/x.txt")
    world.settle()
    files = {path: digest for path, (kind, digest) in contents(world.server.tree()).items() if kind == Kind.FILE}
    assert sorted(str(digest) for digest in files.values()) == ["d0-c2", "d1-c3"]
    assert files["a/x.txt"] == "d0-c2"
    assert "a/x (d1's conflicted copy 2026-09-21).txt" in files


def test_stale_plan_never_deletes_a_newer_remote_version() -> None:
    world = World.with_devices(2)
    world.write(0, "f")
    world.settle()
    world.delete(0, "f")
    world.plan(0)  # DeleteRemote(f, version 1) planned ...
    world.write(1, "f")
    world.sync(1)  # ... while device 1 commits version 2
    world.execute(0)
    assert contents(world.server.tree()) == {"f": (Kind.FILE, "d1-c2")}
    world.settle()
    assert contents(world.devices[0].local) == {"f": (Kind.FILE, "d1-c2")}


def test_folder_made_on_both_sides_with_different_content_merges() -> None:
    world = World.with_devices(2)
    world.write(0, "a/x.txt")
    world.write(1, "a/b/c.txt")
    world.settle()
    assert sorted(contents(world.server.tree())) == ["a", "a/b", "a/b/c.txt", "a/x.txt"]


def test_file_versus_folder_keeps_both() -> None:
    world = World.with_devices(2)
    world.write(0, "c")
    world.write(1, "c/x")
    world.sync(1)
    world.settle()
    files = {path: digest for path, (kind, digest) in contents(world.server.tree()).items() if kind == Kind.FILE}
    assert files == {"c/x": "d1-c2", "c (d0's conflicted copy 2026-09-21)": "d0-c1"}
