from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from annotation.roles import is_annotator, is_researcher


@login_required
def home(request):
    return render(
        request,
        "home.html",
        {"is_researcher": is_researcher(request.user), "is_annotator": is_annotator(request.user)},
    )
