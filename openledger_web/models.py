from __future__ import annotations

from django.db import models
from django.utils import timezone


class WorkerHeartbeat(models.Model):
    """One row per Celery worker, touched every WORKER_HEARTBEAT_SECONDS: how /healthz knows who is alive.

    A row rather than a broker broadcast, so that the answer is the same on Redis and on the filesystem broker.
    """

    hostname = models.CharField(max_length=255, unique=True)
    queues = models.JSONField(default=list)
    pid = models.IntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)
    # what it announced on its last beat: modelfactory.selectors.worker_devices() (CPU cores and memory, CUDA GPUs
    # with name and memory, the data-parallel processes it runs), and for a training worker the throughput it
    # measured on its recent jobs, by base model id
    devices = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.hostname
