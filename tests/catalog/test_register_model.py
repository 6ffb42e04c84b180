import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.models import ModelVersion

pytestmark = pytest.mark.django_db

PIPELINES = {
    "sd15": ("StableDiffusionPipeline", "unet", {"_class_name": "PNDMScheduler", "prediction_type": "epsilon"}),
    "sd2": ("StableDiffusionPipeline", "unet", {"_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}),
    "sdxl": ("StableDiffusionXLPipeline", "unet", {"_class_name": "EulerDiscreteScheduler", "prediction_type": "epsilon"}),
    "pixart": ("PixArtAlphaPipeline", "transformer", {"_class_name": "DPMSolverMultistepScheduler"}),
    "sd3": ("StableDiffusion3Pipeline", "transformer", {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}),
}


def make_pipeline_dir(root: Path, pipeline_class: str, denoiser: str, scheduler: dict) -> Path:
    root.mkdir(parents=True)
    index = {
        "_class_name": pipeline_class,
        "_diffusers_version": "0.42.1",
        denoiser: ["diffusers", "X"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", scheduler["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
    }
    (root / "model_index.json").write_text(json.dumps(index))
    for folder in (denoiser, "vae", "scheduler", "text_encoder"):
        (root / folder).mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return root


@pytest.mark.parametrize(
    ("kind", "family", "prediction"),
    [("sd15", "unet", "epsilon"), ("sd2", "unet", "v_prediction"), ("sdxl", "sdxl", "epsilon"),
     ("pixart", "dit", "epsilon"), ("sd3", "flow", "flow")],
)
def test_register_detects_family_and_prediction_type(tmp_path, kind, family, prediction):
    path = make_pipeline_dir(tmp_path / kind, *PIPELINES[kind])
    call_command("register_model", str(path), "--name", kind, verbosity=0)
    model = ModelVersion.objects.get(name=kind)
    assert (model.family, model.prediction_type) == (family, prediction)
    assert model.local_path == str(path.resolve())


def test_register_with_parent(tmp_path):
    call_command("register_model", str(make_pipeline_dir(tmp_path / "a", *PIPELINES["sd15"])), "--name", "base")
    call_command("register_model", str(make_pipeline_dir(tmp_path / "b", *PIPELINES["sd15"])), "--name", "child", "--parent", "base")
    assert ModelVersion.objects.get(name="child").parent.name == "base"


def test_register_errors_are_one_line_and_leave_no_row(tmp_path):
    (tmp_path / "empty").mkdir()
    xl = make_pipeline_dir(tmp_path / "xl", "StableDiffusionXLImg2ImgPipeline", "unet", {"_class_name": "EulerDiscreteScheduler"})
    no_vae = make_pipeline_dir(tmp_path / "novae", *PIPELINES["sd15"])
    (no_vae / "vae").rmdir()
    cases = [
        (tmp_path / "nowhere", "no such directory"),
        (tmp_path / "empty", "not a diffusers pipeline directory (no model_index.json)"),
        (xl, "unsupported pipeline class 'StableDiffusionXLImg2ImgPipeline'"),
        (no_vae, "component folder is missing"),
    ]
    for path, message in cases:
        with pytest.raises(CommandError) as info:
            call_command("register_model", str(path), "--name", "m")
        assert message in str(info.value)
        assert "\n" not in str(info.value)
    assert not ModelVersion.objects.exists()


def test_register_rejects_unknown_prediction_type(tmp_path):
    path = make_pipeline_dir(tmp_path / "odd", "StableDiffusionPipeline", "unet", {"_class_name": "DDIMScheduler", "prediction_type": "sample"})
    with pytest.raises(CommandError, match="prediction_type"):
        call_command("register_model", str(path), "--name", "odd")
    assert not ModelVersion.objects.exists()
