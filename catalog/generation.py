"""Image generation: GenerationJobs become Images on a `gpu` worker.

The web process dispatches one `gpu` task per (batch, model); the task samples every queued
job of that model in batches with the engine's ``SampleConfig`` (the paper's evaluation setting
unless ``settings.EVALUATION_SAMPLER`` overrides some of it) and the same per-prompt seed for
every model. When the last job of
a batch has finished, ``generation_batch_done`` is sent: whoever made the batch (e.g. an
evaluation) takes it from there.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.images import ImageRejected
from catalog.models import GenerationBatch, GenerationJob, Image, ModelVersion, Prompt, PromptSet
from catalog.selectors import prompts_select
from catalog.services import generation_job_complete, image_create, model_weights_check
from catalog.signals import generation_batch_done
from config.celery import enqueue_on_commit
from training.engine.config import SampleConfig

GENERATE_TASK = "catalog.tasks.gpu_generate_images"
POOL_REQUEST_TASK = "catalog.tasks.pool_generation_request"


def sampler_settings() -> SampleConfig:
    """The sampler for generated images: SampleConfig's defaults, updated by EVALUATION_SAMPLER.

    Raises ConfigError naming the setting when EVALUATION_SAMPLER holds a bad one.
    """
    return SampleConfig.from_dict(dict(settings.EVALUATION_SAMPLER), source="EVALUATION_SAMPLER")


# The sampler settings an image stores (``Image.sampler``, from the sampling record).
STORED_SAMPLER_KEYS = (
    "scheduler", "scheduler_requested", "steps", "guidance_scale", "negative_prompt", "max_sequence_length",
    "height", "width", "dtype",
)


def sampler_matches(sampler: SampleConfig) -> dict:
    """Lookups on ``Image`` for the images ``sampler`` makes: the same requested scheduler, steps,
    guidance, negative prompt, sequence length and dtype, and the same size where the sampler fixes
    one. Images stored before the requested scheduler was recorded never match."""
    lookups = {
        "scheduler_requested": sampler.scheduler, "steps": sampler.steps, "guidance_scale": sampler.guidance_scale,
        "negative_prompt": sampler.negative_prompt, "max_sequence_length": sampler.max_sequence_length,
        "dtype": sampler.dtype,
    }
    lookups.update({key: getattr(sampler, key) for key in ("height", "width") if getattr(sampler, key) is not None})
    return {f"sampler__{key}": value for key, value in lookups.items()}


def prompt_seed(*, seed: int | str, external_id: str) -> int:
    """The image seed of one prompt: the same for every model, derived from the request's seed.

    A hash of (seed, the prompt's stable external id), so it does not depend on database ids
    and stays below 2**31 (every sampler's generator takes it).
    """
    digest = hashlib.sha256(f"{seed}:{external_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF


@transaction.atomic
def generation_batch_create(
    *, model_versions: Sequence[ModelVersion], prompts: Sequence[Prompt], seed: int, label: str = ""
) -> GenerationBatch:
    """A batch of one job per prompt per model, each prompt's seed the same for every model."""
    batch = GenerationBatch.objects.create(label=label)
    GenerationJob.objects.bulk_create(
        [
            GenerationJob(
                batch=batch, model_version=model, prompt=prompt,
                seed=prompt_seed(seed=seed, external_id=prompt.external_id),
            )
            for prompt in prompts
            for model in model_versions
        ],
        batch_size=2000,
    )
    return batch


def generation_dispatch(*, batch: GenerationBatch | None) -> list[int]:
    """Send one `gpu` task per model that still has queued jobs, after the transaction commits.

    ``batch=None`` dispatches the pool jobs (images not tied to a batch).
    """
    batch_id = batch.pk if batch is not None else None
    queued = GenerationJob.objects.filter(batch_id=batch_id, status=GenerationJob.Status.QUEUED)
    model_ids = sorted(set(queued.values_list("model_version_id", flat=True)))
    for model in ModelVersion.objects.filter(pk__in=model_ids, kind=ModelVersion.Kind.EXTERNAL):
        model_weights_check(model_version=model, purpose="sampled")
    for model_id in model_ids:
        enqueue_on_commit(GENERATE_TASK, batch_id, model_id)
    return model_ids


@transaction.atomic
def generation_jobs_fill_from_existing(
    *, batch: GenerationBatch, match_seed: bool = True, sampler: SampleConfig | None = None
) -> int:
    """Satisfy the batch's unfinished jobs with existing images of the same (model, prompt, seed).

    Returns how many jobs were filled. Where several images match, the oldest is used. With
    ``match_seed=False`` (images made elsewhere, with their own seeds) any image of the job's
    (model, prompt) will do: one with the job's seed if there is one, else the lowest seed (then
    the oldest); the job takes the image's seed, so a job's image always has the job's seed.
    With ``sampler``, only images this sampler made count (``sampler_matches``): the image the
    job would make anew.
    """
    jobs = list(
        GenerationJob.objects.select_for_update().filter(batch=batch).exclude(status=GenerationJob.Status.DONE)
    )
    if not jobs:
        return 0
    candidates = Image.objects.filter(
        prompt_id__in={j.prompt_id for j in jobs}, model_version_id__in={j.model_version_id for j in jobs},
    )
    if match_seed:
        candidates = candidates.filter(seed__in={j.seed for j in jobs})
    if sampler is not None:
        candidates = candidates.filter(**sampler_matches(sampler))
    found: dict[tuple[int, int, int], int] = {}
    lowest: dict[tuple[int, int], tuple[int, int]] = {}  # (model, prompt) -> (image id, seed)
    for image_id, model_id, prompt_id, seed in candidates.order_by("seed", "id").values_list(
        "id", "model_version_id", "prompt_id", "seed"
    ):
        found.setdefault((model_id, prompt_id, seed), image_id)
        lowest.setdefault((model_id, prompt_id), (image_id, seed))
    now = timezone.now()
    filled = []
    for job in jobs:
        image_id = found.get((job.model_version_id, job.prompt_id, job.seed))
        if image_id is None and not match_seed and (job.model_version_id, job.prompt_id) in lowest:
            image_id, job.seed = lowest[(job.model_version_id, job.prompt_id)]
        if image_id is not None:
            job.image_id, job.status, job.error, job.finished_at = image_id, GenerationJob.Status.DONE, "", now
            filled.append(job)
    # Small batches: bulk_update builds one CASE per field and row, quadratic in the batch.
    GenerationJob.objects.bulk_update(filled, ["image", "seed", "status", "error", "finished_at"], batch_size=100)
    return len(filled)


def pool_seeds(*, prompts: Sequence[Prompt], images_per_prompt: int, seed: int) -> list[tuple[Prompt, int]]:
    """The (prompt, image seed) of each pool image a request asks for: derived from (seed, prompt, index)."""
    return [
        (prompt, prompt_seed(seed=f"{seed}.{index}", external_id=prompt.external_id))
        for prompt in prompts
        for index in range(images_per_prompt)
    ]


def pool_generation_jobs(*, model_version: ModelVersion, prompts: Sequence[Prompt], images_per_prompt: int, seed: int):
    """The pool jobs of one ``pool_generation_create`` request (those made before it included)."""
    wanted = pool_seeds(prompts=prompts, images_per_prompt=images_per_prompt, seed=seed)
    return GenerationJob.objects.filter(
        batch=None, model_version=model_version, prompt_id__in={prompt.pk for prompt, _ in wanted},
        seed__in={image_seed for _, image_seed in wanted},
    )


@transaction.atomic
def pool_generation_create(
    *, model_version: ModelVersion, prompts: list[Prompt], images_per_prompt: int, seed: int = 0
) -> tuple[int, int]:
    """Queue ``images_per_prompt`` images per prompt for collecting preferences; returns (new, existing).

    Seeds derive from (seed, prompt, index), so running the same request again queues nothing
    new, and an image that already exists for a (model, prompt, seed) is reused.
    """
    if images_per_prompt < 1:
        raise ValueError("images_per_prompt: must be at least 1")
    model_weights_check(model_version=model_version, purpose="sampled")
    wanted = pool_seeds(prompts=prompts, images_per_prompt=images_per_prompt, seed=seed)
    existing_jobs = set(
        GenerationJob.objects.filter(batch=None, model_version=model_version, prompt__in=prompts)
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
            batch=None, model_version=model_version, prompt=prompt, seed=image_seed, image_id=image_id,
            status=GenerationJob.Status.DONE if image_id else GenerationJob.Status.QUEUED,
        ))
    GenerationJob.objects.bulk_create(new, batch_size=1000)
    generation_dispatch(batch=None)
    return len(new), len(wanted) - len(new)


def pool_generation_progress(
    *, model_version: ModelVersion, prompts: Sequence[Prompt], images_per_prompt: int, seed: int
) -> dict:
    """The request's images by job status (an image whose job is not made yet counts as queued), and the
    first failed jobs' errors."""
    wanted = {(prompt.pk, image_seed) for prompt, image_seed in
              pool_seeds(prompts=prompts, images_per_prompt=images_per_prompt, seed=seed)}
    counts = dict.fromkeys(GenerationJob.Status.values, 0)
    failed = []
    jobs = GenerationJob.objects.filter(batch=None, model_version=model_version, prompt_id__in={p.pk for p in prompts})
    for job_id, prompt_id, image_seed, status in jobs.values_list("id", "prompt_id", "seed", "status").iterator(
        chunk_size=5000
    ):
        if (prompt_id, image_seed) in wanted:
            counts[status] += 1
            if status == GenerationJob.Status.FAILED:
                failed.append(job_id)
    counts[GenerationJob.Status.QUEUED] += len(wanted) - sum(counts.values())
    errors = GenerationJob.objects.filter(pk__in=sorted(failed)[:5]).order_by("id").values_list("error", flat=True)
    return {**counts, "errors": [error[:500] for error in errors]}


def pool_generation_request(
    *, model_version_id: int, prompt_set_id: int, images_per_prompt: int, seed: int, limit: int | None
) -> tuple[int, int]:
    """A request of the research API, run on the default queue: its prompts, then ``pool_generation_create``
    (a second run queues nothing new)."""
    model_version = ModelVersion.objects.get(pk=model_version_id)
    prompt_set = PromptSet.objects.get(pk=prompt_set_id)
    prompts = prompts_select(prompt_set=prompt_set, limit=limit, seed=seed)
    return pool_generation_create(
        model_version=model_version, prompts=prompts, images_per_prompt=images_per_prompt, seed=seed
    )


def _jobs_claim(*, batch_id: int | None, model_version_id: int) -> list[GenerationJob]:
    """Queued jobs, and jobs left running by a worker that died, become this worker's."""
    with transaction.atomic():
        jobs = list(
            GenerationJob.objects.select_for_update(skip_locked=True)
            .filter(
                batch_id=batch_id,
                model_version_id=model_version_id,
                status__in=[GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING],
            )
            .select_related("prompt")
            .order_by("id")
        )
        GenerationJob.objects.filter(pk__in=[job.pk for job in jobs]).update(status=GenerationJob.Status.RUNNING)
    return jobs


def generation_run(*, batch_id: int | None, model_version_id: int) -> int:
    """Sample every claimed job of one model; returns how many images were stored. Imports torch.

    An image beyond ``IMAGE_MAX_PIXELS`` fails its job (the error says why); the others are stored.
    """
    from training.engine.sampling import sample

    jobs = _jobs_claim(batch_id=batch_id, model_version_id=model_version_id)
    if not jobs:
        return 0
    model = ModelVersion.objects.get(pk=model_version_id)
    stored = 0
    try:
        model_weights_check(model_version=model, purpose="sampled")
        with tempfile.TemporaryDirectory(prefix="generate-") as tmp:
            record = sample(
                model.local_path, [job.prompt.text for job in jobs], [job.seed for job in jobs], tmp,
                sampler_settings(),
            )
            stored_sampler = {key: record[key] for key in STORED_SAMPLER_KEYS}
            for job, entry in zip(jobs, record["images"], strict=True):
                try:
                    with transaction.atomic():
                        image = image_create(
                            prompt=job.prompt, model_version=model, seed=job.seed, sampler=stored_sampler,
                            data=(Path(tmp) / entry["file"]).read_bytes(),
                        )
                        generation_job_complete(job=job, image=image)
                    stored += 1
                except ImageRejected as exc:  # this image only: the model's other images are still stored
                    GenerationJob.objects.filter(pk=job.pk).update(
                        status=GenerationJob.Status.FAILED, error=f"image: {exc}"
                    )
    except Exception as exc:
        GenerationJob.objects.filter(pk__in=[j.pk for j in jobs], status=GenerationJob.Status.RUNNING).update(
            status=GenerationJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:10_000]
        )
        raise
    finally:
        if batch_id is not None:
            _batch_done_when_over(batch_id)
    return stored


def _batch_done_when_over(batch_id: int) -> None:
    pending = GenerationJob.objects.filter(
        batch_id=batch_id, status__in=[GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING]
    )
    if not pending.exists():
        batch = GenerationBatch.objects.get(pk=batch_id)
        transaction.on_commit(lambda: generation_batch_done.send(sender=GenerationBatch, batch=batch))
