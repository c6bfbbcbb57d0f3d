from __future__ import annotations

from django.contrib import admin

from common.admin import ReadOnlyAdmin

from .models import (
    BaseModel,
    FineTuneJob,
    ModelVersion,
    ModelVersionParent,
    TrainingWorker,
    VersionNotice,
    VersionRevocation,
)


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ("name", "architecture", "parameters", "context_length", "licence", "source", "is_default")
    list_filter = ("source", "is_default", "architecture")
    search_fields = ("name", "path", "architecture")
    readonly_fields = ("created_at", "weights_sha256")


@admin.register(FineTuneJob)
class FineTuneJobAdmin(ReadOnlyAdmin):
    """Jobs change through the services only (claims, cancellation and retries hold row locks)."""

    list_display = (
        "id", "name", "kind", "owner", "base_model", "status", "step", "total_steps", "attempts", "heartbeat_at"
    )  # fmt: skip
    list_filter = ("status", "kind", "base_model")
    search_fields = ("name", "owner__username", "worker", "celery_task_id")
    raw_id_fields = ("owner", "parent_version", "snapshots")


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "owner", "base_model", "adapter_sha256", "manifest_hash", "published", "created_at")
    list_filter = ("published", "base_model")
    search_fields = ("name", "owner__username", "manifest_hash", "adapter_sha256")


@admin.register(ModelVersionParent)
class ModelVersionParentAdmin(ReadOnlyAdmin):
    """Lineage edges are written with their version and never change: staff look only."""

    list_display = ("child", "relation", "parent", "weight")
    list_filter = ("relation",)
    search_fields = ("child__name", "parent__name")
    list_select_related = ("child", "parent")


@admin.register(TrainingWorker)
class TrainingWorkerAdmin(ReadOnlyAdmin):
    """What each training worker measured, as the estimates read it: written by the workers, never by hand."""

    list_display = ("hostname", "device", "device_label", "last_seen", "measured_at")
    list_filter = ("device",)
    search_fields = ("hostname",)


@admin.register(VersionRevocation)
class VersionRevocationAdmin(ReadOnlyAdmin):
    """Computed from the lineage whenever a revocation reaches a version (modelfactory.revocations): staff look only."""

    list_display = ("version", "revoked_records", "erased_records", "flagged_at", "updated_at")
    search_fields = ("version__name",)
    list_select_related = ("version",)


@admin.register(VersionNotice)
class VersionNoticeAdmin(ReadOnlyAdmin):
    """What owners were told, once per version and revocation: staff look only."""

    list_display = ("version", "revocation", "owner", "records", "created_at", "read_at", "emailed_at")
    search_fields = ("version__name", "owner__username")
    list_select_related = ("version", "owner")
