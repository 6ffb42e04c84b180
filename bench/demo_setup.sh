#!/usr/bin/env bash
# Time `make demo`'s set-up on a fresh clone, after installation and up to the server's URL:
# migrate, the prompt imports, the accounts, the workers, seed_demo --wait (generation on the
# worker, rounds open). Usage: bench/demo_setup.sh [VENV_BIN]   (default: this checkout's .venv/bin)
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${1:-$HERE/.venv/bin}" && pwd)
CLONE=$(mktemp -d /tmp/demo-bench-XXXX)
git clone -q "$HERE" "$CLONE/repo"
cd "$CLONE/repo"
start=$(date +%s.%N)
"$BIN/python" manage.py migrate -v0
"$BIN/python" manage.py import_prompts --preset partiprompts > /dev/null
"$BIN/python" manage.py import_prompts --preset dsg1k > /dev/null 2>&1
"$BIN/python" manage.py create_demo_accounts > /dev/null
mkdir -p var
"$BIN/celery" -A config worker -Q default -P solo -n default@%h > var/worker-default.log 2>&1 &
DEFAULT_WORKER=$!
"$BIN/celery" -A config worker -Q gpu -P solo -n gpu@%h > var/worker-gpu.log 2>&1 &
GPU_WORKER=$!
trap 'kill $DEFAULT_WORKER $GPU_WORKER 2>/dev/null; wait 2>/dev/null; rm -rf "$CLONE"' EXIT
"$BIN/python" manage.py seed_demo --wait > var/seed.log
end=$(date +%s.%N)
printf 'demo set-up: %.1f s wall (fresh clone, after installation, up to the server URL)\n' "$(echo "$end - $start" | bc)"
