#!/usr/bin/env bash
# From a fresh clone to a running cluster: installs what is missing, then `coffer dev up`.
# Arguments go to `coffer dev up` (e.g. --detach, --nodes 14, --port 9000, --data DIR).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/coffer dev up "$@"
