"""An inference worker killed mid-run (SIGKILL) loses no accepted run: it is redelivered and answered, or failed with a
message by the reaper; it never stays running."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db import transaction

from inference import services, streams
from inference.models import InferenceRun
from modelfactory.tests.factories import UserFactory, default_base
from openledger_web.testing import celery_worker_process

from .runs_support import clear_rate_limits

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STORY = [{"role": "user", "content": "Tell me a very long story about a brave knight, a dragon and a lost city."}]


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    clear_rate_limits()


def first_token(run: InferenceRun) -> None:
    for event in streams.run_events(run_id=run.public_id, timeout_s=240):
        assert not event.is_final, f"the run ended before it could be killed: {event}"
        if event.type == streams.TOKEN:
            return
    raise AssertionError("no token within 240 s")


def wait_finished(run: InferenceRun, timeout: float = 240) -> InferenceRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.is_finished:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run still {run.status} after {timeout} s")


def test_a_killed_thread_pool_worker_leaves_no_run_running_the_reaper_fails_it_with_a_message(settings) -> None:
    owner = UserFactory()
    default_base()
    with celery_worker_process(
        queues="inference", name="h3-killed", pool="threads", concurrency=2, timeout=120,
        INFERENCE_HEARTBEAT_SECONDS="1",
    ) as worker:  # fmt: skip
        run = services.run_submit(user=owner, version=None, messages=STORY, options={"max_tokens": 500})
        first_token(run)
        run.refresh_from_db()
        assert run.status == InferenceRun.Status.RUNNING and run.claimed_by
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)

    settings.INFERENCE_STALE_SECONDS = 2
    time.sleep(3)  # the heartbeat stopped with the worker
    assert services.runs_reap_stale() == 1

    run.refresh_from_db()
    assert run.status == InferenceRun.Status.FAILED
    assert run.error == "the inference worker was lost; please retry"
    final = list(streams.run_events(run_id=run.public_id, timeout_s=10))[-1]
    assert final.type == streams.ERROR and final.data["message"] == run.error
    # the message the dead worker held, if ever redelivered, finds the run finished and does nothing
    assert services.run_claim(run_id=run.pk, worker="elsewhere:1") is None


def test_a_killed_pool_child_has_its_run_redelivered_and_answered(settings) -> None:
    owner = UserFactory()
    default_base()
    with celery_worker_process(
        queues="inference", name="h3-redelivered", pool="prefork", concurrency=1, timeout=120,
        INFERENCE_HEARTBEAT_SECONDS="1",
    ):  # fmt: skip
        with transaction.atomic():
            run = services.run_submit(user=owner, version=None, messages=STORY, options={"max_tokens": 24})
        first_token(run)
        run.refresh_from_db()
        child = int(run.claimed_by.rpartition(":")[2])
        os.kill(child, signal.SIGKILL)  # the pool child dies; the worker rejects its message back to the queue

        run = wait_finished(run)

    assert run.status == InferenceRun.Status.SUCCEEDED, run.error
    assert run.attempts == 2  # taken over at once: the claimant was a dead process on this machine
    assert run.answer and run.run_hash
    # the stream did not repeat what the first attempt had already sent
    events = list(streams.run_events(run_id=run.public_id, timeout_s=10))
    assert "".join(e.text for e in events if e.type == streams.TOKEN) == run.answer
    assert events[-1].type == streams.DONE
