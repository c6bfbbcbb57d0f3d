"""Inference reads: which model versions a user may ask, which runs a user may see, a run's inclusion proof."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.core.cache import cache
from django.db.models import Q, QuerySet

from ledger.merkle import StandardMerkleTree
from ledger.proofs import anchor_facts_for, tree_proof
from ledger.services import anchor_subject
from modelfactory.models import BaseModel, ModelVersion
from modelfactory.selectors import versions_visible_to

from .models import InferenceRun, RunBatch

ENGINE_STATE_CACHE_KEY = "inference:engine-state:{worker}"
ENGINE_WORKERS_CACHE_KEY = "inference:engine-workers"
_VERSION_ID = re.compile(r"^mv-(\d{1,18})$")
_BASE_ID = re.compile(r"^base-(\d{1,18})$")


def _signed_in(user: Any) -> bool:
    return user is not None and getattr(user, "is_authenticated", False) and user.is_active


def versions_askable_by(
    *, user: Any, q: str = "", datanet: Any = None, base: BaseModel | int | str | None = None
) -> QuerySet[ModelVersion]:
    """Versions ``user`` may ask: published ones and the user's own (staff too: unpublished versions of others are
    not served). ``q`` searches the version's name, its Datanets' names and its base model's name; ``datanet`` (a
    Datanet, its id or slug) and ``base`` (a BaseModel, its id or name) narrow it down. Newest first."""
    if not _signed_in(user):
        return ModelVersion.objects.none()
    versions = versions_visible_to(user=user).filter(Q(published=True) | Q(owner=user))
    q = (q or "").strip()
    if q:
        versions = versions.filter(
            Q(name__icontains=q) | Q(snapshots__datanet__name__icontains=q) | Q(base_model__name__icontains=q)
        )
    versions = _narrowed(versions, "snapshots__datanet", datanet, key="slug")
    versions = _narrowed(versions, "base_model", base, key="name")
    return versions.distinct().order_by("-created_at", "-id")


def _narrowed(versions: QuerySet[ModelVersion], field: str, value: Any, *, key: str) -> QuerySet[ModelVersion]:
    # ``value``: a row, its id (digits) or its ``key`` (a slug, a name); None or "" leaves ``versions`` as they are
    if value is None or value == "":
        return versions
    if hasattr(value, "pk"):
        return versions.filter(**{field: value})
    if str(value).isdigit():
        return versions.filter(**{f"{field}_id": int(value)})
    return versions.filter(**{f"{field}__{key}": str(value)})


def model_for_id(*, user: Any, model: str) -> tuple[ModelVersion | None, BaseModel] | None:
    """Resolve an API ``model`` id to (version, base model) if ``user`` may ask it; None when unknown to them."""
    if not isinstance(model, str):
        return None
    if match := _VERSION_ID.match(model.strip()):
        version = versions_askable_by(user=user).filter(pk=int(match[1])).first()
        return (version, version.base_model) if version is not None else None
    if match := _BASE_ID.match(model.strip()):
        base = BaseModel.objects.filter(pk=int(match[1])).first()
        return (None, base) if base is not None and _signed_in(user) else None
    return None


def runs_of(*, user: Any) -> QuerySet[InferenceRun]:
    """A user's own runs, newest first."""
    if not _signed_in(user):
        return InferenceRun.objects.none()
    return InferenceRun.objects.filter(user=user).select_related("version", "base_model", "batch__anchor")


def run_for_viewer(*, public_id: uuid.UUID | str, user: Any) -> InferenceRun | None:
    """The run with ``public_id`` for anyone who has its link, signed in or not: a run page is meant to be shared,
    and its unguessable UUID is the capability (like an unlisted link). None when there is no such run."""
    try:
        key = public_id if isinstance(public_id, uuid.UUID) else uuid.UUID(str(public_id))
    except ValueError:
        return None
    return (
        InferenceRun.objects.select_related("user", "version__owner", "base_model", "batch__anchor")
        .filter(public_id=key)
        .first()
    )


def run_proof(run: InferenceRun) -> dict[str, Any] | None:
    """The run's inclusion proof in its batch: the proof envelope of ``ledger.proofs.tree_proof`` (artifact ``run``,
    leafEncoding ``["bytes32"]``, value ``[run_hash]``, the batch's ``anchor`` on chain, subject
    ``inference_batch:<root>``) plus ``batch`` (``id``, ``size``, ``sealed_at``), or None while the run is not in a
    sealed batch."""
    if run.batch_id is None or not run.run_hash:
        return None
    batch = RunBatch.objects.select_related("anchor", "anchor__deployment").get(pk=run.batch_id)
    tree = StandardMerkleTree.load(batch.tree)
    batch_facts = {"id": batch.pk, "size": batch.size, "sealed_at": batch.sealed_at.isoformat()}
    proof = tree_proof(tree, tree.index_of((run.run_hash,)), artifact="run", anchor=batch.anchor, batch=batch_facts)
    proof["anchor"] = anchor_facts_for(batch.anchor, anchor_subject("inference_batch", tree.root))
    return proof


def engine_states() -> list[dict[str, Any]]:
    """Every engine of every live inference worker, as the worker last published it (``Engine.state()`` plus
    ``worker``, ``node`` and ``published_at``), by worker."""
    workers = cache.get(ENGINE_WORKERS_CACHE_KEY) or []
    states = cache.get_many([ENGINE_STATE_CACHE_KEY.format(worker=w) for w in workers])
    # a worker publishes a list of its engines (a single dict from before several engines per worker)
    return [state for k in sorted(states) for state in (states[k] if isinstance(states[k], list) else [states[k]])]


def runs_held_by(*, worker: str, run_ids: list[int]) -> set[int]:
    """Which of ``run_ids`` are still running under ``worker``'s claim."""
    if not run_ids:
        return set()
    return set(
        InferenceRun.objects.filter(pk__in=run_ids, claimed_by=worker, status=InferenceRun.Status.RUNNING).values_list(
            "pk", flat=True
        )
    )
