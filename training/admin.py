from django import forms
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
from training.run_page import run_page_context
from training.services import (
    RUN_DECIDED, RunStateError, training_config_files, training_run_cancel, training_run_resume,
)


def config_choices() -> list[tuple[str, str]]:
    return [(str(path), name) for name, path in training_config_files().items()]


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


def _run_state_action(modeladmin, request, queryset, change, done: str) -> None:
    """Apply ``change`` to each selected run; a run in the wrong state is one error message, never a 500."""
    changed = []
    for run in queryset.order_by("pk"):
        try:
            change(run=run)
        except RunStateError as exc:
            modeladmin.message_user(request, f"{exc} ({exc.code})", level=messages.ERROR)
        else:
            changed.append(run.name)
    if changed:
        modeladmin.message_user(request, f"{done}: {', '.join(changed)}", level=messages.SUCCESS)


@admin.action(description="Cancel selected runs", permissions=["change"])
def cancel_runs_action(modeladmin, request, queryset):
    _run_state_action(
        modeladmin, request, queryset, training_run_cancel,
        "Cancelled (a running run stops at its next step; its checkpoints stay)",
    )


@admin.action(description="Resume selected runs", permissions=["change"])
def resume_runs_action(modeladmin, request, queryset):
    _run_state_action(
        modeladmin, request, queryset, training_run_resume, "Queued again (each goes on from its latest checkpoint)",
    )


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = (
        "name", "base_model", "source_round", "status", "step_of", "output_model", "attempts", "worker", "created_at",
        "finished_at",
    )
    list_filter = ("status", "base_model__family")
    search_fields = ("name", "dataset_path", "error")
    raw_id_fields = ("base_model", "created_by", "source_round")
    # What the worker writes is shown by the run panel above the form, not as form fields.
    exclude = ("progress", "history", "log_tail", "error_traceback", "step", "total_steps", "phase", "progress_at")
    readonly_fields = (
        "status", "output_model", "attempts", "worker", "metrics", "error", "cancel_requested_at", "created_at",
        "started_at", "finished_at",
    )
    actions = [cancel_runs_action, resume_runs_action]

    @admin.display(description="step")
    def step_of(self, obj):
        return f"{obj.step} / {obj.total_steps}" if obj.total_steps else obj.step

    def _settled(self, obj) -> bool:
        return obj is not None and obj.status != TrainingRun.Status.QUEUED

    def get_exclude(self, request, obj=None):
        # a run a worker took is a record: its config shows, pretty, in the panel
        return (*self.exclude, "config") if self._settled(obj) else self.exclude

    def get_readonly_fields(self, request, obj=None):
        """Only a queued run's settings can still change."""
        if self._settled(obj):
            hidden = {"id", *self.get_exclude(request, obj)}
            return [f.name for f in self.model._meta.fields if f.name not in hidden]
        return self.readonly_fields

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if run is not None and self.has_view_or_change_permission(request, run):
            context["run_page"] = run_page_context(run)
            if self._settled(run):  # nothing on the form can change: no save buttons
                context.update(show_save=False, show_save_and_continue=False, show_save_and_add_another=False)
        return super().change_view(request, object_id, form_url, extra_context=context)

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
                        export_now=False,  # a web request: the export (every pair's images) runs on the default queue
                    )
            except ConfigError as exc:
                form.add_error("overrides", f"{exc} (nothing was launched)")
            except (AnnotationError, TrainingRoundError) as exc:
                detail = str(exc) if isinstance(exc, TrainingRoundError) else exc.detail  # with the field at fault
                form.add_error(None, f"{detail} (nothing was launched)")
            else:
                self.message_user(
                    request,
                    f"run '{launch.run.name}' queued: the round's pairs are exported on the default queue, then "
                    "it trains on the gpu queue",
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
