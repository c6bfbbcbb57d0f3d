"""The Celery app: queues default, chain, training, training-gpu (jobs that need CUDA; consumed only by workers that
have it, ``signals``), inference and attribution; JSON only; late acks, prefetch 1."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openledger_web.settings")

logger = logging.getLogger(__name__)

app = Celery("openledger_web")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [
    Queue(name) for name in ("default", "chain", "training", "training-gpu", "inference", "attribution")
]
app.autodiscover_tasks()


class Consumer(CeleryConsumer):
    """Celery's consumer, made to survive losing the broker while a late-acked task runs (CELERY_WORKER_CONSUMER).

    When the broker goes away mid-task, Celery closes the lost connection; kombu's Redis channel then tries to put
    the unacknowledged message back through a transport that collect() already detached, and raises AttributeError.
    Celery counts that as unrecoverable and shuts the worker down (the inference worker, with the engine's threads
    still running, then aborted with status -6). Closing a dead connection is best effort, and so is acknowledging,
    once it finishes, a task whose message came through the lost connection (the same AttributeError, raised from
    the ack): the message stays in Redis's unacked set and is redelivered after the visibility timeout, which every
    task here tolerates (it finds its row claimed or finished and does nothing).
    """

    def on_connection_error_after_connected(self, exc: Any) -> None:
        try:
            super().on_connection_error_after_connected(exc)
        except Exception:
            logger.warning("closing the lost broker connection failed; reconnecting anyway", exc_info=True)
            self.connection = None

    def update_strategies(self) -> None:
        # The task strategies built here hand these errors to every request: an ack or reject that raises one is
        # logged ("Couldn't ack") instead of stopping the worker. Only the requests get AttributeError; the
        # consumer's own loop still treats it as the bug it would be there.
        errors = self.connection_errors
        self.connection_errors = (*errors, AttributeError)
        try:
            super().update_strategies()
        finally:
            self.connection_errors = errors
