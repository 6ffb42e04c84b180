#!/usr/bin/env bash
# The training-step benchmark on one CUDA GPU, in bf16, with random-init models of the real shapes
# built in code (no download), each with a TAESD-size AutoencoderTiny as the cheap decoder:
#   sd15    SD1.5 UNet, SD VAE, CLIP ViT-L text encoder; 512 px, batch 2 (SimPO: 2 pairs)
#   sdxl    SDXL base UNet, both CLIP encoders, micro-conditioning; 1024 px, batch 1 (SimPO: 1 pair)
#   pixart  PixArt-α 512 DiT, a T5-XXL-shaped encoder; 512 px, batch 2
# Prints the same tables as the CPU run for each, and writes gpu_train_step-<preset>.json to
# $RESULTS_DIR (or .). The three together are capped at 5 minutes (90 + 130 + 80 s); a preset
# that runs over its share is stopped and reported, and the others still run.
#
#   bench/gpu_train_step.sh                       # all three
#   PRESETS="sdxl" bench/gpu_train_step.sh        # one; extra arguments go to each run:
#   PRESETS="sd15" bench/gpu_train_step.sh --batch 4
set -uo pipefail
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
RESULTS_DIR="${RESULTS_DIR:-.}"
failed=0
for preset in ${PRESETS:-sd15 sdxl pixart}; do
  case "$preset" in
    sd15)   limit=90;  args=(--resolution 512 --batch 2 --steps 5 --warmup 2) ;;
    sdxl)   limit=130; args=(--resolution 1024 --batch 1 --steps 3 --warmup 1) ;;
    pixart) limit=80;  args=(--resolution 512 --batch 2 --steps 3 --warmup 1 --pixel-weight 8) ;;
    *) echo "gpu_train_step.sh: unknown preset '$preset' (sd15, sdxl, pixart)" >&2; exit 2 ;;
  esac
  echo "== $preset (at most ${limit} s)"
  timeout "$limit" "$PYTHON" bench/train_step.py --device cuda --preset "$preset" --dtype bf16 "${args[@]}" \
    --json "$RESULTS_DIR/gpu_train_step-$preset.json" "$@"
  status=$?
  if [ "$status" -eq 124 ]; then
    echo "gpu_train_step.sh: $preset ran over its ${limit} s and was stopped" >&2
  fi
  [ "$status" -eq 0 ] || failed=1
done
exit "$failed"
