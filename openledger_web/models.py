from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


class User(AbstractUser):
    """A person. Everyone is a contributor; curators are global (this flag) or per Datanet; staff administer."""

    is_global_curator = models.BooleanField(
        default=False, help_text="May curate every Datanet, not only those that name this user a curator."
    )

    @property
    def primary_wallet(self) -> Wallet | None:
        return self.wallets.order_by("-linked_at").first()


class WorkerHeartbeat(models.Model):
    """One row per Celery worker, touched every WORKER_HEARTBEAT_SECONDS: how /healthz knows who is alive.

    A row rather than a broker broadcast, so that the answer is the same on Redis and on the filesystem broker.
    """

    hostname = models.CharField(max_length=255, unique=True)
    queues = models.JSONField(default=list)
    pid = models.IntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.hostname
