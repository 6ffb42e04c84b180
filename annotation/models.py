"""Annotation rounds: items, leases, judgments and their aggregates, over the catalog's images."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from annotation import voting
from annotation.criteria import Criterion
from catalog.models import AlignmentQuestion, Image, Prompt, new_public_id

ANNOTATORS_GROUP = "annotators"
RESEARCHERS_GROUP = "researchers"


class AnnotatorProfile(models.Model):
    """Per-account annotation state: the synthetic flag and the submission rate limiter."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotator_profile")
    synthetic = models.BooleanField(
        default=False, db_index=True, help_text="A simulated annotator (demos, load tests); its votes are counted apart."
    )
    submit_tokens = models.FloatField(default=0.0, help_text="Token bucket for the submission rate limit.")
    submit_tokens_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} ({'synthetic' if self.synthetic else 'human'})"


class Round(models.Model):
    class Kind(models.TextChoices):
        PAIRWISE = "pairwise", "Pairwise (A/B)"
        BEST_WORST = "best_worst", "Best/worst of N"
        ALIGNMENT = "alignment", "Text alignment (yes/no questions)"

    Criterion = Criterion

    class NoMajorityRule(models.TextChoices):
        TIE = "tie", "Tie"
        MEAN_SCORE = "mean_score", "Sign of the mean score"

    class Status(models.TextChoices):
        DRAFT = "draft"
        OPEN = "open"
        CLOSED = "closed"

    class CloseRule(models.TextChoices):
        COUNT_PARTIAL = voting.COUNT_PARTIAL, "Decide items with enough votes by the votes they have"
        DROP_PARTIAL = voting.DROP_PARTIAL, "Leave items short of K out"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    criterion = models.CharField(max_length=20, choices=Criterion.choices(), blank=True)
    k = models.PositiveSmallIntegerField(default=5, help_text="Judgments per item, from distinct annotators.")
    lease_ttl_seconds = models.PositiveIntegerField(default=600)
    no_majority_rule = models.CharField(max_length=20, choices=NoMajorityRule.choices, default=NoMajorityRule.TIE)
    gold_rate = models.FloatField(default=0.0, help_text="Share of an annotator's items drawn from gold items.")
    gold_min_accuracy = models.FloatField(
        null=True, blank=True, help_text="Annotators whose gold accuracy is below this are left out of aggregation."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True)
    close_rule = models.CharField(
        max_length=20, choices=CloseRule.choices, blank=True,
        help_text="How the round's items short of K count, once it was closed early (round_close).",
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(k__gte=1), name="round_k_positive"),
            models.CheckConstraint(condition=models.Q(gold_rate__gte=0) & models.Q(gold_rate__lte=1), name="round_gold_rate_share"),
            models.CheckConstraint(
                condition=(models.Q(kind="pairwise") & ~models.Q(criterion=""))
                | (~models.Q(kind="pairwise") & models.Q(criterion="")),
                name="round_criterion_iff_pairwise",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        from django.core.exceptions import ValidationError

        # The same rules as the check constraints, named by field; ``annotation.kinds`` asks them through ``round_check``.
        errors = {}
        if (self.kind == self.Kind.PAIRWISE) != bool(self.criterion):
            errors["criterion"] = "Pairwise rounds need a criterion; other kinds take none."
        if self.k is not None and self.k < 1:
            errors["k"] = "K must be at least 1."
        if self.lease_ttl_seconds is not None and self.lease_ttl_seconds < 1:
            errors["lease_ttl_seconds"] = "A lease lasts at least one second."
        # Written as "not inside" so that NaN is refused too.
        if self.gold_rate is not None and not 0 <= self.gold_rate <= 1:
            errors["gold_rate"] = "A share: between 0 and 1."
        if self.gold_min_accuracy is not None and not 0 <= self.gold_min_accuracy <= 1:
            errors["gold_min_accuracy"] = "An accuracy: between 0 and 1."
        if errors:
            raise ValidationError(errors)


class Item(models.Model):
    """One task: two images (pairwise), N images (best/worst) or one image (alignment)."""

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="items")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="annotation_items")
    images = models.ManyToManyField(Image, through="ItemImage", related_name="items")
    is_gold = models.BooleanField(default=False)
    gold_answer = models.JSONField(null=True, blank=True, help_text="The known answer, in the submit format.")
    slots_taken = models.PositiveSmallIntegerField(
        default=0, help_text="Judgments plus held leases; never above K (gold items excepted)."
    )
    k = models.PositiveSmallIntegerField(
        default=5, help_text="The round's K, copied here so that the database itself checks slots_taken <= K."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The assignment scan: a round's open items, fullest first.
            models.Index(fields=["round", "is_gold", "-slots_taken", "id"], name="item_assignment_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(is_gold=False) | models.Q(gold_answer__isnull=False), name="item_gold_has_answer"
            ),
            models.CheckConstraint(
                condition=models.Q(is_gold=True) | models.Q(slots_taken__lte=models.F("k")), name="item_slots_within_k"
            ),
        ]

    def __str__(self) -> str:
        return f"item {self.pk} of {self.round_id}"


class ItemImage(models.Model):
    """An image in one item, under an opaque id of its own: the id annotators see, in the image's URL,
    their layout and their answers. The same image has another id in every item (so in every round),
    and nothing seen in one round points at an image in another; the file is stored once."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="item_images")
    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="item_images")
    order = models.PositiveSmallIntegerField()
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)

    class Meta:
        ordering = ["item", "order"]
        constraints = [
            models.UniqueConstraint(fields=["item", "order"], name="unique_item_image_order"),
            models.UniqueConstraint(fields=["item", "image"], name="unique_item_image"),
        ]


class Lease(models.Model):
    """An item reserved for one annotator until `expires_at`; one row per (item, annotator).

    ``expired``: timed out, or released for another item; the item goes to this annotator again only
    when nothing else is left. ``skipped``: declined with a reason; never offered to them again.
    """

    class State(models.TextChoices):
        HELD = "held"
        SUBMITTED = "submitted"
        EXPIRED = "expired"
        SKIPPED = "skipped"

    class SkipReason(models.TextChoices):
        IMAGE_DOES_NOT_LOAD = "image_does_not_load", "The image does not load"
        CANNOT_JUDGE = "cannot_judge", "I cannot judge this item"
        NOT_MY_EXPERTISE = "not_my_expertise", "Not my expertise"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="leases")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="leases")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases")
    state = models.CharField(max_length=10, choices=State.choices, default=State.HELD)
    layout = models.JSONField(help_text="The item's image ids in screen order (left, right / grid order).")
    created_at = models.DateTimeField(auto_now_add=True)
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    skip_reason = models.CharField(max_length=20, choices=SkipReason.choices, blank=True, default="")
    skipped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-leased_at"]
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="unique_lease_item_annotator"),
            models.CheckConstraint(
                condition=(models.Q(state="skipped") & ~models.Q(skip_reason="") & models.Q(skipped_at__isnull=False))
                | (~models.Q(state="skipped") & models.Q(skip_reason="") & models.Q(skipped_at__isnull=True)),
                name="lease_skip_reason_iff_skipped",
            ),
        ]
        indexes = [
            models.Index(fields=["round", "state", "expires_at"], name="lease_reclaim_idx"),
            models.Index(fields=["annotator", "round", "state"], name="lease_annotator_idx"),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} ({self.state})"


class Judgment(models.Model):
    """One annotator's answer to one item, in image ids; the layout shown is kept beside it."""

    class Outcome(models.TextChoices):
        WIN = "win"
        TIE = "tie"
        CANNOT_COMPARE = "cannot_compare"
        BEST_WORST = "best_worst"
        ALIGNMENT = "alignment"

    client_uuid = models.UUIDField(unique=True, help_text="Generated by the client; makes a retried POST harmless.")
    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="judgments")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="judgments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="judgments")
    lease = models.ForeignKey(Lease, null=True, on_delete=models.SET_NULL, related_name="judgments")
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    winner = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Pairwise: the preferred image. Best/worst: the image marked best.",
    )
    loser = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Pairwise: the other image. Best/worst: the image marked worst.",
    )
    layout = models.JSONField(help_text="The item's image ids in the screen order this annotator saw.")
    elapsed_ms = models.PositiveIntegerField()
    synthetic = models.BooleanField(default=False, help_text="Copied from the annotator's account flag.")
    gold_score = models.FloatField(null=True, blank=True, help_text="Agreement with the gold answer, 0..1.")
    created_at = models.DateTimeField()
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["item", "annotator"], condition=models.Q(undone_at__isnull=True),
                name="unique_judgment_item_annotator",
            ),
            models.CheckConstraint(
                condition=models.Q(winner__isnull=True) | models.Q(loser__isnull=True) | ~models.Q(winner=models.F("loser")),
                name="judgment_winner_is_not_loser",
            ),
        ]
        indexes = [models.Index(fields=["annotator", "-created_at"], name="judgment_annotator_recent_idx")]

    def __str__(self) -> str:
        return f"judgment {self.client_uuid}"


class AlignmentAnswer(models.Model):
    judgment = models.ForeignKey(Judgment, on_delete=models.CASCADE, related_name="answers")
    question = models.ForeignKey(AlignmentQuestion, on_delete=models.PROTECT, related_name="answers")
    answer = models.BooleanField(help_text="True for yes.")

    class Meta:
        ordering = ["judgment", "question__order"]
        constraints = [models.UniqueConstraint(fields=["judgment", "question"], name="unique_answer_question")]


class Aggregate(models.Model):
    """The majority result of one item, updated as judgments arrive (and on demand)."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "no valid votes yet"
        WINNER = "winner", "a winner/loser pair"
        TIE = "tie"
        AMBIGUOUS = "ambiguous", "ambiguous: no pair"
        ALIGNMENT = "alignment", "per-question answers"

    item = models.OneToOneField(Item, on_delete=models.CASCADE, primary_key=True, related_name="aggregate")
    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="aggregates")
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.PENDING)
    winner = models.ForeignKey(Image, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    loser = models.ForeignKey(Image, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    margin = models.FloatField(null=True, blank=True, help_text="Vote margin of the pair, 0..1.")
    no_majority = models.BooleanField(default=False, help_text="No label reached a majority (pairwise).")
    counts = models.JSONField(default=dict, help_text="Votes per label (pairwise), per image (best/worst), per question.")
    question_results = models.JSONField(default=dict, blank=True, help_text="Alignment: question id -> majority yes.")
    alignment_score = models.FloatField(null=True, blank=True, help_text="Share of questions answered yes.")
    n_judgments = models.PositiveSmallIntegerField(default=0)
    n_used = models.PositiveSmallIntegerField(default=0, help_text="Judgments counted (not rejected, not excluded).")
    n_rejected = models.PositiveSmallIntegerField(default=0)
    n_excluded = models.PositiveSmallIntegerField(default=0, help_text="From annotators below the gold threshold.")
    n_synthetic = models.PositiveSmallIntegerField(default=0, help_text="Counted judgments from synthetic accounts.")
    complete = models.BooleanField(
        default=False,
        help_text="The item counts: it has K judgments, or its round was closed under count-partial with enough votes.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["item"]
        indexes = [models.Index(fields=["round", "complete"], name="aggregate_round_complete_idx")]

    def __str__(self) -> str:
        return f"aggregate of item {self.item_id}: {self.outcome}"
