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
EVALUATION_SAMPLER=${EVALUATION_SAMPLER:-'{"batch_size": 20}'} "$BIN/celery" -A config worker -Q gpu -P solo -n gpu@%h > var/worker-gpu.log 2>&1 &
GPU_WORKER=$!
trap 'kill $DEFAULT_WORKER $GPU_WORKER 2>/dev/null; wait 2>/dev/null; rm -rf "$CLONE"' EXIT
"$BIN/python" manage.py seed_demo --wait > var/seed.log
end=$(date +%s.%N)
printf 'demo set-up: %.1f s wall (fresh clone, after installation, up to the server URL)\n' "$(echo "$end - $start" | bc)"

# The rest of the loop, as the demo prints it: simulated annotators, a SimPO + pixel training
# round on the worker (export, training, registration, the evaluation's images), the report.
"$BIN/python" manage.py simulate_annotators "Demo: best and worst" --policy noisy_oracle
t0=$(date +%s.%N)
"$BIN/python" manage.py launch_training_round "Demo: best and worst" --base-model toy-sd \
    --config training/configs/toy_simpo_pixel.toml --name toy-sd-simpo-pixel --evaluate-on toy-eval --evaluate-limit 40
"$BIN/python" manage.py shell --no-imports -c '
import sys, time
from evaluation.models import EvaluationRound
from training.models import TrainingRun
for _ in range(1800):
    run = TrainingRun.objects.get(name="toy-sd-simpo-pixel")
    if run.status == "failed":
        sys.exit(f"training run failed: {run.error}")
    evaluation = EvaluationRound.objects.filter(entries__model_version__name="toy-sd-simpo-pixel").first()
    if evaluation is not None and evaluation.annotation_rounds.exists():
        break
    time.sleep(1)
else:
    sys.exit("the training round did not reach its evaluation in 30 minutes")
'
t1=$(date +%s.%N)
printf 'training round: %.1f s wall (export, SimPO + pixel training, registration, evaluation images)\n' "$(echo "$t1 - $t0" | bc)"
"$BIN/python" manage.py simulate_annotators --all-open --policy noisy_oracle > /dev/null
"$BIN/python" manage.py evaluation_report "$("$BIN/python" manage.py shell --no-imports -c 'from evaluation.models import EvaluationRound; print(EvaluationRound.objects.filter(entries__model_version__name="toy-sd-simpo-pixel").first().pk)')" --format table
