from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from common.admin import ReadOnlyAdmin, ReadOnlyInline

from . import services
from .models import (
    Contribution,
    ContributionDecision,
    Datanet,
    Receipt,
    ReceiptBatch,
    Record,
    Revocation,
    RevokedRecord,
    Snapshot,
    SnapshotRecord,
    StagedRecord,
)


def _problem(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(error.messages)
    return str(error)


@admin.register(Datanet)
class DatanetAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "record_type",
        "licence",
        "visibility",
        "contribution_policy",
        "owner",
        "created_at",
    ]
    list_filter = ["record_type", "licence", "visibility", "contribution_policy", "domain", "language"]
    search_fields = ["name", "slug", "summary", "owner__username"]
    readonly_fields = ["slug", "created_at", "updated_at"]
    filter_horizontal = ["curators", "members"]
    raw_id_fields = ["owner"]
    date_hierarchy = "created_at"
    actions = ["freeze_snapshot"]

    @admin.action(description="Freeze a snapshot of the selected Datanets")
    def freeze_snapshot(self, request: HttpRequest, queryset: QuerySet[Datanet]) -> None:
        for datanet in queryset:
            try:
                snapshot = services.snapshot_freeze(datanet=datanet, user=request.user)
            except (PermissionDenied, ValidationError) as e:
                self.message_user(request, f"{datanet}: {_problem(e)}", messages.ERROR)
            else:
                self.message_user(
                    request, f"{datanet}: snapshot {snapshot.number} frozen ({snapshot.record_count} records)"
                )


class DecisionInline(ReadOnlyInline):
    model = ContributionDecision
    fields = ["created_at", "action", "actor", "reason", "record"]


@admin.register(Contribution)
class ContributionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "datanet",
        "contributor",
        "source_filename",
        "status",
        "record_count",
        "error_count",
        "check_status",
        "quality_score",
        "submitted_at",
    ]
    list_filter = ["status", "check_status", "records_staged", "bad_rows", "licence", "datanet"]
    search_fields = ["source_filename", "content_sha256", "contributor__username", "datanet__name"]
    list_select_related = ["datanet", "contributor"]
    date_hierarchy = "submitted_at"
    readonly_fields = [
        "datanet",
        "contributor",
        "licence",
        "status",
        "source_filename",
        "content_sha256",
        "size_bytes",
        "storage_path",
        "bad_rows",
        "record_count",
        "records_staged",
        "error_count",
        "duplicate_row_count",
        "excluded_count",
        "check_status",
        "quality_score",
        "checks_pretty",
        "parse_errors_pretty",
        "reviewer",
        "reviewed_at",
        "review_reason",
        "submitted_at",
        "withdrawn_at",
    ]
    exclude = ["checks", "parse_errors"]
    inlines = [DecisionInline]
    actions = ["accept_selected", "reject_selected"]

    @admin.display(description="checks")
    def checks_pretty(self, obj: Contribution) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.checks, indent=2, ensure_ascii=False))

    @admin.display(description="parse errors")
    def parse_errors_pretty(self, obj: Contribution) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.parse_errors, indent=2, ensure_ascii=False))

    def _decide(self, request: HttpRequest, queryset: QuerySet[Contribution], action: str, reason: str) -> None:
        try:
            decided = services.contributions_decide(
                curator=request.user, contributions=list(queryset), action=action, reason=reason
            )
        except (PermissionDenied, ValidationError) as e:
            self.message_user(request, _problem(e), messages.ERROR)
        else:
            self.message_user(request, f"{len(decided)} contribution(s) {action}ed")

    @admin.action(description="Accept the selected pending contributions")
    def accept_selected(self, request: HttpRequest, queryset: QuerySet[Contribution]) -> None:
        self._decide(request, queryset, "accept", "accepted in the admin")

    @admin.action(description="Reject the selected pending contributions")
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[Contribution]) -> None:
        self._decide(request, queryset, "reject", "rejected in the admin")


@admin.register(Record)
class RecordAdmin(ReadOnlyAdmin):
    list_display = ["id", "contribution", "position", "line", "record_hash", "words", "excluded", "flag_count"]
    list_filter = ["excluded", "datanet"]
    search_fields = ["record_hash", "=contribution__id"]
    list_select_related = ["contribution"]
    readonly_fields = [f.name for f in Record._meta.fields if f.name != "minhash"]
    exclude = ["minhash"]

    @admin.display(description="flags")
    def flag_count(self, obj: Record) -> int:
        return len(obj.flags)


@admin.register(StagedRecord)
class StagedRecordAdmin(ReadOnlyAdmin):
    """Records of large uploads waiting for their checks to move them into Record: usually none."""

    list_display = ["id", "contribution", "position", "line", "record_hash", "words", "size_bytes"]
    search_fields = ["record_hash", "=contribution__id"]
    list_select_related = ["contribution"]
    readonly_fields = [f.name for f in StagedRecord._meta.fields]


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdmin):
    list_display = [
        "datanet",
        "number",
        "record_count",
        "contributor_count",
        "merkle_root",
        "anchor_status",
        "created_at",
    ]
    list_filter = ["datanet"]
    search_fields = ["merkle_root", "datanet__name"]
    list_select_related = ["datanet", "anchor"]
    readonly_fields = [f.name for f in Snapshot._meta.fields]

    @admin.display(description="anchor")
    def anchor_status(self, obj: Snapshot) -> Any:
        return obj.anchor.status


@admin.register(ContributionDecision)
class ContributionDecisionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "contribution", "action", "actor", "reason"]
    list_filter = ["action"]
    search_fields = ["reason", "actor__username", "=contribution__id"]
    list_select_related = ["contribution", "actor"]
    date_hierarchy = "created_at"


@admin.register(Receipt)
class ReceiptAdmin(ReadOnlyAdmin):
    """Receipts of submissions and curation decisions: written by the services, sealed by a beat task."""

    list_display = ["id", "kind", "contribution", "datanet", "document_hash", "batch", "created_at"]
    list_filter = ["kind", "datanet"]
    search_fields = ["document_hash", "=contribution__id"]
    list_select_related = ["contribution", "datanet", "batch"]
    readonly_fields = [f.name for f in Receipt._meta.fields]
    date_hierarchy = "created_at"


@admin.register(ReceiptBatch)
class ReceiptBatchAdmin(ReadOnlyAdmin):
    list_display = ["id", "root", "size", "anchor_status", "sealed_at"]
    search_fields = ["root"]
    list_select_related = ["anchor"]
    readonly_fields = [f.name for f in ReceiptBatch._meta.fields if f.name != "tree"]
    exclude = ["tree"]

    @admin.display(description="anchor")
    def anchor_status(self, obj: ReceiptBatch) -> Any:
        return obj.anchor.status


@admin.register(Revocation)
class RevocationAdmin(ReadOnlyAdmin):
    """Withdrawals and takedowns: written by ``datanets.revocation`` (the contribution and record pages), read here."""

    list_display = ["id", "created_at", "kind", "reason", "contribution", "datanet", "record_count", "erase", "actor"]
    list_filter = ["kind", "reason", "erase", "datanet"]
    search_fields = ["explanation", "actor__username", "=contribution__id"]
    list_select_related = ["contribution", "datanet", "actor"]
    readonly_fields = [f.name for f in Revocation._meta.fields]
    date_hierarchy = "created_at"


@admin.register(RevokedRecord)
class RevokedRecordAdmin(ReadOnlyAdmin):
    list_display = ["record", "revocation", "erased"]
    list_filter = ["erased"]
    search_fields = ["=record__id", "=revocation__id"]
    list_select_related = ["record", "revocation"]


admin.site.register(SnapshotRecord, ReadOnlyAdmin)
