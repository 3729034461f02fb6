#!/usr/bin/env bash
# Regenerates proto/*_pb2*.py from proto/*.proto (run from anywhere).
# With --check, regenerates into a temporary folder and fails if the
# committed code differs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
out=$root
if [ "${1:-}" = "--check" ]; then
  out=$(mktemp -d); trap 'rm -rf "$out"' EXIT; mkdir -p "$out/proto"
fi
cd "$root"
"$python" -m grpc_tools.protoc -I. --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" proto/storage.proto proto/cluster.proto
if [ "${1:-}" = "--check" ]; then
  status=0
  for f in "$out"/proto/*; do
    name=$(basename "$f")
    if ! cmp -s "$f" "$root/proto/$name"; then
      echo "proto/$name is stale: run scripts/gen_proto.sh and commit the result" >&2; status=1
    fi
  done
  exit $status
fi
