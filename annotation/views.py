from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render

from annotation.roles import is_annotator, is_researcher

# One page per task kind; the page asks the annotator API for the round's tasks.
TASK_TEMPLATES = {
    "pairwise": "annotation/pairwise.html",
    "best_worst": "annotation/best_worst.html",
    "alignment": "annotation/alignment.html",
}

ANNOTATE_API = {
    "next": "/api/annotate/rounds/{round}/next/",
    "submit": "/api/annotate/submit/",
    "undo": "/api/annotate/undo/",
    "progress": "/api/annotate/progress/",
}


@login_required
def home(request):
    return render(
        request,
        "home.html",
        {
            "is_researcher": is_researcher(request.user),
            "is_annotator": is_annotator(request.user),
            "dashboard_config": {"progress": ANNOTATE_API["progress"]},
        },
    )


@login_required
def guidelines(request):
    return render(request, "annotation/guidelines.html")


@login_required
def annotate(request, kind: str, round_id: int):
    if not is_annotator(request.user):
        raise PermissionDenied("Annotators only.")
    task_config = {
        "round": round_id,
        "kind": kind,
        "urls": {name: url.format(round=round_id) for name, url in ANNOTATE_API.items()},
    }
    return render(request, TASK_TEMPLATES[kind], {"task_config": task_config})
