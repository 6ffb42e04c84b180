"""The training-step benchmark's model presets (bench/train_step.py), which bench/gpu_train_step.sh runs on a GPU.

No GPU here, so the real sizes are checked by building them on the meta device (parameter
counts equal to the published models'), and the step itself runs on channel-scaled copies.
"""

import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "bench"))

import train_step  # noqa: E402

# Published parameter counts: SD1.5's UNet and CLIP ViT-L/14 text model, SDXL base's UNet and
# OpenCLIP bigG text model (with projection), PixArt-α XL-2's transformer, and SD's VAE.
REAL_COUNTS = {
    "sd15": {"unet": 859_520_964, "text_encoder": 123_060_480, "vae": 83_653_863},
    "sdxl": {"unet": 2_567_463_684, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840, "vae": 83_653_863},
    "pixart": {"transformer": 610_856_096, "vae": 83_653_863},
}


@pytest.mark.parametrize("preset", sorted(REAL_COUNTS))
def test_real_shapes_match_the_published_models(preset):
    resolution = 1024 if preset == "sdxl" else 512
    with torch.device("meta"):
        pipeline, _, _ = train_step.PIPELINE_BUILDERS[preset](resolution, 1)
    counts = {name: sum(p.numel() for p in getattr(pipeline, name).parameters()) for name in REAL_COUNTS[preset]}
    assert counts == REAL_COUNTS[preset]


def test_pixart_text_encoder_has_t5_xxl_width_and_depth():
    with torch.device("meta"):
        pipeline, _, _ = train_step.PIPELINE_BUILDERS["pixart"](512, 1)
    config = pipeline.text_encoder.config
    assert (config.d_model, config.num_layers, config.num_heads, config.d_ff) == (4096, 24, 64, 10240)
    assert pipeline.transformer.config.caption_channels == 4096


def test_micro_conditioning_comes_from_the_engines_preprocessing():
    conditioning = train_step.micro_conditioning(4, 64)
    assert conditioning["original_size"].tolist() == [list(size) for size in train_step.ORIGINAL_SIZES]
    # 1536×1024 (h×w) resized to a 64 px short side is 96×64: the centre crop starts 16 rows down;
    # 768×1344 becomes 64×112, 24 columns in.
    assert conditioning["crop_top_left"].tolist() == [[0, 0], [16, 0], [0, 24], [0, 0]]


def _args(preset, objective):
    return Namespace(preset=preset, resolution=64, batch=2, dtype="fp32", device="cpu", pixel_weight=2.0,
                     beta=5000.0, toy=None, objectives=[objective], channel_div=16)


@pytest.mark.parametrize("preset", ["sd15", "sdxl", "pixart"])
@pytest.mark.parametrize("objective", ["sft", "simpo"])
def test_a_scaled_preset_takes_the_engines_pixel_step(preset, objective, tmp_path):
    torch.manual_seed(0)
    args = _args(preset, objective)
    models = train_step.build_models(preset, args.resolution, train_step.channel_div(args), "cpu", torch.float32)
    bench = train_step.Bench(args, models, tmp_path)
    setup = train_step.Setup(objective, pixel=True)
    batch = train_step.make_batch(setup, args, models)
    if preset == "sdxl":  # each image's micro-conditioning rides in the batch, as from the data loader
        sides = ("",) if objective == "sft" else ("_w", "_l")
        assert all(batch[f"original_size{side}"].shape == (2, 2) for side in sides)
    before = [p.detach().clone() for p in bench.params]
    bench.step_fn(setup)()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, bench.params))
    assert changed > len(before) // 2
    macs = train_step.count_macs(models, args.resolution, "cpu")
    assert macs["denoiser_gmac"] > 0 and macs["decoder_gmac"] > macs["tiny_decoder_gmac"] > 0


def test_the_default_divisor_is_4_for_scaled_and_1_for_real_presets():
    assert train_step.channel_div(Namespace(preset="scaled", channel_div=None)) == 4
    assert train_step.channel_div(Namespace(preset="sdxl", channel_div=None)) == 1
    assert train_step.channel_div(Namespace(preset="sdxl", channel_div=8)) == 8
