from django.contrib import admin, messages

from config.celery import app
from outbox.models import OutboxMessage
from outbox.services import messages_send


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("pending", "pending"), ("sent", "sent")]

    def queryset(self, request, queryset):
        if self.value() == "pending":
            return queryset.filter(sent_at=None)
        if self.value() == "sent":
            return queryset.exclude(sent_at=None)
        return queryset


@admin.action(description="Send the selected tasks now")
def send_now_action(modeladmin, request, queryset):
    result = messages_send(app=app, ids=list(queryset.values_list("pk", flat=True)))
    modeladmin.message_user(request, f"sent {result.sent} task(s)")
    if result.pending:
        reason = f": {result.error}" if result.error else ""
        modeladmin.message_user(request, f"{result.pending} task(s) still pending{reason}", level=messages.WARNING)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ("id", "task_name", "args", "created_at", "sent_at", "attempts", "last_error")
    list_filter = (StateFilter, "task_name")
    search_fields = ("task_name",)
    ordering = ("-id",)
    actions = [send_now_action]
    readonly_fields = ("task_name", "args", "created_at", "claimed_until", "sent_at", "attempts", "last_error")

    def has_add_permission(self, request):
        return False
