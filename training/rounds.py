"""A training round: a finished annotation round's pairs become a dataset, a run, a model,
and (optionally) an evaluation of the new model against its base.

    annotation round ──export──► preference dataset ──gpu task──► checkpoint ──► ModelVersion
                                                                           └──► evaluation (gpu images → rounds)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from annotation.exports import ExportResult, preferences_export
from annotation.models import Round
from catalog.models import ModelVersion, PromptSet
from catalog.services import ExternalModelError, model_weights_check
from training.models import TrainingRun
from training.services import training_config_validate, training_run_create


class TrainingRoundError(ValueError):
    """A refused training round; nothing was created. ``code`` says why, for machines."""

    def __init__(self, message: str, *, code: str = "invalid"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TrainingRoundLaunch:
    export: ExportResult
    run: TrainingRun


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
) -> TrainingRoundLaunch:
    """Export ``round_``'s winner/loser pairs and queue a preference run on them.

    The base model's directory and the configuration are checked before anything is written; the export is immutable and
    content-addressed, so launching twice from the same judgments reuses the same dataset.
    """
    try:
        model_weights_check(model_version=base_model, purpose="trained")
    except ExternalModelError as exc:
        raise TrainingRoundError(f"--base-model: {exc}", code=exc.code) from exc
    if not Path(base_model.local_path).is_dir():
        raise TrainingRoundError(
            f"base model '{base_model.name}': its pipeline directory {base_model.local_path} does not exist"
        )
    if TrainingRun.objects.filter(name=name).exists() or ModelVersion.objects.filter(name=name).exists():
        raise TrainingRoundError(f"--name: '{name}' is taken by a training run or a model")
    train_config = training_config_validate(base_model=base_model, dataset_path="pairs.jsonl", config=config)
    if not train_config.is_preference:
        raise TrainingRoundError(
            "config: the round gives winner/loser pairs; set latent_objective or pixel_objective to dpo or simpo"
        )
    export = preferences_export(round_=round_, out_dir=Path(settings.ARTIFACTS_ROOT) / "preferences")
    if export.pairs == 0:
        raise TrainingRoundError(
            f"round {round_.pk} has no winner/loser pair yet ({export.items_complete} complete items, "
            f"{export.ties} ties, {export.no_majority} without majority)"
        )
    follow_up = {}
    if evaluate_on is not None:
        follow_up["evaluate"] = {"prompt_set": evaluate_on.pk, "limit": evaluate_limit, "seed": evaluate_seed}
    run = training_run_create(
        name=name, base_model=base_model, dataset_path=str(export.path / "manifest.jsonl"), config=config,
        created_by=created_by, source_round=round_, follow_up=follow_up,
    )
    return TrainingRoundLaunch(export=export, run=run)
