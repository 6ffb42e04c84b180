"""TrainConfig validation, file loading and --set overrides."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from training.engine.config import ConfigError, TrainConfig, load_config

BASE = {"pretrained_model": "/models/sd", "output_dir": "/runs/a", "train_data": "/data/pairs.jsonl"}


def test_defaults_follow_the_paper():
    cfg = TrainConfig(**BASE)
    assert cfg.weight_decay == 5e-6
    assert cfg.pixel_weight == 8.0
    assert (cfg.latent_objective, cfg.pixel_objective) == ("sft", "none")
    assert not cfg.is_preference and not cfg.needs_reference


@pytest.mark.parametrize(
    ("latent", "pixel", "preference", "reference"),
    [("simpo", "simpo", True, False), ("dpo", "none", True, True), ("none", "dpo", True, True),
     ("sft", "sft", False, False), ("sft", "simpo", True, False)],
)
def test_preference_and_reference_properties(latent, pixel, preference, reference):
    cfg = TrainConfig(**BASE, latent_objective=latent, pixel_objective=pixel)
    assert cfg.is_preference is preference
    assert cfg.needs_reference is reference


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"latent_objective": "ppo"}, "latent_objective"),
        ({"pixel_objective": "DPO"}, "pixel_objective"),
        ({"latent_objective": "none"}, "latent_objective"),
        ({"pixel_crop": 0.0}, "pixel_crop"),
        ({"pixel_crop": 1.5}, "pixel_crop"),
        ({"resolution": 500}, "resolution"),
        ({"resolution": "512"}, "resolution"),
        ({"center_crop": 1}, "center_crop"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"caption_dropout": 1.0}, "caption_dropout"),
        ({"pixel_objective": "sft", "pixel_weight": 0.0}, "pixel_weight"),
        ({"lora_target_modules": ["to_q", 3]}, "lora_target_modules"),
        ({"export_lora_adapter": True}, "export_lora_adapter"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"output_dir": ""}, "output_dir"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{**BASE, **overrides})
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_toml_file_with_typed_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'pretrained_model = "/m"\noutput_dir = "/o"\ntrain_data = "/d"\n'
        'latent_objective = "simpo"\npixel_objective = "simpo"\npixel_weight = 2\n'
    )
    cfg = load_config(path, ["pixel_crop=0.5", "use_lora=true", "lora_target_modules=to_q,to_v",
                             "max_grad_norm=none", "train_batch_size=4", "resume_from=latest"])
    assert cfg.pixel_weight == 2.0 and isinstance(cfg.pixel_weight, float)
    assert cfg.pixel_crop == 0.5
    assert cfg.use_lora is True
    assert cfg.lora_target_modules == ["to_q", "to_v"]
    assert cfg.max_grad_norm is None
    assert cfg.train_batch_size == 4
    assert cfg.resume_from == "latest"
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_json_file_and_unknown_keys(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({**BASE, "pixel_wieght": 2.0}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "pixel_wieght"
    path.write_text(json.dumps(BASE))
    with pytest.raises(ConfigError) as info:
        load_config(path, ["learning_rat=1e-4"])
    assert info.value.field == "learning_rat"
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train_batch_size=four"])
    assert info.value.field == "train_batch_size"
    with pytest.raises(ConfigError) as info:
        load_config(path, ["use_ema=maybe"])
    assert info.value.field == "use_ema"


def test_missing_required_field_and_bad_syntax(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('pretrained_model = "/m"\noutput_dir = "/o"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "train_data"
    path.write_text('pretrained_model = \n')
    with pytest.raises(ConfigError, match="run.toml"):
        load_config(path)


def test_config_module_does_not_import_torch():
    code = "import sys, training.engine.config, training.engine.pipeline_index; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_example_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[3] / "training" / "configs").glob("*.toml"))
    assert len(configs) >= 3
    for path in configs:
        cfg = load_config(path)
        assert cfg.pixel_objective != "none", path


def test_read_settings_leaves_out_what_the_caller_decides(tmp_path):
    from training.engine.config import read_settings

    path = tmp_path / "run.toml"
    path.write_text('pretrained_model = "/m"\noutput_dir = "/o"\nlatent_objective = "simpo"\n')
    values, left_out = read_settings(path, ["pixel_crop=0.5", "", "output_dir=/mine"],
                                     leave_out=("pretrained_model", "output_dir", "train_data"))
    assert left_out == ["output_dir", "pretrained_model"]
    # An override is kept: a caller that decides output_dir refuses it when it validates the run.
    assert values == {"latent_objective": "simpo", "pixel_crop": 0.5, "output_dir": "/mine"}
    with pytest.raises(ConfigError) as info:
        read_settings(path, ["pixel_crop"])
    assert info.value.field == "pixel_crop"


def test_sample_config_defaults_and_field_errors():
    from training.engine.config import SampleConfig

    assert SampleConfig().scheduler == "ddim" and SampleConfig().steps == 50
    assert SampleConfig().guidance_scale == 7.5
    assert SampleConfig.from_dict({"steps": 2}) == SampleConfig(steps=2)
    with pytest.raises(ConfigError) as info:
        SampleConfig.from_dict({"stpes": 2}, source="EVALUATION_SAMPLER")
    assert info.value.field == "stpes" and "EVALUATION_SAMPLER" in str(info.value)
    with pytest.raises(ConfigError) as info:
        SampleConfig(guidance_scale=-1)
    assert str(info.value).startswith("guidance_scale: must be greater than or equal to 0")


def test_assignment_is_validated_too():
    cfg = TrainConfig(**BASE)
    cfg.output_dir = "/runs/b"
    with pytest.raises(ConfigError) as info:
        cfg.resolution = 30
    assert info.value.field == "resolution"
