"""Writes of the project package: each Celery worker's heartbeat row."""

from __future__ import annotations

from django.utils import timezone

from .models import WorkerHeartbeat


def worker_heartbeat_touch(*, hostname: str, queues: list[str], pid: int) -> None:
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname, defaults={"queues": queues, "pid": pid, "last_seen": timezone.now()}
    )


def worker_heartbeat_forget(*, hostname: str) -> None:
    WorkerHeartbeat.objects.filter(hostname=hostname).delete()
