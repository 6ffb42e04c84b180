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

from catalog.image_import import ImageImportError, ImageRecord, parse_image_manifest
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
    """A model cannot be registered; the message is one line for the user, ``field`` the input at fault."""

    def __init__(self, message: str, *, field: str = "path"):
        super().__init__(message)
        self.field = field


def _model_name_check(name: str) -> None:
    """The rules of a new model's name, for pipelines and external models alike."""
    name_limit = ModelVersion._meta.get_field("name").max_length
    if not name.strip():
        raise RegistrationError("--name: empty", field="name")
    if len(name) > name_limit:
        raise RegistrationError(f"--name: longer than {name_limit} characters ({len(name)})", field="name")
    if ModelVersion.objects.filter(name=name).exists():
        raise RegistrationError(f"a model named '{name}' is already registered", field="name")


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
    _model_name_check(name)
    try:
        index = read_pipeline_index(path)
    except PipelineIndexError as exc:
        raise RegistrationError(str(exc)) from exc
    local_path = str(index.path.resolve())
    path_limit = ModelVersion._meta.get_field("local_path").max_length
    if len(local_path) > path_limit:
        raise RegistrationError(f"{local_path[:60]}...: path longer than {path_limit} characters")
    return ModelVersion.objects.create(
        name=name,
        family=index.family,
        prediction_type=index.prediction_type,
        pipeline_class=index.pipeline_class,
        local_path=local_path,
        parent=parent,
        notes=notes,
    )


class ExternalModelError(ValueError):
    """An external model (no weights) asked to do what needs weights; the message is one line."""

    code = "external_model"


def model_weights_check(*, model_version: ModelVersion, purpose: str) -> None:
    """Raise ExternalModelError when ``model_version`` has no weights to be ``purpose`` (e.g. "trained")."""
    if model_version.is_external:
        raise ExternalModelError(
            f"model '{model_version.name}' is external (imported images, no weights): it cannot be {purpose}"
        )


def external_model_register(*, name: str, notes: str = "") -> ModelVersion:
    """Register a model known only by its images (``manage.py import_images --create-models``).

    Raises RegistrationError for a name that is empty, too long or taken.
    """
    _model_name_check(name)
    return ModelVersion.objects.create(name=name, kind=ModelVersion.Kind.EXTERNAL, notes=notes)


# --- image import -----------------------------------------------------------------------


@dataclass(frozen=True)
class ImageImportResult:
    created: int
    present: int
    models_created: list[str]


def images_import(
    *, path: str | Path, default_prompt_set: str = "", create_models: bool = False, confined: bool = False
) -> ImageImportResult:
    """Import the images a manifest lists (``catalog.image_import``): all of them, or nothing.

    Every line is checked first (file, decode, pixel limit, sha256, model, prompt, clashes with
    stored images); then the images are stored in one transaction, and a failure removes the
    files already copied. An image already stored with the same (model, prompt, seed) and the
    same sha256 is counted as present, so importing the same manifest again changes nothing.
    ``confined``: every image must lie inside the manifest's folder (an uploaded archive).
    """
    records = parse_image_manifest(path, default_prompt_set=default_prompt_set, confined=confined)
    path = Path(path)
    models = {m.name: m for m in ModelVersion.objects.filter(name__in={r.model for r in records})}
    name_limit = ModelVersion._meta.get_field("name").max_length
    prompts: dict[tuple[str, str, str], Prompt] = {}
    todo: list[tuple[ImageRecord, Prompt]] = []
    present = 0
    lines: dict[tuple[str, int, int], int] = {}  # (model, prompt, seed) -> line: one prompt named by id and by text
    for record in records:
        if record.model not in models:
            if not create_models:
                raise ImageImportError(
                    path, record.line, "model",
                    f"no model named '{record.model}' (--create-models registers it as an external model)",
                )
            if len(record.model) > name_limit:
                raise ImageImportError(path, record.line, "model", f"longer than {name_limit} characters")
        if record.prompt_key not in prompts:
            prompts[record.prompt_key] = _manifest_prompt(path, record)
        prompt = prompts[record.prompt_key]
        first = lines.setdefault((record.model, prompt.pk, record.seed), record.line)
        if first != record.line:
            raise ImageImportError(
                path, record.line, "seed", f"same (model, prompt, seed) as line {first}; give each image its own seed"
            )
        model = models.get(record.model)
        stored = (
            set(Image.objects.filter(model_version=model, prompt=prompt, seed=record.seed).values_list("sha256", flat=True))
            if model is not None else set()
        )
        if record.sha256 in stored:
            present += 1
        elif stored:
            raise ImageImportError(
                path, record.line, "path",
                f"model '{record.model}', prompt '{prompt.external_id}', seed {record.seed} already has a different "
                "image; give this one its own seed",
            )
        else:
            todo.append((record, prompt))
    return _images_write(path=path, todo=todo, models=models, present=present)


def _manifest_prompt(path: Path, record: ImageRecord) -> Prompt:
    in_set = Prompt.objects.filter(prompt_set__name=record.prompt_set)
    if not PromptSet.objects.filter(name=record.prompt_set).exists():
        raise ImageImportError(path, record.line, "prompt_set", f"no prompt set named '{record.prompt_set}'")
    if record.prompt_id:
        prompt = in_set.filter(external_id=record.prompt_id).first()
        if prompt is None:
            raise ImageImportError(
                path, record.line, "prompt_id", f"no prompt with id '{record.prompt_id}' in '{record.prompt_set}'"
            )
        return prompt
    matches = list(in_set.filter(text=record.prompt_text)[:2])
    if not matches:
        raise ImageImportError(path, record.line, "prompt", f"no prompt with this text in '{record.prompt_set}'")
    if len(matches) > 1:
        raise ImageImportError(path, record.line, "prompt", "several prompts have this text; give prompt_id")
    return matches[0]


def _images_write(
    *, path: Path, todo: list[tuple[ImageRecord, Prompt]], models: dict[str, ModelVersion], present: int
) -> ImageImportResult:
    copied = []  # the stored files, removed again when the transaction fails
    models_created: list[str] = []
    try:
        with transaction.atomic():
            for record, prompt in todo:
                if record.model not in models:
                    models[record.model] = external_model_register(name=record.model, notes=f"imported from {path.name}")
                    models_created.append(record.model)
                data = record.path.read_bytes()
                if hashlib.sha256(data).hexdigest() != record.sha256:
                    raise ImageImportError(path, record.line, "path", f"{record.path} changed while importing")
                image = image_create(
                    prompt=prompt, model_version=models[record.model], seed=record.seed, sampler=record.sampler,
                    data=data,
                )
                copied.append(image.file)
    except BaseException:
        for stored in copied:
            stored.storage.delete(stored.name)
        raise
    return ImageImportResult(created=len(todo), present=present, models_created=models_created)


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
    parsed = prompts_check(path=path, set_name=set_name, fmt=fmt)
    # The source is a provenance label; a long file name is cut to fit rather than refused.
    source = (source or Path(path).name)[: Prompt._meta.get_field("source").max_length]
    return _prompts_write(records=parsed.records, warnings=parsed.warnings, set_name=set_name, source=source)


def prompts_check(*, path: str | Path, set_name: str, fmt: str | None = None):
    """Everything ``prompts_import`` checks before its first write: the set's name, and every row of the file.
    Returns the parsed file; raises PromptImportError (``FILE:LINE: field 'F': message``)."""
    set_limit = PromptSet._meta.get_field("name").max_length
    if len(set_name) > set_limit:
        raise PromptImportError(path, None, "set", f"longer than {set_limit} characters ({len(set_name)})")
    return parse_prompt_file(path, fmt, max_lengths=_prompt_max_lengths())


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

