from pathlib import Path

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from annotation.errors import AnnotationError
from annotation.kinds import kinds_with_pairs
from annotation.models import Round
from catalog.models import ModelVersion, PromptSet
from training.engine.config import ConfigError, read_settings
from training.models import TrainingRound, TrainingRun, WorkerHeartbeat
from training.rounds import (
    TrainingRoundError, training_round_iterate, training_round_launch, training_round_progress,
)
from training.services import RUN_DECIDED


def config_choices() -> list[tuple[str, str]]:
    folder = Path(settings.BASE_DIR) / "training" / "configs"
    return [(str(path), path.name) for path in sorted(folder.glob("*.toml"))]


class TrainingRoundForm(forms.Form):
    round = forms.ModelChoiceField(
        Round.objects.filter(kind__in=kinds_with_pairs()),
        help_text="Its winner/loser pairs become the training data.",
    )
    base_model = forms.ModelChoiceField(
        ModelVersion.objects.filter(kind=ModelVersion.Kind.PIPELINE), help_text="External models have no weights to train.",
    )
    config = forms.ChoiceField(choices=config_choices, help_text="An example config from training/configs/.")
    overrides = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One key=value per line, e.g. max_train_steps=2000 or pixel_weight=8.",
    )
    name = forms.CharField(max_length=200, help_text="Name of the run and of the model it produces.")
    evaluate_on = forms.ModelChoiceField(
        PromptSet.objects.all(), required=False, help_text="Evaluate the new model against the base on this set.",
    )
    evaluate_limit = forms.IntegerField(required=False, min_value=1, help_text="A seeded sample of this many prompts.")


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = (
        "name", "base_model", "source_round", "status", "output_model", "attempts", "worker", "created_at", "finished_at",
    )
    list_filter = ("status", "base_model__family")
    search_fields = ("name", "dataset_path", "error")
    raw_id_fields = ("base_model", "created_by", "source_round")
    readonly_fields = (
        "status", "output_model", "attempts", "worker", "metrics", "error", "created_at", "started_at", "finished_at",
    )

    def add_view(self, request, form_url="", extra_context=None):
        """Adding a run means launching a training round: export, train on a gpu worker, register."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = TrainingRoundForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                config, _ = read_settings(data["config"], data["overrides"].splitlines(), leave_out=RUN_DECIDED)
                with transaction.atomic():
                    launch = training_round_launch(
                        round_=data["round"], base_model=data["base_model"], config=config, name=data["name"],
                        evaluate_on=data["evaluate_on"], evaluate_limit=data["evaluate_limit"], created_by=request.user,
                    )
            except ConfigError as exc:
                form.add_error("overrides", f"{exc} (nothing was launched)")
            except (AnnotationError, TrainingRoundError) as exc:
                form.add_error(None, f"{getattr(exc, 'detail', exc)} (nothing was launched)")
            else:
                self.message_user(
                    request,
                    f"{launch.export.pairs} pairs exported to {launch.export.path}; run '{launch.run.name}' "
                    "queued on the gpu queue",
                    level=messages.SUCCESS,
                )
                return redirect("admin:training_trainingrun_change", launch.run.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": "Launch a training round",
            "intro": "Exports the round's winner/loser pairs, trains the base model on a gpu worker, registers "
                     "the checkpoint as a new model and, if asked, evaluates it against the base.",
            "submit_label": "Launch",
            "form": form,
            "opts": self.model._meta,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/form_page.html", context)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("hostname", "queue", "last_seen")
    list_filter = ("queue",)
    search_fields = ("hostname",)


@admin.register(TrainingRound)
class TrainingRoundAdmin(admin.ModelAdmin):
    """Whole rounds, launched by ``manage.py launch_training_round``; their stages move on by themselves."""

    list_display = ("name", "stage", "progress", "base_model", "prompt_set", "method", "pixel_weight",
                    "output_model", "created_at")
    list_filter = ("stage", "method")
    search_fields = ("name", "error")
    actions = ["iterate"]
    fields = readonly_fields = (
        "name", "stage", "progress", "failed_stage", "error", "base_model", "prompt_set", "limit", "seed",
        "images_per_prompt", "k", "method", "pixel_weight", "config", "evaluate_on", "evaluate_limit",
        "evaluate_seed", "previous", "annotation_round", "dataset_path", "pairs", "training_run", "output_model",
        "evaluation_batch", "created_by", "created_at", "stage_changed_at", "finished_at",
    )

    def has_add_permission(self, request):
        return False  # launched with manage.py launch_training_round

    @admin.display(description="progress")
    def progress(self, obj: TrainingRound) -> str:
        progress = training_round_progress(obj)
        return f"{progress.done}/{progress.total} {progress.what}" if progress else "—"

    @admin.action(description="Iterate: start the next round with each selected round's new model as its base")
    def iterate(self, request, queryset):
        for previous in queryset.order_by("pk"):
            try:
                with transaction.atomic():
                    started = training_round_iterate(previous=previous, created_by=request.user)
            except (TrainingRoundError, ConfigError) as exc:
                self.message_user(request, f"{previous.name}: {exc} (nothing was launched)", level=messages.ERROR)
            else:
                self.message_user(
                    request, f"round '{started.name}' started from '{previous.name}' with base '{started.base_model}'",
                    level=messages.SUCCESS,
                )
