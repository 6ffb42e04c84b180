"""The research API's catalog resources: models, prompt sets, images, and generation requests.

Served by the annotation app, which owns the API's researcher permission, error shape and
exception handler, and may read the catalog below it (docs/architecture.md, "The research API").
Views parse and format; every write goes through ``catalog.services`` or ``catalog.generation``,
the same functions ``manage.py register_model``, ``import_prompts``, ``import_images`` and
``generate_images`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlencode

from django.db.models import Count
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from annotation.api import ERRORS, ResearcherMixin
from annotation.api_lists import CheckedOrdering, QueryFilter, ResearchWriteThrottle
from annotation.errors import InvalidFile, InvalidInput
from catalog import imports, selectors, services
from catalog.generation import POOL_REQUEST_TASK, pool_generation_progress
from catalog.models import Image, ImportJob, ModelVersion, PromptSet
from catalog.prompt_import import FORMATS
from config.celery import enqueue_on_commit

# One generation request asks for at most this many images: its task makes the jobs (about 5 s for
# 20,000), and its progress is read within a second (0.8 s for 20,000 on 2 shared cores).
GENERATION_MAX_IMAGES = 20_000


class ProducedBy:
    """The training run that produced each model. The training app, above this one, registers its
    lookup from ``AppConfig.ready()``, so this module never imports it."""

    def __init__(self):
        self._lookup: Callable[[Sequence[int]], dict[int, int]] | None = None

    def register(self, lookup: Callable[[Sequence[int]], dict[int, int]]) -> None:
        self._lookup = lookup

    def __call__(self, model_ids: Sequence[int]) -> dict[int, int]:
        return self._lookup(model_ids) if self._lookup is not None and model_ids else {}


produced_by = ProducedBy()


class CatalogViewSet(ResearcherMixin, viewsets.GenericViewSet):
    """Researchers only; lists filtered and ordered with every value checked; writes throttled."""

    filter_backends = [QueryFilter, CheckedOrdering]
    throttle_classes = [ResearchWriteThrottle]


def _refused(exc: imports.UploadRefused) -> InvalidFile:
    body = exc.body
    return InvalidFile(body["detail"], field=body["field"], line=body["line"], file_field=body["file_field"])


def _accepted(request, job: ImportJob) -> Response:
    body = ImportJobSerializer(job, context={"request": request}).data
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


# --- models -----------------------------------------------------------------------------------


class ModelRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "name", "kind"]
        read_only_fields = fields


class ModelSerializer(serializers.ModelSerializer):
    family = serializers.CharField(read_only=True, help_text="unet, dit or flow; empty for an external model")
    prediction_type = serializers.CharField(read_only=True, help_text="epsilon, v_prediction or flow")
    parent = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    produced_by = serializers.SerializerMethodField(help_text="id of the training run that made it, or null")

    class Meta:
        model = ModelVersion
        fields = [
            "id", "name", "kind", "family", "prediction_type", "pipeline_class", "local_path", "parent",
            "produced_by", "notes", "created_at",
        ]
        read_only_fields = fields

    def get_produced_by(self, obj) -> int | None:
        return self.context.get("produced_by", {}).get(obj.pk)


class ModelDetailSerializer(ModelSerializer):
    lineage = serializers.SerializerMethodField(help_text="the model, its parent, ... back to the base model")

    class Meta(ModelSerializer.Meta):
        fields = [*ModelSerializer.Meta.fields, "lineage"]
        read_only_fields = fields

    def get_lineage(self, obj) -> list[dict]:
        chain = selectors.model_lineage(model_version=obj)
        runs = produced_by([m.pk for m in chain])
        return [{**ModelRefSerializer(m).data, "produced_by": runs.get(m.pk)} for m in chain]


class ModelRegisterSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ModelVersion.Kind.choices, default=ModelVersion.Kind.PIPELINE)
    name = serializers.CharField(trim_whitespace=False)
    path = serializers.CharField(
        required=False, default="", allow_blank=True, trim_whitespace=False,
        help_text="pipeline: a diffusers directory every worker reads (as manage.py register_model); external: none",
    )
    parent = serializers.SlugRelatedField(
        slug_field="name", queryset=ModelVersion.objects.all(), required=False, allow_null=True, default=None
    )
    notes = serializers.CharField(required=False, default="", allow_blank=True)

    def validate(self, data):
        if data["kind"] == ModelVersion.Kind.PIPELINE and not data["path"]:
            raise serializers.ValidationError({"path": ["required for a pipeline model"]})
        if data["kind"] == ModelVersion.Kind.EXTERNAL:
            for name in ("path", "parent"):
                if data[name]:
                    raise serializers.ValidationError({name: ["an external model has none (it has only images)"]})
        return data


class ModelFilter(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ModelVersion.Kind.choices, required=False)
    family = serializers.CharField(required=False, max_length=10, help_text="unet, dit or flow")
    parent = serializers.CharField(required=False, max_length=200, help_text="the parent's name")


@extend_schema_view(
    list=extend_schema(parameters=[ModelFilter], responses={200: ModelSerializer(many=True), **ERRORS}),
    retrieve=extend_schema(responses={200: ModelDetailSerializer, **ERRORS}),
    create=extend_schema(
        request=ModelRegisterSerializer, responses={201: ModelDetailSerializer, **ERRORS},
        description="Register a diffusers directory (kind pipeline, checked as manage.py register_model checks it) "
        "or a model known only by its images (kind external).",
    ),
)
class ModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, CatalogViewSet):
    queryset = ModelVersion.objects.select_related("parent")
    serializer_class = ModelSerializer
    filter_serializer = ModelFilter
    filter_lookups = {"kind": "kind", "family": "family", "parent": "parent__name"}
    ordering_fields = ["name", "created_at"]
    ordering = ["-created_at"]

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "produced_by": getattr(self, "_produced_by", {})}

    def list(self, request):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        self._produced_by = produced_by([m.pk for m in page])
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        model = self.get_object()
        self._produced_by = produced_by([model.pk])
        return Response(ModelDetailSerializer(model, context=self.get_serializer_context()).data)

    def create(self, request):
        params = ModelRegisterSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        try:
            if data["kind"] == ModelVersion.Kind.EXTERNAL:
                model = services.external_model_register(name=data["name"], notes=data["notes"])
            else:
                model = services.model_register(
                    path=data["path"], name=data["name"], parent=data["parent"], notes=data["notes"]
                )
        except services.RegistrationError as exc:
            raise InvalidInput(str(exc).removeprefix("--"), field=exc.field) from exc
        self._produced_by = {}
        return Response(ModelDetailSerializer(model, context=self.get_serializer_context()).data, status=201)


class ImportJobSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(help_text="this import, to poll")
    file = serializers.CharField(source="upload_name", read_only=True, help_text="the uploaded file's name")
    result = serializers.JSONField(
        read_only=True, allow_null=True,
        help_text="once succeeded. Prompts: prompt_set, prompt_set_id, created, updated, unchanged, questions_created, "
        "questions_updated, warnings. Images: created, present, models_created.",
    )
    error = serializers.JSONField(
        read_only=True, allow_null=True,
        help_text="once failed: {detail, code, field, line, file_field}, as a 400 would name them",
    )

    class Meta:
        model = ImportJob
        fields = ["id", "url", "kind", "status", "file", "params", "result", "error", "created_at", "started_at",
                  "finished_at"]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        return f"/api/research/imports/{obj.pk}/"


class ImportJobFilter(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ImportJob.Kind.choices, required=False)
    status = serializers.ChoiceField(choices=ImportJob.Status.choices, required=False)


# --- prompt sets ------------------------------------------------------------------------------


class PromptSetSerializer(serializers.ModelSerializer):
    prompt_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = PromptSet
        fields = ["id", "name", "description", "source", "prompt_count", "created_at"]
        read_only_fields = fields


class PromptImportSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="PartiPrompts TSV, DSG-1k CSV, or a JSONL/CSV prompt file")
    set = serializers.CharField(help_text="the prompt set to import into (created if missing)")
    format = serializers.ChoiceField(choices=FORMATS, required=False, help_text="default: told from the file name")
    source = serializers.CharField(required=False, default="", allow_blank=True, help_text="default: the file name")


@extend_schema_view(
    list=extend_schema(responses={200: PromptSetSerializer(many=True), **ERRORS}),
    retrieve=extend_schema(responses={200: PromptSetSerializer, **ERRORS}),
)
class PromptSetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, CatalogViewSet):
    queryset = PromptSet.objects.annotate(prompt_count=Count("prompts"))
    serializer_class = PromptSetSerializer
    ordering_fields = ["name", "created_at"]
    ordering = ["name"]

    @extend_schema(
        request={"multipart/form-data": PromptImportSerializer},
        responses={202: ImportJobSerializer, **ERRORS},
        description="Import a prompt file as manage.py import_prompts does: the whole file, or nothing. Every row is "
        "checked within the request (a bad one answers 400, naming its line and field); the writes run on the "
        "default queue: poll the answer's url (also in Location) until its status is succeeded or failed.",
    )
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[MultiPartParser, FormParser])
    def import_file(self, request):
        params = PromptImportSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        upload = data["file"]
        try:
            name = imports.prompts_check_upload(upload, set_name=data["set"], fmt=data.get("format"))
        except imports.UploadRefused as exc:
            raise _refused(exc) from exc
        job = imports.import_job_create(
            kind=ImportJob.Kind.PROMPTS, upload=upload, name=name, user=request.user,
            params={"set": data["set"], "format": data.get("format"), "source": data["source"] or upload.name},
        )
        return _accepted(request, job)


# --- images -----------------------------------------------------------------------------------


class ImageSerializer(serializers.ModelSerializer):
    """A researcher's view of an image: the catalog's own id, never an item's id for it."""

    id = serializers.CharField(source="public_id", read_only=True, help_text="the catalog's image id")
    model = serializers.CharField(source="model_version.name", read_only=True)
    prompt_set = serializers.CharField(source="prompt.prompt_set.name", read_only=True)
    prompt = serializers.CharField(source="prompt.external_id", read_only=True, help_text="the prompt's id in its set")
    prompt_text = serializers.CharField(source="prompt.text", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = ["id", "url", "model", "prompt_set", "prompt", "prompt_text", "seed", "width", "height", "sha256",
                  "sampler", "created_at"]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        return selectors.image_url(obj.public_id)


class ImageFilter(serializers.Serializer):
    model = serializers.CharField(required=False, max_length=200, help_text="the model's name")
    prompt_set = serializers.CharField(required=False, max_length=200, help_text="the prompt set's name")
    seed = serializers.IntegerField(required=False, min_value=-(2**63), max_value=2**63 - 1)


class ImageImportSerializer(serializers.Serializer):
    archive = serializers.FileField(
        help_text="a .zip of the folder manage.py import_images would read: the manifest and the PNG files it names"
    )
    manifest = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=500,
        help_text="the manifest's path inside the archive; default: the one .jsonl or .csv file at its top",
    )
    prompt_set = serializers.CharField(required=False, default="", allow_blank=True, help_text="set of lines without one")
    create_models = serializers.BooleanField(
        required=False, default=False, help_text="register models the catalog lacks as external models"
    )


@extend_schema_view(list=extend_schema(parameters=[ImageFilter], responses={200: ImageSerializer(many=True), **ERRORS}))
class ImageViewSet(mixins.ListModelMixin, CatalogViewSet):
    queryset = Image.objects.select_related("model_version", "prompt__prompt_set")
    serializer_class = ImageSerializer
    filter_serializer = ImageFilter
    filter_lookups = {"model": "model_version__name", "prompt_set": "prompt__prompt_set__name", "seed": "seed"}
    ordering_fields = ["created_at", "seed"]
    ordering = ["created_at"]

    @extend_schema(
        request={"multipart/form-data": ImageImportSerializer},
        responses={202: ImportJobSerializer, **ERRORS},
        description="Import images made elsewhere, as manage.py import_images does: every file checked, then all "
        "stored in one transaction, or none. Images must lie inside the archive. The archive's directory and the "
        "manifest's name are checked within the request; the import runs on the default queue: poll the answer's "
        "url (also in Location). A bad line fails the job, with the line and field in its error.",
    )
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[MultiPartParser, FormParser])
    def import_archive(self, request):
        params = ImageImportSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        try:
            manifest = imports.archive_check(data["archive"], data["manifest"])
        except imports.UploadRefused as exc:
            raise _refused(exc) from exc
        job = imports.import_job_create(
            kind=ImportJob.Kind.IMAGES, upload=data["archive"], name=imports.upload_name(data["archive"].name, "images.zip"),
            user=request.user,
            params={"manifest": manifest, "prompt_set": data["prompt_set"], "create_models": data["create_models"]},
        )
        return _accepted(request, job)


# --- imports --------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(parameters=[ImportJobFilter], responses={200: ImportJobSerializer(many=True), **ERRORS}),
    retrieve=extend_schema(responses={200: ImportJobSerializer, **ERRORS},
                           description="An import's status; its result once succeeded, its error once failed."),
)
class ImportJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, CatalogViewSet):
    """Uploaded prompt files and image archives, and how their imports went."""

    queryset = ImportJob.objects.all()
    serializer_class = ImportJobSerializer
    filter_serializer = ImportJobFilter
    filter_lookups = {"kind": "kind", "status": "status"}
    ordering_fields = ["created_at"]
    ordering = ["-created_at", "-pk"]


# --- generation -------------------------------------------------------------------------------


class GenerationRequestSerializer(serializers.Serializer):
    model = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all())
    prompt_set = serializers.SlugRelatedField(slug_field="name", queryset=PromptSet.objects.all())
    images_per_prompt = serializers.IntegerField(min_value=1, max_value=100, default=5)
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0,
                                    help_text="derives every image's seed and the prompt sample")
    limit = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None,
                                     help_text="a seeded sample of this many prompts")


class GenerationProgressSerializer(serializers.Serializer):
    images = serializers.IntegerField(help_text="images the request asks for")
    queued = serializers.IntegerField(help_text="waiting (jobs not made yet included)")
    running = serializers.IntegerField()
    done = serializers.IntegerField()
    failed = serializers.IntegerField()
    errors = serializers.ListField(child=serializers.CharField(), help_text="the first failed jobs' errors")


class GenerationStartedSerializer(serializers.Serializer):
    prompts = serializers.IntegerField()
    images = serializers.IntegerField()
    progress_url = serializers.CharField()


def _generation_progress(data) -> dict:
    prompts = selectors.prompts_select(prompt_set=data["prompt_set"], limit=data["limit"], seed=data["seed"])
    progress = pool_generation_progress(
        model_version=data["model"], prompts=prompts, images_per_prompt=data["images_per_prompt"], seed=data["seed"]
    )
    return {"images": sum(n for key, n in progress.items() if key != "errors"), **progress}


class GenerationViewSet(CatalogViewSet):
    """Pool images of one model (N seeds per prompt), as manage.py generate_images makes them. A request is
    named by its parameters: the same request again queues nothing new, and its progress is read by them."""

    serializer_class = GenerationRequestSerializer

    @extend_schema(
        request=GenerationRequestSerializer, responses={202: GenerationStartedSerializer, **ERRORS},
        description="Queue the images on the gpu queue and answer at once: poll progress_url (also in Location).",
    )
    def create(self, request):
        params = GenerationRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        model, prompt_set = data["model"], data["prompt_set"]
        try:
            services.model_weights_check(model_version=model, purpose="sampled")
        except services.ExternalModelError as exc:
            raise InvalidInput(str(exc), field="model", code=exc.code) from exc
        prompts = prompt_set.prompts.count()
        if data["limit"] is not None:
            prompts = min(prompts, data["limit"])
        images = prompts * data["images_per_prompt"]
        if images > GENERATION_MAX_IMAGES:
            raise InvalidInput(
                f"limit: {prompts} prompts x {data['images_per_prompt']} images is more than "
                f"{GENERATION_MAX_IMAGES} images in one request; give a smaller limit",
                field="limit",
            )
        # The jobs are made on the default queue: a large set would hold this request for seconds.
        enqueue_on_commit(
            POOL_REQUEST_TASK, model.pk, prompt_set.pk, data["images_per_prompt"], data["seed"], data["limit"]
        )
        query = {
            "model": model.name, "prompt_set": prompt_set.name,
            "images_per_prompt": data["images_per_prompt"], "seed": data["seed"],
            **({"limit": data["limit"]} if data["limit"] is not None else {}),
        }
        progress_url = f"{request.path}progress/?{urlencode(query)}"
        body = {"prompts": prompts, "images": images, "progress_url": progress_url}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": progress_url})

    @extend_schema(
        parameters=[GenerationRequestSerializer], responses={200: GenerationProgressSerializer, **ERRORS},
        description="How far the request with these parameters is: its jobs by status.",
    )
    @action(detail=False, methods=["get"])
    def progress(self, request):
        params = GenerationRequestSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        return Response(_generation_progress(params.validated_data))
