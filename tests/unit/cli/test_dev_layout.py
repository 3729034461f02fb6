"""The dev cluster's plan: names, failure domains, ports and command lines (pure data, no processes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cli.dev_layout import (
    MALLOC_ENVIRONMENT,
    DevClusterError,
    Settings,
    child_environment,
    failure_domain_of,
    load_settings,
    new_settings,
    node_ids,
    process_names,
    process_specs,
    save_settings,
)


def test_node_ids_are_zero_padded_and_sort_in_order() -> None:
    assert node_ids(3) == ["node-01", "node-02", "node-03"]
    ids = node_ids(120)
    assert ids[0] == "node-001" and ids[-1] == "node-120"
    assert sorted(ids) == ids


def test_every_node_is_its_own_failure_domain() -> None:
    domain = failure_domain_of("node-07")
    assert (domain.zone, domain.rack, domain.host) == ("zone-07", "rack-07", "host-07")
    assert str(domain) == "zone-07/rack-07/host-07"
    assert len({str(failure_domain_of(node)) for node in node_ids(14)}) == 14


def test_processes_start_with_etcd_and_end_with_the_frontend() -> None:
    assert process_names(2) == ["etcd", "node-01", "node-02", "placement", "frontend"]


def test_base_port_assigns_consecutive_distinct_ports(tmp_path: Path) -> None:
    settings = new_settings(tmp_path, nodes=3, frontend_port=9100, base_port=20000, pg_count=16,
                            down_out_interval=5)
    assert settings.frontend_port == 9100
    used = [settings.etcd_peer_port] + [port for entry in settings.ports.values()
                                        for name, port in entry.items()
                                        if port is not None and not (name == "metrics_port" and
                                                                     port == entry["port"])]
    assert len(used) == len(set(used))
    assert min(used) == 9100 or min(used) == 20000
    assert all(port == 9100 or 20000 <= port < 20000 + len(used) for port in used)


def all_ports(settings: Settings) -> list[int]:
    """Every port the cluster binds (etcd serves its metrics on its client port: counted once)."""
    listen = [entry["port"] for entry in settings.ports.values() if entry["port"] is not None]
    metrics = [entry["metrics_port"] for name, entry in settings.ports.items() if name != "etcd"]
    return [*listen, *metrics, settings.etcd_peer_port]  # type: ignore[list-item]


def test_the_s3_port_given_is_never_handed_to_another_process(tmp_path: Path) -> None:
    # Free now only because the frontend has not started yet: a node or etcd must not take it.
    # (Inside the base-port range, so the test is deterministic; free-port picks skip it alike.)
    settings = new_settings(tmp_path, nodes=14, frontend_port=20005, base_port=20000, pg_count=64,
                            down_out_interval=600)
    ports = all_ports(settings)
    assert ports.count(20005) == 1 and settings.frontend_port == 20005
    assert len(ports) == len(set(ports))


def test_free_ports_are_distinct_and_frontend_port_zero_picks_one(tmp_path: Path) -> None:
    settings = new_settings(tmp_path, nodes=14, frontend_port=0, base_port=0, pg_count=64,
                            down_out_interval=600)
    assert settings.frontend_port > 0
    listen = [entry["port"] for entry in settings.ports.values() if entry["port"] is not None]
    metrics = [entry["metrics_port"] for name, entry in settings.ports.items() if name != "etcd"]
    everything = [*listen, *metrics, settings.etcd_peer_port]
    assert len(everything) == len(set(everything))


@pytest.mark.parametrize("pg_count", [0, 3, 100])
def test_pg_count_must_be_a_power_of_two(tmp_path: Path, pg_count: int) -> None:
    with pytest.raises(DevClusterError, match="power of two"):
        new_settings(tmp_path, nodes=3, frontend_port=0, base_port=0, pg_count=pg_count,
                     down_out_interval=5)


def test_settings_round_trip_and_reject_unknown_versions(tmp_path: Path) -> None:
    assert load_settings(tmp_path) is None
    settings = new_settings(tmp_path, nodes=2, frontend_port=0, base_port=0, pg_count=8,
                            down_out_interval=5)
    save_settings(tmp_path, settings)
    assert load_settings(tmp_path) == settings
    raw = json.loads((tmp_path / "settings.json").read_text())
    raw["format_version"] = 99
    (tmp_path / "settings.json").write_text(json.dumps(raw))
    with pytest.raises(DevClusterError, match="format version"):
        load_settings(tmp_path)


def test_commands_follow_the_service_contracts(tmp_path: Path) -> None:
    settings = new_settings(tmp_path, nodes=3, frontend_port=9100, base_port=21000, pg_count=16,
                            down_out_interval=7)
    specs = {spec.name: spec for spec in process_specs(tmp_path, settings, "/usr/bin/etcd")}
    assert list(specs) == process_names(3)
    etcd_address = f"127.0.0.1:{settings.etcd_port}"

    node = specs["node-02"]
    assert node.command[:4] == (sys.executable, "-m", "cli", "storagenode")
    arguments = dict(zip(node.command[4::2], node.command[5::2], strict=True))
    assert arguments == {
        "--node-id": "node-02", "--listen": f"127.0.0.1:{node.port}",
        "--volume": str(tmp_path / "nodes" / "node-02" / "volume-0"), "--etcd": etcd_address,
        "--zone": "zone-02", "--rack": "rack-02", "--host": "host-02",
        "--capacity-bytes": str(settings.capacity_bytes), "--metrics-port": str(node.metrics_port)}

    placement = dict(zip(specs["placement"].command[4::2], specs["placement"].command[5::2], strict=True))
    assert placement["--min-nodes"] == "3"  # min(14, nodes)
    assert placement["--pg-count"] == "16" and placement["--down-out-interval"] == "7"

    frontend = dict(zip(specs["frontend"].command[4::2], specs["frontend"].command[5::2], strict=True))
    assert frontend == {"--listen": "127.0.0.1:9100", "--etcd": etcd_address,
                        "--metadata": str(tmp_path / "metadata.sqlite3"),
                        "--metrics-port": str(specs["frontend"].metrics_port), "--region": "us-east-1"}
    assert specs["etcd"].command[0] == "/usr/bin/etcd"
    assert all(spec.log == tmp_path / "logs" / f"{spec.name}.log" for spec in specs.values())


def test_min_nodes_is_capped_at_a_full_stripe(tmp_path: Path) -> None:
    settings = new_settings(tmp_path, nodes=16, frontend_port=0, base_port=0, pg_count=16,
                            down_out_interval=7)
    placement = next(spec for spec in process_specs(tmp_path, settings, "etcd") if spec.role == "placement")
    assert placement.command[placement.command.index("--min-nodes") + 1] == "14"


def test_children_get_the_malloc_tuning() -> None:
    environment = child_environment()
    for name, value in MALLOC_ENVIRONMENT.items():
        assert environment[name] == value
    assert MALLOC_ENVIRONMENT == {"MALLOC_MMAP_THRESHOLD_": "67108864",
                                  "MALLOC_TRIM_THRESHOLD_": "268435456"}
