"""Celery wrappers around the job services: ids in, a service call out. ``training_*`` tasks are routed to the
``training`` queue by name (CELERY_TASK_ROUTES), whose workers run one job at a time per device."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import revocations, services


@shared_task(bind=True, acks_late=True)
def training_run_task(self: Any, job_id: int) -> int | None:
    """Train one job; a redelivered message finds the job claimed or finished and does nothing."""
    version = services.job_run(job_id=job_id, worker=self.request.hostname or "unknown")
    return version.pk if version is not None else None


# Deliberately not named training_*: that prefix routes to the training queue, whose worker is busy with (or lost
# with) the very jobs this task watches. It runs on the default queue.
@shared_task(acks_late=True)
def jobs_reap_stale_task() -> int:
    """Fail running jobs whose worker stopped beating (run by celery beat)."""
    return services.jobs_reap_stale()


# Not training_*: the default queue, so a busy training worker never holds back an owner's e-mail
@shared_task(acks_late=True)
def version_notices_email_task(notice_ids: list[int]) -> int:
    """E-mail the owners of versions a revocation reached (each notice once)."""
    return revocations.version_notices_email(notice_ids=notice_ids)
