"""The training loop on tiny pipelines: objectives, export, resume, NaN handling, gradients."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from training.engine import loop
from training.engine.config import ConfigError, TrainConfig
from training.engine.pipeline_index import read_pipeline_index


def make_config(tiny_pipelines, data, tmp_path, family="unet", **overrides) -> TrainConfig:
    settings = dict(
        pretrained_model=str(tiny_pipelines[family]), output_dir=str(tmp_path / "run"), train_data=str(data),
        resolution=32, max_train_steps=3, train_batch_size=2, learning_rate=1e-3, max_sequence_length=16,
        latent_beta=100.0, pixel_beta=100.0, pixel_weight=2.0, checkpointing_steps=100,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def denoiser_weights(model_dir) -> dict[str, torch.Tensor]:
    index = read_pipeline_index(model_dir)
    (weights,) = (model_dir / index.denoiser).glob("*.safetensors")
    return load_file(weights)


def component_weights(model_dir, component) -> dict[str, torch.Tensor]:
    (weights,) = (model_dir / component).glob("*.safetensors")
    return load_file(weights)


def sample_one(model_dir, out_dir):
    from PIL import Image

    from training.engine.config import SampleConfig
    from training.engine.sampling import sample

    record = sample(model_dir, ["a red cat"], [0], out_dir,
                    SampleConfig(steps=2, height=32, width=32, max_sequence_length=16, device="cpu"))
    with Image.open(out_dir / record["images"][0]["file"]) as image:
        return image.size


@pytest.mark.parametrize("family", ["unet", "sdxl", "dit", "flow"])
@pytest.mark.parametrize(("latent", "pixel"), [("sft", "sft"), ("dpo", "dpo"), ("simpo", "simpo")])
def test_objectives_change_the_weights_and_export_loads(
    tiny_pipelines, sft_folder, preference_manifest, tmp_path, family, latent, pixel
):
    data = sft_folder if latent == "sft" else preference_manifest
    cfg = make_config(tiny_pipelines, data, tmp_path, family=family, latent_objective=latent, pixel_objective=pixel)
    result = loop.train(cfg)

    assert result.global_step == 3
    base = denoiser_weights(tiny_pipelines[family])
    trained = denoiser_weights(result.model_dir)
    assert base.keys() == trained.keys()
    assert any(not torch.equal(base[k], trained[k]) for k in base)
    # The VAE is frozen: the exported VAE is the base VAE.
    base_vae, trained_vae = component_weights(tiny_pipelines[family], "vae"), component_weights(result.model_dir, "vae")
    assert all(torch.equal(base_vae[k], trained_vae[k]) for k in base_vae)

    records = [json.loads(line) for line in result.metrics_file.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        assert {"loss", "latent_loss", "pixel_loss", "grad_norm", "lr", "step_time"} <= record.keys()
        assert all(v is None or v == v for v in record.values())  # no NaN
    if latent != "sft":
        assert {"latent_accuracy", "pixel_accuracy"} <= records[0].keys()
    if latent == "dpo":
        # At step 1 the model is its reference: each DPO term is log 2.
        assert records[0]["latent_loss"] == pytest.approx(0.693147, abs=1e-5)
        assert records[0]["pixel_loss"] == pytest.approx(0.693147, abs=1e-5)

    assert sample_one(result.model_dir, tmp_path / "samples") == (32, 32)


def test_lora_dpo_exports_merged_and_adapter_only(tiny_pipelines, preference_manifest, tmp_path):
    from diffusers import UNet2DConditionModel

    cfg = make_config(tiny_pipelines, preference_manifest, tmp_path, latent_objective="dpo", pixel_objective="dpo",
                      use_lora=True, lora_rank=4, lora_alpha=4, export_lora_adapter=True, learning_rate=1e-2,
                      mixed_precision="bf16")  # the frozen base trains in bf16; the export must not
    result = loop.train(cfg)
    records = [json.loads(line) for line in result.metrics_file.read_text().splitlines()]
    assert records[0]["latent_loss"] == pytest.approx(0.693147, abs=1e-5)  # adapters start at zero
    assert records[-1]["latent_ref_err_w"] != records[-1]["latent_err_w"]  # the adapters now matter

    merged = UNet2DConditionModel.from_pretrained(result.model_dir / "unet")
    base = UNet2DConditionModel.from_pretrained(tiny_pipelines["unet"] / "unet")
    assert not any("lora" in k for k in merged.state_dict())
    with_adapter = UNet2DConditionModel.from_pretrained(tiny_pipelines["unet"] / "unet")
    with_adapter.load_lora_adapter(str(result.adapter_dir), prefix=None, weight_name="pytorch_lora_weights.safetensors")

    torch.manual_seed(0)
    z, t, text = torch.randn(1, 4, 16, 16), torch.tensor([500]), torch.randn(1, 5, 32)
    with torch.no_grad():
        out_merged = merged(z, t, encoder_hidden_states=text).sample
        out_adapter = with_adapter(z, t, encoder_hidden_states=text).sample
        out_base = base(z, t, encoder_hidden_states=text).sample
    assert torch.allclose(out_merged, out_adapter, atol=1e-5)
    assert not torch.allclose(out_merged, out_base, atol=1e-5)
    assert sample_one(result.model_dir, tmp_path / "samples") == (32, 32)


def test_gradients_reach_the_denoiser_through_the_decoder_and_never_the_vae(tiny_pipelines, sft_folder, tmp_path):
    from training.engine.data import collate_fn, load_sft_dataset
    from training.engine.families import load_adapter

    cfg = make_config(tiny_pipelines, sft_folder, tmp_path, latent_objective="none", pixel_objective="sft")
    adapter = load_adapter(cfg.pretrained_model, max_sequence_length=16)
    adapter.vae.requires_grad_(False)
    for encoder in adapter.text_encoders():
        encoder.requires_grad_(False)
    dataset = load_sft_dataset(cfg.train_data, resolution=32)
    batch = collate_fn([dataset[0], dataset[1]])
    ctx = loop.LossContext(adapter=adapter, config=cfg, device=torch.device("cpu"))
    loss, metrics = loop.compute_loss(ctx, adapter.denoiser, batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert "latent_loss" not in metrics  # the pixel-only ablation
    grads = [p.grad for p in adapter.denoiser.parameters()]
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert all(p.grad is None for p in adapter.vae.parameters())


def test_random_latent_crop_shares_windows_between_winner_and_loser():
    x = torch.arange(4 * 1 * 8 * 8, dtype=torch.float32).reshape(4, 1, 8, 8)
    pos = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8).repeat(4, 1, 1, 1)
    cropped_x, cropped_pos = loop.random_latent_crop([x, pos], 0.5, torch.Generator().manual_seed(3), pairs=True)
    assert cropped_x.shape == (4, 1, 4, 4)
    assert torch.equal(cropped_pos[0], cropped_pos[2]) and torch.equal(cropped_pos[1], cropped_pos[3])
    assert torch.equal(cropped_x[0] - x[0, 0, 0, 0], cropped_pos[0])  # the same window in every tensor


def test_pixel_cost_options_run(tiny_pipelines, tiny_decoder, preference_manifest, tmp_path):
    cfg = make_config(tiny_pipelines, preference_manifest, tmp_path, latent_objective="simpo",
                      pixel_objective="simpo", pixel_crop=0.5, pixel_decoder=str(tiny_decoder),
                      vae_gradient_checkpointing=True, gradient_checkpointing=True, pixel_decoding="x0",
                      report_to="tensorboard", max_train_steps=2)
    result = loop.train(cfg)
    records = [json.loads(line) for line in result.metrics_file.read_text().splitlines()]
    assert all(r["pixel_loss"] > 0 for r in records)
    assert list((result.output_dir / "tensorboard").glob("events.out.tfevents.*"))


class Interrupt(Exception):
    pass


def _fail_at(monkeypatch, call_number, make_failure):
    real = loop.compute_loss
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        loss, metrics = real(*args, **kwargs)
        if calls["n"] == call_number:
            return make_failure(loss, metrics)
        return loss, metrics

    monkeypatch.setattr(loop, "compute_loss", wrapped)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_pipelines, preference_manifest, tmp_path,
                                                                monkeypatch):
    settings = dict(latent_objective="simpo", pixel_objective="dpo", max_train_steps=4, checkpointing_steps=2,
                    train_batch_size=1, gradient_accumulation_steps=2, lr_scheduler="cosine", lr_warmup_steps=1,
                    use_ema=True, ema_decay=0.9, random_flip=True, caption_dropout=0.5, center_crop=False)
    straight = loop.train(make_config(tiny_pipelines, preference_manifest, tmp_path / "a", **settings))

    def interrupt(loss, metrics):
        raise Interrupt

    with monkeypatch.context() as patch:
        _fail_at(patch, 5, interrupt)  # the first micro-batch of step 3
        with pytest.raises(Interrupt):
            loop.train(make_config(tiny_pipelines, preference_manifest, tmp_path / "b", **settings))
    assert [p.name for p in loop.list_checkpoints(tmp_path / "b" / "run")] == ["checkpoint-2"]
    resumed = loop.train(make_config(tiny_pipelines, preference_manifest, tmp_path / "b", resume_from="latest",
                                     **settings))
    assert resumed.resumed_from.name == "checkpoint-2"
    assert [p.name for p in loop.list_checkpoints(resumed.output_dir)] == ["checkpoint-2", "checkpoint-4"]

    expected, got = denoiser_weights(straight.model_dir), denoiser_weights(resumed.model_dir)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-7)
    lines = [json.loads(line) for line in resumed.metrics_file.read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    straight_lines = [json.loads(line) for line in straight.metrics_file.read_text().splitlines()]
    assert lines[3]["loss"] == pytest.approx(straight_lines[3]["loss"], abs=1e-6)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(
    tiny_pipelines, sft_folder, tmp_path, monkeypatch
):
    _fail_at(monkeypatch, 3, lambda loss, metrics: (loss * float("nan"), metrics))
    cfg = make_config(tiny_pipelines, sft_folder, tmp_path, max_train_steps=5, checkpointing_steps=2)
    with pytest.raises(loop.NonFiniteLossError, match=r"non-finite loss at step 3 .*checkpoint-2"):
        loop.train(cfg)
    assert [p.name for p in loop.list_checkpoints(cfg.output_dir)] == ["checkpoint-2"]
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.parametrize(("bad_call", "checkpoints"), [(3, ["checkpoint-2"]), (5, ["checkpoint-2", "checkpoint-4"])])
def test_a_nan_between_logged_steps_is_caught_before_the_next_checkpoint_or_the_export(
    tiny_pipelines, sft_folder, tmp_path, monkeypatch, bad_call, checkpoints
):
    # The loss is checked when it is logged, before a checkpoint and before export, not every step.
    _fail_at(monkeypatch, bad_call, lambda loss, metrics: (loss * float("nan"), metrics))
    cfg = make_config(tiny_pipelines, sft_folder, tmp_path, max_train_steps=5, checkpointing_steps=2,
                      log_every=100)
    with pytest.raises(loop.NonFiniteLossError, match=rf"non-finite loss at step {bad_call} \(.*loss=.*{checkpoints[-1]}"):
        loop.train(cfg)
    assert [p.name for p in loop.list_checkpoints(cfg.output_dir)] == checkpoints
    assert not (tmp_path / "run" / "model").exists()


def test_checkpoint_rotation_and_refusing_to_overwrite_a_run(tiny_pipelines, sft_folder, tmp_path):
    cfg = make_config(tiny_pipelines, sft_folder, tmp_path, max_train_steps=4, checkpointing_steps=1,
                      checkpoints_total_limit=2)
    loop.train(cfg)
    checkpoints = loop.list_checkpoints(cfg.output_dir)
    assert [p.name for p in checkpoints] == ["checkpoint-3", "checkpoint-4"]
    saved = json.loads((checkpoints[-1] / "config.json").read_text())
    assert TrainConfig.from_dict(saved) == cfg
    with pytest.raises(loop.TrainingError, match="output_dir: .* already holds checkpoints"):
        loop.train(cfg)


def test_a_missing_image_stops_before_step_one(tiny_pipelines, tmp_path):
    from training.engine.data import DatasetError

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "gone.png", "text": "x"}) + "\n")
    with pytest.raises(DatasetError, match="gone.png"):
        loop.train(make_config(tiny_pipelines, folder, tmp_path))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_seeds_and_sharding_are_deterministic():
    sampler = loop.ShardedBatchSampler(10, 2, 2, 1, seed=7, start=0, stop=6)
    other_rank = loop.ShardedBatchSampler(10, 2, 2, 0, seed=7, start=0, stop=6)
    batches, other = list(sampler), list(other_rank)
    assert len(batches) == 6 and all(len(b) == 2 for b in batches)
    assert not set(batches[0]) & set(other[0])  # processes see different examples in a step
    assert list(loop.ShardedBatchSampler(10, 2, 2, 1, seed=7, start=3, stop=6)) == batches[3:]
    assert loop.derive_seed(1, 2, 3) == loop.derive_seed(1, 2, 3) != loop.derive_seed(1, 2, 4)


def test_cached_latents_train_exactly_like_encoding_each_step(tiny_pipelines, sft_folder, tmp_path):
    plain = loop.train(make_config(tiny_pipelines, sft_folder, tmp_path / "plain", pixel_objective="sft",
                                   max_train_steps=2))
    cached = loop.train(make_config(tiny_pipelines, sft_folder, tmp_path / "cached", pixel_objective="sft",
                                    max_train_steps=2, cache_latents=True))
    assert list((cached.output_dir / "latent_cache").glob("*.safetensors"))
    for a, b in zip(plain.metrics_file.read_text().splitlines(), cached.metrics_file.read_text().splitlines()):
        assert json.loads(a)["loss"] == pytest.approx(json.loads(b)["loss"], rel=1e-5)


def test_v_prediction_unet_trains_with_x0_pixel_decoding(tiny_pipelines, sft_folder, tmp_path):
    cfg = make_config(tiny_pipelines, sft_folder, tmp_path, family="unet_v", pixel_objective="sft",
                      pixel_decoding="x0", max_train_steps=2)
    result = loop.train(cfg)
    base, trained = denoiser_weights(tiny_pipelines["unet_v"]), denoiser_weights(result.model_dir)
    assert any(not torch.equal(base[k], trained[k]) for k in base)


def test_one_process_can_train_several_runs_with_different_precisions(tiny_pipelines, sft_folder, tmp_path):
    # A long-lived GPU worker trains one run after another.
    first = loop.train(make_config(tiny_pipelines, sft_folder, tmp_path / "bf16", mixed_precision="bf16",
                                   max_train_steps=1))
    second = loop.train(make_config(tiny_pipelines, sft_folder, tmp_path / "fp32", max_train_steps=1))
    assert first.global_step == second.global_step == 1
    precisions = [json.loads((result.output_dir / "train_summary.json").read_text())["mixed_precision"]
                  for result in (first, second)]
    assert precisions == ["bf16", "no"]


def test_resetting_accelerate_lets_the_next_accelerator_take_another_precision():
    # reset_accelerate_state is the one call into accelerate's private API: fail loudly when it changes.
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    assert callable(AcceleratorState._reset_state) and callable(GradientState._reset_state)
    loop.reset_accelerate_state()
    assert Accelerator(mixed_precision="bf16", gradient_accumulation_steps=2).mixed_precision == "bf16"
    with pytest.raises(ValueError, match="already been initialized"):
        Accelerator(mixed_precision="no")  # without the reset accelerate refuses the change
    loop.reset_accelerate_state()
    accelerator = Accelerator(mixed_precision="no")
    assert accelerator.mixed_precision == "no" and AcceleratorState().mixed_precision == "no"
    assert accelerator.gradient_accumulation_steps == 1
    loop.reset_accelerate_state()


def test_watching_the_loss_never_reads_a_value_back_to_the_host():
    # Tensors on the meta device have no values: any .item(), bool() or float() on them raises.
    watch = loop.NonFiniteWatch(torch.device("meta"))
    for step in (1, 2, 3):
        loss = torch.empty((), device="meta")
        watch.observe(loss, {"loss": loss, "latent_loss": torch.empty((), device="meta")}, step)
    assert watch.first_bad_step.device.type == "meta"
    with pytest.raises((NotImplementedError, RuntimeError)):
        bool(watch.first_bad_step)  # what check() does, once, when the loss is logged


def test_min_snr_and_sd3_objective_options_train(tiny_pipelines, sft_folder, preference_manifest, tmp_path):
    # γ = 0.001 is below every SNR of the schedule (the last is 0.0047): every weight min(SNR, γ)/SNR < 1.
    snr = loop.train(make_config(tiny_pipelines, sft_folder, tmp_path / "snr", snr_gamma=1e-3, max_train_steps=1))
    plain = loop.train(make_config(tiny_pipelines, sft_folder, tmp_path / "plain", max_train_steps=1))
    assert snr.last_metrics["latent_loss"] < 0.25 * plain.last_metrics["latent_loss"]
    flow = loop.train(make_config(tiny_pipelines, preference_manifest, tmp_path / "flow", family="flow",
                                  latent_objective="simpo", flow_timestep_sampling="mode",
                                  flow_loss_weighting="cosmap", max_train_steps=1))
    assert flow.last_metrics["latent_loss"] == flow.last_metrics["latent_loss"]  # finite
    with pytest.raises(ConfigError, match="snr_gamma"):
        loop.train(make_config(tiny_pipelines, sft_folder, tmp_path / "bad", family="flow", snr_gamma=5.0))
    assert not (tmp_path / "bad" / "run" / "checkpoints").exists()


def _one_step_under_cpu_autocast(tiny_pipelines, preference_manifest, tmp_path, dtype):
    """One SDXL DPO + pixel step the way a GPU run takes it: text encoders in the compute dtype,
    the VAE in fp32, the denoiser's activations recomputed, matmuls under autocast."""
    from training.engine.data import collate_fn, load_preference_dataset
    from training.engine.families import load_adapter

    cfg = make_config(tiny_pipelines, preference_manifest, tmp_path, family="sdxl", latent_objective="dpo",
                      pixel_objective="dpo", gradient_checkpointing=True, vae_gradient_checkpointing=True)
    adapter = load_adapter(cfg.pretrained_model)
    adapter.vae.requires_grad_(False).to(torch.float32)
    adapter.vae.enable_gradient_checkpointing()
    for encoder in adapter.text_encoders():
        encoder.requires_grad_(False).to(dtype)
    reference = loop.copy.deepcopy(adapter.denoiser).requires_grad_(False).to(dtype)
    denoiser = adapter.denoiser.train()
    denoiser.enable_gradient_checkpointing()
    before = {k: v.clone() for k, v in denoiser.state_dict().items()}
    seen = []
    denoiser.conv_in.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    autocast = lambda: torch.autocast("cpu", dtype=dtype)  # noqa: E731
    ctx = loop.LossContext(adapter=adapter, config=cfg, device=torch.device("cpu"), reference=reference,
                           autocast=autocast)
    batch = collate_fn([load_preference_dataset(cfg.train_data, resolution=32)[i] for i in (0, 1)])
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=1e-3)
    # A small first scale: the default 2**16 overflows fp16 at once and skips the step (as it may on a GPU).
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, enabled=dtype == torch.float16)
    with autocast():
        loss, metrics = loop.compute_loss(ctx, denoiser, batch, torch.Generator().manual_seed(0))
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    changed = any(not torch.equal(before[k], v) for k, v in denoiser.state_dict().items())
    return loss, metrics, seen, changed, adapter


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_mixed_precision_step_on_cpu_autocast(tiny_pipelines, preference_manifest, tmp_path, dtype):
    loss, metrics, seen, changed, adapter = _one_step_under_cpu_autocast(
        tiny_pipelines, preference_manifest, tmp_path, dtype)
    assert seen and set(seen) == {dtype}  # the U-Net ran in the compute dtype
    assert torch.isfinite(loss) and changed
    # The model is its reference at step 1: log 2 up to the rounding of the half-precision reference.
    assert metrics["latent_loss"] == pytest.approx(0.693147, abs=0.05)
    assert adapter.vae.dtype == torch.float32 and all(p.dtype == torch.float32 for p in adapter.denoiser.parameters())


def test_fp16_training_on_cpu_is_refused_with_a_clear_error(tiny_pipelines, sft_folder, tmp_path):
    # accelerate runs no fp16 autocast on CPU; bf16 runs (see the precision test above).
    with pytest.raises(ConfigError, match="mixed_precision: fp16 needs a GPU"):
        loop.train(make_config(tiny_pipelines, sft_folder, tmp_path, mixed_precision="fp16", max_train_steps=1))
