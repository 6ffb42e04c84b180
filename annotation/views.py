from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse

from annotation.conf import setting
from annotation.criteria import Criterion
from annotation.forms import LoginForm
from annotation.kinds import item_kind
from annotation.models import Lease, Round
from annotation.roles import is_annotator, is_researcher


class LoginView(auth_views.LoginView):
    """Django's login page; a locked login answers 429 with Retry-After and the wait on the page."""

    authentication_form = LoginForm

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.retry_after:
            response.status_code = 429
            response["Retry-After"] = str(form.retry_after)
        return response


def criteria_config() -> dict:
    """The pages' words for each criterion: a title for the dashboard, the question on the task page."""
    return {c.value: {"label": c.label, "question": c.question} for c in Criterion}


@login_required
def home(request):
    return render(
        request,
        "home.html",
        {
            "is_researcher": is_researcher(request.user),
            "is_annotator": is_annotator(request.user),
            "dashboard_config": {"progress": reverse("annotate-progress"), "criteria": criteria_config()},
        },
    )


@login_required
def guidelines(request):
    return render(request, "annotation/guidelines.html", {"undo_seconds": round(setting("ANNOTATION_UNDO_SECONDS"))})


@login_required
def annotate(request, kind: str, round_id: int):
    if not is_annotator(request.user):
        raise PermissionDenied("Annotators only.")
    round_kind = Round.objects.filter(pk=round_id, status=Round.Status.OPEN).values_list("kind", flat=True).first()
    if round_kind is None:
        raise Http404("No open round with this id.")
    if round_kind != kind:
        return redirect(item_kind(round_kind).page[0], round_id=round_id)
    task_config = {
        "round": round_id,
        "kind": kind,
        "criteria": criteria_config(),
        "urls": {
            "next": reverse("annotate-next", kwargs={"round_id": round_id}),
            "submit": reverse("annotate-submit"),
            "undo": reverse("annotate-undo"),
            "skip": reverse("annotate-skip"),
            "progress": reverse("annotate-progress"),
        },
        "skip_reasons": [{"code": code, "label": label} for code, label in Lease.SkipReason.choices],
    }
    return render(request, item_kind(kind).page[1], {"task_config": task_config})
