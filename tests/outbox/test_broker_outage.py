"""A broker outage: work created meanwhile waits in the outbox and is done by a real worker once the broker is back.

The test runs its own redis-server on a free port (never the shared one), stops it, creates
an evaluation from the command line, starts it again and has ``requeue_stuck`` send the
evaluation's generation tasks to a worker listening on that Redis.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from catalog.generation import GENERATE_TASK
from catalog.models import GenerationJob
from catalog.services import model_register
from evaluation.models import EvaluationRound
from outbox.models import OutboxMessage
from tests.factories import PromptFactory, PromptSetFactory
from tests.test_system import _start_worker, clean_env, manage
from tests.workers import database_url, own_redis  # noqa: F401 (a fixture)

ROUNDS_TASK = "evaluation.tasks.evaluation_rounds_create"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_evaluation_created_while_the_broker_is_down_is_generated_once_it_is_back(
    postgres, own_redis, tiny_unet, tmp_path
):
    env = clean_env(
        DATABASE_URL=database_url(postgres), CELERY_BROKER_URL=own_redis.url, VAR_DIR=str(tmp_path / "var"),
        MEDIA_ROOT=str(tmp_path / "media"),
        EVALUATION_SAMPLER=json.dumps({"steps": 2, "batch_size": 2, "height": 32, "width": 32}),
    )
    base = model_register(path=tiny_unet, name="base")
    tuned = model_register(path=tiny_unet, name="tuned", parent=base)
    PromptFactory.create_batch(2, prompt_set=PromptSetFactory(name="outage-set"))
    own_redis.start()
    own_redis.stop()

    created = manage("create_evaluation", "--models", "tuned", "base", "--prompts", "outage-set", env=env)
    assert created.returncode == 0, created.stderr
    assert "Traceback" not in created.stderr and "created evaluation" in created.stdout
    warnings = [line for line in created.stderr.splitlines() if "queued in the outbox" in line]
    assert len(warnings) == 2 and all("will be sent when the broker is back" in line for line in warnings)
    evaluation = EvaluationRound.objects.get()
    assert evaluation.status == EvaluationRound.Status.GENERATING
    pending = OutboxMessage.objects.filter(sent_at=None).order_by("id")
    batch_id = evaluation.generation_batch_id
    assert [(m.task_name, m.args) for m in pending] == [
        (GENERATE_TASK, [batch_id, base.pk]), (GENERATE_TASK, [batch_id, tuned.pk]),
    ]
    assert all("Connection refused" in m.last_error for m in pending)

    own_redis.start()
    worker, name = _start_worker(env, "gpu,default", tmp_path)
    try:
        flushed = manage("requeue_stuck", env=env)
        assert flushed.returncode == 0, flushed.stderr
        assert flushed.stdout.splitlines() == ["sent 2 task(s) from the outbox", "0 task(s) still pending"]
        deadline = time.monotonic() + 240
        while not evaluation.annotation_rounds.exists():
            assert worker.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / f"{name}.log").read_text()[-3000:]
            time.sleep(1)
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    assert set(evaluation.jobs.values_list("status", flat=True)) == {GenerationJob.Status.DONE}
    assert sorted(evaluation.annotation_rounds.values_list("criterion", flat=True)) == ["visual_appeal", "visual_flaws"]
    # The worker's own follow-up went through the outbox too, and nothing is left waiting.
    assert OutboxMessage.objects.filter(task_name=ROUNDS_TASK, args=[evaluation.pk]).exclude(sent_at=None).exists()
    assert not OutboxMessage.objects.filter(sent_at=None).exists()
