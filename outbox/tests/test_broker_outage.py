"""A broker outage loses nothing and breaks nothing: a real Redis that this test starts on its own port is killed
(SIGKILL) for OUTAGE_SECONDS while uploads, a streamed answer and a training job run, then started again on its data.

No request answers 500, a retried upload is not stored twice, every worker is alive and consuming afterwards, and the
work queued before, during and after the outage is done exactly once. The outage lasts the issue's 30 s: long
enough for the workers' reconnect backoff (2, 4, 6 s...) to go round several times.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from datanets.models import Contribution
from datanets.tests.factories import DatanetFactory, texts
from inference import services as inference_services
from inference import streams
from inference.models import InferenceRun
from inference.tests.runs_support import clear_rate_limits
from ledger.testing import free_port
from modelfactory import services as modelfactory_services
from modelfactory.models import FineTuneJob, ModelVersion
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, tiny_config
from openledger_web.models import WorkerHeartbeat
from openledger_web.testing import celery_worker_process
from outbox import services
from outbox.models import OutboxMessage
from outbox.testing import RedisServer, celery_broker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

OUTAGE_SECONDS = 30
CHECK_TASK, GENERATE_TASK = "datanets.tasks.contribution_check_task", "inference.tasks.run_generate_task"
STORY = [{"role": "user", "content": "Tell me a long story about a brave knight, a dragon and a lost city."}]


@pytest.fixture
def redis_server(tmp_path: Path, settings: Any) -> Iterator[RedisServer]:
    """A Redis of this test's own that every part of the app uses: this process's Celery app and stream reader, and
    the workers it starts."""
    with RedisServer(port=free_port(), folder=tmp_path / "redis") as server, celery_broker(server.url):
        settings.CELERY_BROKER_URL = server.url
        streams._client_made.cache_clear()
        clear_rate_limits()
        yield server
    streams._client_made.cache_clear()


def _upload(client: APIClient, slug: str, content: bytes, name: str) -> Any:
    return client.post(
        reverse("datanets_api:contribution_upload", args=[slug]),
        {"file": SimpleUploadedFile(name, content), "licence": "CC0-1.0"},
        format="multipart",
    )


def _wait(what: str, done: Any, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done within {timeout} s")
        time.sleep(0.2)


def test_a_killed_and_restarted_broker_loses_nothing_breaks_nothing_and_does_everything_once(
    redis_server: RedisServer, settings: Any, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    owner = UserFactory()
    datanet = DatanetFactory()
    snapshot = frozen_snapshot(owner=owner)
    base = default_base()
    client = APIClient()
    client.force_authenticate(owner)
    env = {"MEDIA_ROOT": str(settings.MEDIA_ROOT), "CELERY_TASK_LOG_LEVEL": "INFO"}  # the broker: the fixture's
    logs = Path(django_settings.DATA_DIR)
    with (
        celery_worker_process(queues="default,training", name="outage-main", concurrency=2, timeout=120, **env) as main,
        celery_worker_process(
            queues="inference",
            name="outage-inference",
            pool="threads",
            concurrency=4,
            timeout=120,
            INFERENCE_HEARTBEAT_SECONDS="1",
            **env,
        ) as inference,  # fmt: skip
    ):
        # given a training job and a streamed answer under way, and an upload taken
        job = modelfactory_services.job_launch(
            owner=owner, name="through-the-outage", base_model=base, snapshots=[snapshot],
            config=tiny_config(max_steps=10),
        )  # fmt: skip
        before = _upload(client, datanet.slug, texts("a record sent before the outage"), "before.jsonl")
        assert before.status_code == 201, before.content
        _wait("training's first step", lambda: FineTuneJob.objects.get(pk=job.pk).step >= 1)
        story = inference_services.run_submit(user=owner, version=None, messages=STORY, options={"max_tokens": 200})
        events = streams.run_events(run_id=story.public_id, timeout_s=240)
        first = next(e for e in events if e.type == streams.TOKEN)

        # when the broker is killed
        redis_server.kill()
        down_at, killed_at = time.monotonic(), timezone.now()
        # then uploads during the outage answer 201, a client's retry of one answers 200 with the first, and a new
        # question is taken; the streamed answer goes on (through the database)
        during = _upload(client, datanet.slug, texts("a record sent while the broker is down"), "during.jsonl")
        retry = _upload(client, datanet.slug, texts("a record sent while the broker is down"), "during.jsonl")
        assert during.status_code == 201, during.content
        assert (retry.status_code, retry.json()["id"], retry.json()["replayed"]) == (200, during.json()["id"], True)
        asked = inference_services.run_submit(user=owner, version=None, messages=STORY, options={"max_tokens": 8})
        held = OutboxMessage.objects.filter(sent_at__isnull=True, task__in=(CHECK_TASK, GENERATE_TASK))
        assert sorted(held.values_list("args", flat=True)) == sorted([[during.json()["id"]], [asked.pk]])
        text = first.text + "".join(e.text for e in events if e.type == streams.TOKEN)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        assert main.poll() is None and inference.poll() is None, "a worker died with the broker"

        # when it comes back on its data, and beat sends what the outage held back
        redis_server.start()
        back_at = timezone.now()
        _wait("the held-back messages", lambda: services.outbox_resend_due(older_than_seconds=0)["failed"] == 0)
        after = _upload(client, datanet.slug, texts("a record sent after the outage"), "after.jsonl")
        assert after.status_code == 201, after.content

        # then everything queued is done, each piece once
        uploads = Contribution.objects.filter(datanet=datanet)
        _wait("the checks", lambda: not uploads.exclude(check_status="done").exists())
        _wait("the training job", lambda: FineTuneJob.objects.get(pk=job.pk).is_finished)
        # its message came through the lost connection: acknowledging it fails, and must not stop the worker
        main_log = logs / "worker-outage-main.log"
        task_id = FineTuneJob.objects.get(pk=job.pk).celery_task_id
        _wait("the training task's return", lambda: f"[{task_id}] succeeded" in main_log.read_text())
        time.sleep(1)
        _wait("the question", lambda: InferenceRun.objects.get(pk=asked.pk).is_finished)
        _wait("both workers' heartbeats", lambda: WorkerHeartbeat.objects.filter(last_seen__gt=back_at).count() == 2)
        assert main.poll() is None and inference.poll() is None

    story.refresh_from_db()
    assert story.status == "succeeded" and text == story.answer, story.error
    assert story.finished_at > killed_at, "the answer ended before the outage: nothing streamed through it"
    asked.refresh_from_db()
    assert (asked.status, asked.attempts) == ("succeeded", 1), asked.error
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error) == ("succeeded", 1, ""), job.error
    assert ModelVersion.objects.filter(job=job).count() == 1
    assert uploads.count() == 3
    assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()
    # each contribution's checks ran once: one success per message in the worker's log, none failed
    log = (logs / "worker-outage-main.log").read_text()
    ids = set(uploads.values_list("pk", flat=True))
    checks = [m for m in OutboxMessage.objects.filter(task=CHECK_TASK) if m.args[0] in ids]
    assert len(checks) == 3
    for message in checks:
        assert len(re.findall(rf"contribution_check_task\[{message.task_id}\] succeeded", log)) == 1, message.args
    assert "Unrecoverable error" not in log
    assert "Unrecoverable error" not in (logs / "worker-outage-inference.log").read_text()
