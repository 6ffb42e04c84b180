#!/usr/bin/env bash
# Time a whole training round on embedded defaults (SQLite, filesystem broker) with the toy model, started by one
# command with --wait: 8 prompts × 5 images of toy-sd, a best/worst round judged by 5 synthetic annotators (the
# pixel oracle), SimPO latent + pixel (μ = 2) for 120 steps, registration, and the evaluation's images (8 prompts
# × 2 models). Runs in a throwaway VAR_DIR; prints the stage transitions and the wall time.
#     bench/whole_round.sh            # after `make install`
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export VAR_DIR=${VAR_DIR:-$(mktemp -d /tmp/whole-round.XXXXXX)}
unset DATABASE_URL REDIS_URL CELERY_BROKER_URL || true
"$BIN/python" manage.py migrate -v0
"$BIN/python" manage.py import_prompts --preset toy > /dev/null
"$BIN/python" manage.py register_model toyworld/weights/toy-sd --name toy-sd > /dev/null
"$BIN/celery" -A config worker -Q default -P solo -n default@%h -B -s "$VAR_DIR/celerybeat-schedule" \
    --loglevel INFO > "$VAR_DIR/worker-default.log" 2>&1 &
DEFAULT_WORKER=$!
EVALUATION_SAMPLER='{"batch_size": 20}' "$BIN/celery" -A config worker -Q gpu -P solo -n gpu@%h --loglevel INFO \
    > "$VAR_DIR/worker-gpu.log" 2>&1 &
GPU_WORKER=$!
trap 'kill $DEFAULT_WORKER $GPU_WORKER 2>/dev/null; wait $DEFAULT_WORKER $GPU_WORKER 2>/dev/null' EXIT
start=$(date +%s)
"$BIN/python" manage.py launch_training_round --base toy-sd --prompts toy-train --limit 8 --method simpo \
    --pixel-weight 2 --config training/configs/toy_simpo_pixel.toml --simulate-annotators noisy_oracle \
    --evaluate-on toy-eval --evaluate-limit 8 --name toy-round-1 --wait 2>&1 | tr '\r' '\n' | grep -E "training.rounds|done"
echo "whole round: $(( $(date +%s) - start )) s wall (VAR_DIR=$VAR_DIR)"
