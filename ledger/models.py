from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class ActiveRowQuerySet(models.QuerySet):
    def current(self) -> models.Model | None:
        """The active row for EVM_CHAIN_ID, or None: a read only, no RPC."""
        return self.filter(chain_id=settings.EVM_CHAIN_ID, active=True).first()


class ActiveRow(models.Model):
    """A deployment record that is active until the chain under it is reset: then retired with a reason, and a new
    row takes over (``objects.current()``)."""

    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)
    retired_reason = models.TextField(blank=True)

    objects = ActiveRowQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]


def one_active_per_chain(name: str) -> models.UniqueConstraint:
    """An ``ActiveRow`` model's rule, in its ``Meta.constraints``: at most one active row per chain id."""
    return models.UniqueConstraint(fields=["chain_id"], condition=Q(active=True), name=name)


class ChainDeployment(ActiveRow):
    """Where LineageRegistry lives on one chain, and how to tell that the chain under it was reset.

    At most one active row per chain id. A reset (the code gone from the address, or another block at the deploy
    height) retires the row with a reason and a new row takes over; anchors keep pointing at the deployment they were
    sent to.
    """

    chain_id = models.PositiveBigIntegerField()
    rpc_url = models.CharField(max_length=500, help_text="Scheme and host only: paths and user info may hold keys.")
    contract_address = models.CharField(max_length=42)
    deployer = models.CharField(max_length=42)
    deploy_tx_hash = models.CharField(max_length=66)
    deploy_block_number = models.PositiveBigIntegerField()
    deploy_block_hash = models.CharField(max_length=66)
    artifact_sha256 = models.CharField(max_length=64, help_text="sha256 of the creation bytecode deployed.")

    class Meta(ActiveRow.Meta):
        constraints = [one_active_per_chain("ledger_one_active_deployment_per_chain")]

    def __str__(self) -> str:
        return f"LineageRegistry {self.contract_address} on chain {self.chain_id} (block {self.deploy_block_number})"


class SignerNonce(models.Model):
    """The next nonce a signer may use on a deployment's chain: the row every sender locks to take one.

    Reconciled upward with the chain's pending transaction count each time, so transactions sent from elsewhere with
    the same key are skipped, never reused; never lowered, so a transaction the node forgot keeps its nonce.
    """

    deployment = models.ForeignKey(ChainDeployment, on_delete=models.CASCADE, related_name="nonces")
    address = models.CharField(max_length=42)
    next_nonce = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["deployment", "address"], name="ledger_one_nonce_row_per_signer"),
        ]

    def __str__(self) -> str:
        return f"{self.address} next nonce {self.next_nonce}"


def sent_transaction_constraints(prefix: str, target: str) -> list[models.BaseConstraint]:
    """The two rules of every outbox table (``prefix``: ``ledger_anchor``...; ``target``: the foreign key to what it is
    sent to): a submitted or confirmed row has its nonce, hash, signed bytes and target; and one nonce, one row per
    target and signer (the database refuses a second row on a nonce already taken)."""
    return [
        models.CheckConstraint(
            condition=~Q(status__in=["submitted", "confirmed"])
            | (Q(nonce__isnull=False) & ~Q(tx_hash="") & ~Q(raw_tx="") & Q(**{f"{target}__isnull": False})),
            name=f"{prefix}_sent_has_transaction",
        ),
        models.UniqueConstraint(
            fields=[target, "signer", "nonce"],
            condition=Q(nonce__isnull=False),
            name=f"{prefix}_nonce_unique",
        ),
    ]


class SignedTransaction(models.Model):
    """The outbox columns of one transaction we sign and send (an anchor, an epoch publication, a relayed claim).

    pending (no nonce) -> submitted (nonce, signed bytes and hash committed before the first broadcast) -> confirmed
    (the receipt holds the row's own contract event and CHAIN_CONFIRMATIONS blocks sit on it) | failed (last_error
    says why). ``ledger.transactions`` moves rows between these states; each concrete model adds the foreign key to
    what it is sent to (a deployment, the reward contracts) and its own payload.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        SUBMITTED = "submitted"
        CONFIRMED = "confirmed"
        FAILED = "failed"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    signer = models.CharField(max_length=42, blank=True)
    nonce = models.PositiveBigIntegerField(null=True, blank=True)
    raw_tx = models.TextField(blank=True, help_text="The signed transaction, rebroadcast as is on every retry.")
    tx_hash = models.CharField(max_length=66, blank=True, db_index=True)
    block_number = models.PositiveBigIntegerField(null=True, blank=True)
    block_hash = models.CharField(max_length=66, blank=True)
    confirmations = models.PositiveIntegerField(default=0)

    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    broadcast_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.CONFIRMED, self.Status.FAILED)


KNOWN_KINDS = ["generic", "snapshot", "model_version", "inference_batch", "receipt_batch", "reward_epoch"]


class Anchor(SignedTransaction):
    """One root to put on chain in one transaction: the outbox row, written with the thing it anchors. Confirmed
    needs our Anchored event for this very root in the receipt."""

    class Kind(models.TextChoices):
        GENERIC = "generic", "generic"
        SNAPSHOT = "snapshot", "Datanet snapshot"
        MODEL_VERSION = "model_version", "model version lineage"
        INFERENCE_BATCH = "inference_batch", "inference batch"
        RECEIPT_BATCH = "receipt_batch", "contribution and curation receipts"
        REWARD_EPOCH = "reward_epoch", "reward epoch document"

    # the uint8 the contract stores; fixed forever, since anchored events carry it
    KIND_CODES = {
        Kind.GENERIC: 0,
        Kind.SNAPSHOT: 1,
        Kind.MODEL_VERSION: 2,
        Kind.INFERENCE_BATCH: 3,
        Kind.RECEIPT_BATCH: 4,
        Kind.REWARD_EPOCH: 5,
    }

    kind = models.CharField(max_length=32, choices=Kind.choices)
    subject_id = models.CharField(max_length=66, db_index=True, help_text="bytes32, 0x-prefixed lowercase hex.")
    subject = models.CharField(
        max_length=200,
        blank=True,
        help_text="What subject_id hashes (subject_id = keccak256 of its UTF-8), e.g. snapshot:1:3; blank on anchors "
        "requested before subjects were stored.",
    )
    root = models.CharField(max_length=66, db_index=True, help_text="bytes32 Merkle root, 0x-prefixed lowercase hex.")
    uri = models.CharField(max_length=2048, blank=True)
    deployment = models.ForeignKey(
        ChainDeployment, on_delete=models.PROTECT, null=True, blank=True, related_name="anchors"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="ledger_anchor_due")]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=KNOWN_KINDS),
                name="ledger_anchor_kind_known",
            ),
            models.CheckConstraint(
                condition=~Q(status="pending") | Q(nonce__isnull=True, tx_hash="", raw_tx=""),
                name="ledger_anchor_pending_has_no_nonce",
            ),
            *sent_transaction_constraints("ledger_anchor", "deployment"),
        ]

    def __str__(self) -> str:
        return f"Anchor {self.id} {self.kind} {self.root[:10]}… {self.status}"

    @property
    def kind_code(self) -> int:
        return self.KIND_CODES[self.Kind(self.kind)]


class AnchorEvent(models.Model):
    """What happened to an anchor, in order: kept when a retry or a chain reset overwrites the anchor's fields."""

    class Type(models.TextChoices):
        REQUESTED = "requested"
        SIGNED = "signed"
        BROADCAST = "broadcast"
        ERROR = "error"
        CONFIRMED = "confirmed"
        REQUEUED = "requeued"
        FAILED = "failed"
        RETRIED = "retried"

    anchor = models.ForeignKey(Anchor, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=16, choices=Type.choices)
    deployment = models.ForeignKey(ChainDeployment, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    nonce = models.PositiveBigIntegerField(null=True, blank=True)
    tx_hash = models.CharField(max_length=66, blank=True)
    block_number = models.PositiveBigIntegerField(null=True, blank=True)
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.type} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class RewardContracts(ActiveRow):
    """The RewardToken and RewardDistributor deployed next to a LineageRegistry deployment, and how to tell that the
    chain under them was reset (the same rule as ChainDeployment: code at the addresses and the deploy block's hash).

    At most one active row per chain id; a reset retires it with a reason and a new row takes over.
    """

    deployment = models.ForeignKey(ChainDeployment, on_delete=models.PROTECT, related_name="reward_contracts")
    chain_id = models.PositiveBigIntegerField()
    token_address = models.CharField(max_length=42)
    distributor_address = models.CharField(max_length=42)
    treasury = models.CharField(max_length=42, help_text="The account that funds epochs (the deployer).")
    token_tx_hash = models.CharField(max_length=66)
    distributor_tx_hash = models.CharField(max_length=66)
    approve_tx_hash = models.CharField(max_length=66)
    deploy_block_number = models.PositiveBigIntegerField(help_text="The block of the last of the three transactions.")
    deploy_block_hash = models.CharField(max_length=66)
    token_artifact_sha256 = models.CharField(max_length=64)
    distributor_artifact_sha256 = models.CharField(max_length=64)

    class Meta(ActiveRow.Meta):
        verbose_name_plural = "reward contracts"
        constraints = [one_active_per_chain("ledger_one_active_reward_contracts_per_chain")]

    def __str__(self) -> str:
        return f"RewardDistributor {self.distributor_address} on chain {self.chain_id}"


class RewardTransaction(SignedTransaction):
    """A transaction to the RewardDistributor (an epoch publication, a relayed claim): the outbox columns and the
    reward contracts it was sent to."""

    contracts = models.ForeignKey(RewardContracts, on_delete=models.PROTECT, null=True, blank=True, related_name="+")

    class Meta:
        abstract = True


class RewardEpoch(RewardTransaction):
    """One closed batch of rewards: a Merkle root over ``(index, account, amount)`` leaves, published to the
    RewardDistributor with its total (pulled from the treasury). Numbers count up from 1 and are never reused."""

    number = models.PositiveIntegerField(unique=True)
    root = models.CharField(max_length=66, help_text="bytes32 Merkle root, 0x-prefixed lowercase hex.")
    total = models.DecimalField(max_digits=78, decimal_places=0, help_text="Sum of the entries, smallest token unit.")
    entry_count = models.PositiveIntegerField()
    tree = models.JSONField(help_text="The StandardMerkleTree standard-v1 dump.")
    # what the epoch pays and why, as the closer describes it (an openledger.reward_epoch.v1 document): the ledger
    # stores it as given, hashes it (JCS) and anchors the hash; null on epochs closed before documents
    document = models.JSONField(null=True, blank=True, help_text="The epoch document (RFC 8785 canonical JSON).")
    document_hash = models.CharField(max_length=66, blank=True, help_text="keccak256 of the document's JCS bytes.")
    document_anchor = models.OneToOneField(
        "Anchor", null=True, blank=True, on_delete=models.PROTECT, related_name="reward_epoch"
    )

    class Meta:
        ordering = ["-number"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="ledger_epoch_due")]
        constraints = [
            models.CheckConstraint(condition=Q(number__gte=1), name="ledger_epoch_number_positive"),
            *sent_transaction_constraints("ledger_epoch", "contracts"),
        ]

    def __str__(self) -> str:
        return f"Reward epoch {self.number} ({self.status})"


class RewardEpochEntry(models.Model):
    """One leaf of an epoch: ``amount`` for ``account`` at ``index``, with its proof. ``beneficiary`` is the caller's
    opaque label for whom it was closed (e.g. ``user:12``, ``pool``): the ledger stores it and never reads it."""

    epoch = models.ForeignKey(RewardEpoch, on_delete=models.CASCADE, related_name="entries")
    index = models.PositiveIntegerField()
    account = models.CharField(max_length=42, help_text="EIP-55 checksummed")
    amount = models.DecimalField(max_digits=78, decimal_places=0)
    proof = models.JSONField()
    beneficiary = models.CharField(max_length=64, blank=True, db_index=True)

    class Meta:
        verbose_name_plural = "reward epoch entries"
        ordering = ["epoch", "index"]
        constraints = [
            models.UniqueConstraint(fields=["epoch", "index"], name="ledger_entry_index_unique"),
            models.UniqueConstraint(fields=["epoch", "account"], name="ledger_entry_account_unique"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="ledger_entry_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"epoch {self.epoch_id} #{self.index}: {self.amount} to {self.account}"


class RewardClaim(RewardTransaction):
    """A relayed ``claim`` of one entry. At most one claim per entry is live (pending, submitted or confirmed): the
    database refuses a second. A failed one (reverted, refused) leaves room for another try; ``voided`` marks a claim
    confirmed on a chain that was reset since, which the new chain never saw."""

    VOIDED = "voided"

    entry = models.ForeignKey(RewardEpochEntry, on_delete=models.PROTECT, related_name="claims")
    requested_by = models.CharField(max_length=64, blank=True, help_text="The caller's opaque label (user:12).")
    status = models.CharField(
        max_length=16,
        choices=[*RewardTransaction.Status.choices, (VOIDED, "voided (chain reset)")],
        default=RewardTransaction.Status.PENDING,
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="ledger_claim_due")]
        constraints = [
            models.UniqueConstraint(
                fields=["entry"],
                condition=Q(status__in=["pending", "submitted", "confirmed"]),
                name="ledger_one_live_claim_per_entry",
            ),
            *sent_transaction_constraints("ledger_claim", "contracts"),
        ]

    def __str__(self) -> str:
        return f"Claim {self.id} of {self.entry} ({self.status})"


class GovernanceContracts(ActiveRow):
    """The governance contracts deployed next to the reward contracts (whose token carries the votes): the
    TimelockController, the Governor, ProtocolParameters and ModelRegistry, with the settings they were deployed
    with, and how to tell that the chain under them was reset (the rule of ChainDeployment).

    At most one active row per chain id; a reset (or new reward contracts) retires it and a new row takes over. What
    the Governor decided lives on chain; the ``governance`` app mirrors it per row, and rebuilds it for a new one.
    """

    rewards = models.ForeignKey(RewardContracts, on_delete=models.PROTECT, related_name="governance_contracts")
    chain_id = models.PositiveBigIntegerField()
    timelock_address = models.CharField(max_length=42)
    governor_address = models.CharField(max_length=42)
    parameters_address = models.CharField(max_length=42)
    registry_address = models.CharField(max_length=42)
    deploy_block_number = models.PositiveBigIntegerField(help_text="The block of the first deployment transaction.")
    deploy_block_hash = models.CharField(max_length=66)
    last_block_number = models.PositiveBigIntegerField(help_text="The block of the last set-up transaction.")
    last_block_hash = models.CharField(max_length=66)
    transactions = models.JSONField(help_text="The set-up transactions' hashes, by step.")
    settings = models.JSONField(help_text="What the contracts were deployed with (delays, period, quorum, defaults).")
    artifacts_sha256 = models.JSONField(help_text="sha256 of each contract's creation bytecode, by name.")

    class Meta(ActiveRow.Meta):
        verbose_name_plural = "governance contracts"
        constraints = [one_active_per_chain("ledger_one_active_governance_per_chain")]

    def __str__(self) -> str:
        return f"Governor {self.governor_address} on chain {self.chain_id}"

    @property
    def addresses(self) -> dict[str, str]:
        """Contract name -> address, the four contracts and the token that carries the votes."""
        return {
            "OpenLedgerTimelock": self.timelock_address,
            "OpenLedgerGovernor": self.governor_address,
            "ProtocolParameters": self.parameters_address,
            "ModelRegistry": self.registry_address,
            "RewardToken": self.rewards.token_address,
        }


class GovernanceTransaction(SignedTransaction):
    """A governance call the server sends and pays for: a relayed signature (a proposal, a vote, a delegation, a
    stake's permit) or an action anyone may take (queue, execute, settle a stake). ``payload`` holds the call's
    arguments as JSON (big integers as strings); ``signature_hash`` (keccak256 of the signature) makes the database
    refuse a second relay of the same signature."""

    class Kind(models.TextChoices):
        PROPOSE = "propose", "proposal"
        VOTE = "vote", "vote"
        DELEGATE = "delegate", "delegation"
        BOND = "bond", "stake bond"
        QUEUE = "queue", "queue"
        EXECUTE = "execute", "execution"
        SETTLE = "settle", "stake settlement"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    contracts = models.ForeignKey(
        GovernanceContracts, on_delete=models.PROTECT, null=True, blank=True, related_name="transactions_sent"
    )
    payload = models.JSONField()
    proposal_id = models.CharField(max_length=78, blank=True, db_index=True, help_text="uint256 as a decimal string.")
    account = models.CharField(max_length=42, blank=True, help_text="Whose signature it relays (EIP-55).")
    signature_hash = models.CharField(max_length=66, blank=True)
    requested_by = models.CharField(max_length=64, blank=True, help_text="The caller's opaque label (user:12).")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="ledger_gov_due")]
        constraints = [
            models.UniqueConstraint(
                fields=["signature_hash"], condition=~Q(signature_hash=""), name="ledger_gov_signature_once"
            ),
            *sent_transaction_constraints("ledger_gov", "contracts"),
        ]

    def __str__(self) -> str:
        return f"Governance {self.kind} {self.id} ({self.status})"
