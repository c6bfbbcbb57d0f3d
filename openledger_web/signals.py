"""Worker liveness: each Celery worker's main process touches its WorkerHeartbeat row on a timer. And the
``training-gpu`` queue: a training worker consumes it when its machine has CUDA, and no worker without CUDA does."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

from modelfactory.config import TRAINING_GPU_QUEUE, TRAINING_QUEUE
from modelfactory.selectors import training_device

from .services import worker_heartbeat_forget, worker_heartbeat_touch

log = logging.getLogger(__name__)
_stop = threading.Event()


def _beat(hostname: str, queues: list[str]) -> None:
    fresh = True
    while not _stop.is_set():
        try:
            worker_heartbeat_touch(hostname=hostname, queues=queues, pid=os.getpid(), fresh=fresh)
            fresh = False
        except Exception:  # the database may be restarting; the next beat tries again
            log.exception("worker heartbeat failed")
        finally:
            close_old_connections()
        _stop.wait(settings.WORKER_HEARTBEAT_SECONDS)


def gpu_queue_change(queues: list[str], *, cuda: bool) -> tuple[str, str] | None:
    """What a worker consuming ``queues`` does about ``training-gpu``: ("add", name) for a training worker on a CUDA
    machine, ("drop", name) for a worker without CUDA that was told to consume it, None otherwise."""
    if cuda and TRAINING_QUEUE in queues and TRAINING_GPU_QUEUE not in queues:
        return ("add", TRAINING_GPU_QUEUE)
    if not cuda and TRAINING_GPU_QUEUE in queues:
        return ("drop", TRAINING_GPU_QUEUE)
    return None


@celeryd_after_setup.connect
def _gpu_queue(sender: str, instance: Any, **kwargs: Any) -> None:
    # CUDA as the training processes will find it (an NVIDIA driver exposing a GPU that CUDA_VISIBLE_DEVICES does
    # not hide: modelfactory.selectors.training_device), told without importing torch in the worker's main process
    queues = instance.app.amqp.queues
    change = gpu_queue_change(sorted(queues.consume_from or queues), cuda=training_device()["device"] == "cuda")
    if change is None:
        return
    action, name = change
    if action == "add":
        queues.select_add(name)
        log.info("%s has CUDA: it consumes %s too", sender, name)
    else:
        queues.deselect(name)
        log.warning("%s has no CUDA GPU: it does not consume %s, whose jobs need one", sender, name)


@worker_ready.connect
def _start_heartbeat(sender, **kwargs) -> None:  # type: ignore[no-untyped-def]
    consumer = sender
    queues = sorted(q.name for q in consumer.task_consumer.queues) if consumer.task_consumer else []
    _stop.clear()
    threading.Thread(target=_beat, args=(consumer.hostname, queues), daemon=True, name="heartbeat").start()


@worker_shutdown.connect
def _stop_heartbeat(sender, **kwargs) -> None:  # type: ignore[no-untyped-def]
    _stop.set()

    try:
        worker_heartbeat_forget(hostname=sender.hostname)
    except Exception:
        log.exception("could not remove worker heartbeat")
