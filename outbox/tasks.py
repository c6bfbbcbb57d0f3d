"""Celery entry points for the outbox (queue ``default``), run by beat."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(acks_late=True)
def outbox_resend_task() -> dict[str, int]:
    """Send the messages a broker outage held back; sending twice is harmless (see services)."""
    done = services.outbox_resend_due()
    services.outbox_prune()
    return done
