"""Failed and lost attributions are retried, a bounded number of times, with backoff, by the beat task; a permanent
failure is not retried; a retried attribution credits its run exactly once.

A real (tiny) training lineage (``test_answer_attribution.build_lineage``, its first version only: these tests read
no other) gives a version with a real index. Faults are injected once (``run_score`` raising, the index folder moved
away for a moment); every retry goes through the real code: ``run_attributions_retry`` (the beat task's service)
called directly, then the task function it queues, or a real worker on the attribution queue (last: it commits and
flushes the database).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, OperationalError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from attribution import services, tasks
from attribution.features import FeatureIndexError
from attribution.models import RunAttribution
from attribution.spans import SpanIndexError
from attribution.tests.test_answer_attribution import ALICE_FACTS, Lineage, make_run, module_lineage
from datanets.storage import media_path
from rewards.models import RewardAccrual
from rewards.services import AlreadyAccrued, run_accrue
from rewards.split import REWARD_POLICY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lineage(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any) -> Iterator[Lineage]:
    with module_lineage(django_db_blocker, tmp_path_factory, with_merge=False, with_child=False) as built:
        yield built


@pytest.fixture
def media_root(lineage: Lineage, settings: Any) -> Any:
    settings.MEDIA_ROOT = str(lineage.media)
    return lineage.media


def _alice_run(lineage: Lineage) -> Any:
    fact = ALICE_FACTS[0]
    return make_run(lineage, question=fact["prompt"], answer=fact["response"])


def _flaky_run_score(monkeypatch: pytest.MonkeyPatch, failures: int, exc: BaseException) -> list[int]:
    """``run_score`` raising ``exc`` on its first ``failures`` calls, then the real one."""
    real, calls = services.run_score, []

    def flaky(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= failures:
            raise exc
        return real(**kwargs)

    monkeypatch.setattr(services, "run_score", flaky)
    return calls


def _panel(run: Any) -> tuple[int, str]:
    response = Client().get(reverse("attribution:run_panel", args=[run.public_id]))
    return response.status_code, response.content.decode()


def _accruals(run: Any) -> list[tuple[str, int | None, int]]:
    return sorted((a.recipient_kind, a.contribution_id, int(a.amount)) for a in RewardAccrual.objects.filter(run=run))


def test_a_transient_failure_is_retried_by_the_beat_and_credits_exactly_once(
    lineage: Lineage,
    db: None,
    media_root: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    run = _alice_run(lineage)
    calls = _flaky_run_score(monkeypatch, failures=1, exc=OperationalError("server closed the connection unexpectedly"))

    assert tasks.attribution_run_task(run.pk) == "failed"

    failed = RunAttribution.objects.get(run=run)
    assert failed.status == RunAttribution.Status.FAILED and failed.attempts == 1
    assert failed.retry_scheduled and not failed.is_finished
    assert "OperationalError" in failed.error and "attempt 1 of 5" in failed.error
    assert failed.next_attempt_at == failed.finished_at + timedelta(seconds=60)
    assert not RewardAccrual.objects.filter(run=run).exists()
    status, html = _panel(run)  # still being worked on: the panel keeps polling
    assert status == 200 and "being computed" in html

    with django_capture_on_commit_callbacks() as queued:  # not due yet
        done = services.run_attributions_retry(now=failed.next_attempt_at - timedelta(seconds=1))
    assert done == {"lost": 0, "unqueued": 0, "requeued": 0} and not queued
    with django_capture_on_commit_callbacks() as queued:
        done = services.run_attributions_retry(now=failed.next_attempt_at + timedelta(seconds=1))
    assert done == {"lost": 0, "unqueued": 0, "requeued": 1} and len(queued) == 1
    requeued = RunAttribution.objects.get(run=run)
    assert requeued.status == RunAttribution.Status.PENDING and requeued.next_attempt_at is None

    # the queued task, run here (its on-commit callback would send it to the broker)
    assert tasks.attribution_run_task(run.pk) == "ok"
    ok = RunAttribution.objects.get(run=run)
    assert ok.status == RunAttribution.Status.OK and ok.attempts == 2 and len(calls) == 2
    assert ok.contributors[0][0] == lineage.alice.pk
    credited = _accruals(run)
    assert sum(amount for _, _, amount in credited) == settings.INFERENCE_RUN_FEE
    assert any(kind == "contributor" for kind, _, _ in credited)

    # another delivery, another beat tick much later: nothing is scored or accrued again
    assert tasks.attribution_run_task(run.pk) == "ok"
    with django_capture_on_commit_callbacks() as queued:
        done = services.run_attributions_retry(now=timezone.now() + timedelta(days=1))
    assert done == {"lost": 0, "unqueued": 0, "requeued": 0} and not queued
    assert len(calls) == 2 and _accruals(run) == credited
    # and a second split is refused, by the service and by the database
    fee = settings.INFERENCE_RUN_FEE
    with pytest.raises(AlreadyAccrued):
        run_accrue(run=run, builder=lineage.builder, fee=fee, contribution_shares={}, policy=REWARD_POLICY)
    with pytest.raises(IntegrityError), transaction.atomic():
        RewardAccrual.objects.create(
            run=run, recipient_kind="builder", user=lineage.builder, amount=1, share="1/5", policy_version=1
        )
    assert _accruals(run) == credited


def test_retries_are_bounded_with_backoff_and_then_fail_for_good(
    lineage: Lineage,
    db: None,
    media_root: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    run = _alice_run(lineage)
    calls = _flaky_run_score(monkeypatch, failures=99, exc=OSError("index file busy"))
    delays = []
    assert tasks.attribution_run_task(run.pk) == "failed"
    while True:
        attribution = RunAttribution.objects.get(run=run)
        if attribution.next_attempt_at is None:
            break
        delays.append((attribution.next_attempt_at - attribution.finished_at).total_seconds())
        with django_capture_on_commit_callbacks() as queued:
            services.run_attributions_retry(now=attribution.next_attempt_at)
        assert len(queued) == 1
        tasks.attribution_run_task(run.pk)

    assert delays == [60, 120, 240, 480] and len(calls) == 5
    assert attribution.status == RunAttribution.Status.FAILED and attribution.attempts == 5 and attribution.is_finished
    assert "gave up after 5 attempts" in attribution.error
    with django_capture_on_commit_callbacks() as queued:
        services.run_attributions_retry(now=timezone.now() + timedelta(days=1))
    assert not queued and len(calls) == 5
    assert not RewardAccrual.objects.filter(run=run).exists()
    status, html = _panel(run)
    assert status == 286 and "could not be computed" in html and "gave up after 5 attempts" in html


def test_a_permanent_failure_is_not_retried(
    lineage: Lineage, db: None, media_root: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run = make_run(lineage, question="anything?", answer="")

    assert tasks.attribution_run_task(run.pk) == "failed"

    attribution = RunAttribution.objects.get(run=run)
    assert attribution.attempts == 1 and attribution.next_attempt_at is None and attribution.is_finished
    assert "no answer" in attribution.error and "not retried" in attribution.error
    with django_capture_on_commit_callbacks() as queued:
        assert services.run_attributions_retry(now=timezone.now() + timedelta(days=1))["requeued"] == 0
    assert not queued
    status, html = _panel(run)
    assert status == 286 and "could not be computed" in html


def test_index_errors_are_permanent_unless_a_file_could_not_be_read() -> None:
    assert services.is_permanent(SpanIndexError("span index x does not match its hash"))
    assert services.is_permanent(FeatureIndexError("the answer's projection differs from the index's"))
    assert services.is_permanent(services.PermanentAttributionError("the run has no answer to attribute"))
    try:
        try:
            raise FileNotFoundError("features.npy")
        except OSError as e:
            raise FeatureIndexError("cannot read the feature index") from e
    except FeatureIndexError as unreadable:
        assert not services.is_permanent(unreadable)
    assert not services.is_permanent(OperationalError("connection lost"))


def test_lost_and_never_queued_attributions_are_picked_up(
    lineage: Lineage, db: None, media_root: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    never_queued = _alice_run(lineage)  # its task message was lost: no attribution row at all
    killed = _alice_run(lineage)  # its worker was killed mid-scoring: a pending row, started
    services._attempt_start(killed)
    later = timezone.now() + timedelta(seconds=services.stale_after_seconds() + 5)

    with django_capture_on_commit_callbacks() as queued:
        done = services.run_attributions_retry(now=later)
    assert done == {"lost": 1, "unqueued": 1, "requeued": 0} and len(queued) == 1
    lost = RunAttribution.objects.get(run=killed)
    assert lost.status == RunAttribution.Status.FAILED and lost.attempts == 1 and lost.retry_scheduled
    assert "worker or its message was lost" in lost.error
    fresh = RunAttribution.objects.get(run=never_queued)
    assert fresh.status == RunAttribution.Status.PENDING and fresh.queued_at == later

    with django_capture_on_commit_callbacks() as queued:
        done = services.run_attributions_retry(now=lost.next_attempt_at)
    assert done["requeued"] == 1 and len(queued) == 1
    for run in (never_queued, killed):
        assert tasks.attribution_run_task(run.pk) == "ok"
        assert sum(amount for _, _, amount in _accruals(run)) == settings.INFERENCE_RUN_FEE


def test_the_retry_task_runs_on_the_default_queue_every_half_minute(settings: Any) -> None:
    from openledger_web.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["attribution-retry"]
    assert entry["task"] == tasks.runs_attribution_retry_task.name
    assert app.amqp.router.route({}, entry["task"], (), {})["queue"].name == "default"
    assert app.amqp.router.route({}, tasks.attribution_run_task.name, (1,), {})["queue"].name == "attribution"


# Last: a real worker, so the data is committed (and the database flushed after it)


def test_an_unreadable_index_fails_an_attempt_and_the_beat_retry_is_scored_by_a_real_worker(
    lineage: Lineage, transactional_db: None, settings: Any
) -> None:
    from openledger_web.testing import celery_worker_process

    settings.MEDIA_ROOT = str(lineage.media)
    folder = media_path(lineage.version.attribution_index.path)
    away = folder.with_name(folder.name + ".away")
    run = _alice_run(lineage)

    def wait_for(done: Any) -> RunAttribution:
        deadline = time.monotonic() + 120
        while True:
            attribution = RunAttribution.objects.filter(run=run).first()
            if attribution is not None and done(attribution):
                return attribution
            assert time.monotonic() < deadline, "the attribution task did not finish in time"
            time.sleep(0.3)

    with celery_worker_process(queues="attribution", name="attribution-retry", MEDIA_ROOT=str(lineage.media)):
        folder.rename(away)  # the index briefly unreadable
        try:
            tasks.attribution_run_task.delay(run.pk)
            failed = wait_for(lambda a: a.status == RunAttribution.Status.FAILED)
        finally:
            away.rename(folder)
        assert failed.retry_scheduled and "FeatureIndexError" in failed.error and "attempt 1 of 5" in failed.error
        assert not RewardAccrual.objects.filter(run=run).exists()

        assert services.run_attributions_retry(now=failed.next_attempt_at)["requeued"] == 1  # queued on commit
        ok = wait_for(lambda a: a.status == RunAttribution.Status.OK)

    assert ok.attempts == 2 and ok.contributors[0][0] == lineage.alice.pk
    assert sum(amount for _, _, amount in _accruals(run)) == settings.INFERENCE_RUN_FEE
    assert services.run_attributions_retry(now=timezone.now() + timedelta(days=1))["requeued"] == 0
