"""Write-side operations of the evaluation app: evaluation rounds, their generation batch, annotation rounds,
and the stored report."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from annotation.criteria import Criterion
from annotation.errors import AnnotationError
from annotation.models import Round
from annotation.services.rounds import ItemSpec, round_create
from catalog.generation import (
    generation_batch_create,
    generation_dispatch,
    generation_jobs_fill_from_existing,
    sampler_settings,
)
from catalog.models import AlignmentQuestion, GenerationJob, ModelVersion, Prompt, PromptSet
from catalog.selectors import prompts_select
from config.celery import enqueue_on_commit
from evaluation import reports, selectors
from evaluation.charts import CHART_FORMATS, win_tie_loss_chart
from evaluation.models import CRITERIA, TEXT_ALIGNMENT, EvaluationModel, EvaluationRound, StoredReport
from training.engine.config import ConfigError


class EvaluationError(Exception):
    """A refused evaluation request; ``field`` names the input at fault."""

    def __init__(self, detail: str, *, field: str = ""):
        super().__init__(f"{field}: {detail}" if field else detail)
        self.detail = detail
        self.field = field


@transaction.atomic
def evaluation_create(
    *, model_versions: Sequence[ModelVersion], prompt_set: PromptSet, limit: int | None = None, seed: int = 0,
    k: int = 5, name: str = "", criteria: Sequence[str] = CRITERIA,
    seed_policy: str = EvaluationRound.SeedPolicy.EVALUATION, created_by=None,
) -> EvaluationRound:
    """Create an evaluation round and one generation job per prompt per model (same seed per prompt).

    ``criteria``: what it measures, one annotation round each (``evaluation.models.CRITERIA``).
    """
    if seed_policy not in EvaluationRound.SeedPolicy.values:
        raise EvaluationError(
            f"expected one of {', '.join(EvaluationRound.SeedPolicy.values)}, got {seed_policy!r}", field="seed_policy"
        )
    criteria = list(criteria)
    if not criteria:
        raise EvaluationError(f"choose at least one of {', '.join(CRITERIA)}", field="criteria")
    unknown = [c for c in criteria if c not in CRITERIA]
    if unknown:
        raise EvaluationError(f"{unknown[0]!r} is not one of {', '.join(CRITERIA)}", field="criteria")
    if len(set(criteria)) != len(criteria):
        raise EvaluationError("a criterion is listed more than once", field="criteria")
    if len(model_versions) < 2:
        raise EvaluationError("an evaluation compares at least 2 models", field="models")
    duplicates = sorted({m.name for m in model_versions if list(model_versions).count(m) > 1})
    if duplicates:
        raise EvaluationError(f"listed more than once: {', '.join(duplicates)}", field="models")
    if limit is not None and limit < 1:
        raise EvaluationError(f"must be at least 1, got {limit}", field="limit")
    if k < 1:
        raise EvaluationError(f"must be at least 1, got {k}", field="k")
    prompts = prompts_select(prompt_set=prompt_set, limit=limit, seed=seed)
    if not prompts:
        raise EvaluationError(f"prompt set {prompt_set.name!r} has no prompts", field="prompts")
    name = name or _default_name(model_versions, prompt_set, seed)
    if EvaluationRound.objects.filter(name=name).exists():
        raise EvaluationError(f"an evaluation named {name!r} already exists", field="name")
    batch = generation_batch_create(model_versions=model_versions, prompts=prompts, seed=seed, label=f"evaluation {name}")
    evaluation = EvaluationRound.objects.create(
        name=name, prompt_set=prompt_set, limit=limit, seed=seed, k=k, seed_policy=seed_policy, generation_batch=batch,
        created_by=created_by, criteria=[c for c in CRITERIA if c in criteria],
    )
    EvaluationModel.objects.bulk_create(
        [EvaluationModel(evaluation_round=evaluation, model_version=m, position=i) for i, m in enumerate(model_versions)]
    )
    return evaluation


def _default_name(model_versions: Sequence[ModelVersion], prompt_set: PromptSet, seed: int) -> str:
    base = f"{' vs '.join(m.name for m in model_versions)} on {prompt_set.name} (seed {seed})"[:180]
    name, n = base, 2
    while EvaluationRound.objects.filter(name=name).exists():
        name, n = f"{base} #{n}", n + 1
    return name


@dataclass(frozen=True)
class AnnotationBuild:
    """What ``evaluation_annotation_create`` made, and which prompts it had to leave out."""

    rounds: list[Round]
    prompts_used: int
    items: dict[str, int]
    missing: list[dict] = field(default_factory=list)
    prompts_without_questions: int = 0


@transaction.atomic
def evaluation_annotation_create(*, evaluation: EvaluationRound, created_by=None) -> AnnotationBuild:
    """Create the annotation rounds of an evaluation's criteria from its finished generation jobs.

    - ``visual_flaws`` and ``visual_appeal``: one pairwise item per prompt per pair of models,
      its images stored in the evaluation's model order (the annotation app shuffles the screen
      order per annotator);
    - ``alignment``: one item per prompt per model, for prompts with alignment questions.

    Only prompts with an image from every model are used; the others are returned (and kept on
    the evaluation) as ``missing``. Round names carry no model names: annotators see them.
    """
    evaluation = EvaluationRound.objects.select_for_update().get(pk=evaluation.pk)
    if evaluation.annotation_rounds.exists():
        raise EvaluationError(f"evaluation {evaluation.pk} already has its annotation rounds", field="evaluation")
    models = evaluation.ordered_models()
    images: dict[int, dict[int, int]] = {}
    prompts: dict[int, Prompt] = {}
    for job in evaluation.jobs.select_related("prompt").order_by("prompt_id"):
        prompts[job.prompt_id] = job.prompt
        if job.status == GenerationJob.Status.DONE:
            images.setdefault(job.prompt_id, {})[job.model_version_id] = job.image_id
    complete, missing = [], []
    for prompt_id, prompt in prompts.items():
        lacking = [m.name for m in models if m.pk not in images.get(prompt_id, {})]
        if lacking:
            missing.append({"prompt": prompt.external_id, "text": prompt.text[:200], "models": lacking})
        else:
            complete.append(prompt_id)
    if not complete:
        raise EvaluationError(
            f"no prompt has an image from every model yet ({len(missing)} prompts are missing images)",
            field="images",
        )
    pairs = list(itertools.combinations(models, 2))
    rounds, items = [], {}
    try:
        for criterion in (c for c in Criterion if c.value in evaluation.criteria):
            specs = [
                ItemSpec(prompt_id=p, image_ids=(images[p][a.pk], images[p][b.pk])) for p in complete for a, b in pairs
            ]
            rounds.append(round_create(
                name=f"Evaluation {evaluation.pk}: {criterion.label.lower()}",
                kind=Round.Kind.PAIRWISE, criterion=criterion, k=evaluation.k, items=specs, created_by=created_by,
            ))
            items[criterion.value] = len(specs)
        with_questions = set(
            AlignmentQuestion.objects.filter(prompt_id__in=complete).values_list("prompt_id", flat=True)
        ) if TEXT_ALIGNMENT in evaluation.criteria else set()
        if with_questions:
            specs = [
                ItemSpec(prompt_id=p, image_ids=(images[p][m.pk],)) for p in complete if p in with_questions for m in models
            ]
            rounds.append(round_create(
                name=f"Evaluation {evaluation.pk}: text alignment", kind=Round.Kind.ALIGNMENT, k=evaluation.k,
                items=specs, created_by=created_by,
            ))
            items["alignment"] = len(specs)
    except AnnotationError as exc:
        raise EvaluationError(exc.detail, field="annotation rounds") from exc
    if not rounds:
        raise EvaluationError(
            "no prompt has alignment questions, and text_alignment is the only criterion", field="criteria"
        )
    evaluation.annotation_rounds.set(rounds)
    evaluation.missing_prompts = missing
    evaluation.status = EvaluationRound.Status.ANNOTATING
    evaluation.save(update_fields=["missing_prompts", "status"])
    return AnnotationBuild(
        rounds=rounds, prompts_used=len(complete), items=items, missing=missing,
        prompts_without_questions=len(complete) - len(with_questions) if TEXT_ALIGNMENT in evaluation.criteria else 0,
    )


@dataclass(frozen=True)
class EvaluationStart:
    evaluation: EvaluationRound
    jobs: int
    filled: int
    build: AnnotationBuild | None


# Creates an evaluation's annotation rounds on the default queue (evaluation.tasks).
ROUNDS_TASK = "evaluation.tasks.evaluation_rounds_create"


@transaction.atomic
def evaluation_start(
    *, model_versions: Sequence[ModelVersion], prompt_set: PromptSet, limit: int | None = None, seed: int = 0,
    k: int = 5, name: str = "", criteria: Sequence[str] = CRITERIA, from_existing: bool = False,
    seed_policy: str = EvaluationRound.SeedPolicy.EVALUATION, created_by=None, rounds_now: bool = True,
) -> EvaluationStart:
    """Create an evaluation and its jobs; with ``from_existing``, fill them and create the rounds now.

    ``rounds_now=False`` (the research API: a request must not build thousands of items) queues the
    rounds' creation on the default queue instead, once at least one prompt is known to have an
    image from every model; ``build`` is then None.

    Otherwise the jobs that an existing image of the current sampler does not fill go to `gpu`
    workers once this transaction commits, and the annotation rounds are created when the last
    image is done (at once when every job was filled); an external model (no weights) cannot
    generate, so it needs ``from_existing``. ``seed_policy`` says which existing images fill the
    jobs: ``evaluation`` (the job's seed) or ``any`` (any image of the job's model and prompt).

    All or nothing: with ``from_existing`` and not one prompt with every image, nothing is kept.
    """
    if not from_existing:
        external = [m.name for m in model_versions if m.is_external]
        if external:
            raise EvaluationError(
                f"model '{external[0]}' has no weights: import its images and use --from-existing", field="models"
            )
        if seed_policy != EvaluationRound.SeedPolicy.EVALUATION:
            raise EvaluationError("applies to existing images only: use it with --from-existing", field="seed_policy")
    evaluation = evaluation_create(
        model_versions=model_versions, prompt_set=prompt_set, limit=limit, seed=seed, k=k, name=name,
        criteria=criteria, seed_policy=seed_policy, created_by=created_by,
    )
    jobs = evaluation.jobs.count()
    filled, build = 0, None
    if from_existing:
        filled = evaluation_jobs_fill(evaluation=evaluation)
        if filled == 0:
            if evaluation.seed_policy == EvaluationRound.SeedPolicy.EVALUATION:
                detail = f"no existing image matches any of the {jobs} (model, prompt, seed) jobs" + (
                    " (for images made with other seeds: --seed-policy any)"
                )
            else:
                detail = f"no existing image matches any of the {jobs} (model, prompt) jobs"
            raise EvaluationError(detail, field="from_existing")
        build = _rounds_open(evaluation, created_by=created_by, now=rounds_now)
    else:
        # An image this sampler already made for a job's (model, prompt, seed) is the image it would make: a base
        # model evaluated against each new checkpoint is sampled once.
        try:
            sampler = sampler_settings()
        except ConfigError as exc:
            raise EvaluationError(str(exc), field="EVALUATION_SAMPLER") from exc
        filled = generation_jobs_fill_from_existing(batch=evaluation.generation_batch, match_seed=True, sampler=sampler)
        if filled == jobs:
            build = _rounds_open(evaluation, created_by=created_by, now=rounds_now)
        else:
            generation_dispatch(batch=evaluation.generation_batch)
    return EvaluationStart(evaluation=evaluation, jobs=jobs, filled=filled, build=build)


def _rounds_open(evaluation: EvaluationRound, *, created_by, now: bool) -> AnnotationBuild | None:
    """Create the evaluation's rounds now (its build), or queue their creation for after the commit."""
    if now:
        build = evaluation_annotation_create(evaluation=evaluation, created_by=created_by)
        evaluation.refresh_from_db()
        return build
    models = evaluation.entries.count()
    complete = (
        evaluation.jobs.filter(status=GenerationJob.Status.DONE).values("prompt_id")
        .annotate(n=Count("model_version", distinct=True)).filter(n=models).exists()
    )
    if not complete:
        raise EvaluationError(
            "no prompt has an image from every model yet (the existing images are of other prompts for each model)",
            field="from_existing",
        )
    enqueue_on_commit(ROUNDS_TASK, evaluation.pk)
    return None


def evaluation_jobs_fill(*, evaluation: EvaluationRound) -> int:
    """Fill the evaluation's unfinished jobs from existing images, under its seed policy; returns how many."""
    return generation_jobs_fill_from_existing(
        batch=evaluation.generation_batch, match_seed=evaluation.seed_policy == EvaluationRound.SeedPolicy.EVALUATION
    )


# --- the stored report ---------------------------------------------------------------------

# A recompute asked for this long ago without a result is asked for again (its worker may be gone).
REPORT_REQUEST_TIMEOUT = timedelta(minutes=10)


def report_refresh(*, evaluation: EvaluationRound) -> StoredReport:
    """Compute the report at the default settings and store it, unless the stored one is current.

    The source state is read before the judgments, so a judgment that arrives meanwhile makes
    the stored report look stale (and recomputed), never current. Running it twice is harmless.
    """
    n_resamples = reports.bootstrap_resamples()
    state = selectors.report_source_state(evaluation=evaluation, n_resamples=n_resamples)
    stored = selectors.stored_report(evaluation=evaluation)
    if stored is not None and stored.data is not None and stored.source_state == state.key:
        return stored
    started = time.perf_counter()
    data = reports.evaluation_report_build(evaluation=evaluation, n_resamples=n_resamples).to_dict()
    charts = {f"chart_{fmt}": win_tie_loss_chart(data["table"], fmt) for fmt in CHART_FORMATS}
    stored, _ = StoredReport.objects.update_or_create(evaluation=evaluation, defaults={
        "data": data, "source_state": state.key, "judgment_count": state.judgment_count,
        "computed_at": timezone.now(), "compute_seconds": time.perf_counter() - started, **charts,
    })
    return stored


def report_chart(*, stored: StoredReport, fmt: str) -> bytes:
    """The stored report's chart in ``fmt``: drawn by ``report_refresh`` on the default queue with the report, so a
    request serves bytes (matplotlib's first chart in a process costs about a second). A report stored before charts
    were stored with it gets its chart drawn once, here, and kept."""
    if fmt not in CHART_FORMATS:
        raise ValueError(f"chart format must be one of {', '.join(CHART_FORMATS)}, got {fmt!r}")
    field = f"chart_{fmt}"
    chart = getattr(stored, field)
    if chart is None:
        chart = win_tie_loss_chart(stored.data["table"], fmt)
        StoredReport.objects.filter(pk=stored.pk, source_state=stored.source_state).update(**{field: chart})
    return bytes(chart)


@dataclass(frozen=True)
class LatestReport:
    """What a page or download can show: the stored row (its ``data`` empty until first computed),
    whether it is current, and the judgments there are now."""

    stored: StoredReport
    fresh: bool
    judgment_count: int

    @property
    def data(self) -> dict[str, Any] | None:
        return self.stored.data


def report_latest(*, evaluation: EvaluationRound) -> LatestReport:
    """The last computed report; when the evaluation has moved on, a `default` worker is asked to recompute it.

    The request is sent once per source state (``requested_state``, set by one conditional
    UPDATE, so concurrent page views send one task), and again after ``REPORT_REQUEST_TIMEOUT``.
    """
    state = selectors.report_source_state(evaluation=evaluation, n_resamples=reports.bootstrap_resamples())
    stored = selectors.stored_report(evaluation=evaluation)
    fresh = stored is not None and stored.data is not None and stored.source_state == state.key
    if not fresh:
        now = timezone.now()
        if stored is None:
            stored, _ = StoredReport.objects.get_or_create(evaluation=evaluation)
        asked = StoredReport.objects.filter(evaluation=evaluation).exclude(
            requested_state=state.key, requested_at__gt=now - REPORT_REQUEST_TIMEOUT
        ).update(requested_state=state.key, requested_at=now)
        if asked:
            stored.requested_state, stored.requested_at = state.key, now
            enqueue_on_commit("evaluation.tasks.evaluation_report_refresh", evaluation.pk)
    return LatestReport(stored=stored, fresh=fresh, judgment_count=state.judgment_count)
