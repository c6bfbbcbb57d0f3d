"""Writes of the project package: each Celery worker's heartbeat row."""

from __future__ import annotations

from django.utils import timezone

from modelfactory.services import training_worker_touch

from .models import WorkerHeartbeat


def worker_heartbeat_touch(*, hostname: str, queues: list[str], pid: int, fresh: bool = False) -> None:
    """The worker is alive; a ``training`` worker tells ModelFactory too (its device, for the estimates), and on
    its first beat (``fresh``) that it holds no model yet."""
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname, defaults={"queues": queues, "pid": pid, "last_seen": timezone.now()}
    )
    if "training" in queues:
        training_worker_touch(hostname=hostname, fresh=fresh)


def worker_heartbeat_forget(*, hostname: str) -> None:
    WorkerHeartbeat.objects.filter(hostname=hostname).delete()
