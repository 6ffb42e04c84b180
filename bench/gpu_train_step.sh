#!/usr/bin/env bash
# The training-step benchmark on one CUDA GPU: SD1.5-size random-init UNet, SD VAE, CLIP text
# encoder and a TAESD-size AutoencoderTiny, built in code (no download), at 512 px in bf16.
# Prints the same tables as the CPU run; takes about 1-2 minutes and is capped at 5.
#
#   bench/gpu_train_step.sh                 # results also go to $RESULTS_DIR (or .) as gpu_train_step.json
#   PYTHON=/path/to/python bench/gpu_train_step.sh --batch 4
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ "$PYTHON" = python ]; then PYTHON=.venv/bin/python; fi

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_train_step.sh: no CUDA device visible to torch; this benchmark needs a GPU." >&2
  echo "On a CPU machine run the scaled-down version instead: python bench/train_step.py" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

export HF_HUB_OFFLINE=1
exec timeout 300 "$PYTHON" bench/train_step.py \
  --device cuda --preset sd15 --resolution 512 --dtype bf16 --batch 2 \
  --steps 5 --warmup 2 --json "${RESULTS_DIR:-.}/gpu_train_step.json" "$@"
