"""The transactional outbox: a message commits with the write that needs it and reaches the broker once it can."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from datanets.models import Contribution
from datanets.tests.factories import DatanetFactory, texts
from ledger.testing import free_port
from outbox import services
from outbox.models import OutboxMessage
from outbox.selectors import outbox_backlog
from outbox.testing import celery_broker

CHECK_TASK = "datanets.tasks.contribution_check_task"


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def _queued(queue: str = "default") -> list[bytes]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    return client.lrange(queue, 0, -1)


def _drain(queue: str = "default") -> None:
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(queue)


def _as(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


pytestmark = pytest.mark.skipif(settings.BROKER_KIND != "redis", reason="counts messages in the Redis broker")


@pytest.mark.django_db(transaction=True)
def test_an_upload_answers_201_when_the_broker_is_down_and_its_checks_are_sent_once_it_is_back() -> None:
    # before the outbox this answered 500 after the upload had committed (Django's robust on_commit error path read a
    # functools.partial's __qualname__), so a client's retry stored it twice
    _drain()
    datanet = DatanetFactory()
    client = _as(UserFactory())
    with celery_broker(f"redis://127.0.0.1:{free_port()}/0"):  # nothing listens there
        response = client.post(
            reverse("datanets_api:contribution_upload", args=[datanet.slug]),
            {"file": SimpleUploadedFile("a.jsonl", texts("one record of several words")), "licence": "CC0-1.0"},
            format="multipart",
        )
    assert response.status_code == 201, response.content
    contribution = Contribution.objects.get()
    message = OutboxMessage.objects.get()
    assert (message.task, message.args, message.sent_at) == (CHECK_TASK, [contribution.pk], None)
    assert message.attempts == 1 and "Error" in message.last_error
    assert _queued() == []

    # when the broker is back, beat's resend sends it, once
    assert services.outbox_resend_due(older_than_seconds=0) == {"sent": 1, "failed": 0}
    assert services.outbox_resend_due(older_than_seconds=0) == {"sent": 0, "failed": 0}
    message.refresh_from_db()
    assert message.sent_at is not None and message.last_error == ""
    assert len(_queued()) == 1 and message.task_id.encode() in _queued()[0]


@pytest.mark.django_db(transaction=True)
def test_a_message_is_sent_right_after_commit_and_never_for_a_rolled_back_write() -> None:
    _drain()
    with transaction.atomic():
        kept = services.enqueue_on_commit(CHECK_TASK, 1)
        assert _queued() == []  # not before the commit
    with pytest.raises(RuntimeError), transaction.atomic():
        services.enqueue_on_commit(CHECK_TASK, 2)
        raise RuntimeError("the business write failed")
    kept.refresh_from_db()
    assert kept.sent_at is not None and kept.attempts == 1
    assert list(OutboxMessage.objects.values_list("args", flat=True)) == [[1]]
    assert len(_queued()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_named_queue_and_task_id_are_kept() -> None:
    _drain("training")
    services.enqueue_on_commit("modelfactory.tasks.training_run_task", 7, queue="training", task_id="job-7-task")
    (body,) = _queued("training")
    assert b"job-7-task" in body


@pytest.mark.django_db
def test_healthz_reports_messages_left_unsent_too_long(client: Client, settings: Any) -> None:
    settings.OUTBOX_STALE_SECONDS = 60
    OutboxMessage.objects.create(task=CHECK_TASK, args=[1], created_at=timezone.now() - timedelta(seconds=61))
    OutboxMessage.objects.create(task=CHECK_TASK, args=[2])
    outbox = client.get("/healthz").json()["components"]["outbox"]
    assert (outbox["ok"], outbox["unsent"], outbox["stale"]) == (False, 2, 1)
    assert "unsent for over 60 s" in outbox["error"]
    assert outbox_backlog(older_than_seconds=3600)["stale"] == 0


@pytest.mark.django_db
def test_the_admin_lists_unsent_messages(admin_client: Client) -> None:
    OutboxMessage.objects.create(task=CHECK_TASK, args=[41], last_error="ConnectionError: refused")
    response = admin_client.get("/admin/outbox/outboxmessage/?sent=no")
    assert response.status_code == 200
    assert CHECK_TASK in response.content.decode() and "ConnectionError: refused" in response.content.decode()


@pytest.mark.django_db
def test_sent_messages_are_pruned_after_the_keep_period() -> None:
    old = OutboxMessage.objects.create(task=CHECK_TASK, sent_at=timezone.now() - timedelta(days=8))
    OutboxMessage.objects.create(task=CHECK_TASK, sent_at=timezone.now())
    OutboxMessage.objects.create(task=CHECK_TASK, created_at=timezone.now() - timedelta(days=30))  # unsent: kept
    assert services.outbox_prune(older_than_days=7) == 1
    assert not OutboxMessage.objects.filter(pk=old.pk).exists()
