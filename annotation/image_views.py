"""Image bytes behind an opaque URL, for the people allowed to see them."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.views.decorators.http import require_safe

from annotation.selectors import image_for_viewer


@require_safe
@login_required
def image_file(request, public_id: str):
    image = image_for_viewer(user=request.user, public_id=public_id)
    if image is None or not image.file:
        # Same answer for "unknown" and "not yours": an id reveals nothing by probing.
        raise Http404("no such image")
    response = FileResponse(image.file.open("rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response
