"""Attribution rows are written by the scoring and index services only: results and money are never hand-edited,
so the admin only shows them."""

from __future__ import annotations

from django.contrib import admin

from common.admin import ReadOnlyAdmin

from .models import AttributionIndex, IndexReissue, RecordAttribution, RunAttribution, SpanMatch


@admin.register(AttributionIndex)
class AttributionIndexAdmin(ReadOnlyAdmin):
    list_display = ("id", "version", "status", "width", "seed", "feature_hash", "span_hash", "build_seconds")
    list_filter = ("status",)
    search_fields = ("feature_hash", "span_hash", "version__name")
    raw_id_fields = ("version",)


class RecordAttributionInline(admin.TabularInline):
    model = RecordAttribution
    fields = ("rank", "record", "contribution", "share", "by_signal", "raw_scores")
    readonly_fields = fields
    raw_id_fields = ("record", "contribution")
    extra = 0
    can_delete = False


@admin.register(RunAttribution)
class RunAttributionAdmin(ReadOnlyAdmin):
    list_display = ("id", "run", "status", "policy_version", "answer_tokens", "longest_span", "seconds", "created_at")
    list_filter = ("status", "policy_version")
    raw_id_fields = ("run", "index")
    inlines = [RecordAttributionInline]


@admin.register(RecordAttribution)
class RecordAttributionAdmin(ReadOnlyAdmin):
    list_display = ("id", "run_attribution", "rank", "record", "share_float")
    raw_id_fields = ("run_attribution", "record", "contribution")


@admin.register(SpanMatch)
class SpanMatchAdmin(ReadOnlyAdmin):
    list_display = ("id", "run_attribution", "record", "tokens", "n_records", "answer_start", "answer_end")
    raw_id_fields = ("run_attribution", "record")


@admin.register(IndexReissue)
class IndexReissueAdmin(ReadOnlyAdmin):
    list_display = ("id", "index", "old_feature_hash", "new_feature_hash", "created_at")
    raw_id_fields = ("index",)
