"""The Celery app: queues default, chain, training, inference and attribution; JSON only; late acks, prefetch 1."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openledger_web.settings")

app = Celery("openledger_web")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in ("default", "chain", "training", "inference", "attribution")]
app.autodiscover_tasks()
