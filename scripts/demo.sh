#!/usr/bin/env bash
# Start a Celery worker for both queues and the development web server; Ctrl-C stops both.
set -euo pipefail
BIN=${BIN:-.venv/bin}
"$BIN/celery" -A config worker -Q default,gpu -P solo -n demo@%h --loglevel INFO > var/worker.log 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null' EXIT
echo "worker started (log: var/worker.log); open http://127.0.0.1:${PORT:-8000}/ and log in with an account above"
"$BIN/python" manage.py runserver "127.0.0.1:${PORT:-8000}"
