from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import Anchor, AnchorEvent, ChainDeployment, SignerNonce
from .services import anchor_retry


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the outbox and the deployer write: staff look, and act only through admin actions."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ChainDeployment)
class ChainDeploymentAdmin(ReadOnlyAdmin):
    list_display = [
        "contract_address",
        "chain_id",
        "active",
        "deploy_block_number",
        "rpc_url",
        "created_at",
        "retired_at",
    ]
    list_filter = ["active", "chain_id"]
    search_fields = ["contract_address", "deploy_tx_hash", "deploy_block_hash"]
    date_hierarchy = "created_at"


class AnchorEventInline(admin.TabularInline):
    model = AnchorEvent
    fields = ["created_at", "type", "deployment", "nonce", "tx_hash", "block_number", "detail"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Anchor)
class AnchorAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "kind",
        "status",
        "short_root",
        "nonce",
        "short_tx_hash",
        "block_number",
        "confirmations",
        "attempts",
        "next_attempt_at",
        "updated_at",
    ]
    list_filter = ["status", "kind", "deployment"]
    search_fields = ["=subject_id", "=root", "=tx_hash"]
    date_hierarchy = "created_at"
    list_select_related = ["deployment"]
    inlines = [AnchorEventInline]
    actions = ["retry_now"]

    @admin.display(description="root")
    def short_root(self, obj: Anchor) -> str:
        return obj.root[:10] + "…"

    @admin.display(description="tx")
    def short_tx_hash(self, obj: Anchor) -> str:
        return obj.tx_hash[:10] + "…" if obj.tx_hash else "-"

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("ledger.change_anchor")

    @admin.action(description="Retry now (failed or backing-off anchors)", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Anchor]) -> None:
        retried = 0
        for anchor in queryset.filter(status__in=[Anchor.Status.FAILED, Anchor.Status.PENDING]):
            anchor_retry(anchor=anchor)
            retried += 1
        skipped = queryset.count() - retried
        self.message_user(
            request,
            f"{retried} anchor(s) queued to send again"
            + (f"; {skipped} submitted or confirmed left alone" if skipped else ""),
            messages.SUCCESS,
        )


@admin.register(AnchorEvent)
class AnchorEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "anchor", "type", "nonce", "tx_hash", "block_number", "detail"]
    list_filter = ["type", "deployment"]
    search_fields = ["=tx_hash", "=anchor__root", "detail"]
    date_hierarchy = "created_at"
    list_select_related = ["anchor"]


@admin.register(SignerNonce)
class SignerNonceAdmin(ReadOnlyAdmin):
    list_display = ["address", "deployment", "next_nonce", "updated_at"]
    list_filter = ["deployment"]
    search_fields = ["=address"]
