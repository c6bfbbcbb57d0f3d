from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from . import services
from .models import OutboxMessage


class _SentFilter(admin.SimpleListFilter):
    title = "sent"
    parameter_name = "sent"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("no", "Unsent"), ("yes", "Sent")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> QuerySet[OutboxMessage]:
        if self.value() in ("yes", "no"):
            return queryset.filter(sent_at__isnull=self.value() == "no")
        return queryset


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ("id", "task", "args", "queue", "created_at", "sent_at", "attempts", "last_error")
    list_filter = (_SentFilter, "task")
    search_fields = ("task", "task_id", "last_error")
    date_hierarchy = "created_at"
    readonly_fields = ("task", "args", "kwargs", "queue", "task_id", "created_at", "sent_at", "attempts", "last_error")
    actions = ("send_now",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Send the selected unsent messages now")
    def send_now(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        ids = list(queryset.filter(sent_at__isnull=True).values_list("pk", flat=True))
        sent = sum(services.outbox_send(message_id=pk) for pk in ids)
        level = messages.SUCCESS if sent == len(ids) else messages.WARNING
        self.message_user(request, f"sent {sent} of {len(ids)} unsent messages", level)
