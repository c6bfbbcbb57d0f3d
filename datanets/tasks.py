"""Celery entry points for Datanets (queue ``default``): ids in, a service call out.

Late acks: a worker killed mid-check leaves the message to be redelivered, and ``contribution_check`` finds the
contribution already checked, or runs again over the same fields.
"""

from __future__ import annotations

from celery import shared_task

from .checks import contribution_check, contributions_checks_requeue
from .receipts import receipts_seal_batches


@shared_task(acks_late=True)
def contribution_check_task(contribution_id: int) -> None:
    contribution_check(contribution_id=contribution_id)


@shared_task
def contributions_checks_requeue_task() -> int:
    return contributions_checks_requeue()


@shared_task(acks_late=True)
def receipts_seal_batches_task() -> int:
    """Complete waiting receipts and seal them into anchored batches when a batch is full or old enough (beat)."""
    return len(receipts_seal_batches())
