from __future__ import annotations

from django.contrib import admin

from common.admin import ReadOnlyAdmin, ReadOnlyInline

from .models import (
    ChainEvent,
    Delegation,
    IndexerCursor,
    ModelApproval,
    ParameterChange,
    Proposal,
    Stake,
    Vote,
    VotingPower,
)


class VoteInline(ReadOnlyInline):
    model = Vote
    fields = ["voter", "support", "weight", "block_number", "tx_hash"]


@admin.register(Proposal)
class ProposalAdmin(ReadOnlyAdmin):
    list_display = ["title", "kind", "state", "proposer", "for_votes", "against_votes", "abstain_votes", "created_at"]
    list_filter = ["state", "kind", "contracts"]
    search_fields = ["=proposal_id", "=proposer", "title", "=manifest_hash"]
    inlines = [VoteInline]


@admin.register(Vote)
class VoteAdmin(ReadOnlyAdmin):
    list_display = ["proposal", "voter", "support", "weight", "block_number"]
    list_filter = ["support"]
    search_fields = ["=voter", "=tx_hash"]
    list_select_related = ["proposal"]


@admin.register(Delegation)
class DelegationAdmin(ReadOnlyAdmin):
    list_display = ["delegator", "delegate", "block_number"]
    search_fields = ["=delegator", "=delegate"]


@admin.register(VotingPower)
class VotingPowerAdmin(ReadOnlyAdmin):
    list_display = ["account", "votes", "block_number"]
    search_fields = ["=account"]


@admin.register(ParameterChange)
class ParameterChangeAdmin(ReadOnlyAdmin):
    list_display = ["name", "old_value", "new_value", "proposal", "block_number", "changed_at"]
    list_filter = ["name"]


@admin.register(Stake)
class StakeAdmin(ReadOnlyAdmin):
    list_display = ["onchain_id", "builder", "amount", "status", "slashed"]
    list_filter = ["status"]
    search_fields = ["=builder", "=onchain_id", "=manifest_hash"]


@admin.register(ModelApproval)
class ModelApprovalAdmin(ReadOnlyAdmin):
    list_display = ["manifest_hash", "model_version", "approved_at", "withdrawn_at"]
    search_fields = ["=manifest_hash"]


@admin.register(ChainEvent)
class ChainEventAdmin(ReadOnlyAdmin):
    list_display = ["name", "contract", "block_number", "tx_hash", "log_index"]
    list_filter = ["name", "contract"]
    search_fields = ["=tx_hash"]


@admin.register(IndexerCursor)
class IndexerCursorAdmin(ReadOnlyAdmin):
    list_display = ["contracts", "block_number", "rebuilds", "updated_at"]
