"""Celery wrappers for inference: ids in, a service call out.

``inference.tasks.*`` route to the ``inference`` queue, whose worker hosts the engine with a thread pool. The beat
tasks (reaping lost runs, sealing batches) carry explicit names outside that prefix so they run on the default queue:
the inference worker is the very thing the reaper watches, and may be the one that was lost.
"""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_generate_task(run_id: int) -> None:
    """Generate one run's answer; a redelivered message finds the run claimed or finished and does nothing."""
    from .engine_host import run_generate

    run_generate(run_id=run_id)


@shared_task(name="inference.runs_reap_stale_task", acks_late=True)
def runs_reap_stale_task() -> int:
    """Fail runs whose inference worker was lost (run by celery beat)."""
    return services.runs_reap_stale()


@shared_task(name="inference.runs_seal_batch_task", acks_late=True)
def runs_seal_batch_task() -> int:
    """Seal finished runs into anchored batches when a batch is full or old enough (run by celery beat)."""
    return len(services.runs_seal_batches())
