#!/usr/bin/env bash
# Start one Celery worker per queue, seed the toy-world demo through them, then the web server.
# Two workers, so that reports (default queue) are computed while a training run holds the gpu one.
# Ctrl-C stops all three.
set -euo pipefail
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8000}
mkdir -p var
# The default worker also runs beat (-B): it flushes the outbox and moves training rounds on.
"$BIN/celery" -A config worker -Q default -P solo -n default@%h -B -s var/celerybeat-schedule --loglevel INFO \
    > var/worker-default.log 2>&1 &
DEFAULT_WORKER=$!
# The toy pipelines are tiny: 20 images per forward pass on a CPU (the images do not depend on it).
EVALUATION_SAMPLER=${EVALUATION_SAMPLER:-'{"batch_size": 20}'} "$BIN/celery" -A config worker -Q gpu -P solo -n gpu@%h --loglevel INFO > var/worker-gpu.log 2>&1 &
GPU_WORKER=$!
trap 'kill $DEFAULT_WORKER $GPU_WORKER 2>/dev/null; wait $DEFAULT_WORKER $GPU_WORKER 2>/dev/null' EXIT
echo "workers started (logs: var/worker-default.log, var/worker-gpu.log)"
"$BIN/python" manage.py seed_demo --wait
cat <<NEXT

The demo is ready at http://127.0.0.1:$PORT/ : log in as one of the annotatorN accounts above to
annotate, or as the researcher for the admin (/admin/) and the evaluation reports (/evaluation/).

Try next, in another terminal in this folder:
  $BIN/python manage.py simulate_annotators --all-open --policy noisy_oracle
  $BIN/python manage.py launch_training_round "Demo: best and worst" --base-model toy-sd \\
      --config training/configs/toy_simpo_pixel.toml --name toy-sd-simpo-pixel --evaluate-on toy-eval --evaluate-limit 40
  $BIN/python manage.py simulate_annotators --all-open --policy noisy_oracle   # once its evaluation's rounds open
Or a whole round from images in one command (synthetic annotators judge its best/worst round; without
--simulate-annotators, people do, in the browser), moved on by the default worker's beat:
  $BIN/python manage.py launch_training_round --base toy-sd --prompts toy-train --limit 8 --method simpo \\
      --pixel-weight 2 --config training/configs/toy_simpo_pixel.toml --simulate-annotators noisy_oracle \\
      --evaluate-on toy-eval --evaluate-limit 8 --wait
Then read the reports at http://127.0.0.1:$PORT/evaluation/ (or: manage.py evaluation_report ID).

NEXT
"$BIN/python" manage.py runserver "127.0.0.1:$PORT"
