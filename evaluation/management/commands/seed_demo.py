"""The demo: the toy world's prompts and trained pipelines, images made by the worker, rounds of every kind.

Nothing here is a placeholder. The two toy pipelines (``toyworld/weights``) are registered as
any pipeline folder; the running worker generates, on the gpu queue:

- 5 images per prompt of the SD-layout model for ``--best-worst-prompts`` training prompts, and
  a best/worst round (K = 5) is opened over them;
- one image per prompt of each toy model for ``--evaluation-prompts`` evaluation prompts: an
  evaluation of toy-pixart against toy-sd, whose pairwise and alignment rounds open by
  themselves when its last image is done.

With ``--wait`` the command blocks, with a progress line, until every image is there and the
rounds are open (a worker must be running: ``scripts/demo.sh`` starts one first). Running it
again changes nothing that is already there.
"""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Q

from annotation.models import Round
from catalog.generation import pool_generation_create
from catalog.models import GenerationJob, ModelVersion, PromptSet
from catalog.selectors import prompts_select
from catalog.services import RegistrationError, model_register
from evaluation.models import EvaluationRound
from evaluation.services import EvaluationError, evaluation_start

TOY_MODELS = {
    "toy-sd": ("toyworld/weights/toy-sd", "Toy SD-layout pipeline (U-Net, CLIP-style encoder), trained by toyworld/recipes."),
    "toy-pixart": ("toyworld/weights/toy-pixart", "Toy PixArt-layout pipeline (DiT, T5-style encoder), trained by toyworld/recipes."),
}
BEST_WORST_ROUND = "Demo: best and worst"
EVALUATION = "Demo: toy-pixart vs toy-sd"
IMAGES_PER_PROMPT = 5


class Command(BaseCommand):
    help = "Seed the demo from the toy world: prompts, the two toy pipelines, generation on the worker, rounds."

    def add_arguments(self, parser):
        parser.add_argument("--best-worst-prompts", type=int, default=20, help="training prompts with 5 images each")
        parser.add_argument("--evaluation-prompts", type=int, default=40, help="evaluation prompts, one image per model")
        parser.add_argument("--wait", action="store_true", help="block until the images are made and the rounds open")
        parser.add_argument("--timeout", type=int, default=900, help="seconds --wait waits at most")

    def handle(self, *args, best_worst_prompts, evaluation_prompts, wait, timeout, **options):
        if best_worst_prompts < 1 or evaluation_prompts < 1:
            raise CommandError("--best-worst-prompts and --evaluation-prompts must be at least 1")
        call_command("import_prompts", preset="toy", stdout=self.stdout, stderr=self.stderr)
        models = {name: self._model(name, path, notes) for name, (path, notes) in TOY_MODELS.items()}
        train, evaluation_set = PromptSet.objects.get(name="toy-train"), PromptSet.objects.get(name="toy-eval")

        pool = prompts_select(prompt_set=train, limit=best_worst_prompts, seed=0)
        new, existing = pool_generation_create(
            model_version=models["toy-sd"], prompts=pool, images_per_prompt=IMAGES_PER_PROMPT, seed=0)
        self.stdout.write(f"toy-sd: {new} images queued for the best/worst round ({existing} already there)")
        evaluation = EvaluationRound.objects.filter(name=EVALUATION).first()
        if evaluation is None:
            try:
                started = evaluation_start(
                    model_versions=[models["toy-pixart"], models["toy-sd"]], prompt_set=evaluation_set,
                    limit=evaluation_prompts, seed=0, k=5, name=EVALUATION)
            except EvaluationError as exc:
                raise CommandError(f"{exc.field}: {exc}") from exc
            evaluation = started.evaluation
            self.stdout.write(f"evaluation {evaluation.pk} '{EVALUATION}': {started.jobs} images queued")
        if not wait:
            self.stdout.write("images are made by the worker; run seed_demo --wait to open the best/worst round")
            return
        self._wait(models["toy-sd"], evaluation, timeout)
        if not Round.objects.filter(name=BEST_WORST_ROUND).exists():
            call_command("create_round", kind="best_worst", name=BEST_WORST_ROUND, models=["toy-sd"],
                         n=IMAGES_PER_PROMPT, prompt_set="toy-train", k=5, stdout=self.stdout)

    def _model(self, name: str, path: str, notes: str) -> ModelVersion:
        model = ModelVersion.objects.filter(name=name).first()
        if model is not None:
            return model
        try:
            model = model_register(path=Path(settings.BASE_DIR) / path, name=name, notes=notes)
        except RegistrationError as exc:
            raise CommandError(f"{path}: {exc}") from exc
        self.stdout.write(f"registered {name} ({model.family}) from {path}")
        return model

    def _wait(self, toy_sd: ModelVersion, evaluation: EvaluationRound, timeout: int) -> None:
        jobs = GenerationJob.objects.filter(Q(batch=None, model_version=toy_sd) | Q(batch=evaluation.generation_batch))
        deadline = time.monotonic() + timeout
        while True:
            counts = dict(jobs.values_list("status").annotate(n=Count("id")))
            total, done = sum(counts.values()), counts.get(GenerationJob.Status.DONE, 0)
            failed = counts.get(GenerationJob.Status.FAILED, 0)
            self.stdout.write(f"\rgenerating on the worker: {done}/{total} images", ending="")
            self.stdout.flush()
            if failed:
                error = jobs.filter(status=GenerationJob.Status.FAILED).values_list("error", flat=True).first()
                raise CommandError(f"{failed} generation jobs failed on the worker: {error}")
            evaluation.refresh_from_db()
            if done == total and evaluation.annotation_rounds.exists():
                self.stdout.write("")
                return
            if time.monotonic() > deadline:
                raise CommandError(f"timed out after {timeout} s with {done}/{total} images: is the worker running? "
                                   "(see var/worker-gpu.log)")
            time.sleep(1.0)
