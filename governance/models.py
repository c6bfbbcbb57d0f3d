"""The governance mirror: what the Governor, the timelock, ProtocolParameters and ModelRegistry said on chain, as rows
the pages and the API can filter. The chain stays the source of truth: every row here is rebuilt from ``ChainEvent``
rows, which are the contracts' logs copied once they have CHAIN_CONFIRMATIONS blocks (``governance.indexer``), per
``ledger.GovernanceContracts`` row (a chain reset starts a new mirror; the old one stays as history).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from ledger.models import GovernanceContracts

UINT = {"max_digits": 78, "decimal_places": 0}


class IndexerCursor(models.Model):
    """How far the mirror of one set of governance contracts has read the chain: every block up to ``block_number``
    (whose hash was ``block_hash`` when read: another hash there means the chain was reorganised or reset under it,
    and the mirror is rebuilt)."""

    contracts = models.OneToOneField(GovernanceContracts, on_delete=models.CASCADE, related_name="cursor")
    block_number = models.PositiveBigIntegerField()
    block_hash = models.CharField(max_length=66)
    rebuilt_at = models.DateTimeField(default=timezone.now)
    rebuilds = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"indexed to block {self.block_number}"


class ChainEvent(models.Model):
    """One log of the governance contracts (or the token's delegation events), decoded; ``args`` keeps big
    integers as decimal strings and bytes as 0x-hex."""

    contracts = models.ForeignKey(GovernanceContracts, on_delete=models.CASCADE, related_name="events")
    contract = models.CharField(max_length=40, help_text="OpenLedgerGovernor, ProtocolParameters, ...")
    name = models.CharField(max_length=40)
    args = models.JSONField()
    block_number = models.PositiveBigIntegerField()
    block_hash = models.CharField(max_length=66)
    block_time = models.DateTimeField()
    tx_hash = models.CharField(max_length=66)
    log_index = models.PositiveIntegerField()

    class Meta:
        ordering = ["block_number", "log_index"]
        constraints = [
            models.UniqueConstraint(fields=["contracts", "tx_hash", "log_index"], name="governance_event_once"),
        ]
        indexes = [models.Index(fields=["contracts", "name"], name="governance_event_name")]

    def __str__(self) -> str:
        return f"{self.name} in block {self.block_number}"


class Proposal(models.Model):
    """A Governor proposal as its events describe it. ``state`` is the mirror's reading (events and the last block
    indexed); the proposal page reads the Governor's own ``state`` as well."""

    class Kind(models.TextChoices):
        PARAMETERS = "parameters", "parameter change"
        DEPLOYMENT = "deployment", "model deployment"
        OTHER = "other", "other"

    class State(models.TextChoices):
        PENDING = "pending"
        ACTIVE = "active"
        CANCELED = "canceled"
        DEFEATED = "defeated"
        SUCCEEDED = "succeeded"
        QUEUED = "queued"
        EXPIRED = "expired"
        EXECUTED = "executed"

    contracts = models.ForeignKey(GovernanceContracts, on_delete=models.CASCADE, related_name="proposals")
    proposal_id = models.CharField(max_length=78, help_text="uint256, decimal.")
    proposer = models.CharField(max_length=42)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    title = models.CharField(max_length=200)
    description = models.TextField()
    description_hash = models.CharField(max_length=66)
    targets = models.JSONField()
    values = models.JSONField(help_text="Decimal strings.")
    calldatas = models.JSONField(help_text="0x-hex.")
    vote_start = models.PositiveBigIntegerField(help_text="The snapshot block: votes are weighed as they stood then.")
    vote_end = models.PositiveBigIntegerField(help_text="The last block in which votes count.")
    created_block = models.PositiveBigIntegerField()
    created_at = models.DateTimeField()
    created_tx = models.CharField(max_length=66)
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING, db_index=True)
    for_votes = models.DecimalField(default=0, **UINT)
    against_votes = models.DecimalField(default=0, **UINT)
    abstain_votes = models.DecimalField(default=0, **UINT)
    quorum = models.DecimalField(null=True, blank=True, help_text="Read at the snapshot block once it is past.", **UINT)
    eta = models.PositiveBigIntegerField(null=True, blank=True, help_text="Chain time it may be executed from.")
    queued_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    executed_tx = models.CharField(max_length=66, blank=True)
    canceled_at = models.DateTimeField(null=True, blank=True)
    manifest_hash = models.CharField(max_length=66, blank=True, help_text="A deployment proposal's model version.")
    model_version = models.ForeignKey(
        "modelfactory.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="proposals"
    )

    class Meta:
        ordering = ["-created_block", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["contracts", "proposal_id"], name="governance_proposal_once"),
        ]

    def __str__(self) -> str:
        return f"Proposal {self.short_id}: {self.title}"

    @property
    def short_id(self) -> str:
        return self.proposal_id[:8] + "…" if len(self.proposal_id) > 10 else self.proposal_id

    @property
    def actions(self) -> list[tuple[str, int, str]]:
        return list(zip(self.targets, [int(v) for v in self.values], self.calldatas, strict=True))


class Vote(models.Model):
    """A counted vote (VoteCast): ``weight`` is the voter's votes at the proposal's snapshot block."""

    class Support(models.IntegerChoices):
        AGAINST = 0, "against"
        FOR = 1, "for"
        ABSTAIN = 2, "abstain"

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="votes")
    voter = models.CharField(max_length=42)
    support = models.PositiveSmallIntegerField(choices=Support.choices)
    weight = models.DecimalField(**UINT)
    reason = models.TextField(blank=True)
    block_number = models.PositiveBigIntegerField()
    cast_at = models.DateTimeField()
    tx_hash = models.CharField(max_length=66)

    class Meta:
        ordering = ["block_number", "id"]
        constraints = [models.UniqueConstraint(fields=["proposal", "voter"], name="governance_one_vote_each")]

    def __str__(self) -> str:
        return f"{self.voter} {self.get_support_display()} ({self.weight})"


class Delegation(models.Model):
    """Whom an account delegates its votes to, as of its last DelegateChanged (one row per account)."""

    contracts = models.ForeignKey(GovernanceContracts, on_delete=models.CASCADE, related_name="delegations")
    delegator = models.CharField(max_length=42)
    delegate = models.CharField(max_length=42)
    block_number = models.PositiveBigIntegerField()
    tx_hash = models.CharField(max_length=66)

    class Meta:
        ordering = ["-block_number", "id"]
        constraints = [models.UniqueConstraint(fields=["contracts", "delegator"], name="governance_one_delegation")]

    def __str__(self) -> str:
        return f"{self.delegator} delegates to {self.delegate}"


class VotingPower(models.Model):
    """An account's current votes (its last DelegateVotesChanged)."""

    contracts = models.ForeignKey(GovernanceContracts, on_delete=models.CASCADE, related_name="voting_power")
    account = models.CharField(max_length=42)
    votes = models.DecimalField(**UINT)
    block_number = models.PositiveBigIntegerField()

    class Meta:
        verbose_name_plural = "voting power"
        ordering = ["-votes", "account"]
        constraints = [models.UniqueConstraint(fields=["contracts", "account"], name="governance_one_power_row")]

    def __str__(self) -> str:
        return f"{self.account}: {self.votes} votes"


class ParameterChange(models.Model):
    """One ParameterSet of ProtocolParameters (the first ones come from its constructor, at deployment)."""

    contracts = models.ForeignKey(GovernanceContracts, on_delete=models.CASCADE, related_name="parameter_changes")
    name = models.CharField(max_length=32)
    old_value = models.CharField(max_length=78)
    new_value = models.CharField(max_length=78)
    block_number = models.PositiveBigIntegerField()
    changed_at = models.DateTimeField()
    tx_hash = models.CharField(max_length=66)
    proposal = models.ForeignKey(
        Proposal, null=True, blank=True, on_delete=models.SET_NULL, related_name="parameter_changes"
    )

    class Meta:
        ordering = ["-block_number", "-id"]

    def __str__(self) -> str:
        return f"{self.name}: {self.old_value} -> {self.new_value}"


class Stake(models.Model):
    """A deployment proposal's bonded stake and how it ended."""

    class Status(models.TextChoices):
        BONDED = "bonded"
        RETURNED = "returned"
        SLASHED = "slashed"

    proposal = models.OneToOneField(Proposal, null=True, blank=True, on_delete=models.CASCADE, related_name="stake")
    contracts = models.ForeignKey(GovernanceContracts, on_delete=models.CASCADE, related_name="stakes")
    onchain_id = models.CharField(max_length=78, help_text="The proposal's id on chain (uint256, decimal).")
    manifest_hash = models.CharField(max_length=66)
    builder = models.CharField(max_length=42)
    amount = models.DecimalField(**UINT)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.BONDED)
    slashed = models.DecimalField(default=0, **UINT)
    pool = models.CharField(max_length=42, blank=True)
    bonded_tx = models.CharField(max_length=66)
    settled_tx = models.CharField(max_length=66, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["contracts", "onchain_id"], name="governance_one_stake")]

    def __str__(self) -> str:
        return f"stake {self.amount} on {self.onchain_id[:8]}… ({self.status})"


class ModelApproval(models.Model):
    """A model version approved for deployment (ModelApproved), until an ApprovalWithdrawn."""

    contracts = models.ForeignKey(GovernanceContracts, on_delete=models.CASCADE, related_name="approvals")
    manifest_hash = models.CharField(max_length=66)
    proposal = models.ForeignKey(Proposal, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    approved_at = models.DateTimeField()
    tx_hash = models.CharField(max_length=66)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    model_version = models.ForeignKey(
        "modelfactory.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="approvals"
    )

    class Meta:
        ordering = ["-approved_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["contracts", "manifest_hash"], condition=Q(withdrawn_at__isnull=True),
                name="governance_one_live_approval",
            ),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"approved {self.manifest_hash[:10]}…"
