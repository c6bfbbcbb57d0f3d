"""Writes of the project package: each Celery worker's heartbeat row."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from modelfactory.config import TRAINING_GPU_QUEUE, TRAINING_QUEUE
from modelfactory.selectors import worker_devices
from modelfactory.services import training_worker_touch

from .models import WorkerHeartbeat


def worker_heartbeat_touch(*, hostname: str, queues: list[str], pid: int, fresh: bool = False) -> None:
    """The worker is alive, with its devices (``modelfactory.selectors.worker_devices``); a training worker tells
    ModelFactory too (its device and processes, for the estimates and the launch checks), and on its first beat
    (``fresh``) that it holds no model yet. A training worker's devices carry the training throughput it measured
    (``throughput``: train tokens/s and jobs by base model id; empty before its first job)."""
    devices: dict[str, Any] = worker_devices()
    if TRAINING_QUEUE in queues or TRAINING_GPU_QUEUE in queues:
        row = training_worker_touch(hostname=hostname, fresh=fresh, devices=devices)
        devices["throughput"] = {
            base_id: {"train_tokens_per_s": float(t.get("train_tokens_per_s", 0.0)), "jobs": int(t.get("jobs", 0))}
            for base_id, t in sorted(row.throughput.items())
        }
        devices["measured_at"] = row.measured_at.isoformat() if row.measured_at else None
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname, defaults={"queues": queues, "pid": pid, "last_seen": timezone.now(), "devices": devices}
    )


def worker_heartbeat_forget(*, hostname: str) -> None:
    WorkerHeartbeat.objects.filter(hostname=hostname).delete()
