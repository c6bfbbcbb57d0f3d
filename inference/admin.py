from __future__ import annotations

from django.contrib import admin

from .models import InferenceRun, RunBatch


@admin.register(InferenceRun)
class InferenceRunAdmin(admin.ModelAdmin):
    list_display = ("public_id", "user", "version", "kind", "status", "source", "completion_tokens", "created_at")
    list_filter = ("status", "kind", "source")
    search_fields = ("public_id", "user__username", "run_hash")
    raw_id_fields = ("user", "version", "base_model", "batch")
    # runs are records of what happened: the admin shows them, it does not rewrite them
    readonly_fields = [f.name for f in InferenceRun._meta.fields]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(RunBatch)
class RunBatchAdmin(admin.ModelAdmin):
    list_display = ("id", "root", "size", "anchor", "sealed_at")
    readonly_fields = [f.name for f in RunBatch._meta.fields]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False
