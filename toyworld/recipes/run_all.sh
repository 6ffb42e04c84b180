#!/usr/bin/env bash
# The whole toy-world recipe, resumable: each step skips what is already done.
#   toyworld/recipes/run_all.sh RUNS_DIR      (default var/toyworld; takes hours on 2 CPU cores)
# 1. the VAE, whose encoder freezes at step 1000 (the latent space is final from then on);
# 2. the VAE's decoder goes on training, and both denoisers train on that latent space beside it,
#    one thread each;
# 3. the exports into toyworld/weights (fp16), each pipeline with the finished VAE;
# 4. later stages from those exports, and the quality figures (toyworld/weights/quality.json).
set -euo pipefail
RUNS=${1:-var/toyworld}
PY=${PY:-.venv/bin/python}
export PYTHONPATH=. OMP_NUM_THREADS=1
mkdir -p "$RUNS"
until [ -f "$RUNS/vae/at-freeze/config.json" ]; do
  "$PY" -m toyworld.recipes.vae --run-dir "$RUNS/vae" --stop-after 1000 >> "$RUNS/vae.log" 2>&1
done
"$PY" -m toyworld.recipes.vae --run-dir "$RUNS/vae" --stop-after 1500 >> "$RUNS/vae.log" 2>&1 &
VAE=$!
"$PY" -m toyworld.recipes.denoiser --layout sd --run-dir "$RUNS/sd" --data-dir "$RUNS/data" --render-only
"$PY" -m toyworld.recipes.denoiser --layout sd --run-dir "$RUNS/sd" --data-dir "$RUNS/data" \
    --vae "$RUNS/vae/at-freeze" >> "$RUNS/sd.log" 2>&1 &
SD=$!
"$PY" -m toyworld.recipes.denoiser --layout pixart --run-dir "$RUNS/pixart" --data-dir "$RUNS/data" \
    --vae "$RUNS/vae/at-freeze" >> "$RUNS/pixart.log" 2>&1
wait $SD
# The SD layout's second stage: 3,000 more steps at a constant rate from the first stage's export.
"$PY" -m toyworld.recipes.denoiser --layout sd --recipe sd_stage2 --start-from "$RUNS/sd/engine/model" \
    --run-dir "$RUNS/sd2" --data-dir "$RUNS/data" >> "$RUNS/sd2.log" 2>&1
wait $VAE
"$PY" -m toyworld.recipes.vae --run-dir "$RUNS/vae" --export "$RUNS/vae/final"
"$PY" -m toyworld.recipes.denoiser --layout sd --run-dir "$RUNS/sd2" --vae "$RUNS/vae/final" --export toyworld/weights/toy-sd
"$PY" -m toyworld.recipes.denoiser --layout pixart --run-dir "$RUNS/pixart" --vae "$RUNS/vae/final" --export toyworld/weights/toy-pixart
# Later stages start from the shipped exports (a new machine needs no earlier run directory), side
# by side, one thread each, and export over them: the SD layout's third stage (8,000 steps at 2e-4)
# and the PixArt layout's second (constant 3e-4; the shipped one stopped at step 3,500:
# add --set max_train_steps=3500 to both of its commands to reproduce it).
"$PY" -m toyworld.recipes.denoiser --layout sd --recipe sd_stage3 --start-from toyworld/weights/toy-sd \
    --run-dir "$RUNS/sd3" --data-dir "$RUNS/data" --vae toyworld/weights/toy-sd/vae >> "$RUNS/sd3.log" 2>&1 &
SD3=$!
"$PY" -m toyworld.recipes.denoiser --layout pixart --recipe pixart_stage2 --start-from toyworld/weights/toy-pixart \
    --run-dir "$RUNS/pixart2" --data-dir "$RUNS/data" --vae toyworld/weights/toy-pixart/vae >> "$RUNS/pixart2.log" 2>&1
wait $SD3
"$PY" -m toyworld.recipes.denoiser --layout sd --run-dir "$RUNS/sd3" --vae toyworld/weights/toy-sd/vae \
    --export "$RUNS/export-sd3"
"$PY" -m toyworld.recipes.denoiser --layout pixart --run-dir "$RUNS/pixart2" --vae toyworld/weights/toy-pixart/vae \
    --export "$RUNS/export-pixart2"
rm -rf toyworld/weights/toy-sd toyworld/weights/toy-pixart
cp -r "$RUNS/export-sd3" toyworld/weights/toy-sd
cp -r "$RUNS/export-pixart2" toyworld/weights/toy-pixart
# The PixArt layout's third stage starts from the second's shipped export (same constant 3e-4; the
# shipped one stopped at step 3,000 of 10,000: add --set max_train_steps=3000 to both commands).
"$PY" -m toyworld.recipes.denoiser --layout pixart --recipe pixart_stage3 --start-from toyworld/weights/toy-pixart \
    --run-dir "$RUNS/pixart3" --data-dir "$RUNS/data" --vae toyworld/weights/toy-pixart/vae >> "$RUNS/pixart3.log" 2>&1
"$PY" -m toyworld.recipes.denoiser --layout pixart --run-dir "$RUNS/pixart3" --vae toyworld/weights/toy-pixart/vae \
    --export "$RUNS/export-pixart3"
rm -rf toyworld/weights/toy-pixart
cp -r "$RUNS/export-pixart3" toyworld/weights/toy-pixart
# The fourth stage: from the third's shipped export, Min-SNR-5 weighting and a cosine decay to zero
# (5,000 steps). The fifth: from the fourth's export with its T5 encoder made order-aware
# (--order-aware-text), the same SFT for 4,000 steps; its export is what ships.
"$PY" -m toyworld.recipes.denoiser --layout pixart --recipe pixart_stage4 --start-from toyworld/weights/toy-pixart \
    --run-dir "$RUNS/pixart4" --data-dir "$RUNS/data" --vae toyworld/weights/toy-pixart/vae >> "$RUNS/pixart4.log" 2>&1
"$PY" -m toyworld.recipes.denoiser --layout pixart --run-dir "$RUNS/pixart4" --vae toyworld/weights/toy-pixart/vae \
    --export "$RUNS/export-pixart4"
"$PY" -m toyworld.recipes.denoiser --layout pixart --recipe pixart_stage5 --order-aware-text \
    --start-from "$RUNS/export-pixart4" --run-dir "$RUNS/pixart5" --data-dir "$RUNS/data" \
    --vae toyworld/weights/toy-pixart/vae --threads 2 >> "$RUNS/pixart5.log" 2>&1
"$PY" -m toyworld.recipes.denoiser --layout pixart --run-dir "$RUNS/pixart5" --vae toyworld/weights/toy-pixart/vae \
    --export "$RUNS/export-pixart5"
rm -rf toyworld/weights/toy-pixart
cp -r "$RUNS/export-pixart5" toyworld/weights/toy-pixart
"$PY" -m toyworld.quality models --out toyworld/weights/quality.json
