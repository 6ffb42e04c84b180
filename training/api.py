"""The research API for training runs: list and read them, cancel and resume them.

Researchers only (token or session), with the annotation API's error shape: a refused action
answers 409 with ``detail`` and a machine-readable ``code``.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from annotation.api import ERRORS, ResearcherMixin
from annotation.errors import Conflict
from training import services
from training.models import TrainingRun


class TrainingRunSerializer(serializers.ModelSerializer):
    base_model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    output_model = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    cancel_requested = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id", "name", "status", "phase", "step", "total_steps", "progress", "progress_at", "base_model",
            "output_model", "source_round", "dataset_path", "config", "metrics", "error", "attempts", "worker",
            "cancel_requested", "created_at", "started_at", "finished_at",
        ]
        read_only_fields = fields

    def get_cancel_requested(self, obj) -> bool:
        return obj.cancel_requested_at is not None


class TrainingRunDetailSerializer(TrainingRunSerializer):
    class Meta(TrainingRunSerializer.Meta):
        fields = [*TrainingRunSerializer.Meta.fields, "history", "log_tail"]
        read_only_fields = fields


@extend_schema_view(
    list=extend_schema(responses={200: TrainingRunSerializer(many=True), **ERRORS}),
    retrieve=extend_schema(responses={200: TrainingRunDetailSerializer, **ERRORS}),
)
class TrainingRunViewSet(ResearcherMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = TrainingRun.objects.select_related("base_model", "output_model").order_by("-created_at", "-id")

    def get_serializer_class(self):
        return TrainingRunDetailSerializer if self.action != "list" else TrainingRunSerializer

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
