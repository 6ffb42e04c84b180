"""Reactions of the evaluation app to other apps' signals."""

from __future__ import annotations

import logging

from catalog.models import GenerationBatch, PromptSet
from config.celery import enqueue_on_commit
from evaluation.models import EvaluationRound
from evaluation.services import ROUNDS_TASK, EvaluationError, evaluation_start
from training.rounds import training_round_evaluation_record

logger = logging.getLogger(__name__)


def evaluate_new_checkpoint(sender, *, run, model, **kwargs) -> None:
    """A run asked to be evaluated: new model against its base, images generated on the gpu queue."""
    spec = (run.follow_up or {}).get("evaluate")
    if not spec:
        return
    prompt_set = PromptSet.objects.filter(pk=spec["prompt_set"]).first()
    if prompt_set is None:
        logger.error("run %s: prompt set %s for its evaluation no longer exists", run.pk, spec["prompt_set"])
        training_round_evaluation_record(run=run, batch=None, error=f"prompt set {spec['prompt_set']} no longer exists")
        return
    try:
        result = evaluation_start(
            model_versions=[model, run.base_model], prompt_set=prompt_set, limit=spec.get("limit"),
            seed=spec.get("seed") or 0, name=f"{run.name} vs {run.base_model.name}", created_by=run.created_by,
        )
    except EvaluationError as exc:
        logger.error("run %s: its evaluation was refused: %s", run.pk, exc)
        training_round_evaluation_record(run=run, batch=None, error=str(exc))
        return
    # A training round follows its evaluation's images through the catalog batch.
    training_round_evaluation_record(run=run, batch=result.evaluation.generation_batch)
    logger.info("run %s: evaluation %s created with %s generation jobs", run.pk, result.evaluation.pk, result.jobs)


def annotation_rounds_when_generated(sender, *, batch, **kwargs) -> None:
    """An evaluation's last image is done: create its annotation rounds on the default queue."""
    evaluation = EvaluationRound.objects.filter(generation_batch=batch).first()
    if evaluation is not None:
        enqueue_on_commit(ROUNDS_TASK, evaluation.pk)


def generation_batch_delete(sender, *, instance, **kwargs) -> None:
    """Deleting an evaluation deletes its generation jobs (the images stay)."""
    GenerationBatch.objects.filter(pk=instance.generation_batch_id).delete()
