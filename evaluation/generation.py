"""Image generation for evaluations: GenerationJobs become Images on a `gpu` worker.

The web process dispatches one `gpu` task per (evaluation, model); the task samples every
queued job of that model in batches with the engine's ``SampleConfig`` (the paper's evaluation
setting unless ``settings.EVALUATION_SAMPLER`` overrides some of it) and the same per-prompt
seed for every model. When the last job of
an evaluation has finished, its annotation rounds are created on the `default` queue.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.conf import settings
from django.db import transaction

from annotation.models import Image, Prompt
from annotation.services import image_create
from evaluation.models import EvaluationRound, GenerationJob
from evaluation.services import generation_job_complete
from training.engine.config import SampleConfig
from training.models import ModelVersion


def sampler_settings() -> SampleConfig:
    """The sampler for generated images: SampleConfig's defaults, updated by EVALUATION_SAMPLER.

    Raises ConfigError naming the setting when EVALUATION_SAMPLER holds a bad one.
    """
    return SampleConfig.from_dict(dict(settings.EVALUATION_SAMPLER), source="EVALUATION_SAMPLER")


def generation_dispatch(*, evaluation: EvaluationRound | None) -> list[int]:
    """Send one `gpu` task per model that still has queued jobs, after the transaction commits.

    ``evaluation=None`` dispatches the pool jobs (images not tied to an evaluation).
    """
    from evaluation import tasks

    evaluation_id = evaluation.pk if evaluation is not None else None
    queued = GenerationJob.objects.filter(evaluation_round_id=evaluation_id, status=GenerationJob.Status.QUEUED)
    model_ids = sorted(set(queued.values_list("model_version_id", flat=True)))
    for model_id in model_ids:
        transaction.on_commit(lambda model_id=model_id: tasks.gpu_generate_images.delay(evaluation_id, model_id))
    return model_ids


@transaction.atomic
def pool_generation_create(
    *, model_version: ModelVersion, prompts: list[Prompt], images_per_prompt: int, seed: int = 0
) -> tuple[int, int]:
    """Queue ``images_per_prompt`` images per prompt for collecting preferences; returns (new, existing).

    Seeds derive from (seed, prompt, index), so running the same request again queues nothing
    new, and an image that already exists for a (model, prompt, seed) is reused.
    """
    from evaluation.services import prompt_seed

    if images_per_prompt < 1:
        raise ValueError("images_per_prompt: must be at least 1")
    wanted = [
        (prompt, prompt_seed(seed=f"{seed}.{index}", external_id=prompt.external_id))
        for prompt in prompts
        for index in range(images_per_prompt)
    ]
    existing_jobs = set(
        GenerationJob.objects.filter(evaluation_round=None, model_version=model_version, prompt__in=prompts)
        .values_list("prompt_id", "seed")
    )
    existing_images = {
        (prompt_id, image_seed): image_id
        for image_id, prompt_id, image_seed in Image.objects.filter(model_version=model_version, prompt__in=prompts)
        .order_by("-id").values_list("id", "prompt_id", "seed")
    }
    new = []
    for prompt, image_seed in wanted:
        if (prompt.pk, image_seed) in existing_jobs:
            continue
        image_id = existing_images.get((prompt.pk, image_seed))
        new.append(GenerationJob(
            evaluation_round=None, model_version=model_version, prompt=prompt, seed=image_seed, image_id=image_id,
            status=GenerationJob.Status.DONE if image_id else GenerationJob.Status.QUEUED,
        ))
    GenerationJob.objects.bulk_create(new, batch_size=1000)
    generation_dispatch(evaluation=None)
    return len(new), len(wanted) - len(new)


def _jobs_claim(*, evaluation_id: int, model_version_id: int) -> list[GenerationJob]:
    """Queued jobs, and jobs left running by a worker that died, become this worker's."""
    with transaction.atomic():
        jobs = list(
            GenerationJob.objects.select_for_update(skip_locked=True)
            .filter(
                evaluation_round_id=evaluation_id,
                model_version_id=model_version_id,
                status__in=[GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING],
            )
            .select_related("prompt")
            .order_by("id")
        )
        GenerationJob.objects.filter(pk__in=[job.pk for job in jobs]).update(status=GenerationJob.Status.RUNNING)
    return jobs


def generation_run(*, evaluation_id: int | None, model_version_id: int) -> int:
    """Sample every claimed job of one model; returns how many images were made. Imports torch."""
    from training.engine.sampling import sample

    jobs = _jobs_claim(evaluation_id=evaluation_id, model_version_id=model_version_id)
    if not jobs:
        return 0
    model = ModelVersion.objects.get(pk=model_version_id)
    try:
        with tempfile.TemporaryDirectory(prefix="generate-") as tmp:
            record = sample(
                model.local_path, [job.prompt.text for job in jobs], [job.seed for job in jobs], tmp,
                sampler_settings(),
            )
            stored_sampler = {key: record[key] for key in ("scheduler", "steps", "guidance_scale", "height", "width", "dtype")}
            for job, entry in zip(jobs, record["images"], strict=True):
                with transaction.atomic():
                    image = image_create(
                        prompt=job.prompt, model_version=model, seed=job.seed, sampler=stored_sampler,
                        data=(Path(tmp) / entry["file"]).read_bytes(),
                    )
                    generation_job_complete(job=job, image=image)
    except Exception as exc:
        GenerationJob.objects.filter(pk__in=[j.pk for j in jobs], status=GenerationJob.Status.RUNNING).update(
            status=GenerationJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:10_000]
        )
        raise
    finally:
        if evaluation_id is not None:
            _annotation_rounds_when_done(evaluation_id)
    return len(jobs)


def _annotation_rounds_when_done(evaluation_id: int) -> None:
    from evaluation import tasks

    pending = GenerationJob.objects.filter(
        evaluation_round_id=evaluation_id, status__in=[GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING]
    )
    if not pending.exists():
        transaction.on_commit(lambda: tasks.evaluation_rounds_create.delay(evaluation_id))
