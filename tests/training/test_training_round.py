"""One command takes a finished annotation round to a trained, registered, evaluated model."""

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Round
from catalog.models import GenerationJob, ModelVersion
from catalog.services import model_register
from evaluation.models import EvaluationRound
from tests.factories import ImageFactory, PromptFactory, PromptSetFactory
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

CONFIG = """
pretrained_model = "ignored/by/the/round"
latent_objective = "simpo"
pixel_objective = "simpo"
latent_beta = 100.0
pixel_beta = 100.0
pixel_weight = 2.0
resolution = 32
train_batch_size = 2
max_train_steps = 2
checkpointing_steps = 2
learning_rate = 1e-3
mixed_precision = "no"
"""


@pytest.fixture
def judged_round(tiny_unet):
    base = model_register(path=tiny_unet, name="base")
    other = model_register(path=tiny_unet, name="other")
    prompt_set = PromptSetFactory(name="train-prompts")
    for n in range(4):
        prompt = PromptFactory(prompt_set=prompt_set)
        ImageFactory(prompt=prompt, model_version=base, seed=n, color=(200, 10 * n, 10))
        ImageFactory(prompt=prompt, model_version=other, seed=n, color=(10, 10 * n, 200))
    call_command("create_round", "--kind", "pairwise", "--name", "prefs", "--models", "other", "base",
                 "--criterion", "visual_flaws", verbosity=0)
    call_command("simulate_annotators", "prefs", "--annotators", "5", "--policy", "prefer_model:other", verbosity=0)
    return base, Round.objects.get(name="prefs")


def test_launch_trains_registers_and_evaluates_against_the_base(
    tiny_unet, eager_tasks, judged_round, tmp_path, django_capture_on_commit_callbacks, capsys
):
    base, round_ = judged_round
    config = tmp_path / "simpo.toml"
    config.write_text(CONFIG)
    eval_set = PromptSetFactory(name="eval-prompts")
    for _ in range(3):
        PromptFactory(prompt_set=eval_set)

    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "launch_training_round", "prefs", "--base-model", "base", "--config", str(config),
            "--set", "seed=5", "--name", "base-simpo-pixel", "--evaluate-on", "eval-prompts",
        )
    out, err = capsys.readouterr()
    assert "4 pairs" in out and "ignoring pretrained_model" in err

    run = TrainingRun.objects.get(name="base-simpo-pixel")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.source_round == round_ and run.config["seed"] == 5
    assert run.dataset_path.endswith("manifest.jsonl")
    model = ModelVersion.objects.get(name="base-simpo-pixel")
    assert model.parent == base and model.produced_by == run

    evaluation = EvaluationRound.objects.get()
    assert evaluation.ordered_models() == [model, base]
    assert evaluation.jobs.filter(status=GenerationJob.Status.DONE).count() == 6
    assert evaluation.annotation_rounds.filter(kind="pairwise").count() == 2


def test_launch_refuses_a_config_without_a_preference_objective(eager_tasks, judged_round, tmp_path):
    config = tmp_path / "sft.toml"
    config.write_text('latent_objective = "sft"\n')
    with pytest.raises(CommandError, match="dpo or simpo.*nothing was launched"):
        call_command("launch_training_round", "prefs", "--base-model", "base", "--config", str(config), "--name", "x")
    with pytest.raises(CommandError, match="config: pixel_crop"):
        call_command("launch_training_round", "prefs", "--base-model", "base", "--config", str(config),
                     "--set", "latent_objective=simpo", "--set", "pixel_crop=2.0", "--name", "x")
    assert not TrainingRun.objects.exists()


def test_launch_refuses_a_base_model_whose_directory_is_gone(eager_tasks, judged_round, tmp_path, settings):
    from tests.factories import ModelVersionFactory

    ModelVersionFactory(name="moved", local_path=str(tmp_path / "no-such-pipeline"))
    config = tmp_path / "simpo.toml"
    config.write_text(CONFIG)
    with pytest.raises(CommandError) as refused:
        call_command("launch_training_round", "prefs", "--base-model", "moved", "--config", str(config), "--name", "x")
    message = str(refused.value)
    assert "\n" not in message and "no-such-pipeline" in message and "nothing was launched" in message
    assert not TrainingRun.objects.exists()
    assert not (Path(settings.ARTIFACTS_ROOT) / "preferences").exists()  # no dataset exported either


def test_researchers_launch_a_training_round_from_the_admin(judged_round, eager_tasks, client, monkeypatch):
    from tests.factories import AnnotatorFactory, ResearcherFactory
    from training import tasks
    from training.admin import config_choices

    sent = []
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: sent.append(args[0]))
    base, round_ = judged_round
    client.force_login(AnnotatorFactory())
    assert client.get("/admin/training/trainingrun/add/").status_code == 302  # annotators never reach the admin

    client.force_login(ResearcherFactory())
    page = client.get("/admin/training/trainingrun/add/")
    assert page.status_code == 200 and b"Launch a training round" in page.content
    config = next(path for path, _ in config_choices() if path.endswith("sd15_simpo_pixel.toml"))
    form = {"round": round_.pk, "base_model": base.pk, "config": config, "name": "from-admin",
            "overrides": "resolution=32\npixel_crop=2.0"}
    refused = client.post("/admin/training/trainingrun/add/", form)
    assert refused.status_code == 200 and b"pixel_crop" in refused.content and not TrainingRun.objects.exists()

    form["overrides"] = "resolution=32\nmax_train_steps=2"
    launched = client.post("/admin/training/trainingrun/add/", form)
    run = TrainingRun.objects.get(name="from-admin")
    assert launched.status_code == 302 and launched["Location"].endswith(f"/{run.pk}/change/")
    assert run.source_round == round_ and run.config["max_train_steps"] == 2 and "pretrained_model" not in run.config
    # A web request exports nothing: the default queue does, then the run goes to the gpu queue.
    assert run.dataset_path == "" and run.phase == "exporting the round's pairs"


def test_launch_refuses_an_external_model_before_exporting_anything(eager_tasks, judged_round, tmp_path, settings):
    from catalog.services import external_model_register

    external_model_register(name="lab-a")
    config = tmp_path / "simpo.toml"
    config.write_text(CONFIG)
    with pytest.raises(CommandError) as refused:
        call_command("launch_training_round", "prefs", "--base-model", "lab-a", "--config", str(config), "--name", "x")
    message = str(refused.value)
    assert message == (
        "--base-model: model 'lab-a' is external (imported images, no weights): it cannot be trained (nothing was launched)"
    )
    assert not TrainingRun.objects.exists()
    assert not (Path(settings.ARTIFACTS_ROOT) / "preferences").exists()
