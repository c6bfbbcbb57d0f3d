"""Worker liveness: each Celery worker's main process touches its WorkerHeartbeat row on a timer."""

from __future__ import annotations

import logging
import os
import threading

from celery.signals import worker_ready, worker_shutdown

log = logging.getLogger(__name__)
_stop = threading.Event()


def _beat(hostname: str, queues: list[str]) -> None:
    from django.conf import settings
    from django.db import close_old_connections

    from .services import worker_heartbeat_touch

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


@worker_ready.connect
def _start_heartbeat(sender, **kwargs) -> None:  # type: ignore[no-untyped-def]
    consumer = sender
    queues = sorted(q.name for q in consumer.task_consumer.queues) if consumer.task_consumer else []
    _stop.clear()
    threading.Thread(target=_beat, args=(consumer.hostname, queues), daemon=True, name="heartbeat").start()


@worker_shutdown.connect
def _stop_heartbeat(sender, **kwargs) -> None:  # type: ignore[no-untyped-def]
    _stop.set()
    from .services import worker_heartbeat_forget

    try:
        worker_heartbeat_forget(hostname=sender.hostname)
    except Exception:
        log.exception("could not remove worker heartbeat")
