"""Celery wrappers for inference: ids in, a service call out.

``inference.tasks.*`` route to the ``inference`` queue, whose workers host the engine with a thread pool; a run's
message goes to one worker's own queue (``routing``). The beat
tasks (reaping lost runs, sealing batches) carry explicit names outside that prefix so they run on the default queue:
the inference worker is the very thing the reaper watches, and may be the one that was lost.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import celeryd_after_setup

from . import routing, services
from .engine_host import run_generate


@celeryd_after_setup.connect
def add_own_inference_queue(sender: str, instance: Any, **kwargs: Any) -> None:
    """A worker that consumes the shared ``inference`` queue also consumes ``inference.<its node name>``, where
    ``routing`` sends the runs of the adapters it is home to."""
    queues = instance.app.amqp.queues
    selected = queues.consume_from or {}
    if routing.SHARED_QUEUE in selected:
        queues.select_add(routing.own_queue(sender))


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_generate_task(self: Any, run_id: int) -> None:
    """Generate one run's answer; a redelivered message finds the run claimed or finished and does nothing."""
    run_generate(run_id=run_id, node=self.request.hostname or "")


@shared_task(name="inference.runs_reap_stale_task", acks_late=True)
def runs_reap_stale_task() -> int:
    """Send runs whose inference worker was lost to another live one, or fail them (run by celery beat)."""
    return services.runs_reap_stale()


@shared_task(name="inference.runs_seal_batch_task", acks_late=True)
def runs_seal_batch_task() -> int:
    """Seal finished runs into anchored batches when a batch is full or old enough (run by celery beat)."""
    return len(services.runs_seal_batches())
