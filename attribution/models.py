"""Proof of Attribution records: the training-time index of a model version and the attribution of each run (the
fee split that follows from it is the rewards app's, ``rewards.models.RewardAccrual``).

The index files (gradient features, span index) live content-addressed under MEDIA_ROOT; the rows here name them
by hash, so a loaded file that does not match its row is refused rather than silently scored against.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class AttributionIndex(models.Model):
    """The per-record gradient features and span index of one model version, built at the end of its training job.

    ``status`` is ``ok`` (both files stored, hashes in the version's lineage manifest) or ``failed`` (``error`` says
    why; the version exists and serves answers, but its runs are not attributed).
    """

    class Status(models.TextChoices):
        OK = "ok"
        FAILED = "failed"

    version = models.OneToOneField(
        "modelfactory.ModelVersion", on_delete=models.PROTECT, related_name="attribution_index"
    )
    status = models.CharField(max_length=10, choices=Status.choices)
    error = models.TextField(blank=True)
    method = models.CharField(max_length=60, blank=True, help_text="The projection method (count sketch version).")
    seed = models.BigIntegerField(default=0, help_text="Seed of the projection; it is regenerated, never stored.")
    width = models.PositiveIntegerField(default=0, help_text="Width of the projected gradient features.")
    feature_hash = models.CharField(max_length=64, blank=True, help_text="Content hash of the feature matrix.")
    span_hash = models.CharField(max_length=64, blank=True, help_text="Content hash of the span index.")
    path = models.CharField(max_length=200, blank=True, help_text="Relative to MEDIA_ROOT: attribution/ab/cd/<hash>/")
    record_ids = models.JSONField(default=list, blank=True, help_text="Indexed datanets.Record ids, feature order.")
    groups = models.JSONField(
        default=list,
        blank=True,
        help_text="How each group of records was tokenized: record type, formatting, max length, record ids.",
    )
    build_seconds = models.FloatField(null=True, blank=True)
    train_step_seconds = models.FloatField(null=True, blank=True, help_text="The job's mean seconds per step.")
    evaluation = models.JSONField(
        default=dict, blank=True, help_text="Measured reliability for this version (planted-fact evaluation)."
    )
    erased_record_ids = models.JSONField(
        default=list,
        blank=True,
        help_text="Indexed records whose bytes were erased: their feature rows are zero and the span index holds "
        "none of their tokens (the hashes above are then a re-issue's, see IndexReissue).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "attribution indexes"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="ok") | (~Q(feature_hash="") & ~Q(span_hash="") & ~Q(path="")),
                name="attribution_index_ok_has_files",
            ),
            models.CheckConstraint(
                condition=~Q(status="failed") | ~Q(error=""), name="attribution_index_failure_has_error"
            ),
        ]

    def __str__(self) -> str:
        return f"attribution index of version {self.version_id} ({self.status})"

    @property
    def is_ok(self) -> bool:
        return self.status == self.Status.OK

    @property
    def reissued(self) -> bool:
        """Its files are no longer the ones the version's manifest anchored (an erasure re-issued them)."""
        return bool(self.erased_record_ids)

    def manifest_entry(self) -> dict[str, object]:
        """What the lineage manifest anchors about this index."""
        return {
            "status": self.status,
            "method": self.method,
            "seed": self.seed,
            "width": self.width,
            "feature_hash": self.feature_hash,
            "span_hash": self.span_hash,
            "records": len(self.record_ids),
        }


class IndexReissue(models.Model):
    """An attribution index rewritten without erased records (``attribution.revocation``): the hashes it had before
    (the first re-issue's ``old_*`` are the ones the version's manifest anchored), the hashes it has since, when and
    for which revocations. The anchored manifest never changes: this row is why the stored files no longer match it.
    Rows are only ever added."""

    index = models.ForeignKey(AttributionIndex, on_delete=models.PROTECT, related_name="reissues")
    revocation_ids = models.JSONField(default=list, help_text="The erasures (datanets.Revocation ids) it applies.")
    erased_record_ids = models.JSONField(default=list, help_text="Records newly taken out by this re-issue.")
    old_feature_hash = models.CharField(max_length=64)
    old_span_hash = models.CharField(max_length=64)
    new_feature_hash = models.CharField(max_length=64)
    new_span_hash = models.CharField(max_length=64)
    old_path = models.CharField(max_length=200, help_text="The folder it replaced (deleted once no index names it).")
    new_path = models.CharField(max_length=200, help_text="Relative to MEDIA_ROOT: the re-issued folder.")
    seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "index re-issues"
        ordering = ["index_id", "id"]

    def __str__(self) -> str:
        return f"re-issue {self.pk} of {self.index}"

    def as_dict(self) -> dict[str, object]:
        """What an auditor reads (the version API and page show it)."""
        return {
            "revocations": list(self.revocation_ids),
            "erased_records": list(self.erased_record_ids),
            "old_feature_hash": self.old_feature_hash,
            "old_span_hash": self.old_span_hash,
            "new_feature_hash": self.new_feature_hash,
            "new_span_hash": self.new_span_hash,
            "at": self.created_at.isoformat() if self.created_at else None,
        }


class RunAttribution(models.Model):
    """The attribution of one inference run: which policy, each signal's share, and how it went.

    ``status``: pending (queued after the answer, or queued again for a retry), ok (scored; RecordAttribution rows
    exist and the fee is split), no_index (the version has no usable index: nothing was credited to contributors),
    failed (``error`` is the last attempt's error). Shares are exact fractions stored as ``"p/q"`` strings.

    Retries (``attribution.services.run_attributions_retry``, by celery beat): ``attempts`` counts the scoring
    attempts that ended (failed, lost, or stored). A failed one with ``next_attempt_at`` set is waiting for its
    retry, which is not finished (the panel keeps polling); one without it failed for good (a permanent error, or
    ``ATTRIBUTION_MAX_ATTEMPTS`` attempts spent). ok and no_index are final: the run's fee is split (``hooks.FeeSplit``:
    the rewards app's accruals) once, in the same transaction that makes the row final.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        OK = "ok"
        NO_INDEX = "no_index", "no index"
        FAILED = "failed"

    class Verdict(models.TextChoices):
        SUPPORTED = "supported"
        PARTLY_SUPPORTED = "partly_supported", "partly supported"
        UNSUPPORTED = "unsupported"

    FINISHED = (Status.OK, Status.NO_INDEX, Status.FAILED)

    run = models.OneToOneField("inference.InferenceRun", on_delete=models.CASCADE, related_name="attribution")
    index = models.ForeignKey(
        AttributionIndex, null=True, blank=True, on_delete=models.PROTECT, related_name="run_attributions"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    reward_policy_version = models.PositiveIntegerField(null=True, blank=True)
    feature_hash = models.CharField(max_length=64, blank=True, help_text="The index files scored against.")
    span_hash = models.CharField(max_length=64, blank=True)
    signal_shares = models.JSONField(default=dict, blank=True, help_text='{signal: "p/q"}')
    effective_weights = models.JSONField(default=dict, blank=True)
    contributors = models.JSONField(default=list, blank=True, help_text='[[user id, "p/q"], ...] largest first')
    datanets = models.JSONField(default=list, blank=True, help_text='[[datanet id, "p/q"], ...] largest first')
    answer_tokens = models.PositiveIntegerField(default=0)
    longest_span = models.PositiveIntegerField(default=0, help_text="Tokens of the longest verbatim span.")
    explanation = models.TextField(blank=True)
    verdict = models.CharField(
        max_length=16,
        choices=Verdict.choices,
        blank=True,
        help_text="Whether training records support the answer's content; blank for runs scored before verdicts.",
    )
    confidence = models.FloatField(null=True, blank=True, help_text="How sure the verdict and top credit are, 0-1.")
    support = models.JSONField(default=dict, blank=True, help_text="The evidence behind the verdict, per signal.")
    revocation_policy = models.CharField(
        max_length=40, blank=True, help_text="How revoked records were treated (docs/revocation-policy.md)."
    )
    revoked_excluded = models.JSONField(
        default=list, blank=True, help_text="Record ids the revocation policy kept from being credited."
    )
    fee = models.DecimalField(max_digits=78, decimal_places=0, default=0)
    seconds = models.FloatField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Scoring attempts that ended: failed, lost, stored.")
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When the last retry was queued.")
    started_at = models.DateTimeField(null=True, blank=True, help_text="When the last attempt started scoring.")
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="Failed, waiting for a retry at this time; empty: final."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(next_attempt_at__isnull=True) | Q(status="failed"), name="attribution_retry_only_failed"
            ),
        ]

    def __str__(self) -> str:
        return f"attribution of run {self.run_id} ({self.status})"

    @property
    def retry_scheduled(self) -> bool:
        """Failed, with a retry still to come."""
        return self.status == self.Status.FAILED and self.next_attempt_at is not None

    @property
    def is_finished(self) -> bool:
        """Nothing more will happen to it: stored, or failed for good."""
        return self.status in self.FINISHED and not self.retry_scheduled

    @property
    def is_credited(self) -> bool:
        """Final with its fee split (ok, no_index): never claimed, scored or split again."""
        return self.status in (self.Status.OK, self.Status.NO_INDEX)


class RecordAttribution(models.Model):
    """One credited training record of a run: its combined share, each signal's part and raw score."""

    run_attribution = models.ForeignKey(RunAttribution, on_delete=models.CASCADE, related_name="records")
    record = models.ForeignKey("datanets.Record", on_delete=models.PROTECT, related_name="attributions")
    contribution = models.ForeignKey("datanets.Contribution", on_delete=models.PROTECT, related_name="attributions")
    rank = models.PositiveIntegerField()
    share = models.CharField(max_length=80, help_text='Exact share of the answer, "p/q".')
    share_float = models.FloatField(help_text="The same share as a float, for ordering and charts.")
    by_signal = models.JSONField(default=dict, help_text='{signal: "p/q"}, summing to share.')
    raw_scores = models.JSONField(default=dict, help_text="{signal: raw score} (gradient cosine, span coverage).")

    class Meta:
        ordering = ["run_attribution_id", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["run_attribution", "record"], name="attribution_record_once"),
        ]

    def __str__(self) -> str:
        return f"record {self.record_id}: {self.share}"


class SpanMatch(models.Model):
    """A verbatim span of the answer found in a training record, for highlighting both.

    Character ranges are end-exclusive: ``answer_start:answer_end`` in the run's answer, ``record_start:record_end``
    in the record's display text (``attribution.selectors.record_display_text``), empty when the span's text could
    not be located there.
    """

    run_attribution = models.ForeignKey(RunAttribution, on_delete=models.CASCADE, related_name="spans")
    record = models.ForeignKey("datanets.Record", on_delete=models.PROTECT, related_name="span_matches")
    tokens = models.PositiveIntegerField()
    n_records = models.PositiveIntegerField(help_text="How many training records contain this span.")
    answer_start = models.PositiveIntegerField()
    answer_end = models.PositiveIntegerField()
    record_start = models.PositiveIntegerField(null=True, blank=True)
    record_end = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "span matches"
        ordering = ["run_attribution_id", "answer_start", "record_id"]

    def __str__(self) -> str:
        return f"span {self.answer_start}:{self.answer_end} in record {self.record_id}"
