"""A training run travels from the web process to a GPU task and comes back as a model."""

import json
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

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
    # While its worker still reports on it, a second delivery leaves the run alone.
    assert tasks.gpu_train_run.apply(args=[run.pk]).get() == "skipped"
    # Then the worker goes silent for longer than TRAINING_STALE_AFTER.
    TrainingRun.objects.filter(pk=run.pk).update(
        progress_at=timezone.now() - timedelta(seconds=settings.TRAINING_STALE_AFTER + 1))
    assert services.training_runs_recover() == [run.pk]
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


@pytest.mark.django_db(transaction=True)  # the monitor thread has its own connection
def test_a_run_reports_its_progress_curves_and_log_to_its_record(base_model, sft_folder, artifacts, monkeypatch, settings):
    settings.TRAINING_PROGRESS_INTERVAL = 0.05
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    config = {**TINY_SFT, "max_train_steps": 4, "log_every": 1, "checkpointing_steps": 2}
    run = services.training_run_create(name="watched", base_model=base_model, dataset_path=str(sft_folder), config=config)
    assert tasks.gpu_train_run.apply(args=[run.pk]).get() == "watched"
    run.refresh_from_db()
    assert (run.status, run.phase, run.step, run.total_steps) == (TrainingRun.Status.SUCCEEDED, "done", 4, 4)
    assert [point["step"] for point in run.history] == [1, 2, 3, 4]
    assert {"loss", "latent_loss", "pixel_loss", "grad_norm", "lr", "step_time"} <= set(run.progress)
    assert run.progress["step"] == 4
    assert "step 4/4" in run.log_tail and run.progress_at is not None


@pytest.mark.django_db(transaction=True)  # the monitor thread has its own connection
def test_a_cancel_stops_a_running_run_at_the_next_step_and_keeps_its_checkpoint(
        base_model, sft_folder, artifacts, monkeypatch, settings):
    from training.engine import progress as run_progress
    from training.engine.loop import list_checkpoints

    settings.TRAINING_PROGRESS_INTERVAL = 0.02
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    config = {**TINY_SFT, "max_train_steps": 50, "log_every": 1, "checkpointing_steps": 100}
    run = services.training_run_create(name="stopped", base_model=base_model, dataset_path=str(sft_folder), config=config)
    real_report = run_progress.ProgressWriter.report

    def cancel_at_step_3(self, step, metrics=None):
        real_report(self, step, metrics)
        if step == 3:  # the researcher cancels; the monitor passes it on within its interval
            services.training_run_cancel(run=run)
            deadline = time.monotonic() + 10
            while not run_progress.stop_requested(self.path.parent) and time.monotonic() < deadline:
                time.sleep(0.01)

    monkeypatch.setattr(run_progress.ProgressWriter, "report", cancel_at_step_3)
    assert tasks.gpu_train_run.apply(args=[run.pk]).get() == "cancelled"
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.output_model is None
    assert run.step == 3 and run.phase == "cancelled"
    assert [p.name for p in list_checkpoints(run.output_dir)] == ["checkpoint-3"]
    assert not ModelVersion.objects.filter(name="stopped").exists()
    # Resumed later, it goes on from step 3 to the end.
    monkeypatch.setattr(run_progress.ProgressWriter, "report", real_report)
    services.training_run_resume(run=run)
    assert tasks.gpu_train_run.apply(args=[run.pk]).get() == "stopped"
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED and run.metrics["steps"] == 50
    assert [point["step"] for point in run.history][:5] == [1, 2, 3, 4, 5]


def test_cancel_and_resume_refuse_runs_in_the_wrong_state(base_model, sft_folder, artifacts, monkeypatch):
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    run = services.training_run_create(name="queued", base_model=base_model, dataset_path=str(sft_folder), config=TINY_SFT)
    with pytest.raises(services.RunStateError) as refused:
        services.training_run_resume(run=run)
    assert refused.value.code == "not_resumable"
    services.training_run_cancel(run=run)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED  # a queued run is cancelled at once
    assert tasks.gpu_train_run.apply(args=[run.pk]).get() == "skipped"
    with pytest.raises(services.RunStateError) as refused:
        services.training_run_cancel(run=run)
    assert refused.value.code == "not_cancellable"


def test_a_worker_that_cannot_read_the_model_or_lacks_disk_fails_the_run_with_the_reason(
        base_model, sft_folder, artifacts, monkeypatch, settings, tmp_path):
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    settings.TRAINING_MIN_FREE_BYTES = 1 << 60
    run = services.training_run_create(name="no-room", base_model=base_model, dataset_path=str(sft_folder), config=TINY_SFT)
    assert tasks.gpu_train_run.apply(args=[run.pk]).failed()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and run.error.startswith("out of disk:")
    assert "TrainingPreflightError" in run.error_traceback and "\n" not in run.error

    settings.TRAINING_MIN_FREE_BYTES = 0
    elsewhere = model_register(path=base_model.local_path, name="moved")
    run = services.training_run_create(name="unreadable", base_model=elsewhere, dataset_path=str(sft_folder), config=TINY_SFT)
    ModelVersion.objects.filter(pk=elsewhere.pk).update(local_path=str(tmp_path / "not-mounted"))
    assert tasks.gpu_train_run.apply(args=[run.pk]).failed()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "cannot read the base model" in run.error
    assert not ModelVersion.objects.filter(name__in=["no-room", "unreadable"]).exists()
