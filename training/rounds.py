"""Training rounds.

From a finished annotation round (``training_round_launch``): its pairs become a dataset, a run, a
model, and (optionally) an evaluation of the new model against its base::

    annotation round ──export──► preference dataset ──gpu task──► checkpoint ──► ModelVersion
                                                                           └──► evaluation (gpu images → rounds)

A whole round from a base model and a prompt set (``training_round_create``, a ``TrainingRound``),
moved on stage by stage by ``training_round_advance`` (celery beat, on the default queue)::

    generating ──► annotating ──► exporting ──► training ──► evaluating ──► done
    (N images per   (best/worst    (winner/loser (gpu run,     (the evaluation's
     prompt, gpu)    round, K)      pairs)        new model)    images, gpu)         any stage ──► failed

Each transition locks the round's row and checks its stage, so running the advance twice, or from
two processes, never redoes a stage.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.exports import ExportResult, preferences_export, preferences_export_counts
from annotation.kinds import item_kind
from annotation.models import Round
from annotation.selectors import round_summary
from annotation.simulation import Policy, PolicyError, round_simulate, synthetic_annotators
from annotation.services.rounds import round_create
from catalog.generation import pool_generation_create, pool_generation_jobs
from catalog.models import GenerationBatch, GenerationJob, Image, ModelVersion, Prompt, PromptSet
from catalog.selectors import prompts_select
from catalog.services import ExternalModelError
from training.models import TrainingRound, TrainingRun
from config.celery import enqueue_on_commit
from training.services import TRAIN_TASK, TrainingRunRefused, training_run_check, training_run_create

logger = logging.getLogger(__name__)


class TrainingRoundError(ValueError):
    """A refused training round; nothing was created. ``code`` says why, for machines; ``field`` names the input at
    fault in the API's words; ``detail`` says what is wrong with it, without naming it (``launch_training_round``
    puts its flag in front, the API its field beside)."""

    def __init__(self, detail: str, *, code: str = "invalid", field: str = "request"):
        super().__init__(f"{field}: {detail}" if field != "request" else detail)
        self.detail, self.code, self.field = detail, code, field


@dataclass(frozen=True)
class TrainingRoundLaunch:
    export: ExportResult | None
    run: TrainingRun


def _training_check(*, base_model: ModelVersion, config: dict, name: str):
    """``training_run_check`` before a round writes anything, its refusals as TrainingRoundError (ConfigError passes
    through). Returns the engine's TrainConfig."""
    try:
        return training_run_check(name=name, base_model=base_model, dataset_path="", config=config)
    except ExternalModelError as exc:
        raise TrainingRoundError(str(exc), code=exc.code, field="base_model") from exc
    except TrainingRunRefused as exc:
        raise TrainingRoundError(str(exc), code=exc.code, field=exc.field) from exc


def training_round_launch(
    *,
    round_: Round,
    base_model: ModelVersion,
    config: dict,
    name: str,
    evaluate_on: PromptSet | None = None,
    evaluate_limit: int | None = None,
    evaluate_seed: int = 0,
    created_by=None,
    export_now: bool = True,
) -> TrainingRoundLaunch:
    """Export ``round_``'s winner/loser pairs and queue a preference run on them (``export_now=False``: queue the
    export too, on the default queue; ``export`` is then None).

    The base model's directory and the configuration are checked before anything is written; the export is immutable and
    content-addressed, so launching twice from the same judgments reuses the same dataset.
    """
    train_config = _training_check(base_model=base_model, config=config, name=name)
    if not train_config.is_preference:
        raise TrainingRoundError(
            "the round gives winner/loser pairs; set latent_objective or pixel_objective to dpo or simpo",
            field="config",
        )
    follow_up = {}
    if evaluate_on is not None:
        follow_up["evaluate"] = {"prompt_set": evaluate_on.pk, "limit": evaluate_limit, "seed": evaluate_seed}
    if not export_now:
        # The research API: the export reads and copies every pair's images (about a second for 500 pairs of
        # 64 px images), so it runs on the default queue (run_round_export) and the request only checks that
        # the round has a pair.
        counts = preferences_export_counts(round_=round_)
        if counts["pairs"] == 0:
            raise _no_pairs(round_, SimpleNamespace(**counts))
        run = training_run_create(
            name=name, base_model=base_model, dataset_path="", config=config, created_by=created_by,
            source_round=round_, follow_up=follow_up,
        )
        run.phase = EXPORTING_PHASE
        run.save(update_fields=["phase"])
        return TrainingRoundLaunch(export=None, run=run)
    export = preferences_export(round_=round_, out_dir=Path(settings.ARTIFACTS_ROOT) / "preferences")
    if export.pairs == 0:
        raise _no_pairs(round_, export)
    run = training_run_create(
        name=name, base_model=base_model, dataset_path=str(export.path / "manifest.jsonl"), config=config,
        created_by=created_by, source_round=round_, follow_up=follow_up,
    )
    return TrainingRoundLaunch(export=export, run=run)


EXPORTING_PHASE = "exporting the round's pairs"


def _no_pairs(round_: Round, counts) -> TrainingRoundError:
    return TrainingRoundError(
        f"round {round_.pk} has no winner/loser pair yet ({counts.items_complete} complete items, "
        f"{counts.ties} ties, {counts.no_majority} without majority)",
        code="no_pairs", field="round",
    )


def run_round_export(*, run_id: int) -> str:
    """Export a queued run's source round (default queue) and send the run to the gpu queue; a run no longer queued,
    or with its dataset already, is left alone. A round without pairs by now fails the run, with the reason."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update(of=("self",)).select_related("source_round").filter(pk=run_id).first()
        if run is None or run.status != TrainingRun.Status.QUEUED or run.dataset_path or run.source_round is None:
            return "skipped"
        export = preferences_export(round_=run.source_round, out_dir=Path(settings.ARTIFACTS_ROOT) / "preferences")
        if export.pairs == 0:
            run.status, run.finished_at, run.phase = TrainingRun.Status.FAILED, timezone.now(), "failed"
            run.error = str(_no_pairs(run.source_round, export).detail)
            run.save(update_fields=["status", "finished_at", "phase", "error"])
            return "no pairs"
        run.dataset_path, run.phase = str(export.path / "manifest.jsonl"), "queued"
        run.save(update_fields=["dataset_path", "phase"])
        enqueue_on_commit(TRAIN_TASK, run.pk)
    return f"{export.pairs} pairs"


# --- Whole rounds -------------------------------------------------------------------------

ADVANCE_TASK = "training.tasks.rounds_advance"
Stage = TrainingRound.Stage
ACTIVE_STAGES = (Stage.GENERATING, Stage.ANNOTATING, Stage.EXPORTING, Stage.TRAINING, Stage.EVALUATING)


def method_overrides(*, method: str, pixel_weight: float) -> list[str]:
    """``--method M --pixel-weight W`` as engine settings, applied after the config file and before ``--set``.

    Both terms take the method; a pixel weight of 0 trains the latent term alone. Pixel only: add
    ``--set latent_objective=none``.
    """
    if method not in TrainingRound.Method.values:
        raise TrainingRoundError(f"must be one of {', '.join(TrainingRound.Method.values)}, not {method!r}", field="method")
    if not pixel_weight >= 0:
        raise TrainingRoundError(f"must be 0 or more, not {pixel_weight}", field="pixel_weight")
    return [f"latent_objective={method}", f"pixel_objective={method if pixel_weight > 0 else 'none'}",
            f"pixel_weight={float(pixel_weight)}"]


def annotation_round_name(name: str) -> str:
    return f"{name}: best and worst"


@transaction.atomic
def training_round_create(
    *, name: str, base_model: ModelVersion, prompt_set: PromptSet, method: str, pixel_weight: float, config: dict,
    limit: int | None = None, images_per_prompt: int = 5, k: int = 5, seed: int = 0,
    evaluate_on: PromptSet | None = None, evaluate_limit: int | None = None, evaluate_seed: int = 0,
    previous: TrainingRound | None = None, created_by=None, simulated_annotators: str = "",
) -> TrainingRound:
    """Create a round and queue its images: ``images_per_prompt`` of ``base_model`` per prompt, on the gpu queue.

    ``config`` is the whole engine config (file, method and overrides merged). Everything is checked before anything
    is written; raises TrainingRoundError or ConfigError. ``evaluate_on`` defaults to ``prompt_set``.
    """
    method_overrides(method=method, pixel_weight=pixel_weight)  # refuses an unknown method or a negative weight
    train_config = _training_check(base_model=base_model, config=config, name=name)
    if method != TrainingRound.Method.SFT and not train_config.is_preference:
        raise TrainingRoundError(f"method {method} needs latent_objective or pixel_objective = {method}", field="config")
    if method == "sft" and train_config.is_preference:
        raise TrainingRoundError("method sft trains on the best images: set neither objective to dpo or simpo", field="config")
    if TrainingRound.objects.filter(name=name).exists():
        raise TrainingRoundError(f"'{name}' is taken by a training round", code="name_taken", field="name")
    if Round.objects.filter(name=annotation_round_name(name)).exists():
        raise TrainingRoundError(f"the annotation round '{annotation_round_name(name)}' exists", code="name_taken", field="name")
    problem = item_kind(Round.Kind.BEST_WORST).images_check(images_per_prompt)
    if problem:
        raise TrainingRoundError(problem, field="images_per_prompt")
    if k < 1:
        raise TrainingRoundError(f"must be at least 1, not {k}", field="k")
    if simulated_annotators:
        try:
            Policy.parse(simulated_annotators)
        except PolicyError as exc:
            raise TrainingRoundError(str(exc).replace("--policy ", ""),
                                     field="simulated_annotators") from exc
    for field_name, value in (("limit", limit), ("evaluate_limit", evaluate_limit)):
        if value is not None and value < 1:
            raise TrainingRoundError(f"must be at least 1, not {value}", field=field_name)
    prompts = prompts_select(prompt_set=prompt_set, limit=limit, seed=seed)
    if not prompts:
        raise TrainingRoundError(f"the prompt set '{prompt_set.name}' has no prompts", field="prompt_set")
    training_round = TrainingRound.objects.create(
        name=name, base_model=base_model, prompt_set=prompt_set, limit=limit, seed=seed,
        prompt_ids=[prompt.pk for prompt in prompts], images_per_prompt=images_per_prompt, k=k, method=method,
        pixel_weight=pixel_weight, config=config, evaluate_on=evaluate_on or prompt_set,
        evaluate_limit=evaluate_limit, evaluate_seed=evaluate_seed, previous=previous, created_by=created_by,
        simulated_annotators=simulated_annotators,
    )
    pool_generation_create(model_version=base_model, prompts=prompts, images_per_prompt=images_per_prompt, seed=seed)
    return training_round


def training_round_iterate(*, previous: TrainingRound, name: str | None = None, created_by=None) -> TrainingRound:
    """The next round: ``previous``'s settings, with the model it made as the base."""
    model = previous.output_model
    if model is None:
        raise TrainingRoundError(
            f"round {previous.pk} '{previous.name}' is {previous.stage}: it has made no model to iterate on yet",
            code="no_model_yet", field="previous",
        )
    return training_round_create(
        name=name or training_round_next_name(previous), base_model=model, prompt_set=previous.prompt_set,
        method=previous.method, pixel_weight=previous.pixel_weight, config=previous.config, limit=previous.limit,
        images_per_prompt=previous.images_per_prompt, k=previous.k, seed=previous.seed,
        evaluate_on=previous.evaluate_on, evaluate_limit=previous.evaluate_limit,
        evaluate_seed=previous.evaluate_seed, previous=previous, created_by=created_by,
        simulated_annotators=previous.simulated_annotators,
    )


def training_round_next_name(previous: TrainingRound | None, *, base_model: ModelVersion | None = None,
                             method: str = "") -> str:
    """A free name: ``<first base>-<method>-r<N>``, N counting the rounds of the chain."""
    depth, first = 1, previous
    while first is not None:
        depth += 1
        if first.previous is None:
            break
        first = first.previous
    stem = f"{(first.base_model if first else base_model).name}-{previous.method if previous else method}"
    taken = set(TrainingRound.objects.filter(name__startswith=stem).values_list("name", flat=True))
    taken |= set(ModelVersion.objects.filter(name__startswith=stem).values_list("name", flat=True))
    taken |= set(TrainingRun.objects.filter(name__startswith=stem).values_list("name", flat=True))
    name, extra = f"{stem}-r{depth}", 1
    while name in taken or annotation_round_name(name) in taken:
        extra += 1
        name = f"{stem}-r{depth}.{extra}"
    return name


def training_round_by_id_or_name(value: str) -> TrainingRound | None:
    found = TrainingRound.objects.filter(name=value).first()
    if found is None and value.isdigit():
        found = TrainingRound.objects.filter(pk=int(value)).first()
    return found


def training_round_prompts(training_round: TrainingRound) -> list[Prompt]:
    by_id = Prompt.objects.in_bulk(training_round.prompt_ids)
    return [by_id[pk] for pk in training_round.prompt_ids if pk in by_id]


def training_round_jobs(training_round: TrainingRound):
    """The generation jobs of the round's first stage."""
    return pool_generation_jobs(
        model_version=training_round.base_model, prompts=training_round_prompts(training_round),
        images_per_prompt=training_round.images_per_prompt, seed=training_round.seed,
    )


@dataclass(frozen=True)
class StageProgress:
    stage: str
    what: str  # "images", "items", "steps"
    done: int
    total: int


def training_round_progress(training_round: TrainingRound) -> StageProgress | None:
    """How far the current stage is: images generated, items complete, training steps; None when there is no count."""
    stage = training_round.stage
    if stage == Stage.GENERATING:
        return _jobs_progress(stage, training_round_jobs(training_round))
    if stage == Stage.ANNOTATING and training_round.annotation_round is not None:
        summary = round_summary(round_=training_round.annotation_round)
        return StageProgress(stage, "items complete", summary.complete, summary.items)
    if stage == Stage.TRAINING and training_round.training_run is not None:
        run = training_round.training_run
        return StageProgress(stage, "training steps", run.step, run.total_steps or run.config.get("max_train_steps", 0))
    if stage == Stage.EVALUATING and training_round.evaluation_batch is not None:
        return _jobs_progress(stage, training_round.evaluation_batch.jobs.all())
    return None


def _jobs_progress(stage: str, jobs) -> StageProgress:
    return StageProgress(stage, "images generated", jobs.filter(status=GenerationJob.Status.DONE).count(), jobs.count())


class StageFailed(Exception):
    """The stage cannot finish; the round fails with this one-line reason."""


def training_rounds_advance() -> list[int]:
    """Move every active round on as far as it can go (celery beat). Returns the ids of the rounds that moved."""
    moved = []
    for round_id, before in TrainingRound.objects.filter(stage__in=ACTIVE_STAGES).values_list("pk", "stage"):
        if training_round_advance(round_id=round_id).stage != before:
            moved.append(round_id)
    return moved


def training_round_advance(*, round_id: int) -> TrainingRound:
    """Take the round through every stage whose work is done; each transition in its own locked transaction."""
    while True:
        with transaction.atomic():
            training_round = TrainingRound.objects.select_for_update().get(pk=round_id)
            stage = training_round.stage
            if stage not in ACTIVE_STAGES:
                return training_round
            try:
                with transaction.atomic():  # a failed step leaves nothing of its own behind
                    moved = _TRANSITIONS[stage](training_round)
            except StageFailed as exc:
                _round_failed(training_round, str(exc))
                return training_round
            except Exception as exc:  # noqa: BLE001 - whatever stops a stage stops the round, with its reason
                logger.exception("training round %s: stage %s failed", round_id, stage)
                _round_failed(training_round, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
                return training_round
            if moved is None:
                return training_round
            training_round.stage, training_round.stage_changed_at = moved, timezone.now()
            fields = ["stage", "stage_changed_at"]
            if moved == Stage.DONE:
                training_round.finished_at = timezone.now()
                fields.append("finished_at")
            training_round.save(update_fields=fields)
            logger.info("training round %s: %s -> %s", round_id, stage, moved)


def _round_failed(training_round: TrainingRound, reason: str) -> None:
    training_round.failed_stage, training_round.stage = training_round.stage, Stage.FAILED
    training_round.error, training_round.finished_at = reason[:2000], timezone.now()
    training_round.save(update_fields=["failed_stage", "stage", "error", "finished_at"])


def _generated(training_round: TrainingRound) -> str | None:
    """Every image is there: open the best/worst round over them."""
    jobs = training_round_jobs(training_round)
    failed = jobs.filter(status=GenerationJob.Status.FAILED).order_by("id").first()
    if failed is not None:
        raise StageFailed(f"generation job {failed.pk} failed: {failed.error}")
    expected = len(training_round.prompt_ids) * training_round.images_per_prompt
    if jobs.filter(status=GenerationJob.Status.DONE).count() < expected:
        return None
    kind = item_kind(Round.Kind.BEST_WORST)
    rows = list(
        Image.objects.filter(pk__in=jobs.values("image_id")).order_by("prompt_id", "seed", "id")
        .values_list("id", "prompt_id", "seed", "model_version_id")
    )
    items = kind.items_build(rows=rows, model_ids=[training_round.base_model_id], n=training_round.images_per_prompt)
    training_round.annotation_round = round_create(
        name=annotation_round_name(training_round.name), kind=kind.value, items=items, k=training_round.k,
        created_by=training_round.created_by,
    )
    training_round.save(update_fields=["annotation_round"])
    return Stage.ANNOTATING


def _annotated(training_round: TrainingRound) -> str | None:
    """Every item has its K judgments (or the round was closed early)."""
    round_ = training_round.annotation_round
    if round_ is None:
        raise StageFailed("its best/worst round was deleted")
    summary = round_summary(round_=round_)
    if training_round.simulated_annotators and summary.complete < summary.items and round_.status != Round.Status.CLOSED:
        round_simulate(  # synthetic judgments, flagged as such in the export
            round_=round_, annotators=synthetic_annotators(count=training_round.k),
            policy=Policy.parse(training_round.simulated_annotators), seed=training_round.seed,
        )
        summary = round_summary(round_=round_)
    if round_.status == Round.Status.CLOSED or summary.complete == summary.items:
        return Stage.EXPORTING
    return None


def _exported(training_round: TrainingRound) -> str:
    """Export the winner/loser pairs and queue the run on them."""
    round_ = training_round.annotation_round
    export = preferences_export(round_=round_, out_dir=Path(settings.ARTIFACTS_ROOT) / "preferences")
    if export.pairs == 0:
        raise StageFailed(
            f"round {round_.pk} gave no winner/loser pair ({export.items_complete} complete items, "
            f"{export.ties} ties, {export.no_majority} without majority)"
        )
    manifest = export.path / "manifest.jsonl"
    dataset = manifest if training_round.method != TrainingRound.Method.SFT else winners_folder(manifest)
    evaluate = {"prompt_set": training_round.evaluate_on_id, "limit": training_round.evaluate_limit,
                "seed": training_round.evaluate_seed}
    training_round.training_run = training_run_create(
        name=training_round.name, base_model=training_round.base_model, dataset_path=str(dataset),
        config=training_round.config, created_by=training_round.created_by, source_round=round_,
        follow_up={"evaluate": evaluate},
    )
    training_round.dataset_path, training_round.pairs = str(dataset), export.pairs
    training_round.save(update_fields=["training_run", "dataset_path", "pairs"])
    return Stage.TRAINING


def _trained(training_round: TrainingRound) -> str | None:
    """The run registered its model (the evaluation app then opens the evaluation)."""
    run = training_round.training_run
    if run is None:
        raise StageFailed("its training run was deleted")
    if run.status in (TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED):
        raise StageFailed(f"training run {run.pk} '{run.name}' {run.status}: {run.error or 'no reason given'}")
    if run.status != TrainingRun.Status.SUCCEEDED or run.output_model_id is None:
        return None
    return Stage.EVALUATING


def _evaluated(training_round: TrainingRound) -> str | None:
    """The evaluation's images are done; its annotation rounds open by themselves."""
    batch = training_round.evaluation_batch
    if batch is None:
        return None
    jobs = batch.jobs.all()
    failed = jobs.filter(status=GenerationJob.Status.FAILED).order_by("id").first()
    if failed is not None:
        raise StageFailed(f"evaluation image job {failed.pk} failed: {failed.error}")
    if jobs.exclude(status=GenerationJob.Status.DONE).exists():
        return None
    return Stage.DONE


_TRANSITIONS = {
    Stage.GENERATING: _generated, Stage.ANNOTATING: _annotated, Stage.EXPORTING: _exported,
    Stage.TRAINING: _trained, Stage.EVALUATING: _evaluated,
}


def training_round_evaluation_record(*, run: TrainingRun, batch: GenerationBatch | None, error: str = "") -> None:
    """The evaluation app opened the evaluation of ``run``'s model (its images are ``batch``), or could not."""
    with transaction.atomic():
        training_round = TrainingRound.objects.select_for_update().filter(training_run=run).first()
        if training_round is None:
            return
        if batch is not None:
            training_round.evaluation_batch = batch
            training_round.save(update_fields=["evaluation_batch"])
        elif training_round.stage in ACTIVE_STAGES:
            _round_failed(training_round, f"the evaluation could not be opened: {error}")


def winners_folder(manifest: Path) -> Path:
    """An SFT image folder (``metadata.jsonl``) of the exported pairs' winners, next to the immutable export."""
    folder = Path(settings.ARTIFACTS_ROOT) / "best-images" / manifest.parent.name
    metadata = folder / "metadata.jsonl"
    if metadata.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        winner = os.path.relpath(manifest.parent / row["winner"], folder)
        lines.append(json.dumps({"file_name": winner, "text": row["caption"]}, ensure_ascii=False))
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(handle.name, metadata)
    return folder
