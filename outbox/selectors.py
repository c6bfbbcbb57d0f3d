"""Reads for the outbox."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from .models import OutboxMessage


def outbox_backlog(*, older_than_seconds: int | None = None) -> dict[str, Any]:
    """How many messages are unsent, and how many of them were written over ``older_than_seconds`` ago (default
    OUTBOX_STALE_SECONDS): a stale one means the broker was (or is) unreachable and nothing has resent it yet."""
    seconds = settings.OUTBOX_STALE_SECONDS if older_than_seconds is None else older_than_seconds
    unsent = OutboxMessage.objects.filter(sent_at__isnull=True)
    oldest = unsent.order_by("created_at").values_list("created_at", flat=True).first()
    return {
        "unsent": unsent.count(),
        "stale": unsent.filter(created_at__lt=timezone.now() - timedelta(seconds=seconds)).count(),
        "stale_after_seconds": seconds,
        "oldest_unsent": oldest.isoformat() if oldest else None,
    }
