from django.contrib import admin
from django.utils.html import format_html

from annotation.models import AlignmentQuestion, Image, Prompt, PromptSet


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
        return format_html('<img src="{}" alt="" style="height:48px">', obj.file.url)
