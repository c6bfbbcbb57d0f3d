from __future__ import annotations

from django.contrib import admin

from .models import WorkerHeartbeat


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("hostname", "queues", "pid", "started_at", "last_seen")
    readonly_fields = ("hostname", "queues", "pid", "started_at", "last_seen", "devices")
