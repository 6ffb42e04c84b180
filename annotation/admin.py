from django.contrib import admin, messages
from django.db.models import Count, Q

from annotation.models import Aggregate, AlignmentAnswer, AnnotatorProfile, Item, ItemImage, Judgment, Lease, Round


@admin.register(AnnotatorProfile)
class AnnotatorProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "synthetic", "skip_count")
    list_filter = ("synthetic",)
    search_fields = ("user__username",)
    raw_id_fields = ("user",)
    readonly_fields = ("submit_tokens", "submit_tokens_at")

    def get_queryset(self, request):
        skips = Count("user__leases", filter=Q(user__leases__state=Lease.State.SKIPPED))
        return super().get_queryset(request).annotate(_skips=skips)

    @admin.display(description="skips", ordering="_skips")
    def skip_count(self, obj):
        return obj._skips


@admin.action(description="Export preferences (winner/loser pairs) of the selected rounds")
def export_preferences_action(modeladmin, request, queryset):
    from annotation.errors import AnnotationError
    from annotation.exports import preferences_export

    for round_ in queryset:
        try:
            result = preferences_export(round_=round_)
        except AnnotationError as exc:
            modeladmin.message_user(request, f"{round_}: {exc.detail}", level=messages.ERROR)
            continue
        modeladmin.message_user(
            request,
            f"{round_}: {result.pairs} pairs from {result.items_complete} complete items "
            f"({result.n_synthetic_judgments} synthetic judgments) in {result.path}",
            level=messages.SUCCESS,
        )


@admin.action(description="Recompute the aggregates of the selected rounds")
def recompute_aggregates_action(modeladmin, request, queryset):
    from annotation.services.aggregation import round_aggregate

    for round_ in queryset:
        summary = round_aggregate(round_=round_)
        modeladmin.message_user(
            request,
            f"{round_}: {summary.complete}/{summary.items} complete, {summary.pairs} pairs, "
            f"{summary.no_majority} without majority, {summary.ambiguous} ambiguous, "
            f"{summary.synthetic_judgments} synthetic judgments",
        )


def _close_rounds(modeladmin, request, queryset, rule: str):
    from annotation.errors import AnnotationError
    from annotation.services.rounds import round_close

    for round_ in queryset:
        try:
            closing = round_close(round_=round_, rule=rule)
        except AnnotationError as exc:
            modeladmin.message_user(request, f"{round_}: {exc.detail}", level=messages.ERROR)
            continue
        modeladmin.message_user(request, f"{round_}: {closing.line()}", level=messages.SUCCESS)


@admin.action(description="Close the selected rounds: decide items short of K by the votes they have (count-partial)")
def close_count_partial_action(modeladmin, request, queryset):
    _close_rounds(modeladmin, request, queryset, Round.CloseRule.COUNT_PARTIAL)


@admin.action(description="Close the selected rounds: leave items short of K out (drop-partial)")
def close_drop_partial_action(modeladmin, request, queryset):
    _close_rounds(modeladmin, request, queryset, Round.CloseRule.DROP_PARTIAL)


@admin.register(Round)
class RoundAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "criterion", "k", "status", "close_rule", "item_count", "complete_count", "no_majority_count",
                    "created_at")
    list_filter = ("kind", "criterion", "status")
    search_fields = ("name",)
    readonly_fields = ("close_rule", "closed_at", "created_at", "created_by")
    actions = [export_preferences_action, recompute_aggregates_action, close_count_partial_action,
               close_drop_partial_action]

    def get_readonly_fields(self, request, obj=None):
        # Items carry a copy of K (the database checks against it), so K is set once.
        return self.readonly_fields + (("k", "kind") if obj is not None else ())

    def save_model(self, request, obj, form, change):
        if not change:
            return super().save_model(request, obj, form, change)
        from annotation.services.rounds import round_update

        # Through the service, as the API: a changed gold threshold or no-majority rule re-aggregates.
        round_update(round_=Round.objects.get(pk=obj.pk), **{name: getattr(obj, name) for name in form.changed_data})

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            _items=Count("items", distinct=True),
        )

    @admin.display(description="items", ordering="_items")
    def item_count(self, obj):
        return obj._items

    @admin.display(description="complete")
    def complete_count(self, obj):
        return obj.aggregates.filter(complete=True, item__is_gold=False).count()

    @admin.display(description="no majority")
    def no_majority_count(self, obj):
        return obj.aggregates.filter(complete=True, no_majority=True).count()


class ItemImageInline(admin.TabularInline):
    model = ItemImage
    extra = 0
    raw_id_fields = ("image",)
    readonly_fields = ("public_id",)


class AggregateInline(admin.StackedInline):
    model = Aggregate
    extra = 0
    can_delete = False
    readonly_fields = [f.name for f in Aggregate._meta.fields if f.name != "item"]


class SkipInline(admin.TabularInline):
    """The item's skips: who declined it, why and when."""

    model = Lease
    verbose_name, verbose_name_plural = "skip", "skips"
    extra = 0
    can_delete = False
    fields = readonly_fields = ("annotator", "skip_reason", "skipped_at")

    def get_queryset(self, request):
        return super().get_queryset(request).filter(state=Lease.State.SKIPPED).select_related("annotator")

    def has_add_permission(self, request, obj=None):
        return False


class SkippedFilter(admin.SimpleListFilter):
    title, parameter_name = "skipped", "skipped"

    def lookups(self, request, model_admin):
        return (("yes", "skipped by someone"), ("no", "never skipped"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(_skips__gt=0)
        if self.value() == "no":
            return queryset.filter(_skips=0)
        return queryset


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ("id", "round", "prompt", "is_gold", "slots_taken", "outcome", "n_judgments", "skip_count")
    list_filter = ("round", "is_gold", "round__kind", "aggregate__outcome", "aggregate__no_majority", SkippedFilter)
    search_fields = ("=id", "prompt__text", "item_images__image__public_id", "=item_images__public_id")
    raw_id_fields = ("prompt",)
    readonly_fields = ("slots_taken", "k", "created_at")
    list_select_related = ("round", "prompt", "aggregate")
    inlines = [ItemImageInline, AggregateInline, SkipInline]

    def get_queryset(self, request):
        skips = Count("leases", filter=Q(leases__state=Lease.State.SKIPPED), distinct=True)
        return super().get_queryset(request).annotate(_skips=skips)

    @admin.display(description="skips", ordering="_skips")
    def skip_count(self, obj):
        return obj._skips

    @admin.display(description="outcome", ordering="aggregate__outcome")
    def outcome(self, obj):
        return obj.aggregate.outcome if hasattr(obj, "aggregate") else "-"

    @admin.display(description="judgments", ordering="aggregate__n_judgments")
    def n_judgments(self, obj):
        return obj.aggregate.n_judgments if hasattr(obj, "aggregate") else 0


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ("id", "round", "item", "annotator", "state", "skip_reason", "leased_at", "expires_at")
    list_filter = ("state", "skip_reason", "round")
    search_fields = ("annotator__username", "=item__id")
    raw_id_fields = ("item", "annotator", "round")


class AlignmentAnswerInline(admin.TabularInline):
    model = AlignmentAnswer
    extra = 0
    raw_id_fields = ("question",)


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ("client_uuid", "round", "item", "annotator", "outcome", "elapsed_ms", "synthetic", "gold_score", "created_at", "undone_at")
    list_filter = ("round", "outcome", "synthetic", ("undone_at", admin.EmptyFieldListFilter))
    search_fields = ("=client_uuid", "annotator__username", "=item__id")
    raw_id_fields = ("round", "item", "annotator", "lease", "winner", "loser")
    list_select_related = ("round", "annotator")
    inlines = [AlignmentAnswerInline]


@admin.register(Aggregate)
class AggregateAdmin(admin.ModelAdmin):
    list_display = (
        "item", "round", "outcome", "winner", "loser", "margin", "no_majority", "n_judgments", "n_used",
        "n_rejected", "n_excluded", "n_synthetic", "complete", "updated_at",
    )
    list_filter = ("round", "outcome", "no_majority", "complete")
    search_fields = ("=item__id", "winner__public_id", "loser__public_id")
    raw_id_fields = ("item", "round", "winner", "loser")
    list_select_related = ("round", "winner", "loser")
