"""Inference runs (one answer each, recorded and hashed) and the batches that anchor them on chain."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from ledger.batches import SealedBatch

from .ids import composite_id, model_id_of


class RunBatch(SealedBatch):
    """A sealed batch of finished runs: its leaves are their ``run_hash`` (layout in ``SealedBatch``)."""

    ANCHOR_KIND = "inference_batch"
    LEAF_FIELD = "run_hash"
    AGE_FIELD = "finished_at"
    SIZE_SETTING = "INFERENCE_BATCH_RUNS"
    AGE_SETTING = "INFERENCE_BATCH_SECONDS"

    anchor = models.OneToOneField("ledger.Anchor", on_delete=models.PROTECT, related_name="inference_batch")

    class Meta(SealedBatch.Meta):
        verbose_name_plural = "run batches"

    def __str__(self) -> str:
        return f"batch {self.pk} ({self.size} runs, root {self.root[:10]}…)"


class InferenceRun(models.Model):
    """One question and its answer. Immutable once finished: ``facts`` is the canonical JSON of what the run was
    and produced, ``run_hash`` its keccak256, the leaf of its batch's Merkle tree."""

    class Kind(models.TextChoices):
        CHAT = "chat"
        COMPLETION = "completion"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    class Source(models.TextChoices):
        WEB = "web"
        API = "api"

    FINISHED = (Status.SUCCEEDED, Status.FAILED)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="inference_runs")
    version = models.ForeignKey(
        "modelfactory.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="inference_runs",
        help_text="Empty: the base model alone, or a composite (see composition).",
    )
    composition = models.JSONField(
        null=True,
        blank=True,
        help_text="A composite's components, asked at request time: {method, density, seed, components: [{version, "
        "weight, share, adapter_sha256, manifest_hash}]} (inference.composites); empty for one version or the base.",
    )
    base_model = models.ForeignKey("modelfactory.BaseModel", on_delete=models.PROTECT, related_name="inference_runs")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    prompt = models.TextField(blank=True, help_text="Completion runs: the raw prompt.")
    messages = models.JSONField(null=True, blank=True, help_text="Chat runs: [{role, content}, ...].")
    options = models.JSONField(default=dict, help_text="temperature, top_p, max_tokens, stop, seed.")
    answer = models.TextField(blank=True, help_text="Without a database stream: the partial answer as it grows.")
    finish_reason = models.CharField(max_length=10, blank=True)
    seed = models.BigIntegerField(null=True, blank=True, help_text="The sampling seed used (sampled runs).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    error = models.TextField(blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    source = models.CharField(max_length=5, choices=Source.choices, default=Source.WEB)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=255, blank=True, help_text="worker hostname:pid that claimed it last.")
    attempts = models.PositiveSmallIntegerField(default=0)
    routed_to = models.CharField(
        max_length=255, blank=True, help_text="The inference worker (node name) its message went to; empty: any."
    )
    facts = models.TextField(blank=True, help_text="Canonical JSON of the finished run; run_hash is its keccak256.")
    run_hash = models.CharField(max_length=66, blank=True, db_index=True)
    batch = models.ForeignKey(RunBatch, null=True, blank=True, on_delete=models.PROTECT, related_name="runs")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="inference_run_user_recent"),
            models.Index(
                fields=["id"], condition=Q(status="succeeded", batch__isnull=True), name="inference_run_unbatched"
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.public_id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def model_name(self) -> str:
        """The id the OpenAI-compatible API shows for the run's model (a composite's canonical id for a composite)."""
        if self.composition:
            return composite_id(self.composition)
        return model_id_of(self.version, self.base_model)

    @property
    def is_composite(self) -> bool:
        return bool(self.composition)
