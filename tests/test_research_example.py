"""docs/examples/research_study.py, run as a researcher runs it: a subprocess talking HTTP to a live server.

The server runs Celery tasks eagerly in its own process (images, training and reports run inside the
requests that queue them). Beside it, a thread does what a deployment runs beside the web server:
celery beat moving the training round on, and people judging the evaluation's rounds (here synthetic
annotators, through `manage.py simulate_annotators`: the one step of the study that is not HTTP).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from annotation.models import Round
from tests.factories import ResearcherFactory
from tests.training.test_whole_round import eager  # noqa: F401  (fixture: tasks inline, images at 64 px)
from toyworld.prompts import prompt_rows
from training.rounds import training_rounds_advance

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCRIPT = DOCS / "examples" / "research_study.py"
# A SimPO round that trains in seconds on the tiny pipeline.
TINY_TRAINING = ["resolution=32", "train_batch_size=2", "max_train_steps=2", "checkpointing_steps=2",
                 "learning_rate=1e-3", "lr_warmup_steps=0", "latent_beta=100.0", "pixel_beta=100.0"]


class BesideTheServer(threading.Thread):
    """Celery beat's training-round advance, and annotators judging every evaluation round that opens."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stopped, self.error, self.judged = threading.Event(), None, set()

    def run(self):
        from django.db import connection

        try:
            while not self.stopped.wait(0.2):
                training_rounds_advance()
                open_rounds = Round.objects.filter(evaluations__isnull=False, status=Round.Status.OPEN)
                for round_id in open_rounds.exclude(pk__in=self.judged).values_list("pk", flat=True).distinct():
                    call_command("simulate_annotators", str(round_id), "--annotators", "5", "--policy",
                                 "noisy_oracle", "--noise", "0", stdout=io.StringIO())
                    self.judged.add(round_id)
        except Exception as exc:  # noqa: BLE001 - re-raised in the test
            self.error = exc
        finally:
            connection.close()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_example_study_runs_from_registering_a_model_to_the_report(
    live_server, eager, tiny_unet, tmp_path  # noqa: F811
):
    prompts = tmp_path / "toy-train.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in prompt_rows("train", 2)))
    token = Token.objects.create(user=ResearcherFactory()).key
    chart = tmp_path / "report.png"
    lab = BesideTheServer()
    lab.start()
    try:
        finished = subprocess.run(
            [sys.executable, str(SCRIPT), "--server", live_server.url, "--token", token, "--model-path",
             str(tiny_unet), "--prompts", str(prompts), "--images-per-prompt", "5", "--k", "3", "--chart",
             str(chart), "--poll", "0.2", "--timeout", "500", *[part for s in TINY_TRAINING for part in ("--set", s)]],
            capture_output=True, text=True, timeout=600,
        )
    finally:
        lab.stopped.set()
        lab.join(timeout=120)
    assert lab.error is None, lab.error
    assert finished.returncode == 0, finished.stderr[-3000:] + finished.stdout[-3000:]
    out = finished.stdout
    assert "prompt set 'study-prompts': 2 prompts" in out
    assert "new model 'base-simpo-r1'" in out
    assert "models in order: base-simpo-r1, base; K = 5" in out  # the report's table, the new model as Model A
    assert "Visual flaws" in out or "visual_flaws" in out, out
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert len(lab.judged) == 3  # visual flaws, visual appeal, text alignment: judged while the script waited


def test_the_docs_show_the_study_as_the_script_has_it():
    section = (DOCS / "research-api.md").read_text().split("## A whole study from a script", 1)[1]
    shown = [block.split("\n", 1)[1] for block in section.split("```")[1::2] if block.startswith("python\n")]
    assert len(shown) == 1 and shown[0].startswith("def study(args) -> None:")
    assert shown[0] in SCRIPT.read_text()


@pytest.mark.django_db(transaction=True)
def test_a_refusal_stops_the_script_with_the_api_s_line(live_server, tmp_path):
    from catalog.models import ModelVersion

    prompts = tmp_path / "toy-train.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in prompt_rows("train", 1)))
    token = Token.objects.create(user=ResearcherFactory()).key
    finished = subprocess.run(
        [sys.executable, str(SCRIPT), "--server", live_server.url, "--token", token, "--model-path",
         str(tmp_path / "no-such-pipeline"), "--prompts", str(prompts), "--chart", str(tmp_path / "report.png")],
        capture_output=True, text=True, timeout=120,
    )
    assert finished.returncode == 1
    assert finished.stderr.count("\n") == 1 and "/api/research/models/: 400 invalid (field path): " in finished.stderr
    assert not ModelVersion.objects.exists() and not (tmp_path / "report.png").exists()
