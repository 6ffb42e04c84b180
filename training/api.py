"""The research API for training: runs (create, list, read, metrics, cancel, resume) and whole training rounds.

Researchers only (token or session), with the annotation API's error shape. A run's or a round's
settings are read and validated as the commands read them (``training.engine.config.read_settings``,
then the services' own checks); a bad setting is a 400 that names it (``config`` → the setting), and
nothing is written. Work is queued, never done in the request: a create answers 202 with the URL to poll.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import asdict
from pathlib import Path

from django.db import transaction
from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from annotation.api import ERRORS, ResearcherMixin
from annotation.errors import Conflict, InvalidInput
from annotation.models import Round
from catalog.models import ModelVersion, PromptSet
from catalog.services import ExternalModelError
from training import services
from training.engine import progress as run_progress
from training.engine.config import ConfigError, LaunchConfig, TrainConfig, read_settings
from training.models import TrainingRound, TrainingRun
from training.rounds import (
    TrainingRoundError, method_overrides, training_round_create, training_round_iterate, training_round_launch,
    training_round_next_name, training_round_progress,
)

INT_MAX, BIGINT_MAX, SMALLINT_MAX = 2**31 - 1, 2**63 - 1, 2**15 - 1
# The name of a training round is also that of its best/worst round, "<name>: best and worst" (200 characters).
ROUND_NAME_MAX = 180


def validated(serializer_class, data):
    """The request's input through ``serializer_class``, valid (else the 400 naming the field)."""
    params = serializer_class(data=data)
    params.is_valid(raise_exception=True)
    return params


def accepted(body: dict) -> Response:
    """202: the work is queued; ``Location`` (and the body's ``url``) is where to poll the new record."""
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


def refused(detail: str, *, field: str, code: str = "invalid") -> InvalidInput:
    """A 400 that names ``field`` with a machine-readable ``code``."""
    error = InvalidInput(detail, field=field)
    error.code = code
    return error


def config_refused(exc: ConfigError) -> ValidationError:
    """A bad setting as a 400 under ``config``, keyed by the setting when it is one (``{"config": {"pixel_crop": […]}}``)."""
    if exc.field in TrainConfig.model_fields or exc.field in LaunchConfig.model_fields:
        return ValidationError({"config": {exc.field: [str(exc)]}})
    return ValidationError({"config": [str(exc)]})


def _no_nul(value, path: str = "config"):
    """PostgreSQL's JSON refuses NUL characters: a setting that holds one is refused here, by name."""
    if isinstance(value, str) and "\x00" in value:
        raise serializers.ValidationError(f"{path}: must not contain NUL characters")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, path)
            _no_nul(item, f"{path}.{key}")
    if isinstance(value, list):
        for item in value:
            _no_nul(item, path)


class SettingsInputSerializer(serializers.Serializer):
    """A run's settings, merged as ``manage.py train --config F --set k=v`` merges them: the file, then ``config``,
    then ``overrides``; the file's model, data and output paths are left out (the run decides them)."""

    config_file = serializers.ChoiceField(
        choices=list(services.training_config_files()), required=False,
        help_text="One of the example configs in training/configs/, by file name.",
    )
    config = serializers.DictField(
        required=False, default=dict,
        help_text="Engine settings (TrainConfig, plus the launch settings gpus and accelerate_config) as a JSON "
                  "object, over the file's; see docs/training.md for every setting.",
    )
    overrides = serializers.ListField(
        child=serializers.CharField(max_length=1000), required=False, default=list, max_length=200,
        help_text="key=value strings, applied last, typed by the setting as --set types them.",
    )

    def validate_config(self, value):
        _no_nul(value)
        return value

    def settings(self, *, first: list[str] = ()) -> dict:
        """The merged settings (``first``: overrides that go before the caller's, e.g. a round's method). Raises
        the 400 of a bad setting."""
        data = self.validated_data
        path = services.training_config_files()[data["config_file"]] if data.get("config_file") else None
        try:
            values, _ = read_settings(path, [*first, *data["overrides"]], leave_out=services.RUN_DECIDED,
                                      values=data["config"])
        except ConfigError as exc:
            raise config_refused(exc) from exc
        return values


class TrainingRunSerializer(serializers.ModelSerializer):
    base_model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    output_model = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    cancel_requested = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id", "url", "name", "status", "phase", "step", "total_steps", "progress", "progress_at", "base_model",
            "output_model", "source_round", "dataset_path", "config", "metrics", "error", "attempts", "worker",
            "cancel_requested", "created_at", "started_at", "finished_at",
        ]
        read_only_fields = fields

    def get_cancel_requested(self, obj) -> bool:
        return obj.cancel_requested_at is not None

    def get_url(self, obj) -> str:
        return reverse("research-run-detail", args=[obj.pk])


class TrainingRunDetailSerializer(TrainingRunSerializer):
    class Meta(TrainingRunSerializer.Meta):
        fields = [*TrainingRunSerializer.Meta.fields, "history", "log_tail"]
        read_only_fields = fields


class TrainingRunCreateSerializer(SettingsInputSerializer):
    """``manage.py train`` (``dataset_path``) or ``manage.py launch_training_round ROUND`` (``round``): one of the two."""

    name = serializers.CharField(max_length=200, help_text="Name of the run and of the model it produces.")
    base_model = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all(),
                                              help_text="The model version to train, by name.")
    dataset_path = serializers.CharField(
        max_length=1000, required=False,
        help_text="Absolute path, as the workers see it, of a JSONL manifest or parquet of pairs, or an SFT image "
                  "folder with metadata.jsonl.",
    )
    round = serializers.PrimaryKeyRelatedField(
        queryset=Round.objects.all(), required=False,
        help_text="A collected annotation round: its winner/loser pairs are exported and trained on.",
    )
    evaluate_on = serializers.SlugRelatedField(
        slug_field="name", queryset=PromptSet.objects.all(), required=False, allow_null=True,
        help_text="With round: evaluate the new model against the base on this prompt set.",
    )
    evaluate_limit = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False, allow_null=True)
    evaluate_seed = serializers.IntegerField(min_value=-BIGINT_MAX, max_value=BIGINT_MAX, default=0)

    def validate(self, data):
        if ("dataset_path" in data) == ("round" in data):
            raise serializers.ValidationError({"dataset_path": ["give dataset_path or round, not both nor neither"]})
        if "dataset_path" in data:
            given = [key for key in ("evaluate_on", "evaluate_limit") if data.get(key) is not None]
            if given:
                raise serializers.ValidationError({given[0]: ["only with round (a run on a dataset is not evaluated)"]})
            path = Path(data["dataset_path"])
            if not path.is_absolute():
                raise serializers.ValidationError({"dataset_path": ["must be an absolute path"]})
            if not path.exists():
                raise serializers.ValidationError({"dataset_path": [f"{path} does not exist"]})
        return data


class MetricsQuerySerializer(serializers.Serializer):
    every = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False,
                                     help_text="Every Nth logged point of the whole series (the 1st, the N+1th…).")
    points = serializers.IntegerField(min_value=2, max_value=2000, required=False,
                                      help_text="At most this many points, evenly spaced, the first and last kept; "
                                                "one page.")
    after_step = serializers.IntegerField(min_value=0, max_value=BIGINT_MAX, default=0,
                                          help_text="Only points after this step (the cursor of ``next``).")
    limit = serializers.IntegerField(min_value=1, max_value=2000, default=1000, help_text="Points per page.")

    def validate(self, data):
        if "every" in data and "points" in data:
            raise serializers.ValidationError({"points": ["give every or points, not both"]})
        return data


class MetricsSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    source = serializers.ChoiceField(
        choices=["metrics.jsonl", "history"],
        help_text="metrics.jsonl: every logged step, from the run folder; history: the run record's thinned curve "
                  "(at most 1,000 points), when this server cannot read the run folder.",
    )
    total = serializers.IntegerField(help_text="Logged points in the source.")
    points = serializers.ListField(child=serializers.DictField(), help_text="{step, loss, latent_loss, …} in order.")
    next = serializers.CharField(allow_null=True, help_text="The next page, or null.")


class MetricsSeries:
    """A run's logged points, each parsed only when a page takes it: a long run's metrics.jsonl holds 100,000 lines
    (38 MB), which would take seconds to parse whole. The points' steps increase (a resumed run's writer drops the
    lines past its checkpoint), so the ``after_step`` cursor is a binary search."""

    def __init__(self, run: TrainingRun):
        path = Path(run.output_dir) / run_progress.METRICS_FILE if run.output_dir else None
        try:
            self.rows: list = [line for line in path.read_bytes().splitlines() if line.strip()] if path else None
            self.source = "metrics.jsonl"
        except OSError:  # no run folder on this server (or not yet): the record's thinned curve
            self.rows = None
        if self.rows is None:
            self.rows, self.source = [point for point in run.history or [] if isinstance(point, dict)], "history"

    def point(self, position: int) -> dict | None:
        row = self.rows[position]
        if isinstance(row, dict):
            return row
        try:
            point = json.loads(row)
        except ValueError:  # a line being written
            return None
        return point if isinstance(point, dict) else None

    def step(self, position: int) -> float:
        point = self.point(position)
        step = point.get("step") if point is not None else None
        return step if isinstance(step, (int, float)) else math.inf

    def positions(self, *, every: int, after_step: int) -> range:
        """Every ``every``-th position of the whole series whose step is after ``after_step``."""
        kept = range(0, len(self.rows), every)
        return kept[bisect.bisect_right(kept, after_step, key=self.step):]


def thinned(positions: range, *, at_most: int) -> list[int]:
    """At most ``at_most`` positions, evenly spaced, the first and the last kept."""
    if len(positions) <= at_most:
        return list(positions)
    last = len(positions) - 1
    return [positions[index] for index in sorted({round(i * last / (at_most - 1)) for i in range(at_most)})]


@extend_schema_view(
    list=extend_schema(responses={200: TrainingRunSerializer(many=True), **ERRORS}),
    retrieve=extend_schema(responses={200: TrainingRunDetailSerializer, **ERRORS}),
)
class TrainingRunViewSet(ResearcherMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = TrainingRun.objects.select_related("base_model", "output_model").order_by("-created_at", "-id")

    def get_serializer_class(self):
        return TrainingRunDetailSerializer if self.action != "list" else TrainingRunSerializer

    @extend_schema(request=TrainingRunCreateSerializer, responses={202: TrainingRunDetailSerializer, **ERRORS})
    def create(self, request):
        """Queue a run on the gpu queue: on a dataset (`dataset_path`, as `manage.py train`) or on a collected
        annotation round's pairs (`round`, as `manage.py launch_training_round ROUND`; the pairs are exported on the
        default queue first, the run's `dataset_path` empty and its phase "exporting the round's pairs" meanwhile).
        Everything is checked first; a refusal writes nothing."""
        params = validated(TrainingRunCreateSerializer, request.data)
        data, config = params.validated_data, params.settings()
        try:
            with transaction.atomic():
                if "round" in data:
                    run = training_round_launch(
                        round_=data["round"], base_model=data["base_model"], config=config, name=data["name"],
                        evaluate_on=data.get("evaluate_on"), evaluate_limit=data.get("evaluate_limit"),
                        evaluate_seed=data["evaluate_seed"], created_by=request.user, export_now=False,
                    ).run
                else:
                    run = services.training_run_create(
                        name=data["name"], base_model=data["base_model"], dataset_path=data["dataset_path"],
                        config=config, created_by=request.user,
                    )
        except ConfigError as exc:
            raise config_refused(exc) from exc
        except ExternalModelError as exc:
            raise refused(str(exc), field="base_model", code=exc.code) from exc
        except services.TrainingRunRefused as exc:
            raise refused(str(exc), field=exc.field, code=exc.code) from exc
        except TrainingRoundError as exc:
            raise refused(exc.detail, field=exc.field, code=exc.code) from exc
        return accepted(TrainingRunDetailSerializer(run).data)

    @extend_schema(
        parameters=[MetricsQuerySerializer], responses={200: MetricsSerializer, **ERRORS},
        description="The run's logged metrics, step by step: from the run folder's metrics.jsonl (every logged "
                    "step) when this server can read it, else from the record's history (thinned to at most 1,000 "
                    "points); `source` says which. `every=N` keeps every Nth point, `points=N` thins to N evenly "
                    "spaced points in one page; pages of `limit` points follow `next` (an `after_step` cursor).",
    )
    @action(detail=True, methods=["get"])
    def metrics(self, request, pk=None):
        run = self.get_object()
        query = validated(MetricsQuerySerializer, request.query_params).validated_data
        series = MetricsSeries(run)
        positions = series.positions(every=query.get("every", 1), after_step=query["after_step"])
        if "points" in query:
            taken, more = thinned(positions, at_most=query["points"]), False
        else:
            taken, more = positions[:query["limit"]], len(positions) > query["limit"]
        page = [point for point in map(series.point, taken) if point is not None]
        following = None
        if more:
            cursor = request.query_params.copy()
            cursor["after_step"] = str(series.step(taken[-1]))
            following = request.build_absolute_uri(f"{request.path}?{cursor.urlencode()}")
        return Response({"run": run.pk, "source": series.source, "total": len(series.rows), "points": page,
                         "next": following})

    def _state_change(self, change):
        run = self.get_object()
        try:
            run = change(run=run)
        except services.RunStateError as exc:
            raise Conflict(str(exc), code=exc.code) from exc
        run.refresh_from_db()
        return Response(TrainingRunDetailSerializer(run).data)

    @extend_schema(request=None, responses={200: TrainingRunDetailSerializer, **ERRORS},
                   description="Cancel a queued run at once, a running one at its next step boundary (409 not_cancellable once finished).")
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._state_change(services.training_run_cancel)

    @extend_schema(request=None, responses={200: TrainingRunDetailSerializer, **ERRORS},
                   description="Queue a cancelled or failed run again, from its latest checkpoint (409 not_resumable otherwise).")
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._state_change(services.training_run_resume)


# --- training rounds --------------------------------------------------------------------------


class StageProgressSerializer(serializers.Serializer):
    stage = serializers.CharField()
    what = serializers.CharField(help_text="What is counted: images generated, items complete, training steps.")
    done = serializers.IntegerField()
    total = serializers.IntegerField()


class TrainingRoundSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    failed_stage = serializers.CharField(read_only=True, help_text="The stage it failed in; blank unless failed.")
    base_model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    prompt_set = serializers.SlugRelatedField(slug_field="name", read_only=True)
    evaluate_on = serializers.SlugRelatedField(slug_field="name", read_only=True)
    progress = serializers.SerializerMethodField(help_text="The current stage's count; null when it has none.")
    output_model = serializers.SerializerMethodField(help_text="The model the round made (name), once trained.")
    output_model_id = serializers.SerializerMethodField()
    prompts = serializers.SerializerMethodField(help_text="Prompts drawn for the round.")

    class Meta:
        model = TrainingRound
        fields = [
            "id", "url", "name", "stage", "failed_stage", "error", "progress",
            "base_model", "prompt_set", "prompts", "limit", "seed", "images_per_prompt", "k", "method", "pixel_weight",
            "config", "evaluate_on", "evaluate_limit", "evaluate_seed", "simulated_annotators", "previous",
            # What each stage made: the best/worst round, the exported pairs, the run, its model, the evaluation's
            # images (the evaluation: GET /api/research/evaluations/?batch=<evaluation_batch>).
            "annotation_round", "dataset_path", "pairs", "training_run", "output_model", "output_model_id",
            "evaluation_batch", "created_at", "stage_changed_at", "finished_at",
        ]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        return reverse("research-training-round-detail", args=[obj.pk])

    @extend_schema_field(StageProgressSerializer(allow_null=True))
    def get_progress(self, obj):
        progress = training_round_progress(obj)
        return asdict(progress) if progress is not None else None

    def get_output_model(self, obj) -> str | None:
        model = obj.output_model
        return model.name if model is not None else None

    def get_output_model_id(self, obj) -> int | None:
        run = obj.training_run
        return run.output_model_id if run is not None else None

    def get_prompts(self, obj) -> int:
        return len(obj.prompt_ids)


class TrainingRoundCreateSerializer(SettingsInputSerializer):
    """``manage.py launch_training_round --base M --prompts SET --method X …``."""

    name = serializers.CharField(
        max_length=ROUND_NAME_MAX, required=False,
        help_text="Name of the round, its run and its model (default: <base>-<method>-r1, or the next free one).",
    )
    base_model = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all())
    prompt_set = serializers.SlugRelatedField(slug_field="name", queryset=PromptSet.objects.all(),
                                              help_text="The prompts whose images the round generates.")
    method = serializers.ChoiceField(choices=TrainingRound.Method.values, help_text="Objective of both terms.")
    pixel_weight = serializers.FloatField(
        default=8.0, max_value=1e9, help_text="μ (λ for sft) of the pixel term; 0 trains the latent term alone.")
    limit = serializers.IntegerField(min_value=-INT_MAX, max_value=INT_MAX, required=False, allow_null=True,
                                     help_text="A seeded sample of this many prompts (default: all).")
    images_per_prompt = serializers.IntegerField(min_value=-SMALLINT_MAX, max_value=SMALLINT_MAX, default=5)
    k = serializers.IntegerField(min_value=-SMALLINT_MAX, max_value=SMALLINT_MAX, default=5,
                                 help_text="Judgments per best/worst item.")
    seed = serializers.IntegerField(min_value=-BIGINT_MAX, max_value=BIGINT_MAX, default=0)
    evaluate_on = serializers.SlugRelatedField(
        slug_field="name", queryset=PromptSet.objects.all(), required=False, allow_null=True,
        help_text="The new model is evaluated against the base on this set (default: prompt_set).")
    evaluate_limit = serializers.IntegerField(min_value=-INT_MAX, max_value=INT_MAX, required=False, allow_null=True)
    evaluate_seed = serializers.IntegerField(min_value=-BIGINT_MAX, max_value=BIGINT_MAX, default=0)
    simulated_annotators = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True,
        help_text="noisy_oracle, random or prefer_model:NAME: K synthetic annotators judge the best/worst round as it "
                  "opens (demos, toy studies). Blank: people judge it.",
    )


class TrainingRoundIterateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=ROUND_NAME_MAX, required=False,
                                 help_text="Name of the next round (default: the chain's next, <base>-<method>-rN).")


def _round_refused(exc: TrainingRoundError | ConfigError) -> Exception:
    if isinstance(exc, ConfigError):
        return config_refused(exc)
    return refused(exc.detail, field=exc.field, code=exc.code)


@extend_schema_view(
    list=extend_schema(responses={200: TrainingRoundSerializer(many=True), **ERRORS}),
    retrieve=extend_schema(responses={200: TrainingRoundSerializer, **ERRORS}),
)
class TrainingRoundViewSet(ResearcherMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Whole training rounds: generate → best/worst round → export → train → evaluate (``training.rounds``)."""

    queryset = TrainingRound.objects.select_related(
        "base_model", "prompt_set", "evaluate_on", "training_run__output_model", "annotation_round",
        "evaluation_batch",
    ).order_by("-created_at", "-id")
    serializer_class = TrainingRoundSerializer

    def _accepted(self, training_round: TrainingRound) -> Response:
        return accepted(TrainingRoundSerializer(self.get_queryset().get(pk=training_round.pk)).data)

    @extend_schema(request=TrainingRoundCreateSerializer, responses={202: TrainingRoundSerializer, **ERRORS})
    def create(self, request):
        """Start a whole round, as `manage.py launch_training_round --base --prompts --method`: its images are queued
        on the gpu queue and the stages move on by themselves. Settings: the file, then `config`, then the method's
        objectives and pixel_weight, then `overrides`."""
        params = validated(TrainingRoundCreateSerializer, request.data)
        data = params.validated_data
        try:
            config = params.settings(first=method_overrides(method=data["method"], pixel_weight=data["pixel_weight"]))
            with transaction.atomic():  # as the command: all of the round, or nothing
                training_round = training_round_create(
                    name=data.get("name") or training_round_next_name(None, base_model=data["base_model"],
                                                                      method=data["method"]),
                    base_model=data["base_model"], prompt_set=data["prompt_set"], method=data["method"],
                    pixel_weight=data["pixel_weight"], config=config, limit=data.get("limit"),
                    images_per_prompt=data["images_per_prompt"], k=data["k"], seed=data["seed"],
                    evaluate_on=data.get("evaluate_on"), evaluate_limit=data.get("evaluate_limit"),
                    evaluate_seed=data["evaluate_seed"], created_by=request.user,
                    simulated_annotators=data["simulated_annotators"],
                )
        except (TrainingRoundError, ConfigError) as exc:
            raise _round_refused(exc) from exc
        return self._accepted(training_round)

    @extend_schema(
        request=TrainingRoundIterateSerializer, responses={202: TrainingRoundSerializer, **ERRORS},
        description="Start the next round: this round's settings, the model it made as the base "
                    "(400 no_model_yet before it has made one).",
    )
    @action(detail=True, methods=["post"])
    def iterate(self, request, pk=None):
        previous = self.get_object()
        name = validated(TrainingRoundIterateSerializer, request.data or {}).validated_data.get("name")
        try:
            with transaction.atomic():
                training_round = training_round_iterate(previous=previous, name=name, created_by=request.user)
        except (TrainingRoundError, ConfigError) as exc:
            raise _round_refused(exc) from exc
        return self._accepted(training_round)
