"""Request parsing and response shapes of the annotation API (see docs/annotation-api.md)."""

from __future__ import annotations

from rest_framework import serializers

from annotation import voting
from annotation.criteria import Criterion
from annotation.kinds import KINDS
from annotation.models import Aggregate, Item, Judgment, Lease, Round

# --- annotator side -------------------------------------------------------------------


class UUIDField(serializers.UUIDField):
    """A UUID written as a string; DRF's field would also take an integer (and read it as a UUID)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class NextRequestSerializer(serializers.Serializer):
    exclude = serializers.ListField(child=UUIDField(), required=False, default=list, max_length=20)


class TaskImageSerializer(serializers.Serializer):
    id = serializers.CharField()
    url = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()


class TaskQuestionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()
    parents = serializers.ListField(child=serializers.IntegerField())


class TaskSerializer(serializers.Serializer):
    lease = serializers.UUIDField()
    round = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Round.Kind.choices)
    criterion = serializers.ChoiceField(choices=Criterion.choices(), allow_null=True)
    expires_at = serializers.DateTimeField()
    prompt = serializers.CharField(allow_null=True)
    images = TaskImageSerializer(many=True)
    choices = serializers.ListField(child=serializers.CharField())
    questions = TaskQuestionSerializer(many=True)


class NextResponseSerializer(serializers.Serializer):
    task = TaskSerializer(allow_null=True)
    reason = serializers.CharField(required=False)


class SubmitRequestSerializer(serializers.Serializer):
    client_uuid = UUIDField()
    lease = UUIDField()
    elapsed_ms = serializers.IntegerField(min_value=0, max_value=24 * 3600 * 1000)
    answer = serializers.JSONField(
        help_text="; ".join(f"{value} {kind.answer_format}" for value, kind in KINDS.items())
    )
    next = serializers.BooleanField(
        required=False, default=False, help_text="also lease and return the annotator's next task of the round"
    )
    exclude = serializers.ListField(
        child=UUIDField(), required=False, default=list, max_length=20,
        help_text="with next: leases the client still holds (as in next)",
    )


class SubmitResponseSerializer(serializers.Serializer):
    judgment = serializers.UUIDField()
    replayed = serializers.BooleanField()
    undo_until = serializers.DateTimeField()
    next = TaskSerializer(
        allow_null=True, required=False,
        help_text="only when the request had next: true; null when nothing is left for this annotator",
    )


class SkipRequestSerializer(serializers.Serializer):
    lease = UUIDField()
    reason = serializers.ChoiceField(
        choices=Lease.SkipReason.choices,
        help_text="; ".join(f"{value}: {label}" for value, label in Lease.SkipReason.choices),
    )
    next = serializers.BooleanField(
        required=False, default=False, help_text="also lease and return the annotator's next task of the round"
    )
    exclude = serializers.ListField(
        child=UUIDField(), required=False, default=list, max_length=20,
        help_text="with next: leases the client still holds (as in next)",
    )


class SkipResponseSerializer(serializers.Serializer):
    skipped = serializers.UUIDField(help_text="the lease skipped")
    replayed = serializers.BooleanField(help_text="true when the lease was already skipped: nothing changed")
    next = TaskSerializer(
        allow_null=True, required=False,
        help_text="only when the request had next: true; null when nothing is left for this annotator",
    )


class UndoRequestSerializer(serializers.Serializer):
    judgment = UUIDField()


class UndoResponseSerializer(serializers.Serializer):
    undone = serializers.UUIDField()
    task = TaskSerializer()


class RoundProgressSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    criterion = serializers.CharField(allow_null=True)
    items_total = serializers.IntegerField()
    items_complete = serializers.IntegerField()
    judged_by_me = serializers.IntegerField()
    available_to_me = serializers.IntegerField()


class ProgressSerializer(serializers.Serializer):
    judged_total = serializers.IntegerField()
    judged_today = serializers.IntegerField()
    rounds = RoundProgressSerializer(many=True)


class ErrorSerializer(serializers.Serializer):
    """Every refused request (annotation.api.exception_handler); a 400 also names the field at fault."""

    detail = serializers.CharField()
    code = serializers.CharField(help_text="machine-readable, e.g. invalid, not_found, csrf_failed, round_closed")


# --- researcher side ------------------------------------------------------------------


class ItemSpecSerializer(serializers.Serializer):
    prompt = serializers.IntegerField()
    images = serializers.ListField(child=serializers.CharField(), help_text="Image public ids, canonical order.")
    is_gold = serializers.BooleanField(default=False)
    gold_answer = serializers.JSONField(required=False, allow_null=True)


class RoundSerializer(serializers.ModelSerializer):
    items = ItemSpecSerializer(many=True, write_only=True, required=False)
    item_count = serializers.SerializerMethodField()
    close_rule = serializers.ChoiceField(
        choices=Round.CloseRule.choices, allow_blank=True, read_only=True,
        help_text="How items short of K count since the round closed (POST .../close/); empty while it is open.",
    )

    class Meta:
        model = Round
        fields = [
            "id", "name", "kind", "criterion", "k", "lease_ttl_seconds", "no_majority_rule", "gold_rate",
            "gold_min_accuracy", "status", "close_rule", "closed_at", "created_at", "item_count", "items",
        ]
        read_only_fields = ["id", "close_rule", "closed_at", "created_at", "item_count"]

    def get_item_count(self, obj) -> int:
        return obj.items.count()

    def get_fields(self):
        fields = super().get_fields()
        if self.instance is not None and not isinstance(self.instance, list):
            # The kind, K and the items of an existing round are fixed (items hold a copy of K).
            for name in ("kind", "items", "k"):
                fields[name].read_only = True
        return fields


class RoundCloseSerializer(serializers.Serializer):
    rule = serializers.ChoiceField(
        choices=voting.CLOSE_RULES,
        help_text="count-partial: an item short of K is decided by the votes it has when it has at least "
                  "⌈K/2⌉ + 1, else it is undecided; drop-partial: items short of K are left out.",
    )


class RoundClosingSerializer(serializers.Serializer):
    status = serializers.CharField()
    rule = serializers.CharField(help_text="count-partial or drop-partial; empty while the round is open")
    closed_at = serializers.DateTimeField(allow_null=True)
    items = serializers.IntegerField(help_text="non-gold items")
    complete_k = serializers.IntegerField(help_text="items with K judgments")
    decided_short = serializers.IntegerField(help_text="items decided with fewer than K judgments (count-partial)")
    left_out = serializers.IntegerField(help_text="items undecided (count-partial), dropped (drop-partial) or open")


class ResearchItemSerializer(serializers.ModelSerializer):
    images = serializers.SerializerMethodField()
    judgments = serializers.SerializerMethodField()

    class Meta:
        model = Item
        fields = ["id", "round", "prompt", "is_gold", "gold_answer", "slots_taken", "images", "judgments"]
        read_only_fields = ["id", "round", "prompt", "slots_taken", "images", "judgments"]

    def get_images(self, obj) -> list[dict]:
        # ``id``: the catalog's (gold answers name images by it); ``shown_id``: the item's own, which
        # annotators see and which their layouts hold.
        return [
            {"id": ii.image.public_id, "shown_id": ii.public_id, "model": ii.image.model_version.name,
             "seed": ii.image.seed, "order": ii.order}
            for ii in obj.item_images.all()
        ]

    def get_judgments(self, obj) -> int:
        return sum(1 for j in obj.judgments.all() if j.undone_at is None)


class GoldSetSerializer(serializers.Serializer):
    is_gold = serializers.BooleanField()
    gold_answer = serializers.JSONField(required=False, allow_null=True)


class ResearchJudgmentSerializer(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.username")
    winner = serializers.CharField(source="winner.public_id", allow_null=True, default=None)
    loser = serializers.CharField(source="loser.public_id", allow_null=True, default=None)
    answers = serializers.SerializerMethodField()
    layout = serializers.SerializerMethodField()

    class Meta:
        model = Judgment
        fields = [
            "client_uuid", "item", "annotator", "outcome", "winner", "loser", "answers", "layout", "elapsed_ms",
            "synthetic", "gold_score", "created_at", "undone_at",
        ]

    def get_answers(self, obj) -> dict:
        return {str(a.question_id): a.answer for a in obj.answers.all()}

    def get_layout(self, obj) -> list[str]:
        """The screen order the annotator saw, in catalog ids like ``winner`` and ``loser``."""
        catalog = {ii.public_id: ii.image.public_id for ii in obj.item.item_images.all()}
        return [catalog.get(shown, shown) for shown in obj.layout or []]


class AggregateSerializer(serializers.ModelSerializer):
    winner = serializers.CharField(source="winner.public_id", allow_null=True, default=None)
    loser = serializers.CharField(source="loser.public_id", allow_null=True, default=None)

    class Meta:
        model = Aggregate
        fields = [
            "item", "outcome", "winner", "loser", "margin", "no_majority", "counts", "question_results",
            "alignment_score", "n_judgments", "n_used", "n_rejected", "n_excluded", "n_synthetic", "complete",
            "updated_at",
        ]
