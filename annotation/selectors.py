"""Read-side queries of the annotation app: what annotators see, and what researchers read."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Exists, OuterRef
from django.utils import timezone

from annotation.models import Item, ItemImage, Judgment, Lease, Round
from annotation.roles import is_researcher
from catalog.models import AlignmentQuestion, Image
from catalog.selectors import image_url

PAIRWISE_CHOICES = ["left", "tie", "right"]


def round_by_id_or_name(value: str) -> Round | None:
    """A round by id (all digits) or else by name; None when there is none."""
    round_ = Round.objects.filter(pk=int(value)).first() if value.isdigit() else None
    return round_ or Round.objects.filter(name=value).first()


def task_for_lease(lease: Lease) -> dict:
    """The blinded task an annotator sees: opaque image ids in this annotator's layout, no model, path or seed."""
    round_ = lease.round
    cached = getattr(lease.item, "_ordered_images", None)  # loaded when the lease was just made
    if cached is None:
        cached = Image.objects.filter(public_id__in=lease.layout).only("public_id", "width", "height")
    images = {image.public_id: image for image in cached}
    prompt = None
    questions = []
    if round_.kind == Round.Kind.PAIRWISE:
        choices = PAIRWISE_CHOICES + (["cannot_compare"] if round_.criterion == Round.Criterion.VISUAL_APPEAL else [])
    else:
        prompt = lease.item.prompt.text
        choices = ["best", "worst"] if round_.kind == Round.Kind.BEST_WORST else ["yes", "no"]
    if round_.kind == Round.Kind.ALIGNMENT:
        questions = [
            {"id": q.pk, "text": q.text, "parents": sorted(p.pk for p in q.parents.all())}
            for q in AlignmentQuestion.objects.filter(prompt_id=lease.item.prompt_id).prefetch_related("parents").order_by("order")
        ]
    return {
        "lease": str(lease.pk),
        "round": round_.pk,
        "kind": round_.kind,
        "criterion": round_.criterion or None,
        "expires_at": lease.expires_at,
        "prompt": prompt,
        "images": [
            {"id": pid, "url": image_url(pid), "width": images[pid].width, "height": images[pid].height}
            for pid in lease.layout
        ],
        "choices": choices,
        "questions": questions,
    }


def rounds_open() -> list[Round]:
    return list(Round.objects.filter(status=Round.Status.OPEN).order_by("-created_at", "-id"))


def annotator_progress(*, annotator) -> dict:
    """An annotator's own counts, over every open round; nothing about other annotators' votes.

    No round names: researchers write them and may name the models compared.
    """
    now = timezone.now()
    mine = Judgment.objects.filter(annotator=annotator, undone_at__isnull=True)
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rounds = []
    for round_ in rounds_open():
        items = Item.objects.filter(round=round_, is_gold=False)
        held_or_judged = Lease.objects.filter(
            item=OuterRef("pk"), annotator=annotator, state__in=[Lease.State.HELD, Lease.State.SUBMITTED]
        )
        rounds.append({
            "id": round_.pk,
            "kind": round_.kind,
            "criterion": round_.criterion or None,
            "items_total": items.count(),
            "items_complete": items.filter(aggregate__complete=True).count(),
            "judged_by_me": mine.filter(round=round_).count(),
            "available_to_me": items.filter(aggregate__complete=False).exclude(Exists(held_or_judged)).count(),
        })
    return {
        "judged_total": mine.count(),
        "judged_today": mine.filter(created_at__gte=start_of_day).count(),
        "rounds": rounds,
    }


def image_for_viewer(*, user, public_id: str) -> Image | None:
    """The image if this user may see it: researchers any, annotators those of items they were leased."""
    image = Image.objects.filter(public_id=public_id).first()
    if image is None:
        return None
    if is_researcher(user):
        return image
    leased = ItemImage.objects.filter(
        image=image, item__leases__annotator=user,
    ).exists()
    return image if leased else None


def undo_deadline(judgment: Judgment):
    from annotation.conf import setting

    return judgment.created_at + timedelta(seconds=setting("ANNOTATION_UNDO_SECONDS"))


def annotators_by_id(ids):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(pk__in=list(ids)).only("id", "username")
