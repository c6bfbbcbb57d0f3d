"""Celery entry point for closing accruals into reward epochs (imported through CELERY_IMPORTS; default queue)."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(acks_late=True)
def rewards_epoch_close_task() -> dict[str, int | None]:
    """The beat's close; a redelivered message finds the accruals already closed."""
    result = services.rewards_epoch_close()
    return {
        "epoch": result.epoch.number if result.epoch else None,
        "accruals": result.accruals,
        "waiting_users": result.waiting_users,
    }
