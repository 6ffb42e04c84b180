#!/usr/bin/env bash
# Start one Celery worker per queue and the development web server; Ctrl-C stops all three.
# Two workers, so that reports (default queue) are computed while a training run holds the gpu one.
set -euo pipefail
BIN=${BIN:-.venv/bin}
"$BIN/celery" -A config worker -Q default -P solo -n default@%h --loglevel INFO > var/worker-default.log 2>&1 &
DEFAULT_WORKER=$!
"$BIN/celery" -A config worker -Q gpu -P solo -n gpu@%h --loglevel INFO > var/worker-gpu.log 2>&1 &
GPU_WORKER=$!
trap 'kill $DEFAULT_WORKER $GPU_WORKER 2>/dev/null; wait $DEFAULT_WORKER $GPU_WORKER 2>/dev/null' EXIT
echo "workers started (logs: var/worker-default.log, var/worker-gpu.log); open http://127.0.0.1:${PORT:-8000}/ and log in with an account above"
"$BIN/python" manage.py runserver "127.0.0.1:${PORT:-8000}"
