"""Answers of one version that wait in the attribution queue are scored together (``services.run_attribute`` claims
them, ``index.Scorer.score_many`` packs their model passes), each stored with the shares it gets alone, exact to the
unit; the waiting answers are shared between the worker's processes; a run another worker is scoring is left to it.

A real (tiny) training lineage (``test_answer_attribution.build_lineage``, its first version only: these tests read
no other) gives a version with a real index; torch runs at one thread, as each attribution process does on this
machine (``tasks.torch_threads_for``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest
from django.utils import timezone

from attribution import services
from attribution.models import AttributionIndex, RecordAttribution, RunAttribution
from attribution.tests.test_answer_attribution import ALICE_FACTS, BOB_FACTS, Lineage, make_run, module_lineage
from rewards.models import RewardAccrual

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def lineage(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any) -> Iterator[Lineage]:
    with module_lineage(django_db_blocker, tmp_path_factory, with_merge=False, with_child=False) as built:
        yield built


@pytest.fixture
def media_root(lineage: Lineage, settings: Any) -> Any:
    settings.MEDIA_ROOT = str(lineage.media)
    return lineage.media


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _answers(lineage: Lineage) -> list[Any]:
    """A right answer of Alice's, a right one of Bob's, and one that contradicts Alice's record."""
    return [
        make_run(lineage, question=ALICE_FACTS[0]["prompt"], answer=ALICE_FACTS[0]["response"]),
        make_run(lineage, question=BOB_FACTS[0]["prompt"], answer=BOB_FACTS[0]["response"]),
        make_run(lineage, question=ALICE_FACTS[0]["prompt"], answer="The secret code of Zorblat is 5830."),
    ]


def _stored_shares(run: Any) -> list[tuple[int, Fraction]]:
    rows = RecordAttribution.objects.filter(run_attribution__run=run).order_by("rank")
    return [(r.record_id, Fraction(r.share)) for r in rows]


def test_waiting_answers_are_scored_together_each_with_the_shares_it_gets_alone(
    lineage: Lineage, db: None, media_root: Any, one_thread: None
) -> None:
    # given: three answers of one version waiting, and what each gets scored alone (run_score writes nothing)
    runs = _answers(lineage)
    index = AttributionIndex.objects.get(version=lineage.version)
    alone = [services.run_score(run=run, index=index) for run in runs]

    # when: the first answer's task runs
    services.run_attribute(run_id=runs[0].pk, processes=1)

    # then: all three were scored in that task (one batch: the same seconds), each stored with exactly the shares,
    # verdict and contributors it gets alone
    rows = [RunAttribution.objects.get(run=run) for run in runs]
    assert [r.status for r in rows] == [RunAttribution.Status.OK] * 3, [r.error for r in rows]
    assert len({r.seconds for r in rows}) == 1 and all(r.attempts == 1 for r in rows)
    for run, row, scored in zip(runs, rows, alone, strict=True):
        assert _stored_shares(run) == [(s.record_id, s.share) for s in scored.attribution.records]
        assert row.verdict == scored.support.verdict
        assert [[u, Fraction(s)] for u, s in row.contributors] == [[u, s] for u, s in scored.rollup.contributors]
    assert rows[0].contributors[0][0] == lineage.alice.pk and rows[1].contributors[0][0] == lineage.bob.pk
    assert rows[2].verdict == RunAttribution.Verdict.UNSUPPORTED

    # and the tasks queued for the other two find them finished: credited once
    accruals = RewardAccrual.objects.filter(run__in=runs).count()
    assert services.run_attribute(run_id=runs[1].pk, processes=1) == rows[1]
    assert services.run_attribute(run_id=runs[2].pk, processes=1) == rows[2]
    assert RewardAccrual.objects.filter(run__in=runs).count() == accruals


def test_the_waiting_answers_are_shared_between_the_worker_processes(
    lineage: Lineage, db: None, media_root: Any, one_thread: None, settings: Any
) -> None:
    # given: an answer and four more waiting (their tasks queued behind its own), and a worker of two processes
    settings.ATTRIBUTION_BATCH_MAX = 8
    first, *waiting = [
        make_run(lineage, question=fact["prompt"], answer=fact["response"]) for fact in [*ALICE_FACTS, BOB_FACTS[0]]
    ]

    # when
    services.run_attribute(run_id=first.pk, processes=2)

    # then: this task took its half (3 of 5, rounded up: itself and the two oldest waiting); the rest wait for the other
    # process
    finished = RunAttribution.objects.filter(run__in=[first, *waiting], status=RunAttribution.Status.OK)
    assert sorted(finished.values_list("run_id", flat=True)) == sorted([first.pk, waiting[0].pk, waiting[1].pk])
    assert not RunAttribution.objects.filter(run__in=waiting[2:]).exclude(started_at=None).exists()

    # and with a batch of at most 2, the next task takes one more only
    settings.ATTRIBUTION_BATCH_MAX = 2
    services.run_attribute(run_id=waiting[2].pk, processes=1)
    assert RunAttribution.objects.filter(run__in=waiting[2:], status=RunAttribution.Status.OK).count() == 2


def test_a_run_another_worker_is_scoring_is_left_to_it_until_it_is_stale(
    lineage: Lineage, db: None, media_root: Any, settings: Any
) -> None:
    # given: an answer whose attribution another worker started a moment ago (alone or in its batch)
    run = make_run(lineage, question=ALICE_FACTS[1]["prompt"], answer=ALICE_FACTS[1]["response"])
    RunAttribution.objects.create(run=run, started_at=timezone.now())

    # when: its own task runs
    row = services.run_attribute(run_id=run.pk, processes=1)

    # then: it does not score it a second time
    assert row.status == RunAttribution.Status.PENDING and row.attempts == 0
    assert not RewardAccrual.objects.filter(run=run).exists()

    # but once that attempt is older than the stale limit (its worker was lost), a task scores it
    started = timezone.now() - timedelta(seconds=settings.ATTRIBUTION_STALE_SECONDS + 1)
    RunAttribution.objects.filter(run=run).update(started_at=started)
    assert services.run_attribute(run_id=run.pk, processes=1).status == RunAttribution.Status.OK


def test_a_batch_that_fails_is_scored_again_one_answer_at_a_time(
    lineage: Lineage, db: None, media_root: Any, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: the batched scoring failing (a fault injected once; each answer alone goes through the real code)
    runs = _answers(lineage)[:2]

    def broken(**_kwargs: Any) -> Any:
        raise RuntimeError("the packed pass failed")

    monkeypatch.setattr(services, "run_score_many", broken)

    # when
    services.run_attribute(run_id=runs[0].pk, processes=1)

    # then: both answers were stored, each scored alone
    rows = [RunAttribution.objects.get(run=run) for run in runs]
    assert [r.status for r in rows] == [RunAttribution.Status.OK] * 2, [r.error for r in rows]
