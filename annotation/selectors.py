"""Read-side queries of the annotation app: what annotators see, and what researchers read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Avg, Count, Exists, OuterRef, Q, Sum
from django.utils import timezone

from annotation.kinds import item_kind
from annotation.models import Aggregate, Item, ItemImage, Judgment, Lease, Round
from annotation.roles import is_annotator, is_researcher
from catalog.models import Image
from catalog.selectors import image_url


def round_by_id_or_name(value: str) -> Round | None:
    """A round by id (all digits) or else by name; None when there is none."""
    round_ = Round.objects.filter(pk=int(value)).first() if value.isdigit() else None
    return round_ or Round.objects.filter(name=value).first()


def task_payload(task) -> dict:
    """The blinded task an annotator sees (``task``: an ``assignment.Task``): the item's opaque ids for
    its images, in this annotator's layout; no model, path, seed or catalog id."""
    round_, lease = task.round, task.lease
    images = {image.public_id: image for image in task.item.images()}
    return {
        "lease": str(lease.id),
        "round": round_.id,
        "kind": round_.kind,
        "criterion": round_.criterion or None,
        "expires_at": lease.expires_at,
        "images": [
            {"id": pid, "url": image_url(pid), "width": images[pid].width, "height": images[pid].height}
            for pid in lease.layout
        ],
        **item_kind(round_.kind).task_fields(item=task.item),
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
        # Gold items count like the others whenever they are served (gold_rate > 0), so that no count
        # tells an annotator that the item they hold is gold. Gold items are outside K: open until judged.
        items = Item.objects.filter(round=round_)
        if round_.gold_rate == 0:
            items = items.filter(is_gold=False)
        held_or_judged = Lease.objects.filter(
            item=OuterRef("pk"), annotator=annotator,
            state__in=[Lease.State.HELD, Lease.State.SUBMITTED, Lease.State.SKIPPED],
        )
        servable = items.filter(Q(is_gold=True) | Q(aggregate__complete=False)).exclude(Exists(held_or_judged))
        rounds.append({
            "id": round_.pk,
            "kind": round_.kind,
            "criterion": round_.criterion or None,
            "items_total": items.count(),
            "items_complete": items.filter(aggregate__complete=True).count(),
            "judged_by_me": mine.filter(round=round_).count(),
            "available_to_me": servable.count(),
        })
    return {
        "judged_total": mine.count(),
        "judged_today": mine.filter(created_at__gte=start_of_day).count(),
        "rounds": rounds,
    }


def image_for_viewer(*, user, public_id: str) -> Image | None:
    """The image behind an id if this user may see it, else None.

    Annotators see images by the ids of the items they were leased, and only while they are in the
    annotators group. Researchers see them by those ids too, and by catalog id.
    """
    shown = ItemImage.objects.select_related("image").filter(public_id=public_id).first()
    if shown is not None:
        if is_researcher(user):
            return shown.image
        if is_annotator(user) and Lease.objects.filter(item_id=shown.item_id, annotator=user).exists():
            return shown.image
        return None
    if is_researcher(user):
        return Image.objects.filter(public_id=public_id).first()
    return None


def undo_deadline(judgment):
    from annotation.conf import setting

    return judgment.created_at + timedelta(seconds=setting("ANNOTATION_UNDO_SECONDS"))


def annotators_by_id(ids):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(pk__in=list(ids)).only("id", "username")


# --- gold and round results -----------------------------------------------------------


def gold_accuracy(*, round_: Round, annotator_ids=None) -> dict[int, tuple[float, int]]:
    """Per annotator: (mean gold score, number of gold judgments) in the round."""
    rows = Judgment.objects.filter(round_id=round_.id, undone_at__isnull=True, gold_score__isnull=False)
    if annotator_ids is not None:
        rows = rows.filter(annotator_id__in=annotator_ids)
    return {
        row["annotator_id"]: (row["accuracy"], row["n"])
        for row in rows.values("annotator_id").annotate(accuracy=Avg("gold_score"), n=Count("id"))
    }


def annotators_excluded(*, round_: Round, annotator_ids=None) -> set[int]:
    """Annotators whose gold accuracy is below the round's threshold (with at least one gold judgment)."""
    if round_.gold_min_accuracy is None:
        return set()
    return {
        annotator for annotator, (accuracy, _n) in gold_accuracy(round_=round_, annotator_ids=annotator_ids).items()
        if accuracy < round_.gold_min_accuracy
    }


@dataclass(frozen=True)
class RoundSummary:
    items: int
    complete: int
    pairs: int
    ties: int
    no_majority: int
    ambiguous: int
    judgments: int
    synthetic_judgments: int
    excluded_annotators: list[int]
    skips: int = 0
    skips_by_reason: dict[str, int] = field(default_factory=dict)


def round_summary(*, round_: Round) -> RoundSummary:
    rows = Aggregate.objects.filter(round=round_, item__is_gold=False)
    complete = rows.filter(complete=True)
    by_reason = skip_counts(round_=round_, by="skip_reason")
    return RoundSummary(
        items=rows.count(),
        complete=complete.count(),
        pairs=complete.filter(outcome=Aggregate.Outcome.WINNER).count(),
        ties=complete.filter(outcome=Aggregate.Outcome.TIE).count(),
        no_majority=complete.filter(no_majority=True).count(),
        ambiguous=complete.filter(outcome=Aggregate.Outcome.AMBIGUOUS).count(),
        judgments=Judgment.objects.filter(round=round_, undone_at__isnull=True).count(),
        synthetic_judgments=complete.aggregate(n=Sum("n_synthetic"))["n"] or 0,
        excluded_annotators=sorted(annotators_excluded(round_=round_)),
        skips=sum(by_reason.values()),
        skips_by_reason=by_reason,
    )


def skip_counts(*, round_: Round, by: str) -> dict:
    """Skipped leases of the round counted by ``by``: ``skip_reason``, ``annotator_id`` or ``item_id``."""
    rows = Lease.objects.filter(round=round_, state=Lease.State.SKIPPED).values(by).annotate(n=Count("id"))
    return {row[by]: row["n"] for row in rows.order_by(by)}


@dataclass(frozen=True)
class RoundClosing:
    """How a round's (non-gold) items count: with K judgments, decided short of K when it was closed
    under count-partial, or left out (still open, undecided under count-partial, dropped under drop-partial)."""

    status: str
    rule: str  # "" until the round is closed early
    closed_at: str | None
    items: int
    complete_k: int
    decided_short: int
    left_out: int

    def line(self) -> str:
        """One line on how the round counts its items (the admin, ``close_round`` and reports print it)."""
        if self.rule == Round.CloseRule.COUNT_PARTIAL:
            short = f"{self.decided_short} decided by the votes they have, {self.left_out} undecided"
        elif self.rule:
            short = f"{self.left_out} short of K left out"
        else:
            short = f"{self.left_out} still open"
        state = f"closed under {self.rule}" if self.rule else self.status
        return f"{state}: {self.complete_k} of {self.items} items with K judgments, {short}"

    def as_dict(self) -> dict:
        return {
            "status": self.status, "rule": self.rule, "closed_at": self.closed_at, "items": self.items,
            "complete_k": self.complete_k, "decided_short": self.decided_short, "left_out": self.left_out,
        }


def round_closing(*, round_: Round) -> RoundClosing:
    counts = Aggregate.objects.filter(round=round_, item__is_gold=False).aggregate(
        items=Count("item_id"),
        complete_k=Count("item_id", filter=Q(complete=True, n_judgments__gte=round_.k)),
        decided_short=Count("item_id", filter=Q(complete=True, n_judgments__lt=round_.k)),
        left_out=Count("item_id", filter=Q(complete=False)),
    )
    return RoundClosing(
        status=round_.status, rule=round_.close_rule,
        closed_at=round_.closed_at.isoformat() if round_.closed_at else None, **counts,
    )
