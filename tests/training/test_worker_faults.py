"""Training on real Celery worker processes: a whole round end to end, and runs that die, are cancelled, or are
given bad work.

Each test runs its own redis-server on a free port (never the shared one) and real workers
(``celery -A config worker -P solo``) on the test's PostgreSQL database, with the tiny pipeline.
Runs are created by a subprocess, so that their tasks go to this test's broker.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from catalog.models import ModelVersion
from catalog.services import model_register
from annotation.models import Judgment
from evaluation.models import EvaluationRound
from tests.annotation.builders import best_worst_round
from tests.factories import PromptFactory, PromptSetFactory
from toyworld.prompts import prompt_rows
from tests.test_system import _start_worker, clean_env, manage, run_python
from tests.workers import database_url, own_redis  # noqa: F401 (a fixture)
from training.engine.loop import list_checkpoints
from training.engine.progress import read_metrics
from training.models import TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.workers, pytest.mark.django_db(transaction=True)]

TINY = {
    "latent_objective": "sft", "pixel_objective": "sft", "pixel_weight": 2.0, "resolution": 32,
    "train_batch_size": 2, "learning_rate": 1e-3, "mixed_precision": "no", "seed": 3, "log_every": 1,
}


@pytest.fixture
def stack(postgres, own_redis, tiny_unet, tmp_path, settings):
    """The environment of this test's workers and commands, and its base model."""
    own_redis.start()
    settings.MEDIA_ROOT = tmp_path / "media"  # images this process makes are read by the workers
    env = clean_env(
        DATABASE_URL=database_url(postgres), CELERY_BROKER_URL=own_redis.url, VAR_DIR=str(tmp_path / "var"),
        MEDIA_ROOT=str(tmp_path / "media"), ARTIFACTS_ROOT=str(tmp_path / "artifacts"),
        TRAINING_PROGRESS_INTERVAL="0.2", TRAINING_STALE_AFTER="3", TRAINING_MIN_FREE_BYTES="0",
    )
    model_register(path=tiny_unet, name="base")
    workers = []

    def start(queues="gpu", **overrides):
        worker, name = _start_worker({**env, **overrides}, queues, tmp_path)
        workers.append(worker)
        return worker, tmp_path / f"{name}.log"

    yield env, start
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=60)


def create_run(env, name: str, data: Path, config: dict) -> int:
    """A run created from a separate process, as the web process or a command would, sent to this test's broker."""
    code = (
        "import django; django.setup()\n"
        "from catalog.models import ModelVersion\n"
        "from training.services import training_run_create\n"
        f"run = training_run_create(name={name!r}, base_model=ModelVersion.objects.get(name='base'), "
        f"dataset_path={str(data)!r}, config={config!r})\n"
        "print(run.pk)\n"
    )
    made = run_python(code, env)
    assert made.returncode == 0, made.stderr
    return int(made.stdout.split()[-1])


def wait_for(condition, worker, log: Path, *, timeout: float = 240, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.poll() is None, f"the worker died:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def run_of(run_id: int) -> TrainingRun:
    return TrainingRun.objects.get(pk=run_id)


def test_a_worker_killed_mid_run_is_replaced_and_the_run_resumes_from_its_checkpoint(stack, sft_folder):
    env, start = stack
    run_id = create_run(env, "killed", sft_folder, {**TINY, "max_train_steps": 40, "checkpointing_steps": 10})
    first, first_log = start()
    wait_for(lambda: run_of(run_id).step >= 14, first, first_log, what="step 14")
    first.send_signal(signal.SIGKILL)  # no warm shutdown, no ack, no last word to the database
    first.wait(timeout=30)
    killed_at = run_of(run_id).step
    assert run_of(run_id).status == TrainingRun.Status.RUNNING and killed_at < 40

    second, second_log = start()
    # The dead worker's run goes silent; once it is stale, recover_runs sends it again (beat does so every minute).
    deadline = time.monotonic() + 60
    while True:
        recovered = manage("recover_runs", env=env)
        assert recovered.returncode == 0, recovered.stderr
        if recovered.stdout.startswith("sent 1 run(s) again"):
            break
        assert time.monotonic() < deadline, recovered.stdout
        time.sleep(1)
    wait_for(lambda: run_of(run_id).status != TrainingRun.Status.RUNNING, second, second_log, what="the run to end")

    run = run_of(run_id)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.attempts == 2 and run.metrics["steps"] == 40
    assert ModelVersion.objects.filter(name="killed").count() == 1 and run.output_model.name == "killed"
    summary = json.loads((Path(run.output_dir) / "train_summary.json").read_text())
    resumed = int(Path(summary["resumed_from"]).name.split("-")[1])
    assert resumed % 10 == 0 and 10 <= resumed <= killed_at
    # The step count is continuous: every step once, in the log and in the curves.
    assert [r["step"] for r in read_metrics(run.output_dir)] == list(range(1, 41))
    assert [point["step"] for point in run.history] == list(range(1, 41))


def test_a_cancel_stops_a_run_on_a_real_worker_and_keeps_its_checkpoint(stack, sft_folder):
    env, start = stack
    run_id = create_run(env, "cancelled", sft_folder, {**TINY, "max_train_steps": 400, "checkpointing_steps": 100})
    worker, log = start()
    wait_for(lambda: run_of(run_id).step >= 5, worker, log, what="step 5")
    cancelled = manage("cancel_run", "cancelled", env=env)
    assert cancelled.returncode == 0 and "stops it at the next step boundary" in cancelled.stdout, cancelled.stderr
    wait_for(lambda: run_of(run_id).status != TrainingRun.Status.RUNNING, worker, log, what="the run to stop")
    run = run_of(run_id)
    assert run.status == TrainingRun.Status.CANCELLED and run.output_model is None
    assert 5 <= run.step < 400
    assert [p.name for p in list_checkpoints(run.output_dir)] == [f"checkpoint-{run.step}"]
    assert not ModelVersion.objects.filter(name="cancelled").exists()
    assert worker.poll() is None  # the worker is still up for the next run


def test_bad_runs_fail_on_a_real_worker_with_the_reason_and_register_nothing(stack, sft_folder, tmp_path):
    env, start = stack
    # Refused in the creating process, before anything is queued: a bad config, a model directory that is gone.
    gone = model_register(path=ModelVersion.objects.get(name="base").local_path, name="gone")
    ModelVersion.objects.filter(pk=gone.pk).update(local_path=str(tmp_path / "unmounted"))
    for base, config, expected in (("base", {"learning_rate": -1}, "learning_rate"),
                                   ("gone", {}, "unmounted does not exist")):
        refused = run_python(
            "import django; django.setup()\n"
            "from catalog.models import ModelVersion\nfrom catalog.services import RegistrationError\n"
            "from training.engine.config import ConfigError\nfrom training.services import training_run_create\n"
            f"try:\n    training_run_create(name='x', base_model=ModelVersion.objects.get(name={base!r}), "
            f"dataset_path={str(sft_folder)!r}, config={config!r})\n"
            "except (ConfigError, RegistrationError) as exc:\n    print(exc)\n", env)
        assert expected in refused.stdout, refused.stdout + refused.stderr
    assert TrainingRun.objects.count() == 0

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata.jsonl").write_text("")
    missing_image = tmp_path / "missing"
    missing_image.mkdir()
    (missing_image / "metadata.jsonl").write_text(json.dumps({"file_name": "gone.png", "text": "x"}) + "\n")
    bad = {
        "empty-data": create_run(env, "empty-data", empty, {**TINY, "max_train_steps": 2}),
        "missing-image": create_run(env, "missing-image", missing_image, {**TINY, "max_train_steps": 2}),
        "bad-decoder": create_run(env, "bad-decoder", sft_folder,
                                  {**TINY, "max_train_steps": 2, "pixel_decoder": str(tmp_path / "no-vae")}),
    }
    worker, log = start()
    wait_for(lambda: not TrainingRun.objects.filter(status__in=["queued", "running"]).exists(), worker, log,
             what="the bad runs to end")
    # A worker out of disk (simulated: it wants more free space than any disk has) refuses to start a run.
    worker.terminate()
    worker.wait(timeout=60)
    bad["no-disk"] = create_run(env, "no-disk", sft_folder, {**TINY, "max_train_steps": 2})
    worker, log = start(TRAINING_MIN_FREE_BYTES=str(1 << 60))
    wait_for(lambda: run_of(bad["no-disk"]).status != TrainingRun.Status.QUEUED and
             run_of(bad["no-disk"]).status != TrainingRun.Status.RUNNING, worker, log, what="the no-disk run")

    reasons = {name: run_of(pk) for name, pk in bad.items()}
    for name, run in reasons.items():
        assert run.status == TrainingRun.Status.FAILED, (name, run.status, run.error)
        assert run.error and "\n" not in run.error and run.error_traceback, name
        assert "Traceback" not in run.error, name
    assert "empty" in reasons["empty-data"].error
    assert "gone.png" in reasons["missing-image"].error
    assert "no-vae" in reasons["bad-decoder"].error
    assert reasons["no-disk"].error.startswith("out of disk:")
    assert not ModelVersion.objects.filter(name__in=list(bad)).exists()
    assert worker.poll() is None


def test_redis_stopped_and_restarted_mid_round_loses_no_judgment_and_the_round_finishes(stack, own_redis, tmp_path):
    env, start = stack
    round_ = best_worst_round(n_items=3, n_images=4, k=3)
    worker, log = start("gpu,default")
    own_redis.stop()  # the broker goes away in the middle of the round

    # Annotators go on: their judgments are written to PostgreSQL, not to the broker.
    judged = manage("simulate_annotators", round_.name, "--annotators", "3", "--policy", "random", env=env)
    assert judged.returncode == 0 and "Traceback" not in judged.stderr, judged.stderr
    judgments = Judgment.objects.filter(round=round_).count()
    assert judgments == 9
    # The training run launched meanwhile waits in the outbox.
    config = tmp_path / "simpo.toml"
    config.write_text(
        'latent_objective = "simpo"\npixel_objective = "simpo"\npixel_weight = 2.0\nresolution = 32\n'
        'train_batch_size = 2\nmax_train_steps = 30\ncheckpointing_steps = 10\nlog_every = 1\n'
        'learning_rate = 1e-4\nmixed_precision = "no"\n'
    )
    launched = manage("launch_training_round", round_.name, "--base-model", "base", "--config", str(config),
                      "--name", "after-outage", env=env)
    assert launched.returncode == 0, launched.stderr
    assert "queued in the outbox" in launched.stderr and "Traceback" not in launched.stderr
    run = TrainingRun.objects.get(name="after-outage")
    assert run.status == TrainingRun.Status.QUEUED and worker.poll() is None  # the worker waits for its broker

    own_redis.start()
    flushed = manage("requeue_stuck", env=env)
    assert flushed.returncode == 0 and flushed.stdout.startswith("sent 1 task(s) from the outbox"), flushed.stdout
    wait_for(lambda: run_of(run.pk).step >= 5, worker, log, what="training to start")
    own_redis.stop()  # and again while it trains: the run reports to PostgreSQL and goes on
    wait_for(lambda: run_of(run.pk).step >= 15, worker, log, what="training without a broker")
    own_redis.start()
    wait_for(lambda: run_of(run.pk).status != TrainingRun.Status.RUNNING, worker, log, what="the run to end")

    run = run_of(run.pk)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.metrics["steps"] == 30 and ModelVersion.objects.filter(name="after-outage").count() == 1
    assert Judgment.objects.filter(round=round_).count() == judgments


def test_a_whole_round_runs_on_real_workers_from_one_command(stack, tmp_path):
    env, start = stack
    env = {**env, "EVALUATION_SAMPLER": json.dumps({"steps": 2, "batch_size": 8, "height": 64, "width": 64})}
    for set_name, split, n in (("train-prompts", "train", 3), ("eval-prompts", "eval", 3)):
        prompt_set = PromptSetFactory(name=set_name)
        for row in prompt_rows(split, n):  # toy-world captions: the oracle annotators judge by the pixels
            PromptFactory(prompt_set=prompt_set, external_id=row["id"], text=row["prompt"])
    config = tmp_path / "round.toml"
    config.write_text('resolution = 32\ntrain_batch_size = 2\nmax_train_steps = 6\ncheckpointing_steps = 3\n'
                      'learning_rate = 1e-4\nmixed_precision = "no"\nlog_every = 1\n')
    worker, log = start("gpu,default", EVALUATION_SAMPLER=env["EVALUATION_SAMPLER"])

    launched = manage(
        "launch_training_round", "--base", "base", "--prompts", "train-prompts", "--method", "simpo",
        "--pixel-weight", "2", "--images-per-prompt", "4", "--k", "3", "--config", str(config),
        "--simulate-annotators", "noisy_oracle", "--evaluate-on", "eval-prompts", "--name", "loop-1",
        "--wait", "--timeout", "600", env=env, timeout=700,
    )
    assert launched.returncode == 0, launched.stderr[-3000:] + log.read_text()[-3000:]
    assert "Traceback" not in launched.stderr
    new = ModelVersion.objects.get(name="loop-1")
    assert new.parent.name == "base" and new.produced_by.status == TrainingRun.Status.SUCCEEDED
    assert new.produced_by.config["latent_objective"] == "simpo" and new.produced_by.config["pixel_weight"] == 2.0

    evaluation = EvaluationRound.objects.get()
    wait_for(lambda: evaluation.annotation_rounds.count() == 2, worker, log, what="the evaluation's rounds")
    judged = manage("simulate_annotators", "--all-open", "--policy", "noisy_oracle", env=env)
    assert judged.returncode == 0, judged.stderr
    report = manage("evaluation_report", str(evaluation.pk), env=env)
    assert report.returncode == 0, report.stderr
    assert "loop-1" in report.stdout and "visual_appeal" in report.stdout.replace(" ", "_").lower()
