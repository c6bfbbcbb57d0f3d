"""Reads of the outbox, for pages, the API and the management commands."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from .models import Anchor


def anchors_for_subject(*, kind: str, subject_id: str) -> QuerySet[Anchor]:
    """The anchors of one subject, newest first: the first confirmed one is its on-chain proof."""
    return Anchor.objects.filter(kind=kind, subject_id=subject_id.lower()).select_related("deployment")


def anchor_status_counts() -> dict[str, int]:
    """How many anchors are in each status, every status present (zero when none)."""
    counts = dict.fromkeys(Anchor.Status.values, 0)
    for row in Anchor.objects.values("status").annotate(n=Count("id")).order_by():
        counts[row["status"]] = row["n"]
    return counts
