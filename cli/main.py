"""The ``coffer`` command: one entry point for operators.

``coffer dev up|status|down|start|kill|add-node`` runs a whole cluster on this machine
(``cli/dev_cluster.py``); ``coffer status`` shows a cluster's health (``cli/status.py``);
``coffer node drain|undrain`` empties a node before removal (``cli/node_commands.py``);
``coffer storagenode|placement|frontend ...`` run one service (their own ``main(argv)`` parses the
rest); ``coffer keys create|list`` manage S3 access keys; ``coffer user create|list`` and
``coffer token create|list|revoke`` manage sync users and their device tokens
(``cli/sync_admin.py``); ``coffer sync FOLDER`` runs the sync daemon (``client/cli.py``);
``coffer bench ...`` runs the benchmarks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cli.dev_layout import DEFAULT_FRONTEND_PORT, DEFAULT_NODES, DEFAULT_PG_COUNT, DevClusterError

DEFAULT_DATA_DIR = Path(".coffer")

# Subcommands whose arguments belong to another module's ``main(argv) -> int``.
DISPATCH = {
    "storagenode": ("storagenode.server", "run one storage node (see `coffer storagenode --help`)"),
    "placement": ("placement.service", "run the placement service (see `coffer placement --help`)"),
    "frontend": ("frontend.app", "run the S3 frontend (see `coffer frontend --help`)"),
    "bench": ("bench.cli", "run benchmarks against an S3 endpoint (see `coffer bench --help`)"),
    "sync": ("client.cli", "sync a folder with a Coffer server, or show its state (see `coffer sync --help`)"),
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _signal(text: str) -> signal.Signals:
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r} (e.g. KILL, TERM, STOP, CONT)") from None


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of ``coffer`` (dispatched subcommands appear for --help only)."""
    parser = argparse.ArgumentParser(
        prog="coffer", description="Coffer: an erasure-coded blob store with an S3 API.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    dev = commands.add_parser("dev", help="run a whole cluster on this machine",
                              description="Run a whole Coffer cluster on 127.0.0.1.")
    dev_commands = dev.add_subparsers(dest="dev_command", metavar="ACTION", required=True)
    data_help = f"cluster directory (default ./{DEFAULT_DATA_DIR})"

    up = dev_commands.add_parser("up", help="start the cluster (reuses DIR's data and ports)")
    up.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help=data_help)
    up.add_argument("--nodes", type=_positive_int, default=None,
                    help=f"storage nodes, each its own failure domain (default {DEFAULT_NODES})")
    up.add_argument("--port", type=_port, default=None,
                    help=f"S3 endpoint port (default {DEFAULT_FRONTEND_PORT}; 0 = any free port)")
    up.add_argument("--base-port", type=_port, default=0,
                    help="first of the consecutive ports for etcd, nodes and metrics "
                         "(default 0: free ports chosen by the kernel); fixed once DIR exists")
    up.add_argument("--detach", action="store_true",
                    help="return once ready and leave the cluster running (stop: coffer dev down)")
    up.add_argument("--pg-count", type=_positive_int, default=None,
                    help=f"placement groups, a power of two, fixed at creation (default {DEFAULT_PG_COUNT})")
    up.add_argument("--down-out-interval", type=_seconds, default=None,
                    help="seconds a node may be down before it is marked out (default 600)")
    up.add_argument("--timeout", type=_seconds, default=180.0,
                    help="seconds to wait for the cluster to become ready (default 180)")
    up.add_argument("--node-arg", action="append", default=None, metavar="FLAG", dest="node_args",
                    help="extra flag for every storage node, written with '=': --node-arg=--repair-scan-interval=1 "
                         "(repeatable; kept for later runs; given again, replaces the kept list)")
    up.add_argument("--frontend-arg", action="append", default=None, metavar="FLAG", dest="frontend_args",
                    help="extra flag for the frontend, e.g. --frontend-arg=--gc-grace=2 (repeatable; kept like "
                         "--node-arg)")

    status = dev_commands.add_parser("status", help="show every process and whether it is up")
    status.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help=data_help)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    down = dev_commands.add_parser("down", help="stop every process of the cluster (data is kept)")
    down.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help=data_help)

    start = dev_commands.add_parser("start", help="restart one stopped process with its recorded command")
    start.add_argument("name", help="etcd, placement, frontend or a node id (node-03)")
    start.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help=data_help)

    kill = dev_commands.add_parser("kill", help="send a signal to one process (failure drills)")
    kill.add_argument("name", help="etcd, placement, frontend or a node id (node-03)")
    kill.add_argument("--signal", type=_signal, default=signal.SIGKILL, help="signal name (default KILL)")
    kill.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help=data_help)

    add_node = dev_commands.add_parser(
        "add-node", help="start one more storage node in the running cluster and wait until it is UP")
    add_node.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help=data_help)
    add_node.add_argument("--timeout", type=_seconds, default=60.0,
                          help="seconds to wait until the node is UP in the cluster map (default 60)")

    def cluster_location(parser: argparse.ArgumentParser) -> None:
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--etcd", metavar="HOST:PORT", default=None, help="etcd endpoint of the cluster")
        where.add_argument("--data", type=Path, default=None, help="directory of a dev cluster (coffer dev up)")
        parser.add_argument("--prefix", default="/coffer/", help="etcd key prefix of the cluster (default /coffer/)")

    status = commands.add_parser(
        "status", help="nodes, placement groups, durability at risk, repair and scrub progress",
        description="Show the cluster's health. Exit code 0, or 2 when durability is at risk.")
    cluster_location(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    node = commands.add_parser("node", help="operate on one storage node (drain, undrain)")
    node_commands = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    drain = node_commands.add_parser(
        "drain", help="move every fragment off a node (it keeps serving), e.g. before removing it")
    drain.add_argument("node_id", help="node id, e.g. node-05")
    cluster_location(drain)
    drain.add_argument("--wait", action="store_true",
                       help="wait until the node holds no fragments and say it is safe to remove")
    drain.add_argument("--timeout", type=_seconds, default=3600.0, help="seconds --wait waits (default 3600)")
    undrain = node_commands.add_parser("undrain", help="cancel a drain: the node takes its positions back")
    undrain.add_argument("node_id", help="node id, e.g. node-05")
    cluster_location(undrain)

    keys = commands.add_parser("keys", help="manage S3 access keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    for name, text in (("create", "create an access key"), ("list", "list access keys (no secrets)")):
        sub = key_commands.add_parser(name, help=text)
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--data", type=Path, default=None, help=data_help)
        where.add_argument("--metadata", type=Path, default=None, help="the frontend's SQLite metadata file")
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "create":
            sub.add_argument("--owner", default="admin", help="who the key authenticates as (default admin)")

    user = commands.add_parser("user", help="manage sync users (each owns one namespace)")
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    token = commands.add_parser("token", help="manage sync device tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    for sub in (
        user_commands.add_parser("create", help="create a sync user and its namespace"),
        user_commands.add_parser("list", help="list sync users"),
        token_commands.add_parser("create", help="create a device token (printed once)"),
        token_commands.add_parser("list", help="list device tokens (never the token text)"),
        token_commands.add_parser("revoke", help="revoke one device's token"),
    ):
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--data", type=Path, default=None, help=data_help)
        where.add_argument("--metadata", type=Path, default=None, help="the frontend's SQLite metadata file")
        sub.add_argument("--json", action="store_true", help="machine-readable output")
    user_commands.choices["create"].add_argument("name", help="user name, e.g. alice")
    token_commands.choices["create"].add_argument("--user", required=True, help="the user the device belongs to")
    token_commands.choices["create"].add_argument("--device", required=True, help="device name, e.g. laptop")
    token_commands.choices["list"].add_argument("--user", default=None, help="only this user's devices")
    token_commands.choices["revoke"].add_argument("device_id", type=int, help="device id (see `coffer token list`)")

    for name, (_module, text) in DISPATCH.items():
        commands.add_parser(name, help=text, add_help=False)
    return parser


def _dispatch(name: str, arguments: list[str]) -> int:
    module_name = DISPATCH[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            print(f"coffer {name} is not available: module {module_name} is missing from this install; "
                  "reinstall with `pip install -e '.[dev]'`", file=sys.stderr)
            return 1
        raise
    entry: Callable[[list[str]], int | None] = module.main
    return int(entry(arguments) or 0)


def _run_cluster_command(arguments: argparse.Namespace) -> int:
    """``coffer status`` and ``coffer node drain|undrain``."""
    from cli import node_commands, status
    from placement.etcd import EtcdUnavailable

    endpoint = node_commands.etcd_endpoint(arguments.etcd, arguments.data)
    if arguments.command == "node":
        if arguments.node_command == "drain":
            return node_commands.drain(endpoint, arguments.node_id, wait=arguments.wait,
                                       timeout=arguments.timeout, prefix=arguments.prefix)
        return node_commands.undrain(endpoint, arguments.node_id, prefix=arguments.prefix)
    down_out = None
    if arguments.data is not None:
        from cli.dev_layout import load_settings

        settings = load_settings(arguments.data.resolve())
        down_out = settings.down_out_interval if settings is not None else None
    try:
        return status.run_status(endpoint, as_json=arguments.json, prefix=arguments.prefix,
                                 down_out_interval=down_out)
    except status.StatusUnavailable as error:
        raise DevClusterError(str(error)) from error
    except EtcdUnavailable as error:
        raise DevClusterError(f"etcd at {endpoint} does not answer ({error}); check --etcd or start the "
                              "cluster (`coffer dev up`)") from error


def _run_sync_admin(arguments: argparse.Namespace) -> int:
    """``coffer user ...`` and ``coffer token ...``."""
    from cli import sync_admin

    path = sync_admin.metadata_path(arguments.data, arguments.metadata)
    if arguments.command == "user":
        if arguments.user_command == "create":
            return sync_admin.create_user(path, arguments.name, arguments.json)
        return sync_admin.list_users(path, arguments.json)
    if arguments.token_command == "create":
        return sync_admin.create_token(path, arguments.user, arguments.device, arguments.json)
    if arguments.token_command == "list":
        return sync_admin.list_tokens(path, arguments.user, arguments.json)
    return sync_admin.revoke_token(path, arguments.device_id)


def _run(arguments: argparse.Namespace) -> int:
    from cli import dev_cluster, keys

    if arguments.command in ("user", "token"):
        return _run_sync_admin(arguments)
    if arguments.command in ("status", "node"):
        return _run_cluster_command(arguments)
    if arguments.command == "dev":
        action = arguments.dev_command
        if action == "up":
            return dev_cluster.up(dev_cluster.UpOptions(
                data_dir=arguments.data, nodes=arguments.nodes, port=arguments.port,
                base_port=arguments.base_port, detach=arguments.detach, pg_count=arguments.pg_count,
                down_out_interval=arguments.down_out_interval, timeout=arguments.timeout,
                node_args=tuple(arguments.node_args) if arguments.node_args is not None else None,
                frontend_args=tuple(arguments.frontend_args) if arguments.frontend_args is not None else None))
        if action == "status":
            return dev_cluster.status(arguments.data, arguments.json)
        if action == "down":
            return dev_cluster.down(arguments.data)
        if action == "add-node":
            return dev_cluster.add_node(arguments.data, arguments.timeout)
        if action == "start":
            return dev_cluster.start_one(arguments.data, arguments.name)
        return dev_cluster.kill_one(arguments.data, arguments.name, arguments.signal)
    path = keys.metadata_path(arguments.data, arguments.metadata)
    if arguments.keys_command == "create":
        return keys.create(path, arguments.owner, arguments.json)
    return keys.list_keys(path, arguments.json)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``coffer`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Operator errors (``DevClusterError``) are printed as one line saying what to do, exit code 1.
    When the reader of a command's output goes away (``coffer dev status | head -3``, ``coffer sync
    status | head -1``), the command stops quietly with exit code 141 (128 + SIGPIPE), as one killed
    by SIGPIPE would.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        if arguments and arguments[0] in DISPATCH:
            return _dispatch(arguments[0], arguments[1:])
        return _run(build_parser().parse_args(arguments))
    except DevClusterError as error:
        print(f"coffer: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # a pipe of the command's own (to a child, a socket), not its output: a real error
        return _stdout_closed()


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reader has closed it: Linux's poll reports POLLERR
    on a pipe's write end once no reader is left (pipe(7)), POLLHUP on a socket whose peer left."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # replaced or closed: not a file descriptor
        return False
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _stdout_closed() -> int:
    """Python ignores SIGPIPE, so a write to a closed pipe raises instead of ending the process.
    Point stdout at /dev/null so that the interpreter's last flush cannot raise again at exit
    (Python's signal module documentation, "Note on SIGPIPE"); return 128 + SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
