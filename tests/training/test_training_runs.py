"""A training run travels from the web process to a GPU task and comes back as a model."""

import json
import os
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


# --- Runs on several processes: an accelerate launch subprocess that the gpu task supervises ------

TWO_PROCESSES = {**TINY_SFT, "gpus": 2, "train_batch_size": 1, "checkpointing_steps": 100, "log_every": 1}


@pytest.mark.django_db(transaction=True)  # the monitor thread has its own connection
def test_a_run_on_two_processes_trains_in_a_launched_subprocess_and_registers_one_model(
        base_model, sft_folder, artifacts, monkeypatch, settings):
    from pathlib import Path

    settings.TRAINING_PROGRESS_INTERVAL = 0.1
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    run = services.training_run_create(name="two", base_model=base_model, dataset_path=str(sft_folder),
                                       config=TWO_PROCESSES)
    assert tasks.gpu_train_run.apply(args=[run.pk]).get() == "two"
    run.refresh_from_db()
    assert (run.status, run.phase, run.step, run.total_steps) == (TrainingRun.Status.SUCCEEDED, "done", 2, 2)
    assert ModelVersion.objects.filter(produced_by=run).count() == 1 and run.output_model.name == "two"
    assert [point["step"] for point in run.history] == [1, 2] and run.metrics["steps"] == 2
    assert {"loss", "latent_loss", "pixel_loss"} <= set(run.progress)
    assert "launching:" in run.log_tail and "step 2/2" in run.log_tail
    output = Path(run.output_dir)
    assert json.loads((output / "train_summary.json").read_text())["num_processes"] == 2
    assert json.loads((output / "run_config.json").read_text())["train_batch_size"] == 1
    # The main process alone logs the steps.
    assert (output / "train.log").read_text().count("step 2/2:") == 1


@pytest.mark.django_db(transaction=True)  # the monitor thread has its own connection
def test_a_cancel_stops_a_two_process_run_with_a_checkpoint_and_no_model(
        base_model, sft_folder, artifacts, monkeypatch, settings):
    import threading

    from django.db import connection

    from training.engine import progress as run_progress
    from training.engine.loop import list_checkpoints

    settings.TRAINING_PROGRESS_INTERVAL = 0.05
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    run = services.training_run_create(name="two-stopped", base_model=base_model, dataset_path=str(sft_folder),
                                       config={**TWO_PROCESSES, "max_train_steps": 200})

    def researcher_cancels_after_step_2():
        try:
            deadline = time.monotonic() + 240
            while (run_progress.read_progress(run.output_dir) or {}).get("step", 0) < 2:
                assert time.monotonic() < deadline, "the launched run never reached step 2"
                time.sleep(0.05)
            services.training_run_cancel(run=run)
        finally:
            connection.close()

    researcher = threading.Thread(target=researcher_cancels_after_step_2)
    researcher.start()
    assert tasks.gpu_train_run.apply(args=[run.pk]).get() == "cancelled"
    researcher.join()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.phase == "cancelled" and run.output_model is None
    assert 2 <= run.step < 200
    assert [p.name for p in list_checkpoints(run.output_dir)] == [f"checkpoint-{run.step}"]
    assert not ModelVersion.objects.filter(name="two-stopped").exists()


@pytest.mark.django_db(transaction=True)  # the monitor thread has its own connection
def test_a_launched_run_that_crashes_fails_with_a_one_line_reason(base_model, tmp_path, artifacts, monkeypatch):
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "missing.png", "text": "x"}) + "\n")
    run = services.training_run_create(name="two-broken", base_model=base_model, dataset_path=str(tmp_path),
                                       config=TWO_PROCESSES)
    assert tasks.gpu_train_run.apply(args=[run.pk]).failed()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and run.phase == "failed"
    assert "missing.png" in run.error and "\n" not in run.error and "ChildFailedError" not in run.error
    assert "launching:" in run.error_traceback and "missing.png" in run.error_traceback
    assert not ModelVersion.objects.filter(name="two-broken").exists()


@pytest.mark.parametrize("launch, field", [
    ({"gpus": 0}, "gpus"),
    ({"gpus": "2"}, "gpus"),
    ({"gpus": 2, "accelerate_config": "fsdp.yaml"}, "accelerate_config"),  # not absolute
    ({"gpus": 2, "accelerate_config": "/etc/fsdp.txt"}, "accelerate_config"),
    ({"accelerate_config": "/etc/accelerate/fsdp.yaml"}, "accelerate_config"),  # with one GPU
])
def test_bad_launch_settings_are_refused_at_creation_naming_the_field(base_model, sft_folder, artifacts, launch, field):
    with pytest.raises(ConfigError) as refused:
        services.training_run_create(name="bad", base_model=base_model, dataset_path=str(sft_folder),
                                     config={**TINY_SFT, **launch})
    assert refused.value.field == field
    assert not TrainingRun.objects.exists()


def test_launch_settings_can_be_overridden_like_the_others():
    from training.engine.config import read_settings

    values, _ = read_settings(None, ["gpus=4", "accelerate_config=/etc/accelerate/fsdp.yaml", "pixel_crop=0.5"])
    assert values == {"gpus": 4, "accelerate_config": "/etc/accelerate/fsdp.yaml", "pixel_crop": 0.5}


def test_the_launch_command_gives_a_config_file_its_own_distributed_type(tmp_path):
    from training.engine.config import LaunchConfig

    ddp = services.accelerate_launch_command(launch=LaunchConfig(gpus=4), config_file=tmp_path / "c.json",
                                             mixed_precision="bf16")
    assert ddp[ddp.index("--num_processes") + 1] == "4" and "--multi_gpu" in ddp and "--config_file" not in ddp
    assert ddp[ddp.index("--mixed_precision") + 1] == "bf16"
    assert ddp[-6:] == ["-m", "training.engine", "train", "--config", str(tmp_path / "c.json"), "--exit-with-parent"]
    fsdp = services.accelerate_launch_command(launch=LaunchConfig(gpus=2, accelerate_config="/etc/fsdp.yaml"),
                                              config_file=tmp_path / "c.json", mixed_precision="no")
    assert fsdp[fsdp.index("--config_file") + 1] == "/etc/fsdp.yaml" and "--multi_gpu" not in fsdp


def test_a_worker_that_cannot_read_the_accelerate_config_fails_the_run_before_training(
        base_model, sft_folder, artifacts, monkeypatch, tmp_path):
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    config = {**TWO_PROCESSES, "accelerate_config": str(tmp_path / "not-mounted" / "fsdp.yaml")}
    run = services.training_run_create(name="no-fsdp", base_model=base_model, dataset_path=str(sft_folder), config=config)
    assert tasks.gpu_train_run.apply(args=[run.pk]).failed()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "cannot read the accelerate_config" in run.error
    assert run.step == 0


def test_a_worker_that_sees_fewer_gpus_than_the_run_wants_fails_it_before_training(
        base_model, sft_folder, artifacts, monkeypatch):
    import torch

    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    run = services.training_run_create(name="four", base_model=base_model, dataset_path=str(sft_folder),
                                       config={**TWO_PROCESSES, "gpus": 4})
    assert tasks.gpu_train_run.apply(args=[run.pk]).failed()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and run.error.startswith("the run wants gpus=4;")
    assert "sees 2" in run.error and run.step == 0


def test_a_supervisor_interrupted_mid_launch_ends_the_launch_and_fails_the_run(
        base_model, sft_folder, artifacts, monkeypatch, tmp_path):
    import subprocess
    import sys

    from celery.exceptions import SoftTimeLimitExceeded

    pid_file = tmp_path / "launch.pid"
    monkeypatch.setattr(tasks.gpu_train_run, "apply_async", lambda args, **options: None)
    # A stand-in launch that would train for two minutes.
    monkeypatch.setattr(services, "accelerate_launch_command", lambda **_: [
        sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"])
    real_wait = subprocess.Popen.wait

    def interrupted(self, timeout=None):
        if timeout is None:  # the supervisor's wait for the end of the run: Celery's time limit strikes
            while not pid_file.exists() or not pid_file.read_text():
                time.sleep(0.01)
            raise SoftTimeLimitExceeded()
        return real_wait(self, timeout)

    monkeypatch.setattr(subprocess.Popen, "wait", interrupted)
    run = services.training_run_create(name="cut", base_model=base_model, dataset_path=str(sft_folder),
                                       config=TWO_PROCESSES)
    assert tasks.gpu_train_run.apply(args=[run.pk]).failed()
    launched = int(pid_file.read_text())
    state = f"/proc/{launched}/stat"
    assert not os.path.exists(state) or open(state).read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "SoftTimeLimitExceeded" in run.error
