"""Writes for the outbox: queue a Celery message in the caller's transaction, send it after commit, send it again.

The one way this project hands work to Celery from a transaction. A broker that is away never makes the caller
fail: the row commits with the business write, the send after commit logs its error instead of raising, and the
beat task (``outbox_resend_due``) sends whatever is still unsent once the broker is back.

Delivery is at least once: a row whose send succeeded but whose ``sent_at`` was not yet written (a crash between
the two) is sent again. Every task queued here tolerates that, as it tolerates a broker's redelivery: it claims its
row (``run_claim``, a job's status, a contribution's check status, an anchor's state) and does nothing the second
time.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from .models import OutboxMessage

logger = logging.getLogger(__name__)

# After a commit the caller (often a request) waits for the broker this long at most: the beat task retries later.
QUICK_RETRY_POLICY: dict[str, float] = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
RESEND_BATCH = 500


def enqueue_on_commit(
    task: Any, *args: Any, kwargs: dict[str, Any] | None = None, queue: str = "", task_id: str = ""
) -> OutboxMessage:
    """Queue a call of Celery ``task`` (a task object or its registered name) with JSON-able ``args``/``kwargs``:
    written now in the caller's transaction, sent to the broker right after it commits (nothing is sent if it rolls
    back). ``queue`` overrides the task's route; ``task_id`` names the Celery task (default: a fresh uuid).

    Never raises for the broker: a failed send leaves the row for ``outbox_resend_due``.
    """
    fields: dict[str, Any] = {
        "task": task if isinstance(task, str) else task.name,
        "args": list(args),
        "kwargs": kwargs or {},
        "queue": queue,
    }
    if task_id:
        fields["task_id"] = task_id
    message = OutboxMessage.objects.create(**fields)
    message_id = message.pk

    def send_committed() -> None:
        try:
            outbox_send(message_id=message_id)
        except Exception:  # after the commit nothing may fail the caller: the beat task sends it again
            logger.exception("outbox message %s: not sent after commit; the beat task will retry", message_id)

    transaction.on_commit(send_committed)
    return message


def outbox_send(*, message_id: int) -> bool:
    """Publish message ``message_id`` unless it was sent already; True when the broker took it now.

    On PostgreSQL the row is locked while it is published, so the send after commit and the beat task never publish
    one row at the same time. On SQLite a transaction would hold the whole database's write lock for as long as the
    broker takes to answer (seconds, when it is away), so there the row is read, published and marked without one:
    the two senders are kept apart by the resend's age cut-off, and a second publish is harmless (at least once).
    """
    hold_lock = connection.vendor != "sqlite"
    with transaction.atomic() if hold_lock else nullcontext():
        rows = OutboxMessage.objects.select_for_update(skip_locked=True) if hold_lock else OutboxMessage.objects
        message = rows.filter(pk=message_id).first()
        if message is None or message.sent_at is not None:
            return False
        options: dict[str, Any] = {"task_id": message.task_id}
        if message.queue:
            options["queue"] = message.queue
        try:
            current_app.send_task(
                message.task,
                args=message.args,
                kwargs=message.kwargs,
                retry=True,
                retry_policy=QUICK_RETRY_POLICY,
                **options,
            )
        except Exception as e:  # the broker is away, or refused it: keep the row for the next try
            logger.warning("outbox message %s (%s): send failed: %s: %s", message.pk, message.task, type(e).__name__, e)
            OutboxMessage.objects.filter(pk=message.pk).update(
                attempts=F("attempts") + 1, last_error=f"{type(e).__name__}: {e}"[:2000]
            )
            return False
        OutboxMessage.objects.filter(pk=message.pk).update(
            sent_at=timezone.now(), attempts=F("attempts") + 1, last_error=""
        )
    return True


def outbox_resend_due(*, older_than_seconds: int | None = None, now: Any = None) -> dict[str, int]:
    """Send the messages still unsent ``older_than_seconds`` (default OUTBOX_RESEND_AFTER_SECONDS) after they were
    written, oldest first, at most RESEND_BATCH a call; returns how many were sent and how many failed again.

    The age keeps this clear of the send that follows each commit; run by beat (``outbox_resend_task``).
    """
    if older_than_seconds is None:
        older_than_seconds = settings.OUTBOX_RESEND_AFTER_SECONDS
    cutoff = (now or timezone.now()) - timedelta(seconds=older_than_seconds)
    due = list(
        OutboxMessage.objects.filter(sent_at__isnull=True, created_at__lte=cutoff)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)[:RESEND_BATCH]
    )
    done = {"sent": 0, "failed": 0}
    for message_id in due:
        if outbox_send(message_id=message_id):
            done["sent"] += 1
        elif OutboxMessage.objects.filter(pk=message_id, sent_at__isnull=True).exists():
            done["failed"] += 1
    if done["sent"] or done["failed"]:
        logger.warning("outbox: sent %(sent)d held-back messages, %(failed)d failed again", done)
    return done


def outbox_prune(*, older_than_days: int | None = None) -> int:
    """Delete sent messages older than ``older_than_days`` (default OUTBOX_KEEP_SENT_DAYS); returns how many."""
    days = settings.OUTBOX_KEEP_SENT_DAYS if older_than_days is None else older_than_days
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = OutboxMessage.objects.filter(sent_at__isnull=False, sent_at__lt=cutoff).delete()
    return deleted
