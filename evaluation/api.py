"""The research API for evaluations: create one, read its status, its report (JSON, CSV, LaTeX, text) and its chart.

Researchers only (token or session), with the annotation API's error shape. No request computes a
report: the report and the chart are the stored report (``services.report_latest``), which a
`default` worker recomputes when the evaluation has moved on; before the first one is stored they
answer 202 with ``Retry-After``.
"""

from __future__ import annotations

from django.db.models import Count
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, renderers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from annotation.api import ERRORS, ResearcherMixin
from annotation.errors import InvalidInput
from annotation.serializers import ErrorSerializer
from catalog.models import GenerationJob, ModelVersion, PromptSet
from catalog.services import ExternalModelError
from evaluation.charts import CHART_FORMATS
from evaluation.models import CRITERIA, EvaluationRound
from evaluation.report_text import report_render
from evaluation.services import EvaluationError, LatestReport, evaluation_start, report_chart, report_latest
from evaluation.views import RETRY_AFTER_SECONDS
from training.api import accepted, refused as input_refused, validated

INT_MAX, BIGINT_MAX, SMALLINT_MAX = 2**31 - 1, 2**63 - 1, 2**15 - 1
# The evaluation's generation batch is labelled "evaluation <name>" (200 characters).
EVALUATION_NAME_MAX = 180
# The service names the prompt set "prompts" (the command's --prompts); the API's field is prompt_set.
SERVICE_FIELDS = {"prompts": "prompt_set"}


class EvaluationSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    prompt_set = serializers.SlugRelatedField(slug_field="name", read_only=True)
    models = serializers.SerializerMethodField(help_text="Model names in order: the first is Model A.")
    images = serializers.SerializerMethodField(help_text="Generation jobs: {done, failed, total}.")

    class Meta:
        model = EvaluationRound
        fields = [
            "id", "url", "name", "status", "models", "prompt_set", "limit", "seed", "k", "criteria", "seed_policy",
            "generation_batch", "images", "annotation_rounds", "missing_prompts", "created_at",
        ]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        return reverse("research-evaluation-detail", args=[obj.pk])

    def get_models(self, obj) -> list[str]:
        return [entry.model_version.name for entry in sorted(obj.entries.all(), key=lambda e: e.position)]

    @extend_schema_field({"type": "object", "properties": {k: {"type": "integer"} for k in ("done", "failed", "total")}})
    def get_images(self, obj):
        jobs = {row["status"]: row["n"] for row in obj.jobs.values("status").annotate(n=Count("id"))}
        return {"done": jobs.get(GenerationJob.Status.DONE, 0), "failed": jobs.get(GenerationJob.Status.FAILED, 0),
                "total": sum(jobs.values())}


class ReportStatusSerializer(serializers.Serializer):
    fresh = serializers.BooleanField(help_text="The stored report counts every judgment there is now.")
    computed_at = serializers.DateTimeField(allow_null=True)
    report_judgments = serializers.IntegerField(allow_null=True, help_text="Judgments the stored report counts.")
    judgments = serializers.IntegerField(help_text="Judgments (not undone) now.")


class EvaluationDetailSerializer(EvaluationSerializer):
    report = serializers.SerializerMethodField()

    class Meta(EvaluationSerializer.Meta):
        fields = [*EvaluationSerializer.Meta.fields, "report"]
        read_only_fields = fields

    @extend_schema_field(ReportStatusSerializer)
    def get_report(self, obj):
        return report_status(self.context["latest"])


def report_status(latest: LatestReport) -> dict:
    """Whether the stored report is current (the report page's status.json says the same)."""
    stored = latest.stored
    return {"fresh": latest.fresh, "computed_at": stored.computed_at,
            "report_judgments": stored.judgment_count if stored.data is not None else None,
            "judgments": latest.judgment_count}


class EvaluationCreateSerializer(serializers.Serializer):
    """``manage.py create_evaluation``: the same options, the same checks (``services.evaluation_start``)."""

    models = serializers.ListField(
        child=serializers.CharField(max_length=200), max_length=50,
        help_text="Model version names, in order: the first is Model A of each pair.")
    prompt_set = serializers.SlugRelatedField(slug_field="name", queryset=PromptSet.objects.all())
    limit = serializers.IntegerField(min_value=-INT_MAX, max_value=INT_MAX, required=False, allow_null=True,
                                     help_text="A seeded sample of this many prompts (default: all).")
    seed = serializers.IntegerField(min_value=-BIGINT_MAX, max_value=BIGINT_MAX, default=0,
                                    help_text="Derives each prompt's image seed.")
    k = serializers.IntegerField(min_value=-SMALLINT_MAX, max_value=SMALLINT_MAX, default=5,
                                 help_text="Judgments per item.")
    criteria = serializers.ListField(child=serializers.CharField(max_length=50), max_length=10, default=list(CRITERIA),
                                     help_text=f"What to measure, one annotation round each: {', '.join(CRITERIA)}.")
    name = serializers.CharField(max_length=EVALUATION_NAME_MAX, required=False, default="", allow_blank=True,
                                 help_text="Default: the models, the set and the seed.")
    from_existing = serializers.BooleanField(
        default=False, help_text="Fill the jobs from existing images and create the rounds now (external models).")
    seed_policy = serializers.CharField(
        max_length=20, default=EvaluationRound.SeedPolicy.EVALUATION,
        help_text="With from_existing: evaluation (the prompt's evaluation seed) or any (any image of the model and "
                  "prompt).")

    def validate_models(self, names):
        found = {m.name: m for m in ModelVersion.objects.filter(name__in=names)}
        unknown = [name for name in names if name not in found]
        if unknown:
            raise serializers.ValidationError(f"no model version named {', '.join(map(repr, unknown))}")
        return [found[name] for name in names]


def refused(exc: EvaluationError) -> InvalidInput:
    return input_refused(exc.detail, field=SERVICE_FIELDS.get(exc.field, exc.field or "request"))


class ReportRenderer(renderers.BaseRenderer):
    """A stored report as ``report_render`` writes it (what ``manage.py evaluation_report --format F`` prints)."""

    report_format = ""
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return report_render(data, self.report_format).encode("utf-8")


class ReportJSONRenderer(ReportRenderer):
    media_type, format, report_format = "application/json", "json", "json"
    charset = None


class ReportCSVRenderer(ReportRenderer):
    media_type, format, report_format = "text/csv", "csv", "csv"


class ReportLaTeXRenderer(ReportRenderer):
    media_type, format, report_format = "application/x-tex", "latex", "latex"


class ReportTextRenderer(ReportRenderer):
    media_type, format, report_format = "text/plain", "table", "table"


class ChartRenderer(renderers.BaseRenderer):
    """The stored report's win/tie/loss bars (``evaluation.charts``)."""

    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data  # the stored chart's bytes (services.report_chart)


class PNGRenderer(ChartRenderer):
    media_type, format = CHART_FORMATS["png"], "png"


class SVGRenderer(ChartRenderer):
    media_type, format = CHART_FORMATS["svg"], "svg"


REPORT_RENDERERS = [ReportJSONRenderer, ReportCSVRenderer, ReportLaTeXRenderer, ReportTextRenderer]
CHART_RENDERERS = [PNGRenderer, SVGRenderer]
PENDING = OpenApiResponse(ErrorSerializer, description="report_pending: no report is stored yet; it is being "
                                                         "computed, ask again after Retry-After seconds")
# The report's and the chart's refusals (and their 202) are JSON, whatever format was asked for.
JSON_ERRORS = {(code, "application/json"): response for code, response in {202: PENDING, **ERRORS}.items()}


def _format_parameter(renderer_classes) -> OpenApiParameter:
    formats = [r.format for r in renderer_classes]
    return OpenApiParameter(
        "format", str, enum=formats, required=False,
        description=f"{', '.join(formats)} (default {formats[0]}); or the Accept header "
                    f"({', '.join(r.media_type for r in renderer_classes)})",
    )


@extend_schema_view(
    list=extend_schema(
        parameters=[OpenApiParameter("batch", int, description="Only the evaluation whose images are this generation "
                                     "batch (a training round's evaluation_batch).")],
        responses={200: EvaluationSerializer(many=True), **ERRORS}),
    retrieve=extend_schema(responses={200: EvaluationDetailSerializer, **ERRORS}),
)
class EvaluationViewSet(ResearcherMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = EvaluationRound.objects.select_related("prompt_set").prefetch_related(
        "entries__model_version", "annotation_rounds").order_by("-created_at", "-id")
    serializer_class = EvaluationSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "list" and "batch" in self.request.query_params:
            batch = serializers.IntegerField(min_value=1, max_value=BIGINT_MAX)
            try:
                batch_id = batch.run_validation(self.request.query_params["batch"])
            except serializers.ValidationError as exc:
                raise serializers.ValidationError({"batch": exc.detail}) from exc
            queryset = queryset.filter(generation_batch_id=batch_id)
        return queryset

    @staticmethod
    def _detail(evaluation: EvaluationRound) -> dict:
        return EvaluationDetailSerializer(evaluation, context={"latest": report_latest(evaluation=evaluation)}).data

    def retrieve(self, request, pk=None):
        return Response(self._detail(self.get_object()))

    @extend_schema(request=EvaluationCreateSerializer, responses={202: EvaluationDetailSerializer, **ERRORS})
    def create(self, request):
        """Create an evaluation as `manage.py create_evaluation` does: its images are queued on the gpu queue and its
        annotation rounds open when the last is done (with from_existing, or when existing images fill every job:
        the rounds' creation is queued on the default queue at once). A refusal creates nothing."""
        data = validated(EvaluationCreateSerializer, request.data).validated_data
        try:  # evaluation_start is one transaction: a refusal leaves no evaluation, batch or round
            result = evaluation_start(
                model_versions=data["models"], prompt_set=data["prompt_set"], limit=data.get("limit"),
                seed=data["seed"], k=data["k"], name=data["name"], criteria=data["criteria"],
                from_existing=data["from_existing"], seed_policy=data["seed_policy"], created_by=request.user,
                rounds_now=False,
            )
        except EvaluationError as exc:
            raise refused(exc) from exc
        except ExternalModelError as exc:
            raise input_refused(str(exc), field="models", code=exc.code) from exc
        return accepted(self._detail(self.get_queryset().get(pk=result.evaluation.pk)))

    def finalize_response(self, request, response, *args, **kwargs):
        # Refusals and the 202 are JSON whatever format the report or chart was asked in (an unknown format too).
        if response.status_code != 200:
            request.accepted_renderer, request.accepted_media_type = renderers.JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    def _stored(self) -> tuple[EvaluationRound, LatestReport, Response | None]:
        evaluation = self.get_object()
        latest = report_latest(evaluation=evaluation)
        if latest.data is not None:
            return evaluation, latest, None
        pending = Response(
            {"detail": "the report is being computed; try again in a few seconds", "code": "report_pending"},
            status=status.HTTP_202_ACCEPTED, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
        return evaluation, latest, pending

    @staticmethod
    def _freshness(response: Response, latest: LatestReport) -> Response:
        response["X-Report-Fresh"] = "true" if latest.fresh else "false"
        response["X-Report-Computed-At"] = latest.stored.computed_at.isoformat()
        response["Cache-Control"] = "private, no-cache"
        return response

    @extend_schema(
        parameters=[_format_parameter(REPORT_RENDERERS)],
        responses={
            (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="every number of the report"),
            (200, "text/csv"): OpenApiTypes.STR, (200, "application/x-tex"): OpenApiTypes.STR,
            (200, "text/plain"): OpenApiTypes.STR, **JSON_ERRORS,
        },
        description="The stored report, as `manage.py evaluation_report --format json|csv|latex|table` writes it. "
                    "X-Report-Fresh says whether it counts every judgment there is; when not, a worker is computing "
                    "the new one (poll the evaluation's `report`).",
    )
    @action(detail=True, methods=["get"], renderer_classes=REPORT_RENDERERS)
    def report(self, request, pk=None):
        evaluation, latest, pending = self._stored()
        if pending is not None:
            return pending
        response = Response(latest.data)
        fmt = request.accepted_renderer.format
        response["Content-Disposition"] = f'inline; filename="evaluation-{evaluation.pk}.{fmt}"'
        return self._freshness(response, latest)

    @extend_schema(
        parameters=[_format_parameter(CHART_RENDERERS)],
        responses={(200, CHART_FORMATS["png"]): OpenApiTypes.BINARY, (200, CHART_FORMATS["svg"]): OpenApiTypes.STR,
                   **JSON_ERRORS},
        description="The stored report's stacked win/tie/loss bars with their 95% intervals, as PNG or SVG.",
    )
    @action(detail=True, methods=["get"], renderer_classes=CHART_RENDERERS)
    def chart(self, request, pk=None):
        _, latest, pending = self._stored()
        if pending is not None:
            return pending
        chart = report_chart(stored=latest.stored, fmt=request.accepted_renderer.format)
        return self._freshness(Response(chart), latest)
