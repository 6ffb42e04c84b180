from django.contrib import admin
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html

from catalog.admin_sections import lineage_columns
from catalog.models import (
    AlignmentQuestion, GenerationBatch, GenerationJob, Image, ImportJob, ModelVersion, Prompt, PromptSet,
)
from catalog.selectors import image_url, model_lineage


@admin.register(PromptSet)
class PromptSetAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "prompt_count", "created_at")
    search_fields = ("name", "description", "source")

    @admin.display(description="prompts")
    def prompt_count(self, obj):
        return obj.prompts.count()


class AlignmentQuestionInline(admin.TabularInline):
    model = AlignmentQuestion
    extra = 0
    fields = ("order", "text", "category", "detail", "parents")
    filter_horizontal = ("parents",)


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("text", "prompt_set", "category", "challenge", "external_id")
    list_filter = ("prompt_set", "category", "challenge")
    search_fields = ("text", "external_id")
    list_select_related = ("prompt_set",)
    inlines = [AlignmentQuestionInline]


@admin.register(AlignmentQuestion)
class AlignmentQuestionAdmin(admin.ModelAdmin):
    list_display = ("text", "prompt", "order", "category", "detail")
    list_filter = ("category", "prompt__prompt_set")
    search_fields = ("text", "prompt__text")
    raw_id_fields = ("prompt",)
    filter_horizontal = ("parents",)


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("public_id", "thumbnail", "model_version", "prompt", "seed", "width", "height", "created_at")
    list_filter = ("model_version", "prompt__prompt_set")
    search_fields = ("public_id", "prompt__text", "sha256", "model_version__name")
    raw_id_fields = ("prompt",)
    readonly_fields = ("public_id", "sha256", "width", "height", "created_at")
    list_select_related = ("model_version", "prompt")

    @admin.display(description="image")
    def thumbnail(self, obj):
        if not obj.file:
            return "-"
        return format_html('<img src="{}" alt="" style="height:48px">', image_url(obj.public_id))


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "family", "prediction_type", "pipeline_class", "parent", "created_at")
    list_filter = ("kind", "family", "prediction_type")
    search_fields = ("name", "local_path", "notes")
    raw_id_fields = ("parent",)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The page lists the models this one was trained from, with what apps above add to each (``lineage_columns``)."""
        model = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if model is not None and self.has_view_or_change_permission(request, model):
            context["lineage"] = {
                "columns": [section.title for section in lineage_columns.sections()],
                "rows": [
                    {"model": entry, "url": reverse("admin:catalog_modelversion_change", args=[entry.pk]),
                     "cells": [cell.html for cell in lineage_columns.render(entry)]}
                    for entry in model_lineage(model_version=model)
                ],
            }
        return super().change_view(request, object_id, form_url, extra_context=context)


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ("id", "batch", "model_version", "prompt", "seed", "status", "image", "finished_at")
    list_filter = ("status", "batch")
    search_fields = ("prompt__text", "model_version__name", "image__public_id")
    raw_id_fields = ("batch", "model_version", "prompt", "image")
    list_select_related = ("batch", "model_version", "prompt", "image")


@admin.register(GenerationBatch)
class GenerationBatchAdmin(admin.ModelAdmin):
    list_display = ("id", "label", "images", "created_at")
    search_fields = ("label",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            _jobs=Count("jobs", distinct=True),
            _done=Count("jobs", filter=Q(jobs__status=GenerationJob.Status.DONE), distinct=True),
        )

    @admin.display(description="images")
    def images(self, obj):
        return f"{obj._done} / {obj._jobs}"


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    """The research API's imports, read-only: an import is made by an upload, not in the admin."""

    list_display = ("id", "kind", "upload_name", "status", "requested_by", "created_at", "finished_at")
    list_filter = ("kind", "status")
    search_fields = ("upload_name",)
    readonly_fields = [field.name for field in ImportJob._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
