from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


class BaseModel(models.Model):
    """A base language model on local disk that fine-tunes start from: the bundled default or a registered folder."""

    class Source(models.TextChoices):
        BUNDLED = "bundled", "Bundled with the application"
        REGISTERED = "registered", "Registered by staff"

    name = models.CharField(max_length=200, unique=True)
    path = models.CharField(max_length=1000, help_text="A Hugging Face model folder on the workers' disk.")
    source = models.CharField(max_length=20, choices=Source.choices)
    architecture = models.CharField(max_length=200)
    model_type = models.CharField(max_length=100, blank=True)
    parameters = models.BigIntegerField()
    context_length = models.PositiveIntegerField()
    weights_bytes = models.BigIntegerField(default=0)
    weights_sha256 = models.CharField(max_length=64, blank=True)
    licence = models.CharField(max_length=100, blank=True)
    is_default = models.BooleanField(default=False)
    registered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=models.Q(is_default=True), name="one_default_base")
        ]

    def __str__(self) -> str:
        return self.name


class TrainingWorker(models.Model):
    """A Celery worker of the ``training`` queue as the estimate sees it: its device, when it was last alive
    (touched with its worker heartbeat), the base model it holds in memory, and the throughput it measured on real
    jobs, by base model id (``estimates.Throughput.to_dict()`` under ``str(base_model_id)``)."""

    hostname = models.CharField(max_length=255, unique=True)
    device = models.CharField(max_length=20, help_text='"cpu" or "cuda".')
    device_label = models.CharField(max_length=200)
    last_seen = models.DateTimeField(db_index=True)
    loaded_base = models.CharField(max_length=1000, blank=True, help_text="Path of the base model it holds.")
    throughput = models.JSONField(default=dict, blank=True)
    measured_at = models.DateTimeField(null=True, blank=True)
    devices = models.JSONField(
        default=dict, blank=True, help_text="What it announced in its last heartbeat (selectors.worker_devices)."
    )

    def __str__(self) -> str:
        return self.hostname


class ModelVersionFrozen(ValidationError):
    """Raised when code tries to change or delete a model version: only ``published`` may change after creation."""


class FineTuneJob(models.Model):
    """One LoRA fine-tune: what to train (base, parent, snapshots, config), and how the run goes.

    queued -> running (claimed by one worker, heartbeat written as it trains) -> succeeded (a ModelVersion exists)
    | failed (``error`` says why; "worker lost" when the heartbeat went stale) | cancelled. Failed and cancelled jobs
    can be queued again (``attempts`` counts the claims).
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Kind(models.TextChoices):
        TRAIN = "train", "fine-tune"
        MERGE = "merge", "merge of adapters"

    class MergeMethod(models.TextChoices):
        # the methods modelfactory.training.merge_adapters knows (MERGE_METHODS there; a test keeps them equal)
        LINEAR = "linear", "linear (weighted sum)"
        TIES = "ties", "TIES (trim, elect sign, merge)"
        CAT = "cat", "concatenation (exact weighted sum of updates)"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    LOG_TAIL_LINES = 50

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="finetune_jobs")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="jobs")
    parent_version = models.ForeignKey(
        "ModelVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="continued_by_jobs"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.TRAIN)
    snapshots = models.ManyToManyField("datanets.Snapshot", related_name="finetune_jobs")
    config = models.JSONField(help_text="TrainingConfig.to_dict(); empty for a merge job")
    merge = models.JSONField(
        default=dict,
        blank=True,
        help_text='A merge job\'s recipe: {"method", "density", "parents": [{"id", "weight"}]}; empty for training.',
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)

    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    train_loss = models.FloatField(null=True, blank=True)
    eval_loss = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    eta_seconds = models.FloatField(null=True, blank=True)
    loss_history = models.JSONField(default=list, blank=True)
    log_tail = models.JSONField(default=list, blank=True, help_text="The last log lines, oldest first.")
    base_eval_loss = models.FloatField(null=True, blank=True, help_text="The base model's eval loss, before step 1.")
    # what the run is doing now (``estimates.PHASES``) and how far that phase got, in its own unit
    phase = models.CharField(max_length=20, blank=True)
    phase_done = models.PositiveIntegerField(default=0)
    phase_total = models.PositiveIntegerField(default=0)
    phase_unit = models.CharField(max_length=20, blank=True)
    phase_started_at = models.DateTimeField(null=True, blank=True)
    phases = models.JSONField(
        default=list,
        blank=True,
        help_text='Finished phases in order: {"phase", "seconds", and its work: "tokens", "records", "cold"...}.',
    )
    device = models.CharField(max_length=50, blank=True, help_text="The device it ran on (cpu, cuda:0).")
    estimate = models.JSONField(
        default=dict, blank=True, help_text="The estimate shown at launch: seconds by phase, worker and source."
    )
    supersedes = models.ForeignKey(
        "ModelVersion",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="superseded_by_jobs",
        help_text="The version trained on withdrawn records that this job retrains without them.",
    )

    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True, help_text="Hostname of the worker that claimed it last.")
    celery_task_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "fine-tune job"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"]), models.Index(fields=["status", "heartbeat_at"])]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(status="running") | models.Q(started_at__isnull=False, heartbeat_at__isnull=False),
                name="modelfactory_running_job_has_heartbeat",
            ),
        ]

    def __str__(self) -> str:
        return f"job #{self.pk} {self.name} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def progress_percent(self) -> int:
        return int(100 * self.step / self.total_steps) if self.total_steps else 0

    @property
    def is_merge(self) -> bool:
        return self.kind == self.Kind.MERGE

    @property
    def training_seconds(self) -> float | None:
        """Seconds of the step loop alone (the "train" phase), once measured."""
        entry = next((p for p in self.phases or [] if isinstance(p, dict) and p.get("phase") == "train"), None)
        return float(entry["seconds"]) if entry and entry.get("seconds") else None

    def merge_sources(self) -> list[tuple[ModelVersion, float]]:
        """A merge job's parent versions with their weights, in the order given at launch ([] for training)."""
        wanted = [(int(p["id"]), float(p["weight"])) for p in self.merge.get("parents", [])]
        versions = ModelVersion.objects.select_related("base_model", "owner").in_bulk([pk for pk, _ in wanted])
        return [(versions[pk], weight) for pk, weight in wanted if pk in versions]


class ModelVersion(models.Model):
    """The immutable result of a job: the adapter (content-addressed), what made it, and its anchored manifest.

    ``manifest`` is the canonical lineage JSON (``modelfactory.lineage``) and ``manifest_hash`` its keccak256, the
    root anchored on chain. Only ``published`` may change after creation; a version is never deleted.
    """

    job = models.OneToOneField(FineTuneJob, on_delete=models.PROTECT, related_name="version")
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="model_versions")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="versions")
    parents = models.ManyToManyField(
        "self", through="ModelVersionParent", through_fields=("child", "parent"), symmetrical=False,
        related_name="children",
    )  # fmt: skip
    snapshots = models.ManyToManyField("datanets.Snapshot", related_name="model_versions")
    record_type = models.CharField(max_length=20)
    config = models.JSONField()
    seed = models.BigIntegerField()
    code_version = models.CharField(max_length=64, help_text="git commit of the code that trained it, or 'unknown'.")
    adapter_path = models.CharField(max_length=200, help_text="Relative to MEDIA_ROOT: adapters/ab/cd/<sha256>/")
    adapter_sha256 = models.CharField(max_length=64, help_text="SHA-256 of adapter_model.safetensors.")
    adapter_bytes = models.PositiveBigIntegerField()
    metrics = models.JSONField(default=dict)
    samples = models.JSONField(default=list)
    training = models.JSONField(default=dict, help_text="Run facts outside the lineage: device, steps, seconds.")
    manifest = models.TextField(help_text="Canonical lineage JSON: sorted keys, no whitespace, UTF-8.")
    manifest_hash = models.CharField(max_length=66, unique=True, help_text="keccak256 of the manifest bytes.")
    anchor = models.OneToOneField("ledger.Anchor", on_delete=models.PROTECT, related_name="model_version")
    published = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(manifest_hash__regex=r"^0x[0-9a-f]{64}$"), name="modelfactory_manifest_hash"
            ),
            models.CheckConstraint(
                condition=models.Q(adapter_sha256__regex=r"^[0-9a-f]{64}$"), name="modelfactory_adapter_sha256"
            ),
        ]
        indexes = [models.Index(fields=["published", "-created_at"])]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and ModelVersion.objects.filter(pk=self.pk).exists():
            update_fields = kwargs.get("update_fields")
            if not update_fields or not set(update_fields) <= {"published"}:
                raise ModelVersionFrozen(f"model version #{self.pk} is immutable: only 'published' may change")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ModelVersionFrozen(f"model version #{self.pk} is part of the lineage record: it can't be deleted")


class ModelVersionParent(models.Model):
    """One edge of the lineage graph: ``child`` continued training from, or was merged from, ``parent``."""

    class Relation(models.TextChoices):
        CONTINUED_FROM = "continued_from", "continued training from"
        MERGED_FROM = "merged_from", "merged from"

    child = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="parent_links")
    parent = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="child_links")
    relation = models.CharField(max_length=20, choices=Relation.choices)
    weight = models.FloatField(default=1.0)

    class Meta:
        ordering = ["child_id", "parent_id"]
        constraints = [
            models.UniqueConstraint(fields=["child", "parent"], name="modelfactory_parent_once"),
            models.CheckConstraint(condition=~models.Q(child=models.F("parent")), name="modelfactory_no_self_parent"),
        ]

    def __str__(self) -> str:
        return f"{self.child} {self.relation} {self.parent}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # lineage edges are written once, with the child; changing one would rewrite an anchored manifest
        if self.pk is not None and ModelVersionParent.objects.filter(pk=self.pk).exists():
            raise ModelVersionFrozen("a lineage edge can't be changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ModelVersionFrozen("a lineage edge can't be deleted")


class VersionRevocation(models.Model):
    """A version trained on revoked records, directly or through its parents: how many distinct revoked records the
    snapshots of its whole ancestry hold, and how many of them were erased. Written when the version is stored and
    again each time a revocation reaches it (``revocations.versions_flag``), always recomputed from the ancestry,
    so writing it twice writes the same counts. The revocations that reached it are its notices
    (``VersionNotice``)."""

    version = models.OneToOneField(
        ModelVersion, on_delete=models.PROTECT, primary_key=True, related_name="revoked_records_flag"
    )
    revoked_records = models.PositiveIntegerField()
    erased_records = models.PositiveIntegerField(default=0)
    flagged_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "version trained on withdrawn records"
        verbose_name_plural = "versions trained on withdrawn records"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(revoked_records__gte=1, erased_records__lte=models.F("revoked_records")),
                name="modelfactory_version_revocation_counts",
            )
        ]

    def __str__(self) -> str:
        return f"version #{self.version_id} trained on {self.revoked_records} withdrawn records"


class VersionNotice(models.Model):
    """What the owner of a version is told once a revocation reaches it: one notice per version and revocation,
    shown in the app until read, and e-mailed once (``emailed_at``) when the owner has an address."""

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="notices")
    revocation = models.ForeignKey("datanets.Revocation", on_delete=models.PROTECT, related_name="+")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="version_notices")
    records = models.PositiveIntegerField(help_text="How many of this revocation's records the version trained on.")
    created_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "version notices"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["version", "revocation"], name="modelfactory_notice_once"),
        ]
        indexes = [models.Index(fields=["owner", "read_at"], name="modelfactory_notice_unread")]

    def __str__(self) -> str:
        return f"notice to {self.owner_id}: version #{self.version_id} reached by revocation {self.revocation_id}"
