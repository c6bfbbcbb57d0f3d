"""ModelFactory reads: which jobs and model versions a user may see."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from .models import FineTuneJob, ModelVersion


def _signed_in(user: Any) -> bool:
    return user is not None and getattr(user, "is_authenticated", False) and user.is_active


def jobs_visible_to(*, user: Any) -> QuerySet[FineTuneJob]:
    """A user's own jobs; staff see every job."""
    jobs = FineTuneJob.objects.select_related("base_model", "owner", "parent_version")
    if not _signed_in(user):
        return jobs.none()
    return jobs if user.is_staff else jobs.filter(owner=user)


def versions_visible_to(*, user: Any) -> QuerySet[ModelVersion]:
    """Published versions for everyone signed in, plus the user's own; staff see every version."""
    versions = ModelVersion.objects.select_related("base_model", "owner", "anchor")
    if not _signed_in(user):
        return versions.none()
    if user.is_staff:
        return versions
    return versions.filter(Q(published=True) | Q(owner=user))


def version_training_records(*, version: ModelVersion) -> QuerySet[Any]:
    """The snapshot leaves a version trained on (before de-duplication across snapshots), for attribution."""
    from datanets.models import SnapshotRecord

    return SnapshotRecord.objects.filter(snapshot__in=version.snapshots.all()).order_by("snapshot_id", "leaf_index")
