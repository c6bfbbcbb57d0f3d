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


# Deliberately not named attribution_*: that prefix routes to the attribution queue, whose backlog (or lost worker)
# is what this task recovers from. It runs on the default queue.
@shared_task(acks_late=True)
def runs_attribution_retry_task() -> dict[str, int]:
    """Retry failed attributions whose backoff is over and requeue lost ones (run by celery beat)."""
    return services.run_attributions_retry()
