from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from catalog.models import GenerationJob, ModelVersion, PromptSet
from evaluation.models import EvaluationModel, EvaluationRound
from evaluation.services import EvaluationError, evaluation_annotation_create, evaluation_jobs_fill, evaluation_start
from evaluation.summaries import describe_missing, describe_start


class EvaluationCreateForm(forms.Form):
    """The admin's version of ``manage.py create_evaluation``."""

    models = forms.CharField(
        help_text="Model version names in order, separated by commas or spaces; Model A of each pair is listed first."
    )
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.all())
    limit = forms.IntegerField(required=False, min_value=1, help_text="Evaluate a seeded sample of this many prompts.")
    seed = forms.IntegerField(initial=0, help_text="Derives each prompt's image seed (the same for every model).")
    k = forms.IntegerField(initial=5, min_value=1, label="K", help_text="Judgments per item.")
    name = forms.CharField(required=False, max_length=200)
    from_existing = forms.BooleanField(
        required=False, initial=True,
        help_text="Fill the jobs from existing images with the same (model, prompt, seed) and create the rounds now.",
    )
    seed_policy = forms.ChoiceField(
        choices=EvaluationRound.SeedPolicy.choices, initial=EvaluationRound.SeedPolicy.EVALUATION, required=False,
        help_text="Which existing images fill the jobs; 'any' for images imported with their own seeds.",
    )

    def clean_seed_policy(self):
        return self.cleaned_data["seed_policy"] or EvaluationRound.SeedPolicy.EVALUATION

    def clean_models(self):
        names = [n for n in self.cleaned_data["models"].replace(",", " ").split() if n]
        found = {m.name: m for m in ModelVersion.objects.filter(name__in=names)}
        unknown = [n for n in names if n not in found]
        if unknown:
            raise forms.ValidationError(f"no model version named {', '.join(map(repr, unknown))}")
        if len(names) < 2:
            raise forms.ValidationError("an evaluation compares at least 2 models")
        return [found[n] for n in names]


class EvaluationModelInline(admin.TabularInline):
    model = EvaluationModel
    extra = 0
    can_delete = False
    readonly_fields = ("position", "model_version")

    def has_add_permission(self, request, obj=None):
        return False


@admin.action(description="Fill jobs from existing images and create the annotation rounds")
def fill_and_create_rounds_action(modeladmin, request, queryset):
    for evaluation in queryset:
        try:
            filled = evaluation_jobs_fill(evaluation=evaluation)
            build = evaluation_annotation_create(evaluation=evaluation, created_by=request.user)
        except EvaluationError as exc:
            modeladmin.message_user(request, f"{evaluation}: {exc}", level=messages.ERROR)
            continue
        modeladmin.message_user(
            request,
            f"{evaluation}: {filled} jobs filled; {len(build.rounds)} annotation rounds over {build.prompts_used} prompts",
            level=messages.SUCCESS,
        )
        for line in describe_missing(build.missing):
            modeladmin.message_user(request, line, level=messages.WARNING)


@admin.register(EvaluationRound)
class EvaluationRoundAdmin(admin.ModelAdmin):
    list_display = ("name", "models", "prompt_set", "limit", "seed", "seed_policy", "k", "status", "images", "report", "created_at")
    list_filter = ("status", "prompt_set")
    search_fields = ("name", "entries__model_version__name")
    readonly_fields = (
        "prompt_set", "limit", "seed", "seed_policy", "k", "annotation_rounds", "missing_prompts", "created_by", "created_at",
    )
    inlines = [EvaluationModelInline]
    actions = [fill_and_create_rounds_action]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("prompt_set").prefetch_related(
            "entries__model_version"
        ).annotate(
            _jobs=Count("generation_batch__jobs", distinct=True),
            _done=Count(
                "generation_batch__jobs", filter=Q(generation_batch__jobs__status=GenerationJob.Status.DONE),
                distinct=True,
            ),
        )

    @admin.display(description="models (A first)")
    def models(self, obj):
        return ", ".join(e.model_version.name for e in obj.entries.all())

    @admin.display(description="images")
    def images(self, obj):
        return f"{obj._done} / {obj._jobs}"

    @admin.display(description="report")
    def report(self, obj):
        return format_html('<a href="{}">report</a>', reverse("evaluation-detail", args=[obj.pk]))

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = EvaluationCreateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                result = evaluation_start(
                    model_versions=data["models"], prompt_set=data["prompt_set"], limit=data["limit"],
                    seed=data["seed"], k=data["k"], name=data["name"], from_existing=data["from_existing"],
                    seed_policy=data["seed_policy"], created_by=request.user,
                )
            except EvaluationError as exc:
                form.add_error(None, f"{exc} (nothing was created)")
            else:
                for line in describe_start(result):
                    self.message_user(request, line, level=messages.SUCCESS)
                if result.build:
                    for line in describe_missing(result.build.missing):
                        self.message_user(request, line, level=messages.WARNING)
                return redirect("admin:evaluation_evaluationround_change", result.evaluation.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": "Create an evaluation round",
            "form": form,
            "opts": self.model._meta,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/form_page.html", context)
