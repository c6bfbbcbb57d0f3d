from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin import ReadOnlyAdmin, ReadOnlyInline

from .models import (
    Anchor,
    AnchorEvent,
    ChainDeployment,
    GovernanceContracts,
    GovernanceTransaction,
    RewardClaim,
    RewardContracts,
    RewardEpoch,
    RewardEpochEntry,
    SignerNonce,
)
from .rewards_services import epoch_retry
from .services import anchor_retry


class OutboxRowAdmin(ReadOnlyAdmin):
    """A row of the signed-transaction outbox: read-only, with a "Retry now" action that sends the failed or
    backing-off ones again (``retry_one``) for staff holding ``retry_permission``."""

    actions = ["retry_now"]
    retry_permission = ""
    queued = ""  # what the action's message says of the rows it retried, e.g. "anchor(s) queued to send again"

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(self.retry_permission)

    def retry_one(self, row: Any) -> None:
        """Queue ``row`` to be sent again: each outbox's own retry service."""
        raise NotImplementedError

    @admin.action(description="Retry now (failed or backing-off %(verbose_name_plural)s)", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Retry the failed or backing-off rows of ``queryset``; leave the submitted and confirmed ones alone."""
        status = queryset.model.Status
        retried = 0
        for row in queryset.filter(status__in=[status.FAILED, status.PENDING]):
            self.retry_one(row)
            retried += 1
        skipped = queryset.count() - retried
        self.message_user(
            request,
            f"{retried} {self.queued}" + (f"; {skipped} submitted or confirmed left alone" if skipped else ""),
            messages.SUCCESS,
        )


class ActiveRowAdmin(ReadOnlyAdmin):
    """A deployment record (``ActiveRow``): the active one per chain and the ones a reset retired."""

    list_filter = ["active", "chain_id"]


@admin.register(ChainDeployment)
class ChainDeploymentAdmin(ActiveRowAdmin):
    list_display = [
        "contract_address",
        "chain_id",
        "active",
        "deploy_block_number",
        "rpc_url",
        "created_at",
        "retired_at",
    ]
    search_fields = ["contract_address", "deploy_tx_hash", "deploy_block_hash"]
    date_hierarchy = "created_at"


class AnchorEventInline(ReadOnlyInline):
    model = AnchorEvent
    fields = ["created_at", "type", "deployment", "nonce", "tx_hash", "block_number", "detail"]


@admin.register(Anchor)
class AnchorAdmin(OutboxRowAdmin):
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
    retry_permission = "ledger.change_anchor"
    queued = "anchor(s) queued to send again"

    @admin.display(description="root")
    def short_root(self, obj: Anchor) -> str:
        return obj.root[:10] + "…"

    @admin.display(description="tx")
    def short_tx_hash(self, obj: Anchor) -> str:
        return obj.tx_hash[:10] + "…" if obj.tx_hash else "-"

    def retry_one(self, row: Anchor) -> None:
        anchor_retry(anchor=row)


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


@admin.register(RewardContracts)
class RewardContractsAdmin(ActiveRowAdmin):
    list_display = ["distributor_address", "token_address", "chain_id", "active", "deploy_block_number", "created_at"]
    search_fields = ["=distributor_address", "=token_address"]


class RewardEpochEntryInline(ReadOnlyInline):
    model = RewardEpochEntry
    fields = ["index", "account", "amount", "beneficiary"]
    show_change_link = True


@admin.register(RewardEpoch)
class RewardEpochAdmin(OutboxRowAdmin):
    list_display = ["number", "status", "total", "entry_count", "nonce", "tx_hash", "block_number", "attempts"]
    list_filter = ["status", "contracts"]
    search_fields = ["=root", "=tx_hash"]
    date_hierarchy = "created_at"
    exclude = ["tree", "raw_tx"]
    inlines = [RewardEpochEntryInline]
    retry_permission = "ledger.change_rewardepoch"
    queued = "epoch(s) queued to publish again"

    def retry_one(self, row: RewardEpoch) -> None:
        epoch_retry(epoch=row)


@admin.register(RewardEpochEntry)
class RewardEpochEntryAdmin(ReadOnlyAdmin):
    list_display = ["epoch", "index", "account", "amount", "beneficiary"]
    list_filter = ["epoch"]
    search_fields = ["=account", "=beneficiary"]
    list_select_related = ["epoch"]


@admin.register(RewardClaim)
class RewardClaimAdmin(ReadOnlyAdmin):
    list_display = ["id", "entry", "status", "requested_by", "tx_hash", "block_number", "last_error", "created_at"]
    list_filter = ["status"]
    search_fields = ["=tx_hash", "=entry__account", "=requested_by"]
    date_hierarchy = "created_at"
    list_select_related = ["entry__epoch"]
    exclude = ["raw_tx"]


@admin.register(GovernanceContracts)
class GovernanceContractsAdmin(ActiveRowAdmin):
    list_display = ["governor_address", "timelock_address", "chain_id", "active", "deploy_block_number", "created_at"]
    search_fields = ["=governor_address", "=timelock_address", "=parameters_address", "=registry_address"]


@admin.register(GovernanceTransaction)
class GovernanceTransactionAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "status", "account", "proposal_id", "tx_hash", "block_number", "last_error"]
    list_filter = ["kind", "status"]
    search_fields = ["=tx_hash", "=account", "=proposal_id", "=requested_by"]
    date_hierarchy = "created_at"
    exclude = ["raw_tx"]
