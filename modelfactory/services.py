"""ModelFactory writes: base model registration, fine-tune jobs (launch, cancel, retry, the run itself, reaping
lost runs) and the model versions they produce."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone

from datanets.licences import LICENCES, licence_compatible
from datanets.models import Datanet, Snapshot, SnapshotRecord
from datanets.selectors import snapshot_without_revoked, snapshots_revoked_counts, user_can_train, user_can_view
from datanets.services import snapshot_freeze_without_revoked
from datanets.storage import content_path, media_path
from ledger import hashing
from ledger.services import anchor_request, anchor_subject
from outbox.services import enqueue_on_commit

from . import architectures, encoding, estimates, hooks, lineage, revocations, selectors, weights
from .config import RECORD_TYPES, TRAINING_QUEUE, TrainingConfig
from .models import BaseModel, FineTuneJob, ModelVersion, ModelVersionParent, TrainingWorker, VersionRevocation

logger = logging.getLogger(__name__)

# A heartbeat older than this marks a running job lost (overridable by settings.TRAINING_STALE_SECONDS): several
# heartbeats, so a busy database or a long garbage collection does not kill a healthy run.
DEFAULT_STALE_SECONDS = 120
HEARTBEAT_SECONDS = 10.0
PROGRESS_MIN_INTERVAL = 1.0
CHECKPOINT_EVERY = 25
# Queued by its registered name: modelfactory.tasks imports this module (its name routes it: CELERY_TASK_ROUTES).
TRAINING_RUN_TASK = "modelfactory.tasks.training_run_task"


@transaction.atomic
def base_model_register_default(*, record: dict[str, Any]) -> BaseModel:
    """Record the prepared bundled model as the default base model (idempotent)."""
    BaseModel.objects.filter(is_default=True).exclude(name=record["name"]).update(is_default=False)
    base, _ = BaseModel.objects.update_or_create(
        name=record["name"],
        defaults={
            "path": record["path"],
            "source": BaseModel.Source.BUNDLED,
            "architecture": record["architecture"],
            "model_type": record["model_type"],
            "parameters": record["parameters"],
            "context_length": record["context_length"],
            "weights_bytes": record["weights_bytes"],
            "weights_sha256": record["weights_sha256"],
            "licence": record["licence"],
            "is_default": True,
        },
    )
    return base


def _weights_sha256(folder: Path) -> str:
    """The same identity the bundled model records: SHA-256 over the hex SHA-256 of each weights file, by name."""
    files = sorted(p for p in folder.iterdir() if p.suffix in weights.WEIGHT_SUFFIXES)
    return hashlib.sha256("".join(weights.file_sha256(f) for f in files).encode()).hexdigest()


@transaction.atomic
def base_model_register(*, user: Any, name: str, path: str, licence: str = "") -> BaseModel:
    """Register a Hugging Face model folder on the workers' disk as a base model (staff only).

    The folder must hold config.json, safetensors weights and a tokenizer (``weights.model_folder_inspect``) of a
    supported family (``architectures.ARCHITECTURES``); its architecture, parameter count, context length and
    weights hash are read from the files, nothing is loaded. Hashing reads every weights file once, so a large model
    takes a while here. Refuses (ValidationError keyed by field, nothing written) a relative, missing or incomplete
    folder, a family ModelFactory cannot train (the message names what is missing) and a name already taken.
    """
    _require_user(user, "register a base model")
    if not user.is_staff:
        raise PermissionDenied("only staff may register base models: the folder must be on every worker's disk")
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "give the base model a name"})
    if len(name) > BaseModel._meta.get_field("name").max_length:
        raise ValidationError({"name": "at most 200 characters"})
    if BaseModel.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": f"a base model named {name!r} is registered already"})
    licence = (licence or "").strip()
    if len(licence) > BaseModel._meta.get_field("licence").max_length:
        raise ValidationError({"licence": "at most 100 characters"})
    raw = (path or "").strip()
    if not raw or "\x00" in raw:
        raise ValidationError({"path": "give the folder's absolute path on the workers' disk"})
    folder = Path(raw)
    if not folder.is_absolute():
        raise ValidationError({"path": f"{raw} is a relative path: give the folder's absolute path"})
    if not folder.exists():
        raise ValidationError({"path": f"{raw} does not exist on this machine"})
    folder = folder.resolve()
    try:
        info = weights.model_folder_inspect(folder)
    except (weights.ModelFolderError, OSError) as e:
        raise ValidationError({"path": str(e)}) from e
    if info.context_length <= 0:
        raise ValidationError({"path": f"{folder}/config.json gives no context length (max_position_embeddings)"})
    try:
        architectures.architecture_for(info.model_type, info.architecture)
    except architectures.UnsupportedArchitecture as e:
        raise ValidationError({"path": f"{folder}: {e}"}) from e
    return BaseModel.objects.create(
        name=name,
        path=str(folder),
        source=BaseModel.Source.REGISTERED,
        architecture=info.architecture,
        model_type=info.model_type,
        parameters=info.parameters,
        context_length=info.context_length,
        weights_bytes=info.weights_bytes,
        weights_sha256=_weights_sha256(folder),
        licence=licence,
        registered_by=user,
    )


# Jobs


def _require_user(user: Any, action: str) -> None:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        raise PermissionDenied(f"sign in to {action}")


def _common_licence(licences: Iterable[str]) -> str | None:
    """A licence the combined data may be published under (every Datanet licence fits it), or None."""
    wanted = set(licences)
    for candidate in LICENCES:
        if all(licence_compatible(datanet_licence=candidate, contribution_licence=w) for w in wanted):
            return candidate
    return None


def _check_launch(
    *,
    owner: Any,
    base_model: BaseModel,
    snapshots: list[Snapshot],
    config: TrainingConfig,
    parent_version: ModelVersion | None,
) -> str:
    """Everything job_launch refuses, before anything is written; returns the record type to train on."""
    if not snapshots:
        raise ValidationError({"snapshots": "choose at least one Datanet snapshot"})
    for snapshot in snapshots:
        if not user_can_view(user=owner, datanet=snapshot.datanet):
            raise PermissionDenied(
                f"snapshot #{snapshot.pk} belongs to a private Datanet: only its owner and curators may train on it"
            )
        if not user_can_train(user=owner, datanet=snapshot.datanet):
            raise PermissionDenied(
                f"{snapshot.datanet.name!r} is private: only its owner and curators may train on its snapshots"
            )
    _refuse_revoked_snapshots(snapshots)
    record_types = sorted({s.datanet.record_type for s in snapshots})
    if len(record_types) > 1:
        raise ValidationError(
            {"snapshots": f"one job trains on one record type; these snapshots mix {', '.join(record_types)}"}
        )
    if record_types[0] not in RECORD_TYPES:
        raise ValidationError({"snapshots": f"the trainer can't use {record_types[0]} records"})
    licences = {s.datanet.licence for s in snapshots}
    if len(licences) > 1 and _common_licence(licences) is None:
        by_licence = ", ".join(
            f"{s.datanet.name} ({s.datanet.licence})" for s in sorted(snapshots, key=lambda s: s.datanet.licence)
        )
        raise ValidationError(
            {"snapshots": f"incompatible licences: no licence allows combining {by_licence}; train on them separately"}
        )
    if errors := config.validate(context_length=base_model.context_length):
        raise ValidationError({f"config.{name}": message for name, message in errors.items()})
    if message := selectors.processes_error(config):
        raise ValidationError({"config.processes" if config.processes > 1 else "config.device": message})
    if refused := selectors.precision_refusals().get(config.precision):
        raise ValidationError({"config.precision": refused})
    try:
        architectures.architecture_for(base_model.model_type, base_model.architecture)
    except architectures.UnsupportedArchitecture as e:
        raise ValidationError({"base_model": f"{base_model.name}: {e}"}) from e
    # a continued version keeps its parent's targets; a new adapter's must be layers of the base model's family
    if parent_version is None and (
        error := architectures.target_module_error(config.target_modules, base_model.model_type)
    ):
        raise ValidationError({"config.target_modules": error})
    if parent_version is not None:
        if parent_version.base_model_id != base_model.pk:
            raise ValidationError(
                {
                    "parent_version": f"{parent_version.name!r} was trained on {parent_version.base_model.name}, "
                    f"not {base_model.name}: continue training on the same base model"
                }
            )
        if parent_version.owner_id != owner.pk and not parent_version.published:
            raise PermissionDenied(f"{parent_version.name!r} is not published: only its owner may continue it")
    return record_types[0]


def _refuse_revoked_snapshots(snapshots: list[Snapshot]) -> None:
    """A new job never trains on withdrawn records: a snapshot that holds revoked records is refused, naming the
    Datanet's snapshot to use instead (its newest, when that one holds none)."""
    revoked = snapshots_revoked_counts(snapshot_ids=[s.pk for s in snapshots])
    for snapshot in snapshots:
        if snapshot.pk not in revoked:
            continue
        count = revoked[snapshot.pk]
        newer = snapshot_without_revoked(datanet_id=snapshot.datanet_id)
        use = (
            f"train on snapshot #{newer.number} (id {newer.pk}), which leaves them out"
            if newer is not None
            else "no snapshot leaves them out yet: a curator of the Datanet freezes a new one"
        )
        raise ValidationError(
            {
                "snapshots": f"snapshot #{snapshot.number} of {snapshot.datanet.name!r} (id {snapshot.pk}) holds "
                f"{count} withdrawn record{'s' if count != 1 else ''}: {use}"
            }
        )


def _enqueue_run(job: FineTuneJob) -> None:
    # the id is ours, written before the message exists, so a job always names the task that runs it
    task_id = str(uuid.uuid4())
    FineTuneJob.objects.filter(pk=job.pk).update(celery_task_id=task_id)
    job.celery_task_id = task_id
    # a job that needs CUDA waits on training-gpu, which only CUDA workers consume (openledger_web.signals)
    queue = "" if job.is_merge else TrainingConfig.from_dict(job.config).queue
    enqueue_on_commit(TRAINING_RUN_TASK, job.pk, task_id=task_id, queue="" if queue == TRAINING_QUEUE else queue)


@transaction.atomic
def job_launch(
    *,
    owner: Any,
    name: str,
    base_model: BaseModel,
    snapshots: Iterable[Snapshot],
    config: TrainingConfig,
    parent_version: ModelVersion | None = None,
    description: str = "",
    supersedes: ModelVersion | None = None,
) -> FineTuneJob:
    """Create a queued fine-tune job and enqueue it on the training queue once this transaction commits.

    Refuses (ValidationError or PermissionDenied, writing nothing): a Datanet the owner may not view, a snapshot that
    holds withdrawn records, snapshots of different record types or incompatible licences, an invalid config
    (messages keyed ``config.<field>``), a parent version of another base model or one the owner may not use.
    ``supersedes``: the flagged version this job retrains without its withdrawn records
    (``version_retrain_without_revoked``).
    """
    _require_user(owner, "launch a fine-tune")
    if not name or not name.strip():
        raise ValidationError({"name": "give the job a name"})
    chosen = list(Snapshot.objects.select_related("datanet").filter(pk__in={s.pk for s in snapshots}).order_by("pk"))
    _check_launch(owner=owner, base_model=base_model, snapshots=chosen, config=config, parent_version=parent_version)
    job = FineTuneJob.objects.create(
        name=name.strip(),
        description=description,
        owner=owner,
        base_model=base_model,
        parent_version=parent_version,
        supersedes=supersedes,
        config=config.to_dict(),
        log_tail=[_log_line("queued")],
        estimate=selectors.training_estimate_for(config=config, base_model=base_model, snapshots=chosen).to_dict(),
    )
    job.snapshots.set(chosen)
    _enqueue_run(job)
    return job


def _lock_own_job(job: FineTuneJob, user: Any, verb: str) -> FineTuneJob:
    """``job``'s row, locked for the transaction, if ``user`` owns it (or is staff); else PermissionDenied."""
    locked = FineTuneJob.objects.select_for_update().get(pk=job.pk)
    if getattr(user, "pk", None) != locked.owner_id and not getattr(user, "is_staff", False):
        raise PermissionDenied(f"only the job's owner may {verb} it")
    return locked


@transaction.atomic
def job_cancel(*, job: FineTuneJob, user: Any) -> FineTuneJob:
    """Cancel a job: a queued one at once; a running one stops before its next step and keeps nothing."""
    locked = _lock_own_job(job, user, "cancel")
    if locked.is_finished:
        raise ValidationError(f"job #{locked.pk} already {locked.status}: there is nothing to cancel")
    if locked.cancel_requested:
        raise ValidationError(f"job #{locked.pk} is already being cancelled: it stops before its next step")
    locked.cancel_requested = True
    if locked.status == FineTuneJob.Status.QUEUED:
        # no worker holds it: the task, when it arrives, finds a finished job and does nothing
        locked.status = FineTuneJob.Status.CANCELLED
        locked.finished_at = timezone.now()
    locked.log_tail = _tail(locked.log_tail, "cancel requested")
    locked.save()
    return locked


@transaction.atomic
def job_retry(*, job: FineTuneJob, user: Any) -> FineTuneJob:
    """Queue a failed or cancelled job again (a new attempt, a new task); a failed run's checkpoint is resumed."""
    locked = _lock_own_job(job, user, "retry")
    if locked.status not in (FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED):
        raise ValidationError(f"job #{locked.pk} is {locked.status}: only a failed or cancelled job can be retried")
    if locked.kind == FineTuneJob.Kind.TRAIN:
        # the rule is checked again: the owner may have stopped curating a private Datanet since the launch
        for snapshot in locked.snapshots.select_related("datanet"):
            if not user_can_train(user=locked.owner, datanet=snapshot.datanet):
                raise PermissionDenied(
                    f"{locked.owner.get_username()} may no longer train on {snapshot.datanet.name!r}: only its "
                    "owner and curators may train on a private Datanet"
                )
    locked.status = FineTuneJob.Status.QUEUED
    locked.cancel_requested = False
    locked.error = ""
    locked.started_at = locked.finished_at = locked.heartbeat_at = None
    locked.step = locked.total_steps = 0
    locked.train_loss = locked.eval_loss = locked.learning_rate = locked.tokens_per_s = locked.eta_seconds = None
    locked.loss_history = []
    locked.base_eval_loss = None
    locked.phase, locked.phase_done, locked.phase_total, locked.phase_unit = "", 0, 0, ""
    locked.phase_started_at, locked.phases = None, []
    locked.log_tail = _tail(locked.log_tail, f"retry queued (attempt {locked.attempts + 1})")
    locked.save()
    _enqueue_run(locked)
    return locked


MAX_MERGE_PARENTS = 8
# A weight scales a parent's whole update: beyond this the merged adapter is noise, and near float32's range inf.
MAX_MERGE_WEIGHT = 100.0


def _usable_version(owner: Any, version: ModelVersion) -> bool:
    return version.owner_id == owner.pk or version.published


@transaction.atomic
def merge_launch(
    *,
    owner: Any,
    name: str,
    parents: Sequence[tuple[ModelVersion, float]],
    method: str = "linear",
    density: float = 0.5,
    description: str = "",
) -> FineTuneJob:
    """Create a queued job that merges two or more adapters of one base model into a new version.

    ``parents`` are (version, weight) pairs; ``method`` is one of ``FineTuneJob.MergeMethod`` and ``density`` the
    share of each update TIES keeps. The job runs on the training queue like a fine-tune; its version lists every
    parent with its weight (relation "merged_from") and trained on the union of the parents' snapshots. Refuses
    (ValidationError keyed by field, or PermissionDenied; nothing written): fewer than two or repeated parents,
    parents of different base models, weights that are not finite, beyond ``MAX_MERGE_WEIGHT`` or all zero, an
    unknown method, a density outside (0, 1], a parent that is neither the owner's nor published.
    """
    _require_user(owner, "merge model versions")
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "give the merged version a name"})
    if len(name) > FineTuneJob._meta.get_field("name").max_length:
        raise ValidationError({"name": "at most 200 characters"})
    if method not in FineTuneJob.MergeMethod.values:
        raise ValidationError(
            {"method": f"unknown merge method {method!r}; choose {', '.join(FineTuneJob.MergeMethod.values)}"}
        )
    if isinstance(density, bool) or not isinstance(density, int | float) or not 0 < density <= 1:
        raise ValidationError({"density": "the share of each update TIES keeps: above 0 and at most 1"})
    pairs = list(parents)
    if len(pairs) < 2:
        raise ValidationError({"parents": "a merge needs at least two model versions"})
    if len(pairs) > MAX_MERGE_PARENTS:
        raise ValidationError({"parents": f"at most {MAX_MERGE_PARENTS} model versions in one merge"})
    ids = [version.pk for version, _ in pairs]
    if len(set(ids)) != len(ids):
        raise ValidationError({"parents": "each model version may appear once in a merge"})
    weights_ = [w for _, w in pairs]
    if not all(isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) for w in weights_):
        raise ValidationError({"weights": "every weight must be a finite number"})
    if not all(abs(w) <= MAX_MERGE_WEIGHT for w in weights_):
        raise ValidationError(
            {"weights": f"every weight must lie between -{MAX_MERGE_WEIGHT:g} and {MAX_MERGE_WEIGHT:g}"}
        )
    if all(w == 0 for w in weights_):
        raise ValidationError({"weights": "at least one weight must be non-zero"})
    versions = ModelVersion.objects.select_related("base_model").in_bulk(ids)
    if missing := [pk for pk in ids if pk not in versions]:
        raise ValidationError({"parents": f"no model version #{missing[0]}"})
    chosen = [versions[pk] for pk in ids]
    for version in chosen:
        if not _usable_version(owner, version):
            raise PermissionDenied(f"{version.name!r} is not published: only its owner may merge it")
    bases = {v.base_model_id for v in chosen}
    if len(bases) > 1:
        listed = ", ".join(f"{v.name!r} ({v.base_model.name})" for v in chosen)
        raise ValidationError(
            {
                "parents": f"merge of adapters with different bases: {listed}; "
                "only adapters of the same base model can be merged"
            }
        )
    snapshots = Snapshot.objects.filter(model_versions__in=chosen).distinct().order_by("pk")
    job = FineTuneJob.objects.create(
        kind=FineTuneJob.Kind.MERGE,
        name=name,
        description=description or "",
        owner=owner,
        base_model=chosen[0].base_model,
        config={},
        merge={
            "method": method,
            "density": float(density),
            "parents": [{"id": v.pk, "weight": float(w)} for v, w in zip(chosen, weights_, strict=True)],
        },
        log_tail=[_log_line("merge queued")],
    )
    job.snapshots.set(snapshots)
    _enqueue_run(job)
    return job


@transaction.atomic
def version_publish(*, version: ModelVersion, user: Any, published: bool) -> ModelVersion:
    """Publish a version (offered to everyone for inference) or take it back; its owner or staff only."""
    _require_user(user, "publish a model version")
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if locked.owner_id != user.pk and not user.is_staff:
        raise PermissionDenied(f"only the owner of {locked.name!r} may publish or unpublish it")
    if locked.published != published:
        locked.published = published
        locked.save(update_fields=["published"])
    version.published = locked.published
    return locked


# Retraining without withdrawn records (issue 17)

RETRAIN_SUFFIX = " (without withdrawn records)"


class RetrainConflict(ValidationError):
    """The version can't be retrained now (409): it trained on no withdrawn record, a retrain of it is queued,
    running or done, or it is a merge (its sources are retrained and merged again)."""


def _refuse_retrained(version: ModelVersion) -> None:
    jobs = FineTuneJob.objects.filter(supersedes=version).exclude(
        status__in=(FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED)
    )
    job = jobs.select_related("version").order_by("-pk").first()
    if job is None:
        return
    if job.status != FineTuneJob.Status.SUCCEEDED:
        raise RetrainConflict(
            f"{version.name!r} is already being retrained without them: job #{job.pk} is {job.status}"
        )
    raise RetrainConflict(
        f"{version.name!r} was already retrained without them: version #{job.version.pk} ({job.version.name!r}) "
        "supersedes it"
    )


def version_retrain_sources(*, version: ModelVersion) -> list[ModelVersion]:
    """A merged version's sources: what has to be retrained (each its own way) and merged again."""
    return [link.parent for link in version.parent_links.select_related("parent").order_by("parent_id")]


def _retrain_datanets(version: ModelVersion) -> list[Datanet]:
    """The Datanets of every snapshot in the version's ancestry (itself, its parents and theirs), by id."""
    ancestry = revocations.version_ancestry_ids(version_ids=[version.pk]).get(version.pk, {version.pk})
    return list(Datanet.objects.filter(snapshots__model_versions__in=ancestry).distinct().order_by("pk"))


def version_retrain_without_revoked(*, version: ModelVersion, user: Any) -> FineTuneJob:
    """Retrain a version flagged as trained on withdrawn records (``VersionRevocation``) without them: a fine-tune
    with the same base model and configuration, named after it, that supersedes it, on one fresh snapshot of each
    Datanet in its ancestry: the Datanet's newest snapshot when it holds no revoked record, else one frozen now for
    the owner (``datanets.services.snapshot_freeze_without_revoked``). A version that continued a parent trains
    from scratch on them: a flagged parent is never reused.

    Refused (nothing written): PermissionDenied for anyone but the version's owner; ``RetrainConflict`` (409) when
    the version is not flagged, when a retrain of it is queued, running or done, and for a merged version (its
    sources are retrained and merged again: the message names them); ValidationError as ``job_launch`` refuses.
    """
    _require_user(user, "retrain a model version")
    if version.owner_id != user.pk:
        raise PermissionDenied(f"only the owner of {version.name!r} may retrain it")
    if not VersionRevocation.objects.filter(version=version).exists():
        raise RetrainConflict(f"{version.name!r} was trained on no withdrawn record: there is nothing to retrain")
    _refuse_retrained(version)
    job = FineTuneJob.objects.get(pk=version.job_id)
    if job.kind == FineTuneJob.Kind.MERGE:
        sources = ", ".join(f"#{v.pk} {v.name!r}" for v in version_retrain_sources(version=version))
        raise RetrainConflict(
            f"{version.name!r} is a merge: retrain each of its sources trained on withdrawn records ({sources}), "
            "then merge the new versions again"
        )
    snapshots = []
    for datanet in _retrain_datanets(version):
        snapshot = snapshot_without_revoked(datanet_id=datanet.pk)
        if snapshot is None:
            snapshot = snapshot_freeze_without_revoked(datanet=datanet, user=user)
        snapshots.append(snapshot)
    max_name = FineTuneJob._meta.get_field("name").max_length - len(RETRAIN_SUFFIX)
    with transaction.atomic():
        # one retrain at a time: a second request waits here, then finds the first one's job
        ModelVersion.objects.select_for_update().filter(pk=version.pk).first()
        _refuse_retrained(version)
        return job_launch(
            owner=user,
            name=version.name[:max_name] + RETRAIN_SUFFIX,
            description=f"Retrained without the withdrawn records of version #{version.pk} ({version.name}).",
            base_model=version.base_model,
            snapshots=snapshots,
            config=TrainingConfig.from_dict(version.config),
            supersedes=version,
        )


def _log_line(message: str) -> str:
    return f"{timezone.now():%Y-%m-%d %H:%M:%S} {message}"


def _tail(lines: list[str], message: str) -> list[str]:
    return [*lines, _log_line(message)][-FineTuneJob.LOG_TAIL_LINES :]


def stale_after_seconds() -> int:
    """How old a running job's heartbeat may get before the job counts as lost (``TRAINING_STALE_SECONDS``)."""
    return int(getattr(settings, "TRAINING_STALE_SECONDS", DEFAULT_STALE_SECONDS))


@transaction.atomic
def _job_claim(*, job_id: int, worker: str) -> FineTuneJob | None:
    """queued -> running under a row lock, or None when another delivery owns or finished the job.

    A running job whose heartbeat went stale is taken over: its worker is gone (acks_late redelivered the message
    after the worker died), and the checkpoint lets the new attempt resume.
    """
    job = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None or job.is_finished:
        return None
    now = timezone.now()
    if job.status == FineTuneJob.Status.RUNNING:
        fresh = job.heartbeat_at and (now - job.heartbeat_at).total_seconds() < stale_after_seconds()
        if fresh:
            return None
    job.status = FineTuneJob.Status.RUNNING
    job.started_at = job.heartbeat_at = now
    job.worker = worker
    job.attempts += 1
    job.log_tail = _tail(job.log_tail, f"attempt {job.attempts} started on {worker}")
    job.save()
    return job


def _snapshot_records(job: FineTuneJob) -> list[dict[str, Any]]:
    """The job's training records as dicts: snapshots in id order, each in leaf order, a repeated hash once."""
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for snapshot in job.snapshots.order_by("pk"):
        leaves = (
            SnapshotRecord.objects.filter(snapshot=snapshot, record__excluded=False)
            .order_by("leaf_index")
            .values_list("record__record_hash", "record__canonical")
        )
        for record_hash, canonical in leaves.iterator(chunk_size=5_000):
            if record_hash in seen or not canonical:
                # (not canonical: erased after the snapshot was frozen, issue 17: its bytes are gone, so a job that
                # starts after the erasure trains without it, and its version is flagged as trained on it)
                continue
            seen.add(record_hash)
            records.append(json.loads(canonical))
    return records


class _Phases:
    """Records a running job's phases (``estimates.PHASES``) on its row: the current one, with its own progress
    (``phase_done`` of ``phase_total`` ``phase_unit``), and for each finished one its seconds and the work it did
    (``FineTuneJob.phases``, what the estimate learns from). A phase entered again (training resumes after an
    evaluation pass) adds to its entry. Progress inside a phase is written at most once a second."""

    def __init__(self, job: FineTuneJob) -> None:
        self.job_id, self.worker = job.pk, job.worker
        self.done: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None
        self.started = 0.0
        self.last_write = 0.0

    def enter(self, phase: str, *, total: int = 0, unit: str = "", write: bool = True, **work: Any) -> dict[str, Any]:
        """Close the current phase and start ``phase``; returns the row fields (written unless ``write`` is False,
        for a caller that writes them with its own)."""
        if self.current is not None and self.current["phase"] == phase:
            return {}
        self._close()
        self.current, self.started = {"phase": phase, **work}, time.monotonic()
        fields = {
            "phase": phase,
            "phase_done": 0,
            "phase_total": total,
            "phase_unit": unit,
            "phase_started_at": timezone.now(),
            "phases": self.done,
        }
        if write:
            self._write(fields)
        return fields

    def progress(self, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if now - self.last_write < PROGRESS_MIN_INTERVAL and (total is None or done < total):
            return
        self.last_write = now
        self._write({"phase_done": done} | ({"phase_total": total} if total is not None else {}))

    def add(self, phase: str, **work: Any) -> None:
        """Add ``work`` (numbers add up; other values replace) to ``phase``'s entry, finished or current."""
        entry = next((e for e in [*self.done, self.current] if e is not None and e["phase"] == phase), None)
        if entry is None:
            return
        for key, value in work.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            entry[key] = entry.get(key, 0) + value if number and key in entry else value

    def finish(self) -> list[dict[str, Any]]:
        self._close()
        return self.done

    def _close(self) -> None:
        if self.current is None:
            return
        entry, seconds = self.current, round(time.monotonic() - self.started, 3)
        self.current = None
        previous = next((e for e in self.done if e["phase"] == entry["phase"]), None)
        if previous is None:
            self.done.append({**entry, "seconds": seconds})
        else:
            previous["seconds"] = round(previous["seconds"] + seconds, 3)
            self.add(entry["phase"], **{k: v for k, v in entry.items() if k != "phase"})

    def _write(self, fields: dict[str, Any]) -> None:
        FineTuneJob.objects.filter(pk=self.job_id, status=FineTuneJob.Status.RUNNING, worker=self.worker).update(
            **fields, heartbeat_at=timezone.now()
        )


class _Progress:
    """Writes ProgressEvents to the job row: at most one write a second, plus every phase change and the last
    step, so a fast GPU run does not turn into a database benchmark. Only training steps set the learning rate,
    the speed and the ETA (the other events carry zeros for them)."""

    def __init__(self, job: FineTuneJob, phases: _Phases) -> None:
        self.job = job
        self.phases = phases
        self.history: list[dict[str, Any]] = []
        self.lines = list(job.log_tail)
        self.last_write = 0.0

    def __call__(self, event: Any) -> None:
        fields: dict[str, Any] = {"step": event.step, "total_steps": event.total_steps}
        phase = {"start": "train", "train": "train"}.get(event.phase, event.phase)
        # a phase change is written with this event's fields, in one update
        steps = {"total": event.total_steps, "unit": "steps"} if phase == "train" else {}
        changed = self.phases.enter(phase, write=False, **steps)
        fields.update(changed)
        if event.phase == "train":
            row = {
                "step": event.step,
                "train_loss": event.train_loss,
                "eval_loss": event.eval_loss,
                "learning_rate": event.learning_rate,
            }
            self.history.append(row)
            fields.update(
                train_loss=event.train_loss,
                learning_rate=event.learning_rate,
                tokens_per_s=event.tokens_per_s,
                eta_seconds=event.eta_s,
                phase_done=event.step,
            )
            if event.eval_loss is not None:
                fields["eval_loss"] = event.eval_loss
            message = f"step {event.step}/{event.total_steps} loss {event.train_loss:.4f} lr {event.learning_rate:.2e}"
        elif event.phase == "start":
            fields.update(eval_loss=event.eval_loss, base_eval_loss=event.eval_loss, learning_rate=event.learning_rate)
            fields["phase_done"] = event.step
            message = f"training {event.total_steps} steps from step {event.step}"
            if event.eval_loss is not None:
                message += f" (base eval loss {event.eval_loss:.4f})"
        else:
            message = estimates.ALL_PHASES.get(event.phase, event.phase).lower()
        self.lines = [*self.lines, _log_line(message)][-FineTuneJob.LOG_TAIL_LINES :]
        now = time.monotonic()
        if (
            not changed
            and event.phase == "train"
            and event.step < event.total_steps
            and now - self.last_write < PROGRESS_MIN_INTERVAL
        ):
            return
        self.last_write = now
        FineTuneJob.objects.filter(pk=self.job.pk, status=FineTuneJob.Status.RUNNING, worker=self.job.worker).update(
            **fields, loss_history=self.history, log_tail=self.lines, heartbeat_at=timezone.now()
        )


class _Heartbeat:
    """Beats the job's heartbeat from a thread while the worker loads the model, evaluates or writes samples,
    phases that emit no progress for a while; the reaper must only see a stale heartbeat when the worker is gone."""

    def __init__(self, job_id: int, worker: str, every: float) -> None:
        self.job_id = job_id
        self.worker = worker
        self.every = every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-job-{job_id}", daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.wait(self.every):
                # a job reaped and claimed again belongs to the new attempt: this one must not keep it alive
                FineTuneJob.objects.filter(
                    pk=self.job_id, status=FineTuneJob.Status.RUNNING, worker=self.worker
                ).update(heartbeat_at=timezone.now())
        finally:
            connection.close()  # this thread's own connection

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


_LOADED_BASES: dict[str, Any] = {}


def _loaded_base(path: str) -> Any:
    """One loaded base model per worker process and path, shared by the jobs it runs one after another."""
    from . import training  # torch: imported only by a worker that trains

    if path not in _LOADED_BASES:
        _LOADED_BASES.clear()  # one model in memory at a time: a worker serves one device
        _LOADED_BASES[path] = training.load_base(path)
    return _LOADED_BASES[path]


def _checkpoint_dir(job: FineTuneJob) -> Path:
    return Path(settings.DATA_DIR) / "checkpoints" / f"job-{job.pk}"


def _store_adapter(staged: Path, sha256: str) -> tuple[str, list[dict[str, Any]]]:
    """Move a trained adapter folder to ``adapters/ab/cd/<sha256>/`` (read-only); identical weights share it.

    Only the adapter's own files are kept (peft's README.md model card is not part of it), so the folder holds
    exactly what the manifest hashes. Returns the relative path and ``lineage.adapter_files`` of the stored folder:
    when the same weights were stored before, their stored files are the ones served, so those are hashed."""
    relative = content_path("adapters", sha256)
    target = media_path(relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    for file in staged.iterdir():
        if file.is_dir():
            shutil.rmtree(file)
        elif file.name not in lineage.ADAPTER_FILES:
            file.unlink()
        else:
            file.chmod(0o444)  # stored content is never written again
    try:
        staged.rename(target)
    except OSError:
        if not (target / lineage.ADAPTER_WEIGHTS).exists():
            raise
        shutil.rmtree(staged, ignore_errors=True)  # the same weights were stored before
    return relative, lineage.adapter_files(target)


def _job_end(job_id: int, worker: str, status: str, error: str = "") -> None:
    """Mark this attempt's job failed or cancelled, unless a newer attempt owns the row by now."""
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().get(pk=job_id)
        if job.status != FineTuneJob.Status.RUNNING or job.worker != worker:
            return  # reaped and retaken meanwhile: the row belongs to the newer attempt
        job.status = status
        job.error = error if status == FineTuneJob.Status.FAILED else ""
        job.finished_at = timezone.now()
        job.log_tail = _tail(job.log_tail, error or status)
        job.save()


def job_run(*, job_id: int, worker: str) -> ModelVersion | None:
    """Claim and train one job, then store its ModelVersion; None when this delivery has nothing to do.

    The same task delivered twice trains once: the claim (queued -> running, row-locked) succeeds for one
    delivery; a later one finds the job running with a fresh heartbeat, or finished, and returns. A stale running
    job is taken over (its worker died) and resumes from its checkpoint. Errors mark the job failed with the
    message; a cancellation marks it cancelled and keeps no adapter and no checkpoint.
    """
    job = _job_claim(job_id=job_id, worker=worker)
    if job is None:
        return None
    if job.is_merge:
        return _merge_run(job, worker)
    phases = _Phases(job)
    # a worker's first job imports torch and loads the model: both are the load phase's, which the estimate knows
    phases.enter("load", cold=job.base_model.path not in _LOADED_BASES)
    from . import distributed, training  # torch: imported only by a delivery that trains

    output = media_path(f"tmp/adapters/job-{job.pk}-{uuid.uuid4().hex[:12]}")
    checkpoint = _checkpoint_dir(job)
    try:
        with _Heartbeat(job.pk, worker, every=HEARTBEAT_SECONDS):
            base_model = job.base_model
            loaded = _loaded_base(base_model.path)
            _training_worker_holds(worker, base_model.path, device=str(loaded.device))
            FineTuneJob.objects.filter(pk=job.pk).update(device=str(loaded.device))
            record_type = job.snapshots.values_list("datanet__record_type", flat=True).first() or ""
            parent_dir = media_path(job.parent_version.adapter_path) if job.parent_version else None
            output.parent.mkdir(parents=True, exist_ok=True)

            def should_stop() -> bool:
                return FineTuneJob.objects.filter(pk=job.pk, cancel_requested=True).exists()

            config = TrainingConfig.from_dict(job.config)
            distributed.check_worker(config, worker)
            run = dict(
                base_model_dir=base_model.path,
                records=_snapshot_records(job),
                record_type=record_type,
                config=config,
                output_dir=output,
                parent_adapter_dir=parent_dir,
                progress=_Progress(job, phases),
                should_stop=should_stop,
                checkpoint_dir=checkpoint,
                checkpoint_every=CHECKPOINT_EVERY,
            )
            if config.processes > 1:
                # torchrun's processes load the base model themselves; rank 0 reports and keeps the adapter
                result = distributed.train_distributed(processes=config.processes, **run)
            else:
                result = training.train_lora(**run, base=loaded)
            for phase, work in result.phase_work.items():
                phases.add(phase, **work)
            data = result.phase_work.get("data", {})
            # same worker, same loaded model, heartbeat still beating: a failed build returns its error, never raises
            phases.enter("index", unit="batches", records=data.get("records", 0), tokens=data.get("tokens", 0))
            index_build = _index_build(
                job=job,
                adapter_dir=result.output_dir,
                base_model_path=base_model.path,
                train_step_seconds=result.seconds / max(1, result.steps - result.resumed_from_step),
                progress=phases.progress,
            )
            phases.enter("store")
    except training.TrainingCancelled as exc:
        shutil.rmtree(checkpoint, ignore_errors=True)
        _job_end(job.pk, worker, FineTuneJob.Status.CANCELLED)
        logger.info("job %s cancelled: %s", job.pk, exc)
        return None
    except Exception as exc:
        logger.exception("job %s failed", job.pk)
        _job_end(job.pk, worker, FineTuneJob.Status.FAILED, f"{type(exc).__name__}: {exc}"[:4000])
        return None
    finally:
        # train_lora renames its staging folder into place only on success; anything here is ours to drop
        if output.exists() and not (output / "adapter_model.safetensors").exists():
            shutil.rmtree(output, ignore_errors=True)
    version = _store_version(
        job,
        worker,
        output,
        index_build,
        output_dir=Path(result.output_dir),
        adapter_sha256=result.adapter_sha256,
        record_type=record_type,
        config=TrainingConfig.from_dict(job.config).to_dict(),
        seed=TrainingConfig.from_dict(job.config).seed,
        parents=_continued_from(job),
        metrics=result.metrics,
        samples=result.samples,
        training_facts=_training_facts(result),
        loss_history=result.loss_history,
        phases=phases,
    )
    if version is not None:
        _training_worker_publish(worker, job)
        _announce_trained(version, base_model.path)
    return version


def _training_worker_holds(worker: str, base_path: str, *, device: str) -> None:
    """Note on the worker's row that it holds ``base_path`` in memory (its next job on that base loads nothing)."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    TrainingWorker.objects.update_or_create(
        hostname=worker,
        defaults={"loaded_base": base_path, "device": kind},
        create_defaults={
            "loaded_base": base_path,
            "device": kind,
            "device_label": selectors.worker_device_label(),
            "last_seen": timezone.now() - timedelta(days=1),  # only the worker heartbeat says it is alive
        },
    )


def _training_worker_publish(worker: str, job: FineTuneJob) -> None:
    """Publish on the worker's row the throughput it measured on its recent succeeded jobs of ``job``'s base model
    (``estimates.throughput_from``), which the next estimates for this worker use."""
    recent = (
        FineTuneJob.objects.filter(
            worker=worker, base_model_id=job.base_model_id, kind=FineTuneJob.Kind.TRAIN, status="succeeded"
        )
        .exclude(phases=[])
        .order_by("-finished_at")
        .values_list("phases", "device")[: estimates.RECENT_JOBS]
    )
    rows = list(recent)
    if not rows:
        return
    fallback = estimates.fallback_for(rows[0][1] or "cpu", job.base_model.parameters)
    throughput = estimates.throughput_from([phases for phases, _ in rows], fallback=fallback)
    if throughput is None:
        return
    row = TrainingWorker.objects.filter(hostname=worker).first()
    if row is None:
        return
    row.throughput = {**row.throughput, str(job.base_model_id): throughput.to_dict()}
    row.measured_at = timezone.now()
    row.save(update_fields=["throughput", "measured_at"])


def training_worker_touch(
    *, hostname: str, fresh: bool = False, devices: dict[str, Any] | None = None
) -> TrainingWorker:
    """The training worker ``hostname`` is alive (called with its worker heartbeat); ``fresh`` on its first beat,
    when its processes hold no model yet. ``devices``: what it announces (``selectors.worker_devices()``, measured
    here when not given), which launches compare a job's processes with. Returns its row."""
    device = selectors.training_device()["device"]
    defaults: dict[str, Any] = {
        "last_seen": timezone.now(),
        "device": device,
        "device_label": selectors.worker_device_label(),
        "devices": devices if devices is not None else selectors.worker_devices(),
    }
    if fresh:
        defaults["loaded_base"] = ""
    row, _ = TrainingWorker.objects.update_or_create(hostname=hostname, defaults=defaults)
    return row


def _index_build(
    *,
    job: FineTuneJob,
    adapter_dir: str | Path,
    base_model_path: str,
    train_step_seconds: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> hooks.IndexBuild | None:
    """The registered version indexer's build of a trained adapter (``hooks.VersionIndexer``), with the worker's
    loaded model, telling ``progress(done, total)`` batches as it goes; None when no indexer is registered."""
    indexer = hooks.version_indexer()
    if indexer is None:
        return None
    return indexer.build(
        job=job,
        adapter_dir=adapter_dir,
        base=_loaded_base(base_model_path),
        train_step_seconds=train_step_seconds,
        progress=progress,
    )


def _announce_trained(version: ModelVersion, base_model_path: str) -> None:
    """Tell the ``version trained`` receivers (``hooks``) about a stored version, with the worker's loaded model.
    The job has succeeded already: whatever a receiver raises is logged, never the job's failure."""
    for receiver in hooks.version_trained_receivers():
        try:
            receiver(version=version, base=_loaded_base(base_model_path))
        except Exception:  # receivers store their own failures; this guards the job against the guard failing
            logger.exception("version %s: %s raised", version.pk, getattr(receiver, "__qualname__", receiver))


def _store_version(
    job: FineTuneJob, worker: str, output: Path, index_build: hooks.IndexBuild | None, **fields: Any
) -> ModelVersion | None:
    """``_version_create`` for this attempt of ``job``; None when nothing was stored: it failed (the job fails with
    the error, the adapter folder ``output`` is dropped), was cancelled after its last step, or the job belongs to a
    newer attempt by now. Whenever nothing was stored, the index this attempt built is discarded."""
    try:
        version = _version_create(job_id=job.pk, worker=worker, index_build=index_build, **fields)
    except Exception as exc:
        logger.exception("%s %s: storing the version failed", "merge job" if job.is_merge else "job", job.pk)
        shutil.rmtree(output, ignore_errors=True)
        _job_end(job.pk, worker, FineTuneJob.Status.FAILED, f"{type(exc).__name__}: {exc}"[:4000])
        version = None
    if version is None:
        _discard_unkept_index(job.pk, worker, index_build)
    return version


def _discard_unkept_index(job_id: int, worker: str, index_build: hooks.IndexBuild | None) -> None:
    """Let the indexer remove the index this attempt built when no version keeps it: the job ended cancelled or
    failed after the build. Left alone when a newer attempt owns the job (it may be storing the same,
    content-addressed, index)."""
    indexer = hooks.version_indexer()
    if index_build is None or indexer is None:
        return
    ended = (FineTuneJob.Status.CANCELLED, FineTuneJob.Status.FAILED)
    if not FineTuneJob.objects.filter(pk=job_id, worker=worker, status__in=ended).exists():
        return
    try:
        indexer.discard(index_build)
    except Exception:  # never turn a cancellation into an error: the folder is only disk space
        logger.exception("job %s: the unkept version index could not be removed", job_id)


def _continued_from(job: FineTuneJob) -> list[dict[str, Any]]:
    if job.parent_version is None:
        return []
    return [
        {
            "id": job.parent_version.pk,
            "manifest_hash": job.parent_version.manifest_hash,
            "weight": 1.0,
            "relation": ModelVersionParent.Relation.CONTINUED_FROM,
        }
    ]


def _training_facts(result: Any) -> dict[str, Any]:
    return {
        "device": result.device,
        "dtype": result.dtype,
        "steps": result.steps,
        "resumed_from_step": result.resumed_from_step,
        "train_records": result.train_records,
        "eval_records": result.eval_records,
        "dropped_records": len(result.dropped),
        "truncated_records": result.truncated_records,
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "tokens_seen": result.tokens_seen,
        "seconds": result.seconds,
        "lora": result.lora,
        "gradient_checkpointing": result.gradient_checkpointing,
        "world_size": result.world_size,
    }


MERGE_SAMPLE_PROMPTS = 2
MERGE_SAMPLE_TOKENS = 24


def _merge_run(job: FineTuneJob, worker: str) -> ModelVersion | None:
    """Merge a claimed merge job's parent adapters (``training.merge_adapters``) and store the merged version.

    Sample answers of the base and the merged model on a few prompts from the parents' snapshots go with it; no
    evaluation pass (a merge has no eval split of its own).
    """
    from . import training  # torch: imported only by a worker that merges

    output = media_path(f"tmp/adapters/job-{job.pk}-{uuid.uuid4().hex[:12]}")
    sources = job.merge_sources()
    method, density = job.merge["method"], float(job.merge["density"])
    started = time.monotonic()
    phases = _Phases(job)
    try:
        with _Heartbeat(job.pk, worker, every=HEARTBEAT_SECONDS):
            if len(sources) != len(job.merge.get("parents", [])):
                raise ValueError("a parent version of this merge no longer exists")
            base_model = job.base_model
            phases.enter("load", cold=base_model.path not in _LOADED_BASES)
            FineTuneJob.objects.filter(pk=job.pk, status=FineTuneJob.Status.RUNNING, worker=worker).update(
                total_steps=1,
                log_tail=_tail(job.log_tail, f"merging {len(sources)} adapters ({method})"),
                heartbeat_at=timezone.now(),
            )
            loaded = _loaded_base(base_model.path)
            output.parent.mkdir(parents=True, exist_ok=True)
            phases.enter("merge")
            result = training.merge_adapters(
                base_model_dir=base_model.path,
                adapter_dirs=[media_path(v.adapter_path) for v, _ in sources],
                weights=[w for _, w in sources],
                output_dir=output,
                method=method,
                density=density,
                base_id=str(base_model.pk),
                adapter_base_ids=[str(v.base_model_id) for v, _ in sources],
                base=loaded,
            )
            record_types = sorted({v.record_type for v, _ in sources})
            record_type = record_types[0] if len(record_types) == 1 else "mixed"
            phases.enter("samples")
            samples = _merge_samples(job, training, loaded, output, record_types)
            # the merged adapter's features over the union of the parents' records
            phases.enter("index", unit="batches")
            index_build = _index_build(
                job=job, adapter_dir=output, base_model_path=base_model.path, progress=phases.progress
            )
            phases.enter("store")
    except Exception as exc:
        logger.exception("merge job %s failed", job.pk)
        shutil.rmtree(output, ignore_errors=True)
        _job_end(job.pk, worker, FineTuneJob.Status.FAILED, f"{type(exc).__name__}: {exc}"[:4000])
        return None
    version = _store_version(
        job,
        worker,
        output,
        index_build,
        output_dir=output,
        adapter_sha256=result.adapter_sha256,
        record_type=record_type,
        config={
            "kind": "merge",
            "method": method,
            "density": density,
            "combination_type": result.combination_type,
            "rank": result.rank,
        },
        seed=0,
        parents=[
            {
                "id": v.pk,
                "manifest_hash": v.manifest_hash,
                "weight": w,
                "relation": ModelVersionParent.Relation.MERGED_FROM,
            }
            for v, w in sources
        ],
        metrics={},
        samples=samples,
        training_facts={
            "device": str(loaded.device),
            "merge": {"method": method, "combination_type": result.combination_type, "rank": result.rank},
            "seconds": round(time.monotonic() - started, 2),
        },
        loss_history=[],
        phases=phases,
    )
    if version is not None:
        _announce_trained(version, base_model.path)
    return version


def _merge_samples(
    job: FineTuneJob, training: Any, loaded: Any, adapter: Path, record_types: list[str]
) -> list[dict[str, str]]:
    """Base and merged answers to the first prompts of the parents' snapshots (none when they mix record types)."""
    if len(record_types) != 1 or not job.snapshots.exists():
        return []
    record_type = record_types[0]
    mode = TrainingConfig().formatting_for(record_type) if record_type in RECORD_TYPES else "plain"
    prompts = [encoding.sample_prompt(r, record_type, mode) for r in _snapshot_records(job)[:MERGE_SAMPLE_PROMPTS]]
    if not prompts:
        return []
    asked = [p for p, _ in prompts]
    base_answers = training.generate(
        base_model_dir=loaded.path, prompts=asked, max_new_tokens=MERGE_SAMPLE_TOKENS, base=loaded
    )
    merged = training.generate(
        base_model_dir=loaded.path, prompts=asked, adapter_dir=adapter, max_new_tokens=MERGE_SAMPLE_TOKENS, base=loaded
    )
    return [
        {"prompt": training._prompt_text(p), "reference": ref, "base": b, "tuned": t}
        for (p, ref), b, t in zip(prompts, base_answers, merged, strict=True)
    ]


@transaction.atomic
def _version_create(
    *,
    job_id: int,
    worker: str,
    output_dir: Path,
    adapter_sha256: str,
    record_type: str,
    config: dict[str, Any],
    seed: int,
    parents: list[dict[str, Any]],
    metrics: dict[str, Any],
    samples: list[dict[str, Any]],
    training_facts: dict[str, Any],
    loss_history: list[dict[str, Any]],
    index_build: hooks.IndexBuild | None = None,
    phases: _Phases | None = None,
) -> ModelVersion | None:
    """Store the adapter, build and hash the manifest (with ``index_build``'s entry), create the version, its lineage
    edges, its anchor and its index record (``hooks.VersionIndexer.record``), finish the job; None (and the adapter
    dropped) when this attempt no longer owns the job or it was cancelled."""
    job = FineTuneJob.objects.select_for_update(of=("self",)).select_related("base_model", "supersedes").get(pk=job_id)
    if job.status != FineTuneJob.Status.RUNNING or job.worker != worker:
        shutil.rmtree(output_dir, ignore_errors=True)
        return None
    if job.cancel_requested:
        # asked after the last step: a cancelled job keeps nothing, even a finished adapter
        shutil.rmtree(output_dir, ignore_errors=True)
        job.status, job.finished_at = FineTuneJob.Status.CANCELLED, timezone.now()
        job.log_tail = _tail(job.log_tail, "cancelled")
        job.save()
        return None
    adapter_path, files = _store_adapter(output_dir, adapter_sha256)
    base = job.base_model
    snapshots = list(job.snapshots.select_related("datanet").order_by("pk"))
    # what the version's row says as its manifest says it: one set of values for both
    stated = {
        "config": config,
        "seed": seed,
        "record_type": record_type,
        "code_version": lineage.code_version(),
        "adapter_sha256": adapter_sha256,
        "metrics": json.loads(hashing.canonical_json_v1(lineage.finite(metrics))),
    }
    manifest = lineage.build_manifest(
        base_model={"name": base.name, "weights_sha256": base.weights_sha256},
        parents=parents,
        snapshots=[
            {"datanet": s.datanet.slug, "number": s.number, "id": s.pk, "merkle_root": s.merkle_root} for s in snapshots
        ],
        adapter_files=files,
        attribution_index=index_build.manifest_entry() if index_build is not None else None,
        job_id=job.pk,
        supersedes=(
            {"id": job.supersedes.pk, "manifest_hash": job.supersedes.manifest_hash} if job.supersedes else None
        ),
        world_size=int(training_facts.get("world_size", 1)),
        **stated,
    )
    digest = hashing.keccak_hex(manifest)
    anchor = anchor_request(
        kind="model_version",
        subject=anchor_subject("model_version", job.pk),
        root=digest,
        uri=f"modelfactory:job/{job.pk}/manifest",
    )
    version = ModelVersion.objects.create(
        job=job,
        name=job.name,
        owner=job.owner,
        base_model=base,
        adapter_path=adapter_path,
        adapter_bytes=sum(f["bytes"] for f in files),
        samples=samples,
        training=training_facts,
        manifest=manifest.decode(),
        manifest_hash=digest,
        anchor=anchor,
        **stated,
    )
    version.snapshots.set(snapshots)
    for parent in parents:
        ModelVersionParent.objects.create(
            child=version, parent_id=parent["id"], relation=parent["relation"], weight=parent["weight"]
        )
    if index_build is not None:
        _record_index(version, index_build)
    # trained on records revoked while it ran (or before, through a parent): flagged as it is stored, and again once
    # this commits, for a revocation that committed while this transaction was open (the receiver could not see it)
    revocations.versions_flag(version_ids=[version.pk])
    transaction.on_commit(lambda: _flag_after_commit(version.pk), robust=True)
    job.status = FineTuneJob.Status.SUCCEEDED
    job.finished_at = job.heartbeat_at = timezone.now()
    job.step = max(job.step, job.total_steps, 1 if job.is_merge else 0)
    job.total_steps = max(job.total_steps, job.step)
    job.loss_history = loss_history
    job.train_loss = metrics.get("train_loss")
    job.eval_loss = metrics.get("eval_loss")
    job.eta_seconds = 0
    if phases is not None:
        job.phases, job.phase, job.phase_done, job.phase_total, job.phase_unit = phases.finish(), "", 0, 0, ""
    if loss_history:
        # the rate the last step trained at (a decaying schedule ends near 0: the page names the schedule beside it)
        job.learning_rate = loss_history[-1].get("learning_rate", job.learning_rate)
    trained = next((p for p in job.phases or [] if p.get("phase") == "train"), None)
    if trained and trained.get("tokens") and trained.get("seconds"):
        # tokens a second over the whole training phase, what the next estimate uses too
        job.tokens_per_s = trained["tokens"] / trained["seconds"]
    job.log_tail = _tail(job.log_tail, f"version #{version.pk} saved, manifest {digest}")
    job.save()
    return version


def _flag_after_commit(version_id: int) -> None:
    try:
        revocations.versions_flag(version_ids=[version_id])
    except Exception:  # the version is stored; manage.py revocations_replay flags it again
        logger.exception("version %s: checking it for revoked records failed", version_id)


def _record_index(version: ModelVersion, index_build: hooks.IndexBuild) -> None:
    indexer = hooks.version_indexer()
    if indexer is None:
        raise ImproperlyConfigured("an index was built for this version but no version indexer is registered now")
    indexer.record(version=version, build=index_build)


@transaction.atomic
def jobs_reap_stale(*, now: datetime | None = None) -> int:
    """Mark running jobs whose heartbeat is older than ``stale_after_seconds()`` failed ("worker lost").

    Failing rather than requeueing on its own: a worker that vanished may have been killed by what the job does
    (out of memory), so a person decides to retry; the retry resumes from the job's last checkpoint when one was
    saved. Returns how many jobs were reaped.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=stale_after_seconds())
    stale = list(
        FineTuneJob.objects.select_for_update(skip_locked=True).filter(
            status=FineTuneJob.Status.RUNNING, heartbeat_at__lt=cutoff
        )
    )
    for job in stale:
        job.status = FineTuneJob.Status.FAILED
        since = f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"
        job.error = f"worker lost: no heartbeat from {job.worker or 'its worker'} since {since}"
        job.finished_at = now
        job.log_tail = _tail(job.log_tail, job.error)
        job.save()
    return len(stale)
