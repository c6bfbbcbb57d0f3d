"""The transactional outbox for Celery messages: a message is a row written in the business write's transaction."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


def _task_id() -> str:
    return str(uuid.uuid4())


class OutboxMessage(models.Model):
    """One Celery message to send once its transaction commits: the task's name, its JSON arguments, and the
    publishing options. ``sent_at`` is set once the broker took it; until then the beat task sends it again.

    ``task_id`` is fixed when the row is written, so every (re)send of one row carries the same Celery task id.
    """

    task = models.CharField(max_length=200, help_text="The Celery task's registered name")
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=100, blank=True, help_text="Empty: the task's route from CELERY_TASK_ROUTES")
    task_id = models.CharField(max_length=255, default=_task_id)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Sends tried, successful or not")
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ("-created_at", "-pk")
        indexes = [
            # the beat task and /healthz look only at what is still unsent: a small partial index
            models.Index(fields=("created_at",), condition=Q(sent_at__isnull=True), name="outbox_unsent_created"),
        ]

    def __str__(self) -> str:
        return f"{self.task}{tuple(self.args)!r} ({'sent' if self.sent_at else 'unsent'})"
