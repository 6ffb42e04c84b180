"""Write-side operations of the catalog: image storage, model registration, prompt import.

Generation (batches, dispatch to the gpu queue, the worker side) is in ``catalog.generation``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from catalog.images import image_size_check
from catalog.models import AlignmentQuestion, GenerationJob, Image, ModelVersion, Prompt, PromptSet
from catalog.prompt_import import PromptImportError, PromptRecord, parse_prompt_file
from training.engine.pipeline_index import PipelineIndexError, read_pipeline_index


# --- images -----------------------------------------------------------------------------


class GenerationError(ValueError):
    """A generated image that does not belong to its job; the message is one line."""


def image_create(*, prompt: Prompt, model_version, seed: int, sampler: dict, data: bytes) -> Image:
    """Store a generated PNG under its opaque public id, with its size and sha256.

    Raises ``catalog.images.ImageRejected`` for a file beyond ``IMAGE_MAX_PIXELS`` (nothing is stored).
    """
    image_size_check(data)
    return Image.objects.create(
        prompt=prompt, model_version=model_version, seed=seed, sampler=sampler,
        sha256=hashlib.sha256(data).hexdigest(), file=ContentFile(data, name="image.png"),
    )


def generation_job_complete(*, job: GenerationJob, image: Image) -> GenerationJob:
    """Record a generated image on its job; a second call with the same image is harmless."""
    if (image.model_version_id, image.prompt_id, image.seed) != (job.model_version_id, job.prompt_id, job.seed):
        raise GenerationError(
            f"image {image.public_id} is not (model {job.model_version_id}, prompt {job.prompt_id}, seed {job.seed})"
        )
    job.image, job.status, job.error, job.finished_at = image, GenerationJob.Status.DONE, "", timezone.now()
    job.save(update_fields=["image", "status", "error", "finished_at"])
    return job


# --- model versions ---------------------------------------------------------------------


class RegistrationError(ValueError):
    """A model directory cannot be registered; the message is one line for the user."""


@transaction.atomic
def model_register(
    *,
    path: str | Path,
    name: str,
    parent: ModelVersion | None = None,
    notes: str = "",
) -> ModelVersion:
    """Register a local diffusers pipeline directory as a ModelVersion.

    Reads only JSON metadata (no torch). The family comes from the pipeline class and the
    prediction type from the scheduler config.
    """
    name_limit = ModelVersion._meta.get_field("name").max_length
    if not name.strip():
        raise RegistrationError("--name: empty")
    if len(name) > name_limit:
        raise RegistrationError(f"--name: longer than {name_limit} characters ({len(name)})")
    try:
        index = read_pipeline_index(path)
    except PipelineIndexError as exc:
        raise RegistrationError(str(exc)) from exc
    local_path = str(index.path.resolve())
    path_limit = ModelVersion._meta.get_field("local_path").max_length
    if len(local_path) > path_limit:
        raise RegistrationError(f"{local_path[:60]}...: path longer than {path_limit} characters")
    if ModelVersion.objects.filter(name=name).exists():
        raise RegistrationError(f"a model named '{name}' is already registered")
    return ModelVersion.objects.create(
        name=name,
        family=index.family,
        prediction_type=index.prediction_type,
        pipeline_class=index.pipeline_class,
        local_path=local_path,
        parent=parent,
        notes=notes,
    )


# --- prompt import ----------------------------------------------------------------------

PROMPT_PRESETS = {
    "partiprompts": {
        "path": "data/prompts/partiprompts/PartiPrompts.tsv",
        "format": "parti",
        "set": "PartiPrompts",
        "source": "PartiPrompts (google-research/parti, Apache-2.0)",
    },
    "dsg1k": {
        "path": "data/prompts/dsg1k/dsg-1k-anns.csv",
        "format": "dsg",
        "set": "DSG-1k",
        "source": "DSG-1k (j-min/DSG, Apache-2.0)",
    },
    "toy-train": {
        "path": "data/prompts/toy/toy-train.jsonl",
        "format": "jsonl",
        "set": "toy-train",
        "source": "toy world, training split (python -m toyworld.prompts)",
    },
    "toy-eval": {
        "path": "data/prompts/toy/toy-eval.jsonl",
        "format": "jsonl",
        "set": "toy-eval",
        "source": "toy world, evaluation split (python -m toyworld.prompts)",
    },
}
# A preset that names several: `--preset toy` imports both toy splits.
PROMPT_PRESET_GROUPS = {"toy": ("toy-train", "toy-eval")}


@dataclass(frozen=True)
class PromptImportResult:
    prompt_set: PromptSet
    warnings: list[str]
    created: int
    updated: int
    unchanged: int
    questions_created: int
    questions_updated: int


def prompt_preset_path(preset: str) -> Path:
    return Path(settings.BASE_DIR) / PROMPT_PRESETS[preset]["path"]


def prompts_import(*, path: str | Path, set_name: str, fmt: str | None = None, source: str = "") -> PromptImportResult:
    """Import a prompt file into the set ``set_name``: all of it, or nothing.

    The whole file is parsed and validated before the first write, and the writes run in one
    transaction. Prompts are keyed by their external id within the set, so importing the same
    file again changes nothing.
    """
    set_limit = PromptSet._meta.get_field("name").max_length
    if len(set_name) > set_limit:
        raise PromptImportError(path, None, "set", f"longer than {set_limit} characters ({len(set_name)})")
    parsed = parse_prompt_file(path, fmt, max_lengths=_prompt_max_lengths())
    # The source is a provenance label; a long file name is cut to fit rather than refused.
    source = (source or Path(path).name)[: Prompt._meta.get_field("source").max_length]
    return _prompts_write(records=parsed.records, warnings=parsed.warnings, set_name=set_name, source=source)


def _prompt_max_lengths() -> dict[str, int]:
    """The column limits a parsed record must fit, keyed as ``parse_prompt_file`` expects."""
    limits = {name: Prompt._meta.get_field(name).max_length for name in ("external_id", "category", "challenge")}
    for name in ("category", "detail", "semantic_tuple"):
        limits[f"question.{name}"] = AlignmentQuestion._meta.get_field(name).max_length
    return limits


_PROMPT_FIELDS = ("text", "category", "challenge", "note", "source")
_QUESTION_FIELDS = ("text", "category", "detail", "semantic_tuple")


@transaction.atomic
def _prompts_write(
    *, records: list[PromptRecord], warnings: list[str], set_name: str, source: str
) -> PromptImportResult:
    prompt_set, _ = PromptSet.objects.get_or_create(name=set_name, defaults={"source": source})
    existing = {p.external_id: p for p in Prompt.objects.filter(prompt_set=prompt_set)}
    to_create, to_update = [], []
    unchanged = 0
    for record in records:
        values = {
            "text": record.text, "category": record.category, "challenge": record.challenge,
            "note": record.note, "source": source,
        }
        prompt = existing.get(record.external_id)
        if prompt is None:
            to_create.append(Prompt(prompt_set=prompt_set, external_id=record.external_id, **values))
        elif any(getattr(prompt, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(prompt, k, v)
            to_update.append(prompt)
        else:
            unchanged += 1
    Prompt.objects.bulk_create(to_create, batch_size=1000)
    Prompt.objects.bulk_update(to_update, _PROMPT_FIELDS, batch_size=1000)
    prompts = {p.external_id: p for p in Prompt.objects.filter(prompt_set=prompt_set).only("id", "external_id")}

    questions_created, questions_updated = _questions_write(records, prompts)
    return PromptImportResult(
        prompt_set=prompt_set,
        warnings=warnings,
        created=len(to_create),
        updated=len(to_update),
        unchanged=unchanged,
        questions_created=questions_created,
        questions_updated=questions_updated,
    )


def _questions_write(records: list[PromptRecord], prompts: dict[str, Prompt]) -> tuple[int, int]:
    prompt_ids = [prompts[r.external_id].id for r in records if r.questions]
    existing = {
        (q.prompt_id, q.order): q for q in AlignmentQuestion.objects.filter(prompt_id__in=prompt_ids)
    }
    to_create, to_update = [], []
    for record in records:
        prompt_id = prompts[record.external_id].id
        for q in record.questions:
            values = {"text": q.text, "category": q.category, "detail": q.detail, "semantic_tuple": q.semantic_tuple}
            question = existing.get((prompt_id, q.order))
            if question is None:
                to_create.append(AlignmentQuestion(prompt_id=prompt_id, order=q.order, **values))
            elif any(getattr(question, k) != v for k, v in values.items()):
                for k, v in values.items():
                    setattr(question, k, v)
                to_update.append(question)
    AlignmentQuestion.objects.bulk_create(to_create, batch_size=1000)
    AlignmentQuestion.objects.bulk_update(to_update, _QUESTION_FIELDS, batch_size=1000)

    ids = {
        (q.prompt_id, q.order): q.id
        for q in AlignmentQuestion.objects.filter(prompt_id__in=prompt_ids).only("id", "prompt_id", "order")
    }
    wanted = {
        (ids[(prompts[r.external_id].id, q.order)], ids[(prompts[r.external_id].id, parent)])
        for r in records
        for q in r.questions
        for parent in q.parents
    }
    through = AlignmentQuestion.parents.through
    current = set(
        through.objects.filter(from_alignmentquestion_id__in=ids.values()).values_list(
            "from_alignmentquestion_id", "to_alignmentquestion_id"
        )
    )
    stale = current - wanted
    if stale:
        for child, parent in stale:
            through.objects.filter(from_alignmentquestion_id=child, to_alignmentquestion_id=parent).delete()
    through.objects.bulk_create(
        [through(from_alignmentquestion_id=c, to_alignmentquestion_id=p) for c, p in wanted - current],
        batch_size=1000,
    )
    return len(to_create), len(to_update)

