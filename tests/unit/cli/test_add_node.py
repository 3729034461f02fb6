"""`coffer dev add-node`'s plan and the new commands' argument handling (no cluster started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.dev_layout import (
    DevClusterError,
    add_node_to_settings,
    load_settings,
    new_settings,
    process_specs,
    save_settings,
)
from cli.main import build_parser, main


def test_add_node_takes_the_next_id_and_unused_ports(tmp_path: Path) -> None:
    settings = new_settings(tmp_path, nodes=14, frontend_port=0, base_port=21000, pg_count=64,
                            down_out_interval=5.0)
    used = {port for entry in settings.ports.values() for port in entry.values()}
    # Offer ports the cluster already uses first: they must be skipped.
    offered = iter([21000, 21003, 25001, settings.etcd_peer_port, 25002, 25003])
    node_id = add_node_to_settings(settings, offered)
    assert node_id == "node-15" and settings.nodes == 15
    assert settings.ports["node-15"] == {"port": 25001, "metrics_port": 25002}
    assert not used & {25001, 25002}
    save_settings(tmp_path, settings)
    reloaded = load_settings(tmp_path)
    assert reloaded is not None and reloaded.nodes == 15 and "node-15" in reloaded.ports
    spec = next(s for s in process_specs(tmp_path, reloaded, "/usr/bin/etcd") if s.name == "node-15")
    assert spec.role == "storagenode" and spec.port == 25001 and spec.metrics_port == 25002
    assert str(spec.failure_domain) == "zone-15/rack-15/host-15"
    assert "--zone" in spec.command and str(tmp_path / "nodes" / "node-15" / "volume-0") in spec.command
    # The other nodes' commands are unchanged by the addition.
    assert [s.name for s in process_specs(tmp_path, reloaded, "/usr/bin/etcd")][1:16] == [
        f"node-{i:02d}" for i in range(1, 16)]


def test_add_node_refuses_to_rename_every_node(tmp_path: Path) -> None:
    settings = new_settings(tmp_path, nodes=99, frontend_port=0, base_port=21000, pg_count=64,
                            down_out_interval=5.0)
    with pytest.raises(DevClusterError, match="renamed"):
        add_node_to_settings(settings, iter([30001, 30002]))
    assert settings.nodes == 99


def test_add_node_without_a_cluster_says_to_start_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "add-node", "--data", str(tmp_path)]) == 1
    assert "coffer dev up" in capsys.readouterr().err


def test_new_commands_parse() -> None:
    parser = build_parser()
    drain = parser.parse_args(["node", "drain", "node-05", "--etcd", "127.0.0.1:2379", "--wait", "--timeout", "30"])
    assert (drain.node_id, drain.etcd, drain.wait, drain.timeout, drain.prefix) == (
        "node-05", "127.0.0.1:2379", True, 30.0, "/coffer/")
    undrain = parser.parse_args(["node", "undrain", "node-05", "--data", "x"])
    assert undrain.data == Path("x") and undrain.etcd is None
    status = parser.parse_args(["status", "--etcd", "h:1", "--json"])
    assert status.json and status.etcd == "h:1"


@pytest.mark.parametrize("argv", [["status"], ["node", "drain", "node-01"],
                                  ["status", "--etcd", "h:1", "--data", "d"], ["node"]])
def test_cluster_commands_need_one_location(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: coffer" in capsys.readouterr().err


def test_status_against_no_etcd_says_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fixtures.processes import free_port

    assert main(["status", "--etcd", f"127.0.0.1:{free_port()}"]) == 1
    error = capsys.readouterr().err
    assert "does not answer" in error and "coffer dev up" in error


def test_extra_node_and_frontend_flags_reach_the_commands_and_persist(tmp_path: Path) -> None:
    import json

    from cli.dev_cluster import UpOptions, _resolve_settings

    arguments = build_parser().parse_args([
        "dev", "up", "--node-arg=--repair-scan-interval=1", "--node-arg=--no-scrub", "--frontend-arg=--gc-grace=2"])
    assert arguments.node_args == ["--repair-scan-interval=1", "--no-scrub"]
    options = UpOptions(data_dir=tmp_path, nodes=14, port=0, base_port=22000, detach=True, pg_count=None,
                        down_out_interval=None, timeout=10.0, node_args=tuple(arguments.node_args),
                        frontend_args=tuple(arguments.frontend_args))
    settings = _resolve_settings(options)
    save_settings(tmp_path, settings)
    specs = {spec.name: spec for spec in process_specs(tmp_path, settings, "/usr/bin/etcd")}
    assert specs["node-03"].command[-2:] == ("--repair-scan-interval=1", "--no-scrub")
    assert specs["frontend"].command[-1] == "--gc-grace=2"
    assert "--no-scrub" not in specs["placement"].command
    # Not given again: the persisted flags stay (and a node added later gets them too).
    again = _resolve_settings(UpOptions(data_dir=tmp_path, nodes=None, port=None, base_port=0, detach=True,
                                        pg_count=None, down_out_interval=None, timeout=10.0))
    assert again.node_args == ["--repair-scan-interval=1", "--no-scrub"]
    add_node_to_settings(again, iter([29001, 29002]))
    added = next(s for s in process_specs(tmp_path, again, "/usr/bin/etcd") if s.name == "node-15")
    assert added.command[-1] == "--no-scrub"
    # Given again: replaced. A settings file from before these fields still loads.
    replaced = _resolve_settings(UpOptions(data_dir=tmp_path, nodes=None, port=None, base_port=0, detach=True,
                                           pg_count=None, down_out_interval=None, timeout=10.0,
                                           node_args=("--repair-bytes-per-second=1000",)))
    assert replaced.node_args == ["--repair-bytes-per-second=1000"] and replaced.frontend_args == ["--gc-grace=2"]
    raw = json.loads((tmp_path / "settings.json").read_text())
    del raw["node_args"], raw["frontend_args"]
    (tmp_path / "settings.json").write_text(json.dumps(raw))
    old = load_settings(tmp_path)
    assert old is not None and old.node_args == [] and old.frontend_args == []
