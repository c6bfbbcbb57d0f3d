"""Celery wrappers around the attribution services: ids in, a service call out. ``attribution_*`` tasks are routed
to the ``attribution`` queue (CELERY_TASK_ROUTES), consumed by the inference worker unless dedicated workers run."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(acks_late=True)
def attribution_run_task(run_id: int) -> str | None:
    """Attribute one finished run and accrue its fee; a redelivered message finds the attribution finished."""
    attribution = services.run_attribute(run_id=run_id)
    return attribution.status if attribution is not None else None


# The name inference.services.run_finish queues (run_attribute_task): kept as an alias of the routed task.
run_attribute_task = attribution_run_task
