"""Proof of Attribution writes: the training-time index of a model version and the attribution of an inference run.

Index (``index_build_for_job`` in the training worker, ``index_record`` inside the version's transaction): every
record that trained the version, including every record of every parent version (continued or merged), each keeping
its contributor; gradient features under the version's own adapter and a span index, stored content-addressed under
MEDIA_ROOT, their hashes in the version's lineage manifest. A failed build never fails the job: the version exists
and its index row says why it has none.

Run (``run_attribute`` in the attribution worker): the answer's projected gradient against every record, its
verbatim spans and the evidence that records support what it says; a verdict (supported, partly supported,
unsupported) and the signals combined for the supporting records only under the versioned policy
(``scoring.CURRENT_POLICY``), rolled up and stored; in the same transaction the registered fee split
(``hooks.FeeSplit``, the rewards app's) splits the run's fee by each contribution's share: contributors are paid for
supported content only. A version without a usable index is never scored on invented numbers: its runs credit no
contributor (the split pays the builder and the protocol pool only).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from datanets.models import Record, SnapshotRecord
from datanets.revocation import ERASED_CANONICAL
from datanets.storage import content_path, media_path
from inference.composites import component_shares
from inference.models import InferenceRun
from modelfactory.config import DEFAULT_FORMATTING, TrainingConfig
from modelfactory.models import ModelVersion
from outbox.services import enqueue_on_commit

from . import hooks, revocation, scoring
from . import index as index_mod
from .features import FeatureIndexError
from .index import SPANS_FILE, AnswerRequest, RecordGroup, answer_char_range
from .models import AttributionIndex, RecordAttribution, RunAttribution, SpanMatch
from .selectors import locate_in_record, record_display_text
from .spans import SpanIndexError
from .storage import INDEX_PREFIX, lock_index_path

logger = logging.getLogger(__name__)

MAX_SPAN_ROWS_PER_MATCH = 20
# Queued by its registered name: attribution.tasks imports this module (its name routes it: CELERY_TASK_ROUTES).
ATTRIBUTION_RUN_TASK = "attribution.tasks.attribution_run_task"


# --- the training-time index -------------------------------------------------------------------------------------


@dataclass
class PendingIndex:
    """The outcome of a build, between the training worker and the version's transaction: a built folder, or why
    there is none."""

    built: Any = None  # attribution.index.BuiltIndex
    path: str = ""  # relative to MEDIA_ROOT, once stored
    error: str = ""
    seconds: float | None = None
    train_step_seconds: float | None = None

    def manifest_entry(self) -> dict[str, Any]:
        """What the version's lineage manifest anchors: the index's hashes, or that the build failed."""
        if self.built is None:
            return {"status": AttributionIndex.Status.FAILED}
        return {
            "status": AttributionIndex.Status.OK,
            "method": self.built.method,
            "seed": self.built.seed,
            "width": self.built.width,
            "feature_hash": self.built.feature_hash,
            "span_hash": self.built.span_hash,
            "records": len(self.built.record_ids),
        }


def _job_records(job: Any) -> list[tuple[int, dict[str, Any]]]:
    """A job's training input as ``modelfactory.services._snapshot_records`` reads it (snapshots in id order, each
    in leaf order, a repeated hash once), with each record's id."""
    records: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    for snapshot in job.snapshots.order_by("pk"):
        leaves = (
            SnapshotRecord.objects.filter(snapshot=snapshot, record__excluded=False)
            .order_by("leaf_index")
            .values_list("record_id", "record__record_hash", "record__canonical")
        )
        for record_id, record_hash, canonical in leaves.iterator(chunk_size=5_000):
            if record_hash in seen or canonical == ERASED_CANONICAL:
                continue  # an erased record's bytes are gone: no index holds it again
            seen.add(record_hash)
            records.append((record_id, json.loads(canonical)))
    return records


def _records_by_id(ids: list[int]) -> list[tuple[int, dict[str, Any]]]:
    canonical = dict(Record.objects.filter(pk__in=ids).values_list("pk", "canonical"))
    # an erased record is gone from its parent's index: a child's index does not take it back
    return [(pk, json.loads(canonical[pk])) for pk in ids if canonical.get(pk, ERASED_CANONICAL) != ERASED_CANONICAL]


def _version_groups(version: Any) -> list[Any]:
    """The record groups that trained ``version``: from its index when it has one (exactly what was indexed),
    else rebuilt from its job's lineage."""
    index = AttributionIndex.objects.filter(version=version, status=AttributionIndex.Status.OK).first()
    if index is not None and index.groups:
        return [
            RecordGroup(g["record_type"], g["mode"], int(g["max_length"]), _records_by_id(list(g["record_ids"])))
            for g in index.groups
        ]
    return job_groups(version.job)


def job_groups(job: Any) -> list[Any]:
    """Every record that shaped a job's adapter, grouped by how it was tokenized: for a fine-tune its own train
    split then its parent's records; for a merge every parent's records, in the merge's parent order."""
    if job.is_merge:
        groups: list[Any] = []
        for parent, _weight in job.merge_sources():
            groups.extend(_version_groups(parent))
        return groups
    config = TrainingConfig.from_dict(job.config)
    record_type = job.snapshots.values_list("datanet__record_type", flat=True).first() or ""
    own = RecordGroup(
        record_type=record_type,
        mode=config.formatting.get(record_type, DEFAULT_FORMATTING.get(record_type, "plain")),
        max_length=config.max_length,
        records=_job_records(job),
        split=config.to_dict(),
    )
    parents = _version_groups(job.parent_version) if job.parent_version_id else []
    return [own, *parents]


def index_build_for_job(
    *,
    job: Any,
    adapter_dir: str | Path,
    base: Any,
    train_step_seconds: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PendingIndex:
    """Build the attribution index of a finished job's adapter with the worker's loaded base model, telling
    ``progress(done, total)`` batches of records as they are done.

    Never raises: a failure is logged and returned (the version is stored anyway, its index row says failed).
    """
    started = time.monotonic()
    try:
        seed = int(job.config.get("seed", 0)) if not job.is_merge else 0
        built = index_mod.build_index(
            base=base,
            adapter_dir=adapter_dir,
            groups=job_groups(job),
            seed=seed,
            width=int(settings.ATTRIBUTION_FEATURE_DIM),
            scratch=media_path("tmp/attribution"),
            progress=progress,
        )
        # stored before the manifest is written, so the manifest never anchors an index that is not on disk
        relative = content_path(INDEX_PREFIX, index_mod.storage_key(built.feature_hash, built.span_hash))
        index_mod.place(built, media_path(relative))
        return PendingIndex(built=built, path=relative, seconds=built.seconds, train_step_seconds=train_step_seconds)
    except Exception as exc:
        logger.exception("job %s: the attribution index could not be built", job.pk)
        return PendingIndex(
            error=f"{type(exc).__name__}: {exc}"[:4000],
            seconds=round(time.monotonic() - started, 3),
            train_step_seconds=train_step_seconds,
        )


def index_record(*, version: Any, pending: PendingIndex | None) -> AttributionIndex:
    """Write the version's index row (inside the version's transaction, so a version and its index row appear
    together)."""
    if pending is None:
        pending = PendingIndex(error="no index was built for this version")
    built = pending.built
    if built is not None:
        lock_index_path(pending.path)  # held until the version commits: see index_folder_drop
        if not (media_path(pending.path) / SPANS_FILE).exists():
            # removed as the unkept index of another job with identical content: the manifest already names it, so
            # the version is not stored (its job fails and can be retried) rather than name a missing folder
            raise FileNotFoundError(f"the built attribution index {pending.path} is gone")
    if built is None:
        return AttributionIndex.objects.create(
            version=version,
            status=AttributionIndex.Status.FAILED,
            error=pending.error or "the index build failed",
            build_seconds=pending.seconds,
            train_step_seconds=pending.train_step_seconds,
        )
    return AttributionIndex.objects.create(
        version=version,
        status=AttributionIndex.Status.OK,
        method=built.method,
        seed=built.seed,
        width=built.width,
        feature_hash=built.feature_hash,
        span_hash=built.span_hash,
        path=pending.path,
        record_ids=built.record_ids,
        groups=built.groups,
        build_seconds=pending.seconds,
        train_step_seconds=pending.train_step_seconds,
    )


# --- answer time ---------------------------------------------------------------------------------------------------


def _fee() -> int:
    return int(settings.INFERENCE_RUN_FEE)


def _split_fee(
    *, run: Any, attribution: RunAttribution, contribution_shares: dict[int, Fraction], policy: hooks.SplitPolicy | None
) -> None:
    """Have the registered fee split (``hooks.FeeSplit``) split the fee of a row just made final under ``policy``
    (the one recorded on the row), inside its transaction and under its lock: what the split raises rolls the
    attribution back with it."""
    split = hooks.fee_split()
    if split is not None and policy is not None:
        split.run_attributed(run=run, attribution=attribution, contribution_shares=contribution_shares, policy=policy)


def _split_policy() -> hooks.SplitPolicy | None:
    split = hooks.fee_split()
    return split.policy if split is not None else None


def _fraction(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


class PermanentAttributionError(Exception):
    """An attribution that no retry can fix (the run has nothing to score, the index files do not match their
    anchored hashes, ...): it fails for good on the first attempt."""


def is_permanent(exc: BaseException) -> bool:
    """Whether the same inputs would fail the same way on every attempt: nothing to score, a fee split refused
    (``hooks.SplitRefused``: already split), or
    index files that do not match their anchored hashes (or the answer's projection). An index file that could not
    be read (an OSError underneath), a database hiccup or a worker killed mid-run is retried, at most
    ``max_attempts()`` times."""
    if isinstance(exc, PermanentAttributionError | hooks.SplitRefused):
        return True
    if isinstance(exc, FeatureIndexError | SpanIndexError):
        return not isinstance(exc.__cause__, OSError)
    return False


def max_attempts() -> int:
    return settings.ATTRIBUTION_MAX_ATTEMPTS


def retry_base_seconds() -> int:
    return settings.ATTRIBUTION_RETRY_SECONDS


def stale_after_seconds() -> int:
    """A pending attribution with no result this long after it was queued or started is taken as lost."""
    return settings.ATTRIBUTION_STALE_SECONDS


def retry_delay(attempts: int) -> timedelta:
    """Backoff after the ``attempts``-th failed attempt: base, 2 x base, 4 x base, ... capped at an hour."""
    return timedelta(seconds=min(3600, retry_base_seconds() * 2 ** max(0, attempts - 1)))


def _claim(run: Any) -> RunAttribution | None:
    """The run's attribution row, locked; None when it is final: credited (ok, no_index: its fee is split)
    or failed for good. A failed row waiting for its retry can still be claimed, by the retry or by a late result
    of the attempt that was taken as lost: the first to store wins, the other finds it credited."""
    attribution, _ = RunAttribution.objects.get_or_create(run=run)
    locked = RunAttribution.objects.select_for_update().get(pk=attribution.pk)
    return None if locked.is_finished else locked


def _attempt_start(run: Any) -> bool:
    """Claim the run's attribution for scoring now: mark its pending row as started (committed at once: a worker
    killed mid-run leaves a pending row with ``started_at`` that the retry beat finds stale). False, and nothing
    marked, when the row is finished or another attempt started it less than ``stale_after_seconds()`` ago (another
    worker scores it, alone or in its batch: ``_claim_waiting``); that attempt stores it, or the beat takes it as
    lost and retries it."""
    attribution, _ = RunAttribution.objects.get_or_create(run=run)
    now = timezone.now()
    fresh = now - timedelta(seconds=stale_after_seconds())
    claimed = (
        RunAttribution.objects.filter(pk=attribution.pk, status=RunAttribution.Status.PENDING)
        .filter(Q(started_at__isnull=True) | Q(started_at__lt=fresh))
        .update(started_at=now)
    )
    return claimed == 1


def batch_max() -> int:
    """The most answers one attribution task scores together (``ATTRIBUTION_BATCH_MAX``; 1: one at a time)."""
    return max(1, int(settings.ATTRIBUTION_BATCH_MAX))


def _claim_waiting(*, run: Any, processes: int) -> list[Any]:
    """Other answers of ``run``'s version waiting for their attribution (succeeded in the last
    ``stale_after_seconds()``, with no attribution row or a pending one that no attempt started), claimed to be
    scored with ``run``: the oldest first, so many that the ``processes`` scoring processes of this worker share
    what waits evenly (``run`` included), and at most ``batch_max()`` with ``run``. Claimed rows are marked started
    (``skip_locked``: two workers never claim one run), so the tasks queued for them find them being scored."""
    limit = batch_max() - 1
    if limit <= 0:
        return []
    since = timezone.now() - timedelta(seconds=stale_after_seconds())
    waiting = list(
        InferenceRun.objects.filter(
            version_id=run.version_id, status=InferenceRun.Status.SUCCEEDED, finished_at__gte=since
        )
        .exclude(pk=run.pk)
        .exclude(answer="")
        .filter(
            Q(attribution__isnull=True)
            | Q(attribution__status=RunAttribution.Status.PENDING, attribution__started_at__isnull=True)
        )
        .order_by("finished_at", "pk")
        .values_list("pk", flat=True)[: (limit + 1) * max(1, processes)]
    )
    share = -(-(len(waiting) + 1) // max(1, processes))  # ceil: this task's part of what waits, run included
    limit = min(limit, share - 1)
    if limit <= 0 or not waiting:
        return []
    for run_id in waiting:
        RunAttribution.objects.get_or_create(run_id=run_id)
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            RunAttribution.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(run_id__in=waiting, status=RunAttribution.Status.PENDING, started_at__isnull=True)
            .order_by("run__finished_at", "run_id")
            .values_list("pk", "run_id")[:limit]
        )
        RunAttribution.objects.filter(pk__in=[pk for pk, _ in rows]).update(started_at=now)
    claimed = {run_id for _, run_id in rows}
    runs = InferenceRun.objects.select_related("version", "version__owner", "base_model").filter(pk__in=claimed)
    return sorted(runs, key=lambda r: (r.finished_at, r.pk))


@transaction.atomic
def _finish_without_index(*, run: Any, index: AttributionIndex | None) -> RunAttribution | None:
    attribution = _claim(run)
    if attribution is None:
        return RunAttribution.objects.get(run=run)
    if index is None:
        why = "it was trained before attribution indexes existed"
    else:
        why = f"its index build failed ({index.error})"
    policy = _split_policy()
    attribution.status = RunAttribution.Status.NO_INDEX
    attribution.index = index
    attribution.error = why
    attribution.reward_policy_version = policy.version if policy is not None else None
    attribution.fee = _fee()
    attribution.explanation = (
        f"This model version has no attribution index: {why}. The answer is not attributed to any training record, "
        "so no contributor is credited or paid on invented numbers; the contributors' part of the fee goes to the "
        "protocol pool."
    )
    attribution.finished_at = timezone.now()
    attribution.next_attempt_at = None
    attribution.save()
    _split_fee(run=run, attribution=attribution, contribution_shares={}, policy=policy)
    return attribution


def _fail(attribution: RunAttribution, *, error: str, permanent: bool, now: datetime) -> None:
    """Count a failed (or lost) attempt on a locked row and schedule its retry, or fail it for good."""
    attribution.attempts += 1
    attribution.status = RunAttribution.Status.FAILED
    attribution.finished_at = now
    limit = max_attempts()
    if permanent:
        attribution.next_attempt_at = None
        note = "not retried: the same inputs fail the same way"
    elif attribution.attempts >= limit:
        attribution.next_attempt_at = None
        note = f"gave up after {attribution.attempts} attempts"
    else:
        attribution.next_attempt_at = now + retry_delay(attribution.attempts)
        note = f"attempt {attribution.attempts} of {limit}, retried from {attribution.next_attempt_at:%H:%M:%S} UTC"
    attribution.error = f"{error[:3800]} ({note})"


@transaction.atomic
def _finish_failed(*, run: Any, error: str, seconds: float, permanent: bool = False) -> RunAttribution | None:
    attribution = _claim(run)
    if attribution is None:
        return RunAttribution.objects.get(run=run)
    attribution.seconds = seconds
    _fail(attribution, error=error, permanent=permanent, now=timezone.now())
    attribution.save()
    return attribution


@dataclass(frozen=True)
class Scored:
    """An answer's combined attribution with what it was computed from, and its support verdict."""

    attribution: scoring.Attribution
    rollup: scoring.RollUp
    owners: dict[int, scoring.RecordOwner | tuple[scoring.RecordOwner, ...]]
    scores: Any  # attribution.index.AnswerScores
    support: scoring.Support | None = None
    excluded: frozenset[int] = frozenset()  # records the revocation policy kept from being credited


def run_score(
    *,
    run: Any,
    index: AttributionIndex,
    policy: scoring.AttributionPolicy = scoring.CURRENT_POLICY,
    fresh_index: bool = False,
) -> Scored:
    """Score ``run``'s answer against ``index`` (loading base and adapter in this process), judge whether training
    records support it (``scoring.assess``) and combine the signals under ``policy`` (by default
    ``scoring.CURRENT_POLICY``: credit only for supported content); writes nothing. Raises FeatureIndexError /
    SpanIndexError when the stored files do not match the hashes the index row (and the anchored manifest)
    names: checked when this process first reads them and whenever a file changes (``index.load_index_kept``), or
    on this call with ``fresh_index``."""
    load = index_mod.load_index if fresh_index else index_mod.load_index_kept
    matrix, spans = load(media_path(index.path), feature_hash=index.feature_hash, span_hash=index.span_hash)
    asked_at, excluded = _exclusion(run, index)
    scorer = index_mod.scorer_for(run.base_model.path)
    scores = scorer.score_many([_answer_request(run, matrix, spans, policy, excluded)])[0]
    return _scored(run, scores, policy, asked_at=asked_at, excluded=excluded)


def run_score_many(
    *, runs: list[Any], index: AttributionIndex, policy: scoring.AttributionPolicy = scoring.CURRENT_POLICY
) -> list[Scored]:
    """``run_score`` of each of ``runs`` (answers of ``index``'s version), their model passes packed together
    (``index.Scorer.score_many``): each run's result is the one ``run_score`` gives it alone, bit for bit."""
    matrix, spans = index_mod.load_index_kept(
        media_path(index.path), feature_hash=index.feature_hash, span_hash=index.span_hash
    )
    scorer = index_mod.scorer_for(runs[0].base_model.path)
    exclusions = [_exclusion(run, index) for run in runs]
    requests = [
        _answer_request(run, matrix, spans, policy, excluded)
        for run, (_, excluded) in zip(runs, exclusions, strict=True)
    ]
    return [
        _scored(run, scores, policy, asked_at=asked_at, excluded=excluded)
        for run, scores, (asked_at, excluded) in zip(runs, scorer.score_many(requests), exclusions, strict=True)
    ]


def _exclusion(run: Any, index: AttributionIndex) -> tuple[Any, frozenset[int]]:
    """When the answer was asked (a self-check's question, which has no run row, is asked now) and the records the
    revocation policy keeps from being credited for an answer asked then."""
    asked_at = getattr(run, "created_at", None) or timezone.now()
    return asked_at, revocation.excluded_records(record_ids=index.record_ids, asked_at=asked_at)


def _answer_request(
    run: Any, matrix: Any, spans: Any, policy: scoring.AttributionPolicy, excluded: frozenset[int]
) -> Any:
    return AnswerRequest(
        adapter_dir=media_path(run.version.adapter_path),
        matrix=matrix,
        spans=spans,
        messages=run.messages if run.kind == "chat" else None,
        prompt=run.prompt,
        answer=run.answer,
        stopped=run.finish_reason == "stop",
        min_span_tokens=int(settings.ATTRIBUTION_MIN_SPAN_TOKENS),
        top_k=policy.top_k,
        context_relevance=context_relevance(policy),
        exclude=excluded,
    )


def _scored(
    run: Any, scores: Any, policy: scoring.AttributionPolicy, *, asked_at: Any, excluded: frozenset[int]
) -> Scored:
    support = scoring.assess(scores.support, scores.gradient, policy)
    attribution = scoring.combine_supported(scores.gradient, support, policy)
    owners = record_owners([r.record_id for r in attribution.records], version=run.version, asked_at=asked_at)
    return Scored(attribution, scoring.roll_up(attribution, owners), owners, scores, support, excluded)


def context_relevance(policy: scoring.AttributionPolicy) -> float | None:
    """How relevant a record must be for the in-context support test under ``policy``; None when the policy has no
    such test (then it is not run)."""
    rules = policy.support
    return rules.relevance_min if rules is not None and rules.in_context else None


def record_owners(
    record_ids: list[int], *, version: Any = None, asked_at: datetime | None = None
) -> dict[int, scoring.RecordOwner | tuple[scoring.RecordOwner, ...]]:
    """Who contributed each record. With ``version``, a record that several people contributed (the same record
    hash, accepted into the snapshots that trained the version: training kept one copy) has all of them as owners,
    ordered by contribution, so its credit is split between them; with ``asked_at`` too, a copy the revocation
    policy keeps out for an answer asked then (``revocation.excluded_records``) is not an owner."""
    rows = Record.objects.filter(pk__in=record_ids).values_list(
        "pk", "contribution_id", "contribution__contributor_id", "datanet_id", "record_hash"
    )
    owners: dict[int, Any] = {pk: scoring.RecordOwner(c, u, d) for pk, c, u, d, _ in rows}
    if version is None or not owners:
        return owners
    by_hash = {h: pk for pk, _, _, _, h in rows}
    snapshots = _version_snapshot_ids(version)
    twins = (
        SnapshotRecord.objects.filter(
            snapshot_id__in=snapshots, record__record_hash__in=list(by_hash), record__excluded=False
        )
        .exclude(record_id__in=record_ids)
        .exclude(revocation.revoked_twin_filter(asked_at=asked_at) if asked_at is not None else Q(pk__in=[]))
        .values_list("record__record_hash", "record__contribution_id", "record__contribution__contributor_id",
                     "record__datanet_id")
        .distinct()
    )  # fmt: skip
    for record_hash, c, u, d in twins:
        pk = by_hash[record_hash]
        known = scoring.owners_of(owners[pk])
        if all(o.contribution_id != c for o in known):
            owners[pk] = tuple(sorted((*known, scoring.RecordOwner(c, u, d)), key=lambda o: o.contribution_id))
    return owners


def _version_snapshot_ids(version: Any) -> set[int]:
    """The snapshots whose records trained ``version``: its job's, and its parents' (continued or merged)."""
    seen: set[int] = set()
    snapshots: set[int] = set()
    todo = [version]
    while todo:
        current = todo.pop()
        if current is None or current.pk in seen or getattr(current, "job", None) is None:
            continue
        seen.add(current.pk)
        job = current.job
        if job.is_merge:
            todo.extend(parent for parent, _weight in job.merge_sources())
        else:
            snapshots.update(job.snapshots.values_list("pk", flat=True))
            todo.append(job.parent_version)
    return snapshots


def run_attribute(*, run_id: int, processes: int = 1) -> RunAttribution | None:
    """Attribute one succeeded run of a model version and have its fee split; None for a run that is not one.

    Other answers of the same version waiting for theirs are claimed and scored with it in one packed model pass
    (``_claim_waiting``: this task's even share of what waits among the worker's ``processes``, at most
    ``batch_max()``); each is stored on its own, with the numbers it gets alone. Their own tasks find them being
    scored or finished.

    Idempotent: a redelivered task finds the attribution finished (or being scored) and returns it. A failed attempt
    is recorded on the row (``error``, ``attempts``) and, unless the error is permanent (``is_permanent``) or the
    attempts are spent, scheduled for a retry by ``run_attributions_retry``. Credit is written at most once: the fee
    is split (``hooks.FeeSplit``) in the transaction that makes the row final, under its row lock (``_claim``).
    """
    run = InferenceRun.objects.select_related("version", "version__owner", "base_model").filter(pk=run_id).first()
    if run is not None and run.status == InferenceRun.Status.SUCCEEDED and run.composition:
        return run_attribute_composite(run=run)
    if run is None or run.status != InferenceRun.Status.SUCCEEDED or run.version is None:
        return None
    existing = RunAttribution.objects.filter(run=run).first()
    if existing is not None and existing.is_finished:
        return existing
    index = AttributionIndex.objects.filter(version=run.version).first()
    if index is None or not index.is_ok:
        return _finish_without_index(run=run, index=index)
    if not _attempt_start(run):
        return RunAttribution.objects.get(run=run)
    companions = _claim_waiting(run=run, processes=processes) if run.answer else []
    if not companions:
        return _attribute_one(run=run, index=index, started=time.monotonic())
    batch = [run, *companions]
    started = time.monotonic()
    try:
        scored_batch: list[Scored | None] = list(run_score_many(runs=batch, index=index))
    except Exception:  # each answer is scored again alone, so that its own failure (if any) is what it records
        logger.exception("runs %s: batched attribution failed; scoring them one by one", [r.pk for r in batch])
        scored_batch = [None] * len(batch)
    seconds = round(time.monotonic() - started, 3)
    results = []
    for member, scored in zip(batch, scored_batch, strict=True):
        if scored is None:
            results.append(_attribute_one(run=member, index=index, started=time.monotonic()))
            continue
        try:
            results.append(_store(run=member, index=index, scored=scored, seconds=seconds))
        except Exception as exc:
            results.append(_failed(run=member, exc=exc, started=started))
    return results[0]


def _attribute_one(*, run: Any, index: AttributionIndex, started: float) -> RunAttribution | None:
    try:
        if not run.answer:
            raise PermanentAttributionError("the run has no answer to attribute")
        scored = run_score(run=run, index=index)
        return _store(run=run, index=index, scored=scored, seconds=round(time.monotonic() - started, 3))
    except Exception as exc:
        return _failed(run=run, exc=exc, started=started)


def _failed(*, run: Any, exc: Exception, started: float) -> RunAttribution | None:
    permanent = is_permanent(exc)
    logger.exception("run %s: attribution failed%s", run.pk, " for good" if permanent else "")
    return _finish_failed(
        run=run,
        error=f"{type(exc).__name__}: {exc}",
        seconds=round(time.monotonic() - started, 3),
        permanent=permanent,
    )


@transaction.atomic
def _store(*, run: Any, index: AttributionIndex, scored: Scored, seconds: float) -> RunAttribution:
    attribution = _claim(run)
    if attribution is None:
        return RunAttribution.objects.get(run=run)
    result, rollup, scores = scored.attribution, scored.rollup, scored.scores
    names = dict(
        get_user_model().objects.filter(pk__in=[u for u, _ in rollup.contributors]).values_list("pk", "username")
    )
    longest = max((m.length for m in scores.matches), default=0)
    support = scored.support
    policy = _split_policy()
    attribution.status = RunAttribution.Status.OK
    attribution.index = index
    attribution.policy_version = result.policy_version
    attribution.reward_policy_version = policy.version if policy is not None else None
    if support is not None:
        attribution.verdict = support.verdict
        attribution.confidence = support.confidence
        attribution.support = {**support.as_dict(), "policy": scoring.CURRENT_POLICY.as_dict()}
    attribution.feature_hash = index.feature_hash
    attribution.span_hash = index.span_hash
    attribution.revocation_policy = revocation.POLICY
    attribution.revoked_excluded = sorted(scored.excluded)
    attribution.signal_shares = {s: _fraction(v) for s, v in result.signal_shares.items()}
    attribution.effective_weights = dict(result.effective_weights)
    attribution.contributors = [[u, _fraction(s)] for u, s in rollup.contributors]
    attribution.datanets = [[d, _fraction(s)] for d, s in rollup.datanets]
    attribution.answer_tokens = len(scores.answer_ids)
    attribution.longest_span = longest
    attribution.explanation = scoring.explain(
        result, rollup, contributor_names=names, longest_span=longest or None, support=support, reward=policy
    )
    attribution.fee = _fee()
    attribution.seconds = seconds
    attribution.finished_at = timezone.now()
    attribution.next_attempt_at = None
    attribution.attempts += 1
    attribution.save()
    RecordAttribution.objects.bulk_create(
        RecordAttribution(
            run_attribution=attribution,
            record_id=share.record_id,
            contribution_id=scoring.owners_of(scored.owners[share.record_id])[0].contribution_id,
            rank=rank,
            share=_fraction(share.share),
            share_float=float(share.share),
            by_signal={s: _fraction(v) for s, v in share.by_signal.items()},
            raw_scores=dict(share.raw_scores),
        )
        for rank, share in enumerate(result.records, start=1)
    )
    _store_spans(attribution=attribution, run=run, scores=scores)
    # shares sum to the paid fraction: the unsupported part of the contributors' pool goes to the protocol pool
    _split_fee(run=run, attribution=attribution, contribution_shares=dict(rollup.contributions), policy=policy)
    return attribution


def _store_spans(*, attribution: RunAttribution, run: Any, scores: Any) -> None:
    """One row per (span, record containing it), with the answer's and the record's character ranges."""
    record_ids = {r.record_id for m in scores.matches for r in m.records[:MAX_SPAN_ROWS_PER_MATCH]}
    records = {r.pk: r for r in Record.objects.filter(pk__in=record_ids).select_related("datanet")}
    rows = []
    for match in scores.matches:
        start, end = answer_char_range(scores.answer_offsets, match.answer_start, match.answer_end)
        text = run.answer[start:end]
        for listed in match.records[:MAX_SPAN_ROWS_PER_MATCH]:
            record = records.get(listed.record_id)
            if record is None:
                continue
            located = locate_in_record(record_display_text(record), text)
            rows.append(
                SpanMatch(
                    run_attribution=attribution,
                    record=record,
                    tokens=match.length,
                    n_records=match.n_records,
                    answer_start=start,
                    answer_end=end,
                    record_start=located[0] if located else None,
                    record_end=located[1] if located else None,
                )
            )
    SpanMatch.objects.bulk_create(rows)


def run_attributions_retry(*, now: datetime | None = None) -> dict[str, int]:
    """Recover attributions that failed or were lost (run by celery beat); returns what it did, by kind.

    - ``lost``: a pending attribution with no result ``stale_after_seconds()`` after it was created, queued or
      started (its message was lost, or its worker killed mid-run) counts as a failed attempt: it is scheduled for a
      retry with backoff, or failed for good once the attempts are spent.
    - ``unqueued``: a succeeded run of a model version that has no attribution row that long after it finished (its
      task never ran) gets a pending row and is queued.
    - ``requeued``: a failed attribution whose retry is due goes back to pending and is queued again.

    Rows are taken with ``skip_locked`` (two beat ticks, or a tick and a worker, never handle one twice) and queued
    on commit. A retry that races a late result of the same run is harmless: the first to store wins, the other
    finds the row credited (``_claim``).
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=stale_after_seconds())
    done = {"lost": 0, "unqueued": 0, "requeued": 0}
    with transaction.atomic():
        pending = RunAttribution.objects.select_for_update(skip_locked=True).filter(
            status=RunAttribution.Status.PENDING, created_at__lt=cutoff
        )
        for attribution in pending:
            last = max(t for t in (attribution.created_at, attribution.queued_at, attribution.started_at) if t)
            if last >= cutoff:
                continue
            what = "started" if attribution.started_at and attribution.started_at == last else "queued"
            _fail(
                attribution,
                error=f"no result {stale_after_seconds()} s after it was {what}: its worker or its message was lost",
                permanent=False,
                now=now,
            )
            attribution.save()
            done["lost"] += 1
            logger.warning("run %s: attribution lost (%s)", attribution.run_id, attribution.error)
    unattributed = (
        InferenceRun.objects.filter(
            status=InferenceRun.Status.SUCCEEDED, finished_at__lt=cutoff, attribution__isnull=True
        )
        .filter(Q(version__isnull=False) | Q(composition__isnull=False))
        .values_list("pk", flat=True)
    )
    for run_id in list(unattributed[:500]):
        _, created = RunAttribution.objects.get_or_create(run_id=run_id, defaults={"queued_at": now})
        if created:  # else a worker made the row meanwhile
            enqueue_on_commit(ATTRIBUTION_RUN_TASK, run_id)
            done["unqueued"] += 1
    with transaction.atomic():
        due = RunAttribution.objects.select_for_update(skip_locked=True).filter(
            status=RunAttribution.Status.FAILED, next_attempt_at__lte=now
        )
        for attribution in due:
            attribution.status = RunAttribution.Status.PENDING
            attribution.next_attempt_at = None
            attribution.queued_at = now
            attribution.started_at = None
            attribution.finished_at = None
            attribution.save()
            run_id = attribution.run_id
            enqueue_on_commit(ATTRIBUTION_RUN_TASK, run_id)
            done["requeued"] += 1
    return done


def run_attribution_recompute(*, run: Any) -> Scored:
    """Recompute a run's attribution from the stored index and the anchored inputs, writing nothing: the index
    files are checked against the hashes the version's lineage manifest anchors, then scored again."""

    index = run.version.attribution_index
    if not revocation.hashes_trace_to_anchor(index):
        raise ValueError(
            "the index row does not match the hashes anchored in the version's manifest, nor follow from them "
            "through its recorded re-issues"
        )
    return run_score(run=run, index=index, fresh_index=True)


# --- composites ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ComposedScores:
    """The span evidence of every component, for ``_store`` (``index.AnswerScores``' fields that it reads)."""

    answer_ids: list[int]
    answer_offsets: Any
    matches: list[Any]


def run_attribute_composite(*, run: Any) -> RunAttribution | None:
    """Attribute an answer of a composite (several versions combined at request time, ``run.composition``) and have
    its fee split.

    Each component's attribution is computed as for an answer of that version alone (the answer's gradient under
    the component's own adapter, against the component's own index: the space its index was built in), and the
    record shares are weighted by the component's exact share of the total weight and added: a record credited by
    two components is credited by both. A component without a usable index credits no contributor: its share of the
    contributors' part goes to the protocol pool, as for a version without an index. The composite has no single
    support verdict: each component's verdict and confidence are kept in ``support["components"]``. Idempotent and
    retried as ``run_attribute``.
    """
    existing = RunAttribution.objects.filter(run=run).first()
    if existing is not None and existing.is_finished:
        return existing
    if not _attempt_start(run):
        return RunAttribution.objects.get(run=run)
    started = time.monotonic()
    try:
        if not run.answer:
            raise PermanentAttributionError("the run has no answer to attribute")
        shares = component_shares(run.composition)
        versions = ModelVersion.objects.select_related("owner", "base_model").in_bulk([v for v, _ in shares])
        indexes = {
            i.version_id: i
            for i in AttributionIndex.objects.filter(version_id__in=list(versions), status=AttributionIndex.Status.OK)
        }
        parts = []
        for version_id, share in shares:
            index = indexes.get(version_id)
            if index is None:
                parts.append((versions[version_id], share, None, None))
                continue
            as_component = copy.copy(run)  # the same answer, as if the component alone had given it
            as_component.version = versions[version_id]
            parts.append((versions[version_id], share, index, run_score(run=as_component, index=index)))
        return _store_composite(run=run, parts=parts, seconds=round(time.monotonic() - started, 3))
    except Exception as exc:
        return _failed(run=run, exc=exc, started=started)


def _weighted(parts: list[tuple[Any, Fraction, Any, Scored | None]]) -> tuple[scoring.Attribution, dict[int, Any]]:
    """The components' attributions added, each record share (and its per-signal parts) times its component's
    share; the owners of every record credited."""
    records: dict[int, dict[str, Any]] = {}
    signal_shares: dict[str, Fraction] = {}
    owners: dict[int, Any] = {}
    fired: list[str] = []
    scored = [(share, s) for _, share, _, s in parts if s is not None]
    for share, component in scored:
        for record in component.attribution.records:
            row = records.setdefault(
                record.record_id, {"share": Fraction(0), "by_signal": {}, "raw_scores": dict(record.raw_scores)}
            )
            row["share"] += share * record.share
            for signal, part in record.by_signal.items():
                row["by_signal"][signal] = row["by_signal"].get(signal, Fraction(0)) + share * part
            owners.setdefault(record.record_id, component.owners[record.record_id])
        for signal, part in component.attribution.signal_shares.items():
            signal_shares[signal] = signal_shares.get(signal, Fraction(0)) + share * part
        fired += [f for f in component.attribution.fired if f not in fired]
    ordered = sorted(records.items(), key=lambda item: (-item[1]["share"], item[0]))
    first = scored[0][1].attribution if scored else None
    combined = scoring.Attribution(
        policy_version=first.policy_version if first is not None else scoring.CURRENT_POLICY.version,
        records=tuple(
            scoring.RecordShare(record_id, row["share"], row["by_signal"], row["raw_scores"])
            for record_id, row in ordered
        ),
        signal_shares=signal_shares,
        effective_weights=dict(first.effective_weights) if first is not None else {},
        fired=tuple(fired),
    )
    return combined, owners


@transaction.atomic
def _store_composite(
    *, run: Any, parts: list[tuple[Any, Fraction, Any, Scored | None]], seconds: float
) -> RunAttribution | None:
    combined, owners = _weighted(parts)
    scored = [s for _, _, _, s in parts if s is not None]
    indexes = [i for _, _, i, _ in parts if i is not None]
    if not scored:
        attribution = _finish_without_index(run=run, index=None)
        if attribution is not None and attribution.run_id == run.pk:
            attribution.error = "none of the composite's components has an attribution index"
            attribution.explanation = (
                "None of this composite's model versions has an attribution index: the answer is not attributed to "
                "any training record, so no contributor is credited or paid on invented numbers; the contributors' "
                "part of the fee goes to the protocol pool, the builders' part to the components' owners by weight."
            )
            attribution.save(update_fields=["error", "explanation"])
        return attribution
    scores = _ComposedScores(
        answer_ids=scored[0].scores.answer_ids,
        answer_offsets=scored[0].scores.answer_offsets,
        matches=[m for s in scored for m in s.scores.matches],
    )
    together = Scored(
        attribution=combined,
        rollup=scoring.roll_up(combined, owners),
        owners=owners,
        scores=scores,
        support=None,
        excluded=frozenset().union(*(s.excluded for s in scored)),
    )
    attribution = _store(run=run, index=indexes[0], scored=together, seconds=seconds)
    if attribution.run_id != run.pk or attribution.status != RunAttribution.Status.OK:
        return attribution
    components = []
    for version, share, index, component in parts:
        entry: dict[str, Any] = {"version": version.pk, "share": _fraction(share), "indexed": index is not None}
        if index is not None and component is not None:
            entry.update(feature_hash=index.feature_hash, span_hash=index.span_hash)
            if component.support is not None:
                entry.update(verdict=component.support.verdict, confidence=component.support.confidence)
        components.append(entry)
    attribution.support = {"components": components, "policy": scoring.CURRENT_POLICY.as_dict()}
    described = ", ".join(f"{v.name} ({float(share) * 100:.1f}%)" for v, share, _, _ in parts)
    unindexed = [v.name for v, _, i, _ in parts if i is None]
    note = (
        f" {', '.join(unindexed)} {'has' if len(unindexed) == 1 else 'have'} no attribution index: that share of the "
        "contributors' part goes to the protocol pool."
        if unindexed
        else ""
    )
    attribution.explanation = (
        f"This answer came from a composite of {len(parts)} model versions, combined at request time: {described}. "
        f"Each component's attribution is weighted by its share.{note} " + attribution.explanation
    )
    attribution.save(update_fields=["support", "explanation"])
    return attribution
