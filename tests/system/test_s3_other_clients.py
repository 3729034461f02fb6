"""s3cmd and rclone, unchanged, against a real dev cluster: uploads (single and multipart), listings,
downloads, sync, deletes. Both are real-world S3 clients with their own request habits (s3cmd signs
V4 with its own code; rclone is Go's AWS SDK)."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from tests.fixtures.cluster import DevCluster

pytestmark = pytest.mark.system

MiB = 1024 * 1024


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: scripts/setup.sh installs it (pip s3cmd, Debian rclone)")
    return path


def _tree(root: Path) -> None:
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "small.txt").write_bytes(b"hello coffer\n")
    (root / "nested" / "medium.bin").write_bytes(os.urandom(3 * MiB + 5))
    (root / "nested" / "deeper" / "big.bin").write_bytes(os.urandom(13 * MiB + 7))
    (root / "space name ü.txt").write_bytes(b"unicode and spaces")


def _same_tree(left: Path, right: Path) -> None:
    comparison = filecmp.dircmp(left, right)
    assert not comparison.left_only and not comparison.right_only and not comparison.diff_files, (
        comparison.left_only, comparison.right_only, comparison.diff_files)
    for sub in comparison.common_dirs:
        _same_tree(left / sub, right / sub)
    for name in comparison.common_files:
        assert (left / name).read_bytes() == (right / name).read_bytes()


def test_s3cmd(cluster: DevCluster, tmp_path: Path) -> None:
    s3cmd = _tool("s3cmd")
    host = urllib.parse.urlsplit(cluster.endpoint).netloc
    config = tmp_path / "s3cfg"
    config.write_text(
        "[default]\n"
        f"access_key = {cluster.access_key}\nsecret_key = {cluster.secret_key}\n"
        f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\nsignature_v2 = False\n"
        f"bucket_location = {cluster.region}\nmultipart_chunk_size_mb = 5\n")

    def run(*arguments: str) -> str:
        result = subprocess.run([s3cmd, "-c", str(config), *arguments], check=False,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    source, back = tmp_path / "source", tmp_path / "back"
    _tree(source)
    run("mb", "s3://s3cmd-bucket")
    run("put", "--recursive", f"{source}/", "s3://s3cmd-bucket/tree/")
    listing = run("ls", "--recursive", "s3://s3cmd-bucket/")
    assert "tree/nested/deeper/big.bin" in listing and "space name ü.txt" in listing
    info = run("info", "s3://s3cmd-bucket/tree/nested/deeper/big.bin")
    assert str(13 * MiB + 7) in info
    back.mkdir()
    run("get", "--recursive", "s3://s3cmd-bucket/tree/", f"{back}/")
    _same_tree(source, back)
    (source / "small.txt").write_bytes(b"changed\n")
    run("sync", f"{source}/", "s3://s3cmd-bucket/tree/")
    run("get", "--force", "s3://s3cmd-bucket/tree/small.txt", str(tmp_path / "small.txt"))
    assert (tmp_path / "small.txt").read_bytes() == b"changed\n"
    run("del", "--recursive", "--force", "s3://s3cmd-bucket/tree/")
    assert run("ls", "--recursive", "s3://s3cmd-bucket/").strip() == ""
    run("rb", "s3://s3cmd-bucket")


def test_rclone(cluster: DevCluster, tmp_path: Path) -> None:
    rclone = _tool("rclone")
    # AWS_CA_BUNDLE (set on some machines) makes rclone's SDK fail on plain http: drop AWS_* settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"RCLONE_CONFIG_COFFER_TYPE": "s3", "RCLONE_CONFIG_COFFER_PROVIDER": "Other",
           "RCLONE_CONFIG_COFFER_ACCESS_KEY_ID": cluster.access_key,
           "RCLONE_CONFIG_COFFER_SECRET_ACCESS_KEY": cluster.secret_key,
           "RCLONE_CONFIG_COFFER_ENDPOINT": cluster.endpoint, "RCLONE_CONFIG_COFFER_REGION": cluster.region,
           "RCLONE_CONFIG": str(tmp_path / "rclone.conf")}

    def run(*arguments: str) -> str:
        result = subprocess.run([rclone, "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", *arguments],
                                check=False, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    source, back = tmp_path / "source", tmp_path / "back"
    _tree(source)
    run("mkdir", "coffer:rclone-bucket")
    run("copy", str(source), "coffer:rclone-bucket/tree")
    listed = set(run("lsf", "-R", "--files-only", "coffer:rclone-bucket/tree").split("\n")) - {""}
    assert listed == {"small.txt", "nested/medium.bin", "nested/deeper/big.bin", "space name ü.txt"}
    run("check", str(source), "coffer:rclone-bucket/tree")  # sizes and MD5s
    run("copy", "coffer:rclone-bucket/tree", str(back))
    _same_tree(source, back)
    (source / "nested" / "medium.bin").unlink()
    run("sync", str(source), "coffer:rclone-bucket/tree")
    assert "nested/medium.bin" not in run("lsf", "-R", "coffer:rclone-bucket/tree")
    run("purge", "coffer:rclone-bucket")
    assert "rclone-bucket" not in run("lsd", "coffer:")
