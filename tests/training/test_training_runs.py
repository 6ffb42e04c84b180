"""A training run travels from the web process to a GPU task and comes back as a model."""

import json

import numpy as np
import pytest
from PIL import Image

from catalog.models import ModelVersion
from catalog.services import model_register
from outbox.models import OutboxMessage
from training import services, tasks
from training.engine.config import ConfigError
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

TINY_SFT = {
    "latent_objective": "sft", "pixel_objective": "sft", "pixel_weight": 2.0, "resolution": 32,
    "max_train_steps": 2, "train_batch_size": 2, "learning_rate": 1e-3, "checkpointing_steps": 1,
    "mixed_precision": "no", "seed": 3,
}


@pytest.fixture
def base_model(tiny_unet):
    return model_register(path=tiny_unet, name="tiny-base")


@pytest.fixture
def sft_folder(tmp_path):
    rng = np.random.default_rng(0)
    with (tmp_path / "metadata.jsonl").open("w") as f:
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "text": f"caption {i}"}) + "\n")
    return tmp_path


@pytest.fixture
def artifacts(settings, tmp_path):
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    return settings.ARTIFACTS_ROOT


def test_run_is_enqueued_on_commit_on_the_gpu_queue(base_model, sft_folder, artifacts, monkeypatch, django_capture_on_commit_callbacks):
    sent = []
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: sent.append(args[0]))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = services.training_run_create(name="r1", base_model=base_model, dataset_path=str(sft_folder), config=TINY_SFT)
        assert sent == []  # nothing leaves before the commit
    for callback in callbacks:
        callback()
    assert sent == [run.pk]
    assert run.output_dir.startswith(str(artifacts))


def test_invalid_config_is_refused_in_the_web_process_naming_the_field(base_model, sft_folder, artifacts):
    with pytest.raises(ConfigError, match="pixel_crop"):
        services.training_run_create(
            name="bad", base_model=base_model, dataset_path=str(sft_folder), config={**TINY_SFT, "pixel_crop": 1.5}
        )
    with pytest.raises(ConfigError, match="output_dir"):
        services.training_run_create(
            name="bad", base_model=base_model, dataset_path=str(sft_folder), config={**TINY_SFT, "output_dir": "/x"}
        )
    assert not TrainingRun.objects.exists()


def test_gpu_task_trains_registers_the_checkpoint_and_ignores_a_redelivery(base_model, sft_folder, artifacts, monkeypatch):
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    run = services.training_run_create(name="sft-pixel", base_model=base_model, dataset_path=str(sft_folder), config=TINY_SFT)

    assert tasks.gpu_train_run.apply(args=[run.pk]).get() == "sft-pixel"
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED and run.attempts == 1
    assert run.metrics["steps"] == 2
    model = ModelVersion.objects.get(name="sft-pixel")
    assert model.parent == base_model and model.produced_by == run and model.family == "unet"
    assert (artifacts / "runs").exists() and model.local_path.startswith(str(artifacts))

    # The broker delivering the same task again (acks_late) changes nothing.
    assert tasks.gpu_train_run.apply(args=[run.pk]).get() == "skipped"
    assert ModelVersion.objects.filter(produced_by=run).count() == 1


def test_a_run_left_running_by_a_dead_worker_resumes_from_its_checkpoint(base_model, sft_folder, artifacts, monkeypatch):
    from training.engine import loop

    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    run = services.training_run_create(name="crashy", base_model=base_model, dataset_path=str(sft_folder), config=TINY_SFT)
    # First delivery: the worker dies after the first checkpoint (simulated by training 1 of 2 steps).
    claimed, resume = services.training_run_claim(run_id=run.pk, worker="w1")
    assert not resume
    config = services.training_config_validate(base_model=base_model, dataset_path=str(sft_folder), config=TINY_SFT)
    config.output_dir, config.max_train_steps = run.output_dir, 1
    loop.train(config)
    seen = {}
    real_train = loop.train

    def spy(config):
        seen["resume_from"] = config.resume_from
        return real_train(config)

    monkeypatch.setattr(loop, "train", spy)
    assert tasks.gpu_train_run.apply(args=[run.pk]).get() == "crashy"
    run.refresh_from_db()
    assert seen["resume_from"] == "latest"
    assert run.status == TrainingRun.Status.SUCCEEDED and run.attempts == 2 and run.metrics["steps"] == 2


def test_a_failing_run_records_the_error_and_can_not_be_claimed_again(base_model, tmp_path, artifacts, monkeypatch):
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "missing.png", "text": "x"}) + "\n")
    run = services.training_run_create(name="broken", base_model=base_model, dataset_path=str(tmp_path), config=TINY_SFT)
    result = tasks.gpu_train_run.apply(args=[run.pk])
    assert result.failed()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "missing.png" in run.error
    assert tasks.gpu_train_run.apply(args=[run.pk]).get() == "skipped"
    assert not ModelVersion.objects.filter(name="broken").exists()


def test_a_run_on_an_external_model_is_refused_with_its_code(sft_folder, artifacts):
    from catalog.services import ExternalModelError, external_model_register

    model = external_model_register(name="lab-a")
    with pytest.raises(ExternalModelError, match="model 'lab-a' is external .*cannot be trained") as refused:
        services.training_run_create(name="x", base_model=model, dataset_path=str(sft_folder), config=dict(TINY_SFT))
    assert refused.value.code == "external_model"
    assert not TrainingRun.objects.exists() and not OutboxMessage.objects.exists()
