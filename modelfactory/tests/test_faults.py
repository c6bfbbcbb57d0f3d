"""Faults on real workers, in one run so that the model loads twice rather than five times: a worker SIGKILLed
mid-training leaves a job the reaper fails and a retry finishes; the retry's task delivered twice, to two workers at
once, trains once; a job cancelled through the API mid-training stops and keeps nothing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.urls import reverse
from rest_framework.test import APIClient

from datanets.storage import media_path
from modelfactory import services
from modelfactory.models import FineTuneJob, ModelVersion
from modelfactory.tasks import training_run_task
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, tiny_config
from openledger_web.testing import celery_worker_process

pytestmark = pytest.mark.slow
# Long enough to be killed mid-run after its first step is reported, short enough to retry to the end.
STEPS = 4

TINY = tiny_config()


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def _wait_for(job: FineTuneJob, done: Any, timeout: float = 240) -> FineTuneJob:
    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db()
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job #{job.pk} is {job.status} at step {job.step}; log: {job.log_tail[-5:]}")
        time.sleep(0.1)


def _worker(settings: Any, name: str) -> Any:
    return celery_worker_process(
        queues="training", name=name, timeout=90, MEDIA_ROOT=str(settings.MEDIA_ROOT), CELERY_TASK_LOG_LEVEL="INFO"
    )


def _received(task_id: str, *workers: str) -> int:
    """How many times ``workers`` logged receiving a message of ``task_id`` (each worker logs to its own file)."""
    logs = [Path(django_settings.DATA_DIR) / f"worker-{name}.log" for name in workers]
    return sum(log.read_text(errors="replace").count(f"[{task_id}] received") for log in logs if log.exists())


def _as(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _stored_adapters() -> list[Path]:
    return sorted(media_path("adapters").glob("*/*/*/adapter_model.safetensors"))


def _undelivered(task_id: str) -> int:
    """Messages of ``task_id`` still waiting in the Redis broker or held unacknowledged by a worker (acks_late: a
    message is acknowledged when its task returns)."""
    import redis

    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    needle = task_id.encode()
    queued = sum(m.count(needle) > 0 for key in client.scan_iter("training*") for m in client.lrange(key, 0, -1))
    return queued + sum(m.count(needle) > 0 for m in client.hvals("unacked"))


def test_a_killed_worker_a_double_delivery_and_a_cancellation_leave_no_job_stuck_and_nothing_twice(
    transactional_db: None, settings: Any
) -> None:
    # given a job training on a real worker
    owner = UserFactory()
    snapshot = frozen_snapshot(owner=owner)
    client = _as(owner)
    job = services.job_launch(
        owner=owner,
        name="doomed",
        base_model=default_base(),
        snapshots=[snapshot],
        config=TINY.with_changes(max_steps=STEPS),
    )
    with _worker(settings, "killed") as proc:
        job = _wait_for(job, lambda j: j.status == "running" and j.step >= 1)

        # when the worker and its pool process are SIGKILLed mid-run (its own session: the group is the worker)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    # then the job is left "running" with a heartbeat that no longer moves, until the reaper fails it
    job.refresh_from_db()
    assert job.status == "running" and 1 <= job.step < STEPS
    settings.TRAINING_STALE_SECONDS = 2
    time.sleep(2.5)
    assert services.jobs_reap_stale() == 1
    job.refresh_from_db()
    assert job.status == "failed" and job.error.startswith("worker lost") and job.finished_at
    assert not ModelVersion.objects.exists() and _stored_adapters() == []
    settings.TRAINING_STALE_SECONDS = django_settings.TRAINING_STALE_SECONDS

    with _worker(settings, "dup-a"), _worker(settings, "dup-b"):
        # when its owner retries it through the API and the retry's message is delivered twice (same task id) to
        # two workers
        retried = client.post(reverse("modelfactory-api:job_retry", args=[job.pk]))
        assert retried.status_code == 200 and retried.json()["status"] == "queued"
        job.refresh_from_db()
        training_run_task.apply_async(args=[job.pk], task_id=job.celery_task_id)
        # both copies reach a worker: counted in the workers' logs, since a copy whose task finds the job already
        # claimed is acknowledged at once and may leave the broker before anyone could count it there
        deadline = time.monotonic() + 60
        while (received := _received(job.celery_task_id, "dup-a", "dup-b")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert received == 2
        job = _wait_for(job, lambda j: j.is_finished)
        deadline = time.monotonic() + 60
        while django_settings.BROKER_KIND == "redis" and _undelivered(job.celery_task_id):
            assert time.monotonic() < deadline, "a delivery was never acknowledged"
            time.sleep(0.2)

        # and a long job is cancelled through the API while it trains
        launched = client.post(
            reverse("modelfactory-api:job_launch"),
            {"name": "long", "snapshots": [snapshot.pk], "config": TINY.with_changes(max_steps=500).to_dict()},
            format="json",
        )
        long = _wait_for(FineTuneJob.objects.get(pk=launched.json()["id"]), lambda j: j.step >= 1)
        cancelled = client.post(reverse("modelfactory-api:job_cancel", args=[long.pk]))
        long = _wait_for(long, lambda j: j.is_finished)

    # then the retried job trained to the end once: one more claim, one version, one stored adapter
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    assert (job.attempts, job.step, job.total_steps, job.error) == (2, STEPS, STEPS, "")
    assert ModelVersion.objects.filter(job=job).count() == 1 and len(_stored_adapters()) == 1
    assert not services._checkpoint_dir(job).exists()

    # and the cancelled job stopped within a step or two and kept nothing
    assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"] is True
    assert long.status == FineTuneJob.Status.CANCELLED and 1 <= long.step < 500
    assert not ModelVersion.objects.filter(job=long).exists() and len(_stored_adapters()) == 1
    assert not services._checkpoint_dir(long).exists()
    assert list(media_path("tmp/adapters").glob(f"*job-{long.pk}-*")) == []
    again = client.post(reverse("modelfactory-api:job_cancel", args=[long.pk]))
    assert again.status_code == 400 and "already cancelled" in again.json()["detail"]
