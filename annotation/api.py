"""The annotation API: annotator endpoints (session auth) and researcher endpoints (token or session).

Views parse and format; every decision is made in services and selectors.
"""

from __future__ import annotations

import math
from dataclasses import asdict

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
import drf_spectacular.authentication
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.authentication import TokenAuthentication
from rest_framework.decorators import action, api_view, authentication_classes, permission_classes
from rest_framework.exceptions import APIException, NotFound, ParseError, PermissionDenied, ValidationError
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from annotation import selectors
from annotation.errors import AnnotationError, AnnotationNotFound, InvalidFile, InvalidInput, InvalidRoundSpec, RateLimited
from annotation.models import Aggregate, Item, Judgment, Round
from annotation.permissions import IsAnnotator, IsResearcher, SessionAuthentication
from annotation.services import aggregation, assignment, rounds, submission
from catalog.models import Image
from annotation.serializers import (
    AggregateSerializer,
    ErrorSerializer,
    GoldSetSerializer,
    NextRequestSerializer,
    NextResponseSerializer,
    ProgressSerializer,
    ResearchItemSerializer,
    ResearchJudgmentSerializer,
    RoundClosingSerializer,
    RoundCloseSerializer,
    RoundSerializer,
    SkipRequestSerializer,
    SkipResponseSerializer,
    SubmitRequestSerializer,
    SubmitResponseSerializer,
    UndoRequestSerializer,
    UndoResponseSerializer,
)


def exception_handler(exc, context):
    """Every refused API request answers ``detail`` and a machine-readable ``code``; a bad field is named too.

    Refused annotation requests carry their own status and code; DRF's exceptions (validation,
    authentication, CSRF, not found, throttling) get the same shape, their fields kept as DRF gives them.
    """
    if not isinstance(exc, AnnotationError):
        # Django's own refusals become DRF's, as DRF's handler would turn them.
        if isinstance(exc, Http404):
            exc = NotFound(*exc.args)
        elif isinstance(exc, DjangoPermissionDenied):
            exc = PermissionDenied(*exc.args)
        response = drf_exception_handler(exc, context)
        if response is not None:  # None: an unexpected error, left to Django's 500
            response.data = _drf_error_body(exc)
        return response
    body = {"detail": exc.detail, "code": exc.code}
    if isinstance(exc, InvalidInput):
        body["field"] = exc.field
        body[exc.field] = [exc.detail]
    if isinstance(exc, InvalidFile):
        body["line"], body["file_field"] = exc.line, exc.file_field
    set_rollback()
    response = Response(body, status=exc.status)
    if isinstance(exc, RateLimited):
        response["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return response


def _first_message(detail) -> str:
    """The first message of a DRF error detail (nested in lists and dicts for nested fields)."""
    if isinstance(detail, dict):
        detail = list(detail.values())
    if isinstance(detail, list):
        return next((m for m in map(_first_message, detail) if m), "")
    return str(detail)


def _drf_error_body(exc: APIException) -> dict:
    if isinstance(exc, ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {api_settings.NON_FIELD_ERRORS_KEY: exc.detail}
        field = next(iter(fields), api_settings.NON_FIELD_ERRORS_KEY)
        return {
            "detail": f"{field}: {_first_message(fields.get(field, []))}", "code": InvalidInput.code, "field": field,
            **fields,
        }
    if isinstance(exc.detail, (list, dict)):
        return {"detail": _first_message(exc.detail), "code": exc.default_code, "errors": exc.detail}
    body = {"detail": exc.detail, "code": getattr(exc.detail, "code", None) or exc.default_code}
    if isinstance(exc, ParseError):  # a 400 too: the body as a whole is at fault
        body["field"] = api_settings.NON_FIELD_ERRORS_KEY
    return body


# A 400 names the field at fault beside ``detail`` and ``code``:
# {"detail", "code": "invalid", "field": "<field>", "<field>": [messages]}.
FIELD_ERROR = {
    "type": "object",
    "required": ["detail", "code", "field"],
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string", "example": "invalid"},
        "field": {"type": "string", "description": "the field at fault (non_field_errors: the body as a whole)"},
        "line": {"type": "integer", "nullable": True, "description": "an uploaded file's error: its line, when it has one"},
        "file_field": {"type": "string", "nullable": True, "description": "an uploaded file's error: the field in the file"},
    },
    "additionalProperties": {"description": "the field at fault: its messages (nested as the field is)"},
}

ERRORS = {
    400: OpenApiResponse(FIELD_ERROR, description="invalid: the field at fault is a key with its messages"),
    401: OpenApiResponse(ErrorSerializer, description="not_authenticated / authentication_failed (token)"),
    403: OpenApiResponse(ErrorSerializer, description="not_authenticated / permission_denied / csrf_failed"),
    404: OpenApiResponse(ErrorSerializer, description="not_found"),
    409: OpenApiResponse(
        ErrorSerializer, description="lease_expired / already_judged / skipped / round_closed / undo refused / round_already_closed / not_cancellable / not_resumable"
    ),
    415: OpenApiResponse(ErrorSerializer, description="unsupported_media_type: a body of a type the endpoint does not read"),
    429: OpenApiResponse(ErrorSerializer, description="throttled; see Retry-After"),
}


class SessionScheme(drf_spectacular.authentication.SessionScheme):
    """The schema's cookie auth for the project's session authentication (a subclass of DRF's)."""

    target_class = SessionAuthentication


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
@authentication_classes([])
@permission_classes([])
def not_found(request, path):
    """Any other path under /api/ (an id no route takes, such as 1.5): the API's 404 body, not Django's page."""
    raise NotFound("no API endpoint at this path")


class AnnotatorAPIView(APIView):
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAnnotator]


class ProgressView(AnnotatorAPIView):
    @extend_schema(responses={200: ProgressSerializer, **ERRORS}, tags=["annotate"])
    def get(self, request):
        return Response(ProgressSerializer(selectors.annotator_progress(annotator=request.user)).data)


class NextView(AnnotatorAPIView):
    @extend_schema(request=NextRequestSerializer, responses={200: NextResponseSerializer, **ERRORS}, tags=["annotate"])
    def post(self, request, round_id: int):
        params = NextRequestSerializer(data=request.data or {})
        params.is_valid(raise_exception=True)
        round_ = Round.objects.filter(pk=round_id, status=Round.Status.OPEN).first()
        if round_ is None:
            raise AnnotationNotFound("no open round with this id")
        task = assignment.item_next_for_annotator(
            round_=round_, annotator=request.user, exclude=params.validated_data["exclude"]
        )
        if task is None:
            return Response({"task": None, "reason": "no_items_left"})
        return Response({"task": selectors.task_payload(task)})


class SubmitView(AnnotatorAPIView):
    @extend_schema(
        request=SubmitRequestSerializer, responses={201: SubmitResponseSerializer, 200: SubmitResponseSerializer, **ERRORS},
        tags=["annotate"],
    )
    def post(self, request):
        params = SubmitRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        result = submission.judgment_submit(
            annotator=request.user, lease_id=data["lease"], client_uuid=data["client_uuid"],
            answer=data["answer"], elapsed_ms=data["elapsed_ms"],
            next_exclude=data["exclude"] if data["next"] else None,
        )
        # Built by hand, not by SubmitResponseSerializer: this is the hot path (the shape is the same).
        body = {
            "judgment": str(result.judgment.client_uuid),
            "replayed": result.replayed,
            "undo_until": selectors.undo_deadline(result.judgment),
        }
        if data["next"]:
            next_task = result.next_task
            if result.replayed:
                next_task = self._next_after_replay(request, result.judgment, data["exclude"])
            body["next"] = selectors.task_payload(next_task) if next_task else None
        return Response(body, status=200 if result.replayed else 201)

    @staticmethod
    def _next_after_replay(request, judgment, exclude):
        round_ = Round.objects.filter(pk=judgment.round_id, status=Round.Status.OPEN).first()
        if round_ is None:
            return None
        return assignment.item_next_for_annotator(round_=round_, annotator=request.user, exclude=exclude)


class SkipView(AnnotatorAPIView):
    @extend_schema(request=SkipRequestSerializer, responses={200: SkipResponseSerializer, **ERRORS}, tags=["annotate"])
    def post(self, request):
        params = SkipRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        result = assignment.lease_skip(
            annotator=request.user, lease_id=data["lease"], reason=data["reason"],
            next_exclude=data["exclude"] if data["next"] else None,
        )
        body = {"skipped": str(result.lease_id), "replayed": result.replayed}
        if data["next"]:
            body["next"] = selectors.task_payload(result.next_task) if result.next_task else None
        return Response(body)


class UndoView(AnnotatorAPIView):
    @extend_schema(request=UndoRequestSerializer, responses={200: UndoResponseSerializer, **ERRORS}, tags=["annotate"])
    def post(self, request):
        params = UndoRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        task = submission.judgment_undo(annotator=request.user, client_uuid=params.validated_data["judgment"])
        return Response({"undone": str(params.validated_data["judgment"]), "task": selectors.task_payload(task)})


# --- researcher endpoints -------------------------------------------------------------


class ResearcherMixin:
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsResearcher]


@extend_schema_view(
    list=extend_schema(responses={200: RoundSerializer(many=True), **ERRORS}),
    retrieve=extend_schema(responses={200: RoundSerializer, **ERRORS}),
    create=extend_schema(responses={201: RoundSerializer, **ERRORS}),
    partial_update=extend_schema(responses={200: RoundSerializer, **ERRORS}),
)
class RoundViewSet(
    ResearcherMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
    mixins.UpdateModelMixin, viewsets.GenericViewSet,
):
    queryset = Round.objects.all()
    serializer_class = RoundSerializer
    http_method_names = ["get", "post", "patch", "head", "options"]

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        items = data.pop("items", [])
        wanted = sorted({pid for spec in items for pid in spec["images"]})
        images: dict[str, int] = {}
        for start in range(0, len(wanted), 10000):  # one query per 10,000 images, not one per item
            chunk = wanted[start:start + 10000]
            images.update(Image.objects.filter(public_id__in=chunk).values_list("public_id", "id"))
        specs = []
        for n, spec in enumerate(items):
            missing = [pid for pid in spec["images"] if pid not in images]
            if missing:
                raise InvalidRoundSpec(f"items[{n}]: unknown images {missing}", field="items")
            specs.append(rounds.ItemSpec(
                prompt_id=spec["prompt"], image_ids=tuple(images[pid] for pid in spec["images"]),
                is_gold=spec["is_gold"], gold_answer=spec.get("gold_answer"),
            ))
        serializer.instance = rounds.round_create(items=specs, created_by=self.request.user, **data)

    def perform_update(self, serializer):
        # Through the service: a changed gold threshold or no-majority rule re-aggregates the round.
        serializer.instance = rounds.round_update(round_=serializer.instance, **serializer.validated_data)

    def _page(self, queryset, serializer_class):
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(serializer_class(page, many=True).data)

    @extend_schema(responses={200: ResearchItemSerializer(many=True), **ERRORS})
    @action(detail=True, methods=["get"])
    def items(self, request, pk=None):
        round_ = self.get_object()
        queryset = Item.objects.filter(round=round_).prefetch_related(
            "item_images__image__model_version", "judgments"
        ).order_by("id")
        return self._page(queryset, ResearchItemSerializer)

    @extend_schema(responses={200: ResearchJudgmentSerializer(many=True), **ERRORS})
    @action(detail=True, methods=["get"])
    def judgments(self, request, pk=None):
        round_ = self.get_object()
        queryset = Judgment.objects.filter(round=round_).select_related("annotator", "winner", "loser").prefetch_related(
            "answers", "item__item_images__image"
        ).order_by("id")
        return self._page(queryset, ResearchJudgmentSerializer)

    @extend_schema(responses={200: AggregateSerializer(many=True), **ERRORS})
    @action(detail=True, methods=["get"])
    def aggregates(self, request, pk=None):
        round_ = self.get_object()
        queryset = Aggregate.objects.filter(round=round_).select_related("winner", "loser").order_by("item_id")
        return self._page(queryset, AggregateSerializer)

    @extend_schema(request=None, responses={200: dict, **ERRORS})
    @action(detail=True, methods=["post"])
    def aggregate(self, request, pk=None):
        return Response(asdict(aggregation.round_aggregate(round_=self.get_object())))

    @extend_schema(request=RoundCloseSerializer, responses={200: RoundClosingSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def close(self, request, pk=None):
        round_ = self.get_object()
        params = RoundCloseSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        return Response(rounds.round_close(round_=round_, rule=params.validated_data["rule"]).as_dict())

    @extend_schema(responses={200: dict, **ERRORS})
    @action(detail=True, methods=["get"])
    def gold(self, request, pk=None):
        round_ = self.get_object()
        accuracy = selectors.gold_accuracy(round_=round_)
        excluded = selectors.annotators_excluded(round_=round_)
        users = {u.pk: u.username for u in selectors.annotators_by_id(accuracy.keys())}
        return Response({
            "threshold": round_.gold_min_accuracy,
            "annotators": [
                {"annotator": users[pk], "accuracy": acc, "gold_judgments": n, "excluded": pk in excluded}
                for pk, (acc, n) in sorted(accuracy.items())
            ],
        })

    @extend_schema(request=None, responses={200: dict, **ERRORS})
    @action(detail=True, methods=["post"])
    def export(self, request, pk=None):
        from annotation.exports import preferences_export

        return Response(preferences_export(round_=self.get_object()).as_dict())


@extend_schema_view(retrieve=extend_schema(responses={200: ResearchItemSerializer, **ERRORS}))
class ItemViewSet(ResearcherMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Item.objects.select_related("round").prefetch_related("item_images__image__model_version", "judgments")
    serializer_class = ResearchItemSerializer

    @extend_schema(request=GoldSetSerializer, responses={200: ResearchItemSerializer, **ERRORS})
    def partial_update(self, request, pk=None):
        item = get_object_or_404(Item.objects.select_related("round"), pk=pk)
        params = GoldSetSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        rounds.item_gold_set(
            item=item, is_gold=params.validated_data["is_gold"], gold_answer=params.validated_data.get("gold_answer")
        )
        return Response(ResearchItemSerializer(self.get_queryset().get(pk=pk)).data, status=status.HTTP_200_OK)
