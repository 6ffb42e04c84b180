"""Write-side operations of the training app."""

from __future__ import annotations

import errno
import logging
import os
import platform
import re
import sys
from pathlib import Path

from django.db import models, transaction
from django.utils import timezone

from catalog.models import ModelVersion
from catalog.services import RegistrationError, model_register, model_weights_check
from config.celery import enqueue_on_commit
from training.models import TrainingRun, WorkerHeartbeat
from training.signals import training_run_succeeded

logger = logging.getLogger(__name__)


def worker_heartbeat_record(*, hostname: str, queue: str) -> WorkerHeartbeat:
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname,
        queue=queue,
        defaults={"last_seen": timezone.now(), "details": {"python": platform.python_version()}},
    )
    return heartbeat


# --- Training runs ----------------------------------------------------------------------
# A run is created in the web process (configuration validated without torch), enqueued on the
# `gpu` queue after the transaction commits, claimed by exactly one GPU worker, and finished by
# registering its exported pipeline as a new ModelVersion whose parent is the base model.

MAX_TRAINING_ATTEMPTS = 3
TRAIN_TASK = "training.tasks.gpu_train_run"
# Settings a training run decides itself (model, data and output paths).
RUN_DECIDED = ("pretrained_model", "train_data", "output_dir")


def training_config_files() -> dict[str, Path]:
    """The example configs a run can be started from by name (``training/configs/*.toml``), by file name."""
    from django.conf import settings

    folder = Path(settings.BASE_DIR) / "training" / "configs"
    return {path.name: path for path in sorted(folder.glob("*.toml"))}


def training_run_output_dir(run: TrainingRun) -> Path:
    from django.conf import settings

    return Path(settings.ARTIFACTS_ROOT) / "runs" / f"{run.pk:05d}-{run.name}"


def training_config_validate(*, base_model: ModelVersion, dataset_path: str, config: dict):
    """The engine's TrainConfig for this run, or ConfigError naming the bad field.

    Paths that the run decides (model, data, output) are filled in here; the launch settings
    (``gpus``, ``accelerate_config``: ``training_run_launch``) are checked and left out; anything
    else comes from ``config``. Importing the config module does not import torch.
    """
    from training.engine.config import ConfigError, TrainConfig, split_launch_settings

    _, config = split_launch_settings(config, source="training run config")
    clash = sorted(set(RUN_DECIDED) & set(config))
    if clash:
        raise ConfigError(clash[0], "is set by the training run; leave it out of the config")
    return TrainConfig.from_dict(
        {**config, "pretrained_model": base_model.local_path, "train_data": dataset_path, "output_dir": "."},
        source="training run config",
    )


class TrainingRunRefused(RegistrationError):
    """A run that cannot be created; ``field`` names the input at fault (``base_model``, ``name``), ``code`` says why."""

    def __init__(self, message: str, *, field: str, code: str = "invalid"):
        super().__init__(message)
        self.field, self.code = field, code


def training_run_launch(run: TrainingRun):
    """How the run is launched: its ``LaunchConfig`` (gpus, accelerate_config), from its config."""
    from training.engine.config import split_launch_settings

    return split_launch_settings(run.config, source="training run config")[0]


@transaction.atomic
def training_run_create(
    *, name: str, base_model: ModelVersion, dataset_path: str, config: dict, created_by=None,
    source_round=None, follow_up: dict | None = None,
) -> TrainingRun:
    """Create a queued run and send it to a GPU worker once this transaction commits (a run on a round with no
    dataset yet, ``dataset_path=""``: to the export of its round's pairs, which then sends it on).

    Raises ExternalModelError for a base model without weights, TrainingRunRefused (a RegistrationError) for a base
    model whose directory this machine cannot read or a name that is taken, and ConfigError for a bad config.
    """
    training_run_check(name=name, base_model=base_model, dataset_path=dataset_path, config=config)
    run = TrainingRun.objects.create(
        name=name, base_model=base_model, dataset_path=dataset_path, config=config, created_by=created_by,
        source_round=source_round, follow_up=follow_up or {},
    )
    run.output_dir = str(training_run_output_dir(run))
    run.save(update_fields=["output_dir"])
    _run_send(run)
    return run


def training_run_check(*, name: str, base_model: ModelVersion, dataset_path: str, config: dict):
    """What a new run must pass before anything is written: the base model has weights and a pipeline directory on
    this machine, the config is valid for it (without torch), and no run or model has the name. Returns the engine's
    TrainConfig; raises as ``training_run_create`` does. A run whose pairs are still to be exported
    (``dataset_path=""``) is checked with a stand-in manifest."""
    model_weights_check(model_version=base_model, purpose="trained")
    if not (Path(base_model.local_path) / "model_index.json").is_file():
        raise TrainingRunRefused(
            f"base model '{base_model.name}': its pipeline directory {base_model.local_path} does not exist "
            "(or has no model_index.json) on this machine", field="base_model",
        )
    train_config = training_config_validate(base_model=base_model, dataset_path=dataset_path or PENDING_DATASET,
                                            config=config)
    if TrainingRun.objects.filter(name=name).exists():
        raise TrainingRunRefused(f"'{name}' is taken by a training run", field="name", code="name_taken")
    if ModelVersion.objects.filter(name=name).exists():
        raise TrainingRunRefused(f"a model named '{name}' exists; the run's checkpoint would take that name", field="name",
                                 code="name_taken")
    return train_config


def _run_send(run: TrainingRun) -> None:
    """Queue the run's next task after the commit: its training, or first the export of its round's pairs."""
    enqueue_on_commit(TRAIN_TASK if run.dataset_path else EXPORT_TASK, run.pk)


# The dataset a run's config is checked against before its pairs exist (a round's export).
PENDING_DATASET = "pairs.jsonl"
# Exports a run's source round on the default queue, then sends the run to the gpu queue (training.rounds).
EXPORT_TASK = "training.tasks.run_round_export"


class RunStateError(ValueError):
    """An action that the run's status does not allow; ``code`` says why, for machines."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.code = code


def _stale_before():
    from datetime import timedelta

    from django.conf import settings

    return timezone.now() - timedelta(seconds=settings.TRAINING_STALE_AFTER)


def training_run_claim(*, run_id: int, worker: str) -> tuple[TrainingRun | None, bool]:
    """Claim a run for this worker. Returns (run, resume) or (None, False) when there is nothing to do.

    The status field makes a re-delivered task harmless: a finished run is left alone, and so is a
    running run whose worker still reports on it (``progress_at`` within TRAINING_STALE_AFTER). A
    running run gone silent was being trained by a worker that died, so it resumes from its latest
    checkpoint, up to MAX_TRAINING_ATTEMPTS times.
    """
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status not in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
            return None, False
        resume = run.status == TrainingRun.Status.RUNNING
        if resume and (run.progress_at or run.started_at or timezone.now()) > _stale_before():
            return None, False  # its worker is alive and on it
        if run.cancel_requested_at is not None:
            _run_cancelled(run, "cancelled before a worker trained it" if not resume else "")
            return None, False
        if run.attempts >= MAX_TRAINING_ATTEMPTS:
            run.status = TrainingRun.Status.FAILED
            run.error = f"gave up after {run.attempts} attempts (the worker died each time)"
            run.finished_at = timezone.now()
            run.save(update_fields=["status", "error", "finished_at"])
            return None, False
        run.status = TrainingRun.Status.RUNNING
        run.attempts += 1
        run.worker = worker
        run.started_at = run.started_at or timezone.now()
        run.progress_at = timezone.now()
        run.phase = "claimed"
        run.save(update_fields=["status", "attempts", "worker", "started_at", "progress_at", "phase"])
        return run, resume


def training_run_preflight(run: TrainingRun) -> None:
    """What this worker checks before it trains: it can read the model and has room to write.

    Raises TrainingPreflightError with the reason; the run then fails before any step.
    """
    import shutil

    from django.conf import settings

    model = Path(run.base_model.local_path)
    if not (model / "model_index.json").is_file():
        raise TrainingPreflightError(
            f"worker {platform.node()} cannot read the base model at {model} (no model_index.json there); "
            "every gpu worker must see model directories at the path they were registered with"
        )
    dataset = Path(run.dataset_path)
    if not dataset.exists():
        raise TrainingPreflightError(f"worker {platform.node()} cannot read the dataset {dataset}")
    launch = training_run_launch(run)
    if launch.accelerate_config is not None and not Path(launch.accelerate_config).is_file():
        raise TrainingPreflightError(
            f"worker {platform.node()} cannot read the accelerate_config {launch.accelerate_config}")
    if launch.gpus > 1:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() < launch.gpus:
            raise TrainingPreflightError(
                f"the run wants gpus={launch.gpus}; worker {platform.node()} sees {torch.cuda.device_count()} "
                "(start it with CUDA_VISIBLE_DEVICES naming that many, or lower gpus)"
            )
    output = Path(run.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(output).free
    if free < settings.TRAINING_MIN_FREE_BYTES:
        raise TrainingPreflightError(
            f"out of disk: {free / 1024**3:.2f} GiB free under {output}, the worker wants "
            f"{settings.TRAINING_MIN_FREE_BYTES / 1024**3:.2f} GiB (TRAINING_MIN_FREE_BYTES)"
        )


class TrainingPreflightError(RuntimeError):
    """The worker cannot start this run (model unreadable, no disk); nothing was trained."""


def training_run_execute(*, run: TrainingRun) -> ModelVersion | None:
    """Train, then register the exported pipeline.

    A run with ``gpus = 1`` trains in this worker's process; with more, in an ``accelerate launch``
    subprocess that this task supervises (``_train_launched``). Either way a ``RunMonitor`` carries
    progress from the run's files to its record and a cancel back, and the run ends the same way:
    a model, or None when it was cancelled (its checkpoints are kept), or failed with the reason.
    Imports torch: call it only from a `gpu` queue task.
    """
    from training.engine import progress as run_progress
    from training.engine.loop import TrainingCancelled
    from training.monitor import RunMonitor

    try:
        training_run_preflight(run)
        config = training_config_validate(base_model=run.base_model, dataset_path=run.dataset_path, config=run.config)
        config.output_dir = run.output_dir
        config.resume_from = "latest"  # a fresh run has no checkpoint yet; a resumed one goes on from its last
        launch = training_run_launch(run)
        run_progress.clear_stop(run.output_dir)
        with RunMonitor(run):
            result = _train_in_process(config) if launch.gpus == 1 else _train_launched(config, launch)
        if result.model_dir is None:
            raise RuntimeError("the run exported no pipeline")
        return training_run_finish(
            run=run, model_dir=result.model_dir, metrics=result.last_metrics, steps=result.global_step
        )
    except TrainingCancelled as exc:
        _run_cancelled(run, "")
        logger.info("run %s: %s", run.pk, exc)
        return None
    except Exception as exc:  # the run records any failure; the worker stays up for the next task
        training_run_fail(run, exc, getattr(exc, "log_tail", None))
        raise


def _train_in_process(config):
    from training.engine import progress as run_progress
    from training.engine.loop import train

    handler = logging.FileHandler(Path(config.output_dir) / run_progress.LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter(run_progress.LOG_FORMAT))
    engine_logger = logging.getLogger("training.engine")
    engine_logger.addHandler(handler)
    engine_logger.setLevel(logging.INFO)
    try:
        return train(config)
    finally:
        engine_logger.removeHandler(handler)
        handler.close()


class LaunchedRunFailed(RuntimeError):
    """The launched training processes failed; the message is the reason, ``log_tail`` their log's end."""

    def __init__(self, reason: str, log_tail: str):
        super().__init__(reason)
        self.log_tail = log_tail


def accelerate_launch_command(*, launch, config_file: Path, mixed_precision: str) -> list[str]:
    """The ``accelerate launch`` command that trains ``config_file`` on ``launch.gpus`` processes of this machine."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(launch.gpus),
               "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", mixed_precision,
               "--dynamo_backend", "no"]
    # --multi_gpu: DDP on the visible GPUs, or on CPU processes (the engine then picks gloo). A config
    # file names its own distributed type (FSDP...), which --multi_gpu would override.
    command += ["--config_file", launch.accelerate_config] if launch.accelerate_config else ["--multi_gpu"]
    return command + ["-m", "training.engine", "train", "--config", str(config_file), "--exit-with-parent"]


def _train_launched(config, launch):
    """Train in an ``accelerate launch`` subprocess; its result, or TrainingCancelled, or LaunchedRunFailed."""
    import json
    import shlex
    import subprocess
    import time

    from django.conf import settings

    from training.engine import progress as run_progress
    from training.engine.cli import CANCELLED_EXIT
    from training.engine.loop import TrainingCancelled, list_checkpoints, read_train_summary

    output_dir = Path(config.output_dir)
    config_file = output_dir / "run_config.json"
    config_file.write_text(json.dumps(config.to_dict(), indent=2))
    (output_dir / run_progress.PROGRESS_FILE).unlink(missing_ok=True)  # a cancel is read from this attempt's report
    command = accelerate_launch_command(launch=launch, config_file=config_file, mixed_precision=config.mixed_precision)
    log_path = output_dir / run_progress.LOG_FILE
    with log_path.open("ab") as log:
        start = log.tell()
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} launching: {shlex.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(  # the engine runs from the checkout (python -m), in a process group of its own
            command, cwd=settings.BASE_DIR, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=run_progress.die_with_parent_hook(),
        )
    try:
        returncode = process.wait()
    finally:
        _stop_launch(process)
    if returncode == 0:
        return read_train_summary(output_dir)
    report = run_progress.read_progress(output_dir) or {}
    if returncode == CANCELLED_EXIT or report.get("phase") == "cancelled":  # accelerate reports any failure as 1
        checkpoints = list_checkpoints(output_dir)
        raise TrainingCancelled(int(report.get("step", 0)), checkpoints[-1] if checkpoints else None)
    with log_path.open("rb") as log:
        log.seek(start)
        text = log.read().decode("utf-8", errors="replace")
    raise LaunchedRunFailed(launch_failure_line(text, returncode), text[-50_000:])


def _stop_launch(process) -> None:
    """End a launch that is still running (the supervisor is on its way out): its group, then the rest.

    SIGTERM lets the launcher end its training processes (torch starts them in sessions of their
    own, out of reach of the group); if it does not within a minute, SIGKILL, and the training
    processes, started with --exit-with-parent, die with it.
    """
    import signal
    import subprocess

    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b")


def launch_failure_line(log_text: str, returncode: int) -> str:
    """The one-line reason of a failed launch, from its log: the engine's ``error:`` line, else the
    last exception a traceback names (not the launcher's own report of the failure)."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line) and "ChildFailedError" not in line:
            return line
    return f"the training processes exited with status {returncode}; see the run's log"


def failure_line(exc: BaseException) -> str:
    """The one-line reason shown for a failed run."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG):
        return f"out of disk: {exc.strerror} writing {exc.filename or 'a file'} ({type(exc).__name__})"
    text = " ".join(str(exc).split()) or "(no message)"
    name = type(exc).__name__
    return text if isinstance(exc, (TrainingPreflightError, LaunchedRunFailed)) else f"{name}: {text}"


def training_run_fail(run: TrainingRun, exc: BaseException | str, traceback_text: str | None = None) -> None:
    """Mark the run failed with a one-line reason and, behind it, the traceback."""
    import traceback

    if isinstance(exc, BaseException):
        line = failure_line(exc)
        if traceback_text is None:
            traceback_text = "".join(traceback.format_exception(exc))
    else:
        line = exc
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.FAILED, error=line[:2000], error_traceback=(traceback_text or "")[-50_000:],
        finished_at=timezone.now(), phase="failed",
    )


def _run_cancelled(run: TrainingRun, note: str) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.CANCELLED, finished_at=timezone.now(), phase="cancelled", error=note,
    )


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Cancel a run: a queued one at once, a running one at its next step boundary.

    A cancelled run registers no model; its checkpoints stay, and ``training_run_resume`` goes on
    from the latest. Raises RunStateError for a run that has finished.
    """
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status not in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
            raise RunStateError(f"run {run.pk} '{run.name}' is {run.status}; only a queued or running run can be cancelled",
                                code="not_cancellable")
        run.cancel_requested_at = run.cancel_requested_at or timezone.now()
        fields = ["cancel_requested_at"]
        if run.status == TrainingRun.Status.QUEUED:
            run.status, run.finished_at, run.phase = TrainingRun.Status.CANCELLED, timezone.now(), "cancelled"
            fields += ["status", "finished_at", "phase"]
        run.save(update_fields=fields)
    return run


def training_run_resume(*, run: TrainingRun) -> TrainingRun:
    """Queue a cancelled or failed run again; it goes on from its latest checkpoint."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status not in (TrainingRun.Status.CANCELLED, TrainingRun.Status.FAILED):
            raise RunStateError(f"run {run.pk} '{run.name}' is {run.status}; only a cancelled or failed run can be resumed",
                                code="not_resumable")
        run.status, run.cancel_requested_at, run.finished_at = TrainingRun.Status.QUEUED, None, None
        run.error, run.error_traceback, run.attempts, run.phase = "", "", 0, "queued"
        run.save(update_fields=["status", "cancel_requested_at", "finished_at", "error", "error_traceback",
                                "attempts", "phase"])
        _run_send(run)  # a run cancelled (or failed) before its round's pairs were exported exports them first
    return run


def training_runs_recover() -> list[int]:
    """Send again every running run whose worker went silent; a worker takes it over from its checkpoint.

    Run by celery beat every minute. Safe to run any number of times: the claim decides.
    """
    stale = list(
        TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING)
        .filter(models.Q(progress_at__lt=_stale_before()) | models.Q(progress_at__isnull=True, started_at__lt=_stale_before()))
        .values_list("pk", flat=True)
    )
    with transaction.atomic():
        for run_id in stale:
            enqueue_on_commit(TRAIN_TASK, run_id)
    return stale


@transaction.atomic
def training_run_finish(*, run: TrainingRun, model_dir: str | Path, metrics: dict, steps: int) -> ModelVersion:
    model = model_register(
        path=model_dir,
        name=run.name,
        parent=run.base_model,
        notes=f"Trained by run '{run.name}' for {steps} steps on {run.dataset_path}.",
    )
    run.output_model = model
    run.status = TrainingRun.Status.SUCCEEDED
    run.metrics = {key: value for key, value in metrics.items() if isinstance(value, (int, float, str))}
    run.metrics["steps"] = steps
    run.finished_at = timezone.now()
    run.error = ""
    run.phase = "done"
    run.save(update_fields=["output_model", "status", "metrics", "finished_at", "error", "phase"])
    transaction.on_commit(lambda: training_run_succeeded.send(sender=TrainingRun, run=run, model=model))
    return model
