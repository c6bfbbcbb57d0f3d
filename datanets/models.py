"""Datanets, the contributions made to them, their records, curators' decisions and frozen snapshots.

Single-row rules live here: a contribution that is no longer pending can't be saved again (its row and its records
are frozen), a Datanet's record type can't change once it has records. Workflows live in ``services.py``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from ledger.batches import SealedBatch

from .licences import LICENCE_CHOICES
from .parsing import RECORD_TYPES

RECORD_TYPE_CHOICES = [(t, t) for t in RECORD_TYPES]
LANGUAGE_CHOICES = [
    ("en", "English"),
    ("fr", "French"),
    ("de", "German"),
    ("es", "Spanish"),
    ("it", "Italian"),
    ("pt", "Portuguese"),
    ("nl", "Dutch"),
]
DEFAULT_DAILY_QUOTA_BYTES = 10 * 1024 * 1024
DEFAULT_DAILY_QUOTA_FILES = 20
DEFAULT_NEAR_DUPLICATE_THRESHOLD = 0.85
PARSE_ERRORS_KEPT = 100
ZERO_ADDRESS = "0x" + "00" * 20


class ContributionFrozen(ValidationError):
    """Raised when code tries to change a contribution, or its records, after it left ``pending``."""


class Datanet(models.Model):
    """A community dataset: what records it takes, under which licence, who may see, contribute and curate."""

    class Visibility(models.TextChoices):
        PUBLIC = "public", "public"
        PRIVATE = "private", "private (members only)"

    class Policy(models.TextChoices):
        OPEN = "open", "open to everyone"
        MEMBERS = "members", "approved members only"

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=140, unique=True)
    summary = models.CharField(max_length=300, blank=True)
    description = models.TextField(blank=True, help_text="Markdown source; rendered without raw HTML.")
    tags = models.JSONField(default=list, blank=True, help_text="A list of short lowercase words.")
    domain = models.CharField(max_length=60, blank=True, db_index=True)
    record_type = models.CharField(max_length=20, choices=RECORD_TYPE_CHOICES, default="text")
    licence = models.CharField(max_length=20, choices=LICENCE_CHOICES, default="CC-BY-4.0")
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PUBLIC)
    contribution_policy = models.CharField(max_length=10, choices=Policy.choices, default=Policy.OPEN)
    language = models.CharField(max_length=2, choices=LANGUAGE_CHOICES, blank=True)
    daily_quota_bytes = models.PositiveBigIntegerField(default=DEFAULT_DAILY_QUOTA_BYTES)
    daily_quota_files = models.PositiveIntegerField(default=DEFAULT_DAILY_QUOTA_FILES)
    near_duplicate_threshold = models.FloatField(
        default=DEFAULT_NEAR_DUPLICATE_THRESHOLD, validators=[MinValueValidator(0.5), MaxValueValidator(1.0)]
    )
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_datanets")
    curators = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="curated_datanets", blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="member_datanets", blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(near_duplicate_threshold__gte=0.5, near_duplicate_threshold__lte=1.0),
                name="datanets_threshold_in_range",
            ),
            models.CheckConstraint(condition=Q(record_type__in=RECORD_TYPES), name="datanets_known_record_type"),
            models.CheckConstraint(condition=Q(daily_quota_files__gte=1), name="datanets_quota_files_positive"),
            models.CheckConstraint(condition=Q(daily_quota_bytes__gte=1), name="datanets_quota_bytes_positive"),
        ]
        indexes = [models.Index(fields=["visibility", "-created_at"]), models.Index(fields=["record_type"])]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.pk is not None:
            stored = Datanet.objects.filter(pk=self.pk).values_list("record_type", flat=True).first()
            if stored is not None and stored != self.record_type and self.contributions.exists():
                raise ValidationError(
                    {"record_type": f"the record type is fixed at {stored!r} once the Datanet has records"}
                )
        if not isinstance(self.tags, list) or not all(isinstance(tag, str) for tag in self.tags):
            raise ValidationError({"tags": "tags must be a list of words"})


class Contribution(models.Model):
    """One upload (or pasted text) by one contributor: immutable bytes, parsed records, checks and a decision.

    Once it leaves ``pending`` its row can't be saved again, nor can its records (``ContributionFrozen``).
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        REJECTED = "rejected"
        WITHDRAWN = "withdrawn"

    class BadRows(models.TextChoices):
        REJECT_WHOLE = "reject_whole", "reject the whole file"
        EXCLUDE_BAD = "exclude_bad", "leave the bad rows out"

    class CheckStatus(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    datanet = models.ForeignKey(Datanet, on_delete=models.PROTECT, related_name="contributions")
    contributor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="contributions")
    licence = models.CharField(max_length=20, choices=LICENCE_CHOICES)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    source_filename = models.CharField(max_length=255)
    content_sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.PositiveBigIntegerField()
    storage_path = models.CharField(max_length=200, help_text="Relative to MEDIA_ROOT: contributions/ab/cd/<sha256>")
    bad_rows = models.CharField(max_length=12, choices=BadRows.choices, default=BadRows.REJECT_WHOLE)
    record_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0, help_text="Rows refused by the parser and left out.")
    duplicate_row_count = models.PositiveIntegerField(default=0, help_text="Repeated rows within the upload.")
    excluded_count = models.PositiveIntegerField(default=0, help_text="Records a curator excluded.")
    parse_errors = models.JSONField(default=list, blank=True)
    checks = models.JSONField(default=dict, blank=True)
    check_status = models.CharField(max_length=10, choices=CheckStatus.choices, default=CheckStatus.QUEUED)
    checked_at = models.DateTimeField(null=True, blank=True)
    quality_score = models.PositiveSmallIntegerField(null=True, blank=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="reviewed_contributions"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_reason = models.TextField(blank=True)
    submitted_at = models.DateTimeField(default=timezone.now)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    records_staged = models.BooleanField(
        default=False,
        help_text="A large upload's records wait in StagedRecord until the checks (or a decision) move them into "
        "Record; until then they are not listed.",
    )
    idempotency_key = models.CharField(
        max_length=255, blank=True, help_text="The client's Idempotency-Key: a retry with it returns this contribution"
    )

    # Not a field: True on a contribution that contribution_submit returned for a retried upload instead of storing
    # the same bytes again.
    replayed = False

    class Meta:
        ordering = ["-submitted_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["contributor", "datanet", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="datanets_contribution_idempotency_key_unique",
            ),
            models.CheckConstraint(
                condition=Q(quality_score__isnull=True) | Q(quality_score__lte=100), name="datanets_quality_score_0_100"
            ),
            models.CheckConstraint(
                condition=Q(status="rejected", reviewer__isnull=False, reviewed_at__isnull=False) & ~Q(review_reason="")
                | ~Q(status="rejected"),
                name="datanets_rejection_has_reviewer_and_reason",
            ),
            models.CheckConstraint(
                condition=~Q(status="accepted") | Q(reviewer__isnull=False, reviewed_at__isnull=False),
                name="datanets_acceptance_has_reviewer",
            ),
            models.CheckConstraint(
                condition=~Q(status="withdrawn") | Q(withdrawn_at__isnull=False), name="datanets_withdrawal_has_time"
            ),
            models.CheckConstraint(condition=Q(content_sha256__regex=r"^[0-9a-f]{64}$"), name="datanets_sha256_hex"),
        ]
        indexes = [
            models.Index(fields=["datanet", "status", "submitted_at"]),
            models.Index(fields=["contributor", "datanet", "submitted_at"]),
            models.Index(fields=["status", "submitted_at"]),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.source_filename} to {self.datanet.name} ({self.status})"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            stored = Contribution.objects.filter(pk=self.pk).values_list("status", flat=True).first()
            if stored is not None and stored != self.Status.PENDING:
                raise ContributionFrozen(f"contribution #{self.pk} is {stored}: it can no longer be changed")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        if self.status != self.Status.PENDING:
            raise ContributionFrozen(f"contribution #{self.pk} is {self.status}: it can't be deleted")
        return super().delete(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def is_frozen(self) -> bool:
        return self.status != self.Status.PENDING


class StagedRecord(models.Model):
    """A parsed record of a large upload, waiting to be moved into ``Record`` by ``contribution_records_settle``.

    An upload over ``UPLOAD_STAGE_ABOVE_BYTES`` writes its records here, in its own transaction: a table with no index
    but its primary key and no foreign-key check, so the upload costs the parse and little more. The checks task
    moves them into ``Record`` (indexes, foreign keys) in one transaction before it checks them, and so does a
    decision that comes first; the table is empty between uploads. Its columns are ``Record``'s as an upload writes
    them. No database foreign key, so that nothing is checked per row: rows are only written by the upload that
    creates the contribution, in its transaction, and Django deletes them with it.
    """

    contribution = models.ForeignKey(
        Contribution, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    datanet = models.ForeignKey(
        Datanet, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    position = models.PositiveIntegerField()
    source = models.CharField(max_length=300)
    line = models.PositiveIntegerField()
    canonical = models.TextField()
    record_hash = models.CharField(max_length=66)
    words = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"staged record {self.position} of contribution {self.contribution_id}"


class Record(models.Model):
    """One training example: canonical JSON and its keccak256, where it came from, and what the checks flagged."""

    # No index of its own: the unique (contribution, position) leads with it. The datanet keeps its own (small,
    # appended in order): Datanet-wide reads use it, the wide (datanet, record_hash) one is for hash lookups only.
    contribution = models.ForeignKey(Contribution, on_delete=models.CASCADE, related_name="records", db_index=False)
    datanet = models.ForeignKey(Datanet, on_delete=models.PROTECT, related_name="records")
    position = models.PositiveIntegerField(help_text="0-based order within the contribution.")
    source = models.CharField(max_length=300, help_text="The file, or the entry inside an archive.")
    line = models.PositiveIntegerField(help_text="Line (or CSV row) where the record starts.")
    canonical = models.TextField()
    record_hash = models.CharField(max_length=66)
    words = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    minhash = models.BinaryField(null=True, blank=True, editable=False)
    excluded = models.BooleanField(default=False)
    excluded_reason = models.TextField(blank=True)
    excluded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )  # indexed only where set (Meta.indexes): a new record never is
    excluded_at = models.DateTimeField(null=True, blank=True)
    flags = models.JSONField(default=list, blank=True, help_text="Flagged spans: {kind, start, end} in canonical.")

    class Meta:
        ordering = ["contribution_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["contribution", "position"], name="datanets_record_position_unique"),
            # No CHECK on record_hash's form: only our parser writes it ("0x" + hex of a 32-byte keccak digest), and a
            # regex on every uploaded row is paid for nothing (docs/decisions.md, "Lean record table").
            models.CheckConstraint(
                condition=Q(excluded=False) | (Q(excluded_at__isnull=False) & ~Q(excluded_reason="")),
                name="datanets_exclusion_has_reason",
            ),
        ]
        # Every index costs each row of an upload (a million at a time): only these. Lookups by hash always name the
        # Datanet; the partial ones hold only excluded records, so an upload's rows never enter them. The record
        # viewer's full-text index (migration 0006, per database: a GIN index on PostgreSQL, an FTS5 table on SQLite)
        # holds only checked records (``minhash`` set), so it is filled by the checks task, never by an upload.
        indexes = [
            models.Index(fields=["datanet", "record_hash"]),
            models.Index(fields=["contribution"], condition=Q(excluded=True), name="datanets_record_excluded"),
            models.Index(
                fields=["excluded_by"], condition=Q(excluded_by__isnull=False), name="datanets_record_excluded_by"
            ),
        ]

    def __str__(self) -> str:
        return f"record #{self.pk} of contribution #{self.contribution_id}"

    def save(self, *args: object, **kwargs: object) -> None:
        self._refuse_if_frozen()
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        self._refuse_if_frozen()
        return super().delete(*args, **kwargs)  # type: ignore[arg-type]

    def _refuse_if_frozen(self) -> None:
        status = Contribution.objects.filter(pk=self.contribution_id).values_list("status", flat=True).first()
        if status is not None and status != Contribution.Status.PENDING:
            raise ContributionFrozen(f"contribution #{self.contribution_id} is {status}: its records can't change")


class ContributionDecision(models.Model):
    """The audit log of a contribution: every decision, by whom, when and why. Rows are only ever added."""

    class Action(models.TextChoices):
        SUBMIT = "submit"
        ACCEPT = "accept"
        REJECT = "reject"
        WITHDRAW = "withdraw"
        EXCLUDE_RECORD = "exclude_record", "exclude a record"
        RESTORE_RECORD = "restore_record", "restore a record"
        REVOKE = "revoke", "revoke records"
        ERASE = "erase", "erase records"

    contribution = models.ForeignKey(Contribution, on_delete=models.CASCADE, related_name="decisions")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=16, choices=Action.choices)
    reason = models.TextField(blank=True)
    record = models.ForeignKey(Record, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["contribution", "created_at"])]

    def __str__(self) -> str:
        return f"{self.action} #{self.contribution_id} by {self.actor}"


class Snapshot(models.Model):
    """An immutable numbered version of a Datanet: its accepted records at freeze time, their Merkle root, and the
    anchor that puts the root on chain. ``tree_path`` holds every node of the tree (32 bytes each, node 0 first), so
    a proof is a few reads from that file."""

    datanet = models.ForeignKey(Datanet, on_delete=models.PROTECT, related_name="snapshots")
    number = models.PositiveIntegerField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    previous = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="next_snapshot"
    )
    record_count = models.PositiveIntegerField()
    contribution_count = models.PositiveIntegerField()
    contributor_count = models.PositiveIntegerField()
    words = models.PositiveBigIntegerField()
    duplicates_skipped = models.PositiveIntegerField(default=0)
    added_count = models.PositiveIntegerField(default=0, help_text="Records not in the previous snapshot.")
    removed_count = models.PositiveIntegerField(default=0, help_text="Records of the previous snapshot not here.")
    # the governed quality minimum (issue 16) applied at freeze time, and what it left out
    min_quality_score = models.PositiveSmallIntegerField(
        default=0, help_text="The minimum quality score a contribution needed to enter (0: none)."
    )
    below_quality_count = models.PositiveIntegerField(
        default=0, help_text="Accepted contributions left out: their quality score was below the minimum."
    )
    rules_source = models.CharField(
        max_length=12,
        blank=True,
        help_text="Where the minimum was read: chain, cached, settings, fallback; empty: frozen before governance.",
    )
    merkle_root = models.CharField(max_length=66)
    tree_path = models.CharField(max_length=200, help_text="Relative to MEDIA_ROOT: snapshots/ab/cd/<sha256>.nodes")
    tree_sha256 = models.CharField(max_length=64)
    anchor = models.OneToOneField("ledger.Anchor", on_delete=models.PROTECT, related_name="datanet_snapshot")

    class Meta:
        ordering = ["datanet_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["datanet", "number"], name="datanets_snapshot_number_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="datanets_snapshot_number_positive"),
            models.CheckConstraint(condition=Q(record_count__gte=1), name="datanets_snapshot_not_empty"),
            models.CheckConstraint(condition=Q(merkle_root__regex=r"^0x[0-9a-f]{64}$"), name="datanets_snapshot_root"),
        ]

    def __str__(self) -> str:
        return f"{self.datanet.name} snapshot {self.number}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None and Snapshot.objects.filter(pk=self.pk).exists():
            raise ValidationError(f"snapshot {self.number} is frozen: it can't be changed")
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class SnapshotRecord(models.Model):
    """A record's leaf in a snapshot: its value ``(record_hash, address, contribution_id)`` as frozen, and where its
    leaf hash sits in the tree (``tree_index``) for proofs. ``leaf_index`` is the value's position in build order."""

    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="leaves")
    record = models.ForeignKey(Record, on_delete=models.PROTECT, related_name="snapshot_leaves")
    contribution = models.ForeignKey(Contribution, on_delete=models.PROTECT, related_name="snapshot_leaves")
    address = models.CharField(max_length=42, help_text="The contributor's wallet at freeze time, or the zero address.")
    leaf_index = models.PositiveIntegerField()
    tree_index = models.PositiveIntegerField()

    class Meta:
        ordering = ["snapshot_id", "leaf_index"]
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "record"], name="datanets_snapshot_record_once"),
            models.UniqueConstraint(fields=["snapshot", "leaf_index"], name="datanets_snapshot_leaf_index_unique"),
        ]
        indexes = [models.Index(fields=["contribution", "snapshot"])]

    def __str__(self) -> str:
        return f"leaf {self.leaf_index} of snapshot {self.snapshot_id}"


class ReceiptBatch(SealedBatch):
    """A sealed batch of receipts: its leaves are their ``document_hash`` (layout in ``SealedBatch``)."""

    ANCHOR_KIND = "receipt_batch"
    LEAF_FIELD = "document_hash"
    AGE_FIELD = "created_at"
    SIZE_SETTING = "RECEIPT_BATCH_SIZE"
    AGE_SETTING = "RECEIPT_BATCH_SECONDS"

    anchor = models.OneToOneField("ledger.Anchor", on_delete=models.PROTECT, related_name="receipt_batch")

    class Meta(SealedBatch.Meta):
        verbose_name_plural = "receipt batches"

    def __str__(self) -> str:
        return f"receipt batch {self.pk} ({self.size} receipts, root {self.root[:10]}…)"


class Receipt(models.Model):
    """What happened to a contribution, as a hashed document: its submission (``contribution``), a curator's
    decision on it or on one of its records (``curation``), or the revocation of its records or their erasure
    (``revocation``). Written in the transaction of the action it records;
    sealed later into a ``ReceiptBatch`` whose root goes on chain. Rows are only ever added, and stay when their
    contribution is withdrawn: they are the record of what happened.

    A contribution receipt is written with the cheap facts of the upload; its ``records_root`` (a tree over the
    records) is filled, and the document hashed, off the upload's path (``receipts.receipts_complete``): until then
    ``document_hash`` is empty. A curation receipt is complete when written.
    """

    class Kind(models.TextChoices):
        CONTRIBUTION = "contribution"
        CURATION = "curation"
        REVOCATION = "revocation"

    SCHEMAS = {
        Kind.CONTRIBUTION: "openledger.receipt.contribution.v1",
        Kind.CURATION: "openledger.receipt.curation.v1",
        Kind.REVOCATION: "openledger.receipt.revocation.v1",
    }

    kind = models.CharField(max_length=12, choices=Kind.choices)
    # CASCADE like the decision log: nothing deletes a contribution but code handling a pending one
    contribution = models.ForeignKey(Contribution, on_delete=models.CASCADE, related_name="receipts", db_index=False)
    datanet = models.ForeignKey(Datanet, on_delete=models.PROTECT, related_name="receipts", db_index=False)
    document = models.JSONField(help_text="The JCS document (records_root null until completed).")
    document_hash = models.CharField(
        max_length=66, blank=True, help_text="keccak256 of the document's JCS bytes; empty until completed."
    )
    batch = models.ForeignKey(ReceiptBatch, on_delete=models.PROTECT, null=True, blank=True, related_name="receipts")
    created_at = models.DateTimeField(default=timezone.now, help_text="When the action it records happened.")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["contribution", "curation", "revocation"]), name="datanets_receipt_kind"
            ),
            models.CheckConstraint(
                condition=Q(batch__isnull=True) | ~Q(document_hash=""), name="datanets_receipt_sealed_complete"
            ),
            models.UniqueConstraint(
                fields=["contribution"], condition=Q(kind="contribution"), name="datanets_one_contribution_receipt"
            ),
        ]
        indexes = [
            models.Index(fields=["datanet", "id"]),
            models.Index(fields=["contribution", "id"]),
            # the few receipts not yet sealed: what the beat task reads
            models.Index(fields=["id"], condition=Q(batch__isnull=True), name="datanets_receipt_unsealed"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} receipt {self.pk} of contribution {self.contribution_id}"


REVOCATION_POLICY = "openledger.revocation.v1"


class Revocation(models.Model):
    """Records of one accepted contribution taken back: withdrawn by their contributor, or taken down by a curator
    of the Datanet or a staff member, for a stated reason. Rows are only ever added, and only ``erased_at`` is set
    later (an erasure asked after the revocation).

    A revoked record leaves every snapshot frozen after it; the snapshots frozen before stay as anchored. With
    ``erase`` the record's bytes go too (its canonical text, the stored upload, the exports' text and the indexes
    built from it); its hash and leaf stay, so the old proofs still verify. What a revoked record earns follows the
    policy named in ``policy`` (docs/revocation-policy.md; the flows: docs/revocation.md).
    """

    class Kind(models.TextChoices):
        WITHDRAWAL = "withdrawal", "withdrawn by the contributor"
        TAKEDOWN = "takedown", "taken down"

    class Reason(models.TextChoices):
        CONSENT = "consent", "consent withdrawn"
        PERSONAL_DATA = "personal_data", "personal data"
        LICENCE = "licence", "licence"
        LEGAL_REQUEST = "legal_request", "legal request"
        OTHER = "other", "other"

    datanet = models.ForeignKey(Datanet, on_delete=models.PROTECT, related_name="revocations")
    contribution = models.ForeignKey(Contribution, on_delete=models.PROTECT, related_name="revocations")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    reason = models.CharField(max_length=14, choices=Reason.choices)
    explanation = models.TextField(blank=True, max_length=2000)
    record_count = models.PositiveIntegerField()
    erase = models.BooleanField(default=False, help_text="Erasure asked: the records' bytes are erased.")
    erased_at = models.DateTimeField(null=True, blank=True, help_text="When the bytes were erased.")
    erased_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    policy = models.CharField(max_length=40, default=REVOCATION_POLICY, help_text="The reward policy in force.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(record_count__gte=1), name="datanets_revocation_not_empty"),
            models.CheckConstraint(
                condition=Q(erase=False, erased_at__isnull=True) | Q(erase=True, erased_at__isnull=False),
                name="datanets_revocation_erasure_has_time",
            ),
            models.CheckConstraint(
                condition=(Q(kind="withdrawal") & ~Q(reason="other")) | ~Q(explanation=""),
                name="datanets_revocation_explained",
            ),
        ]
        indexes = [models.Index(fields=["contribution", "created_at"])]
        verbose_name_plural = "revocations"

    def __str__(self) -> str:
        return f"revocation {self.pk} of {self.record_count} records of contribution #{self.contribution_id}"


class RevokedRecord(models.Model):
    """A record that was revoked, once: the revocation that took it back. Snapshots frozen later leave it out."""

    record = models.OneToOneField(Record, on_delete=models.PROTECT, primary_key=True, related_name="revoked")
    revocation = models.ForeignKey(Revocation, on_delete=models.PROTECT, related_name="records")
    datanet = models.ForeignKey(Datanet, on_delete=models.PROTECT, related_name="+", db_index=False)
    erased = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["revocation"], name="datanets_revoked_by")]
        verbose_name_plural = "revoked records"

    def __str__(self) -> str:
        return f"record #{self.record_id} revoked by revocation {self.revocation_id}"
