#!/usr/bin/env bash
# The whole check: ruff, mypy, import layers (import-linter), the generated-protobuf check, then every pytest tier (unit,
# integration, system). Arguments go to pytest (e.g. `bash scripts/test.sh tests/unit -x`).
# Needs .venv (bash scripts/setup.sh) and etcd on PATH.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=$root/.venv/bin
if [ ! -x "$venv/python" ]; then
  echo "test: .venv is missing; run \`bash scripts/setup.sh\` first" >&2
  exit 1
fi
if ! command -v etcd >/dev/null 2>&1; then
  echo "test: etcd is missing; run \`bash scripts/setup.sh\` (installs Debian's etcd-server)" >&2
  exit 1
fi

echo "== ruff"
"$venv/ruff" check .
echo "== mypy"
"$venv/mypy" .
echo "== import layers"
"$venv/lint-imports" --no-cache
echo "== proto check"
PYTHON=$venv/python bash scripts/gen_proto.sh --check
echo "== pytest"
"$venv/pytest" "$@"
