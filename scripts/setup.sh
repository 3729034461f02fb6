#!/usr/bin/env bash
# Prepares a fresh clone of Coffer on Debian/Ubuntu: installs etcd (Debian's etcd-server) if it is
# missing, creates .venv with Python >= 3.11 and installs Coffer into it (editable, with dev tools).
# Safe to run again: it only does what is missing, plus a quick `pip install` refresh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: need the Debian package(s) $*, but apt-get is not available; install them by hand" >&2
    exit 1
  fi
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# 1. etcd: the cluster map lives there.
if ! command -v etcd >/dev/null 2>&1; then
  echo "setup: installing etcd-server ..."
  apt_install etcd-server
  # Debian starts a system etcd on 2379 after installing; Coffer runs its own, on other ports.
fi

# The test suite also drives rclone (Go's AWS SDK) as a real S3 client.
if ! command -v rclone >/dev/null 2>&1; then
  echo "setup: installing rclone (an S3 client the tests use) ..."
  apt_install rclone
fi

# 2. A Python >= 3.11 to build the virtualenv with.
python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python=$candidate; break
    fi
  done
fi
if [ -z "$python" ]; then
  echo "setup: installing python3 (Coffer needs Python >= 3.11) ..."
  apt_install python3 python3-venv
  python=python3
fi

# 3. The virtualenv, with Coffer installed editable (the `coffer` command lands in .venv/bin).
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$python" --version) ..."
  if ! "$python" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    apt_install python3-venv  # Debian ships venv's ensurepip separately
    "$python" -m venv .venv
  fi
fi
echo "setup: installing Coffer and its dependencies into .venv ..."
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
echo "setup: done. Start a cluster with: .venv/bin/coffer dev up"
