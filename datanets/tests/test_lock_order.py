"""Freezing a snapshot while checks or decisions run never deadlocks (issue 11, "what was seen" 7), and every
accepted contribution is scanned before it can enter a snapshot ("what was seen" 10).

The deadlock was PostgreSQL's: the checks task locked a contribution *and* its Datanet (``select_for_update`` over a
``select_related`` join locks both rows), a contribution first, while a freeze locked the Datanet and then, by the
foreign keys of its leaves, the accepted contributions. Each test below holds a freeze just after it took its
Datanet lock, runs the other writer in a thread, then lets the freeze go on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from datanets import checks, services
from datanets.models import Contribution, Snapshot

from .factories import DatanetFactory, jsonl, submit

pytestmark = pytest.mark.django_db(transaction=True)

HOLD_SECONDS = 3.0  # how long the freeze holds its lock while the other writer runs: longer than a deadlock timeout


class Held:
    """A freeze paused inside its write transaction, after it took its Datanet lock (where it asks for its anchor),
    until ``go`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.locked = threading.Event()
        self.go = threading.Event()
        anchor_request = services.anchor_request

        def paused(**kwargs: Any) -> Any:
            self.locked.set()
            self.go.wait(timeout=60)
            return anchor_request(**kwargs)

        monkeypatch.setattr(services, "anchor_request", paused)


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except Exception as e:  # reported by the test
            outcome["error"] = e
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.fixture
def accepted() -> Iterator[Contribution]:
    datanet = DatanetFactory(record_type="text")
    contribution = submit(datanet, content=jsonl({"text": "an accepted record"}, {"text": "and another one"}))
    checks.contribution_check(contribution_id=contribution.pk)
    yield services.contribution_accept(curator=datanet.owner, contribution=contribution)


def _freeze_while(monkeypatch: pytest.MonkeyPatch, contribution: Contribution, other: Callable[[], object]) -> Any:
    """Freeze ``contribution``'s Datanet, running ``other`` in a thread while the freeze holds its Datanet lock;
    return what ``other`` returned. Raises what either raised."""
    held = Held(monkeypatch)
    datanet = contribution.datanet
    freezer, frozen = _in_thread(lambda: services.snapshot_freeze(datanet=datanet, user=datanet.owner))
    assert held.locked.wait(timeout=60), frozen
    worker, done = _in_thread(other)
    worker.join(timeout=HOLD_SECONDS)  # done at once, or waiting for the freeze's lock
    held.go.set()
    freezer.join(timeout=60)
    worker.join(timeout=60)
    assert not freezer.is_alive() and not worker.is_alive()
    for outcome in (frozen, done):
        if "error" in outcome:
            raise outcome["error"]
    assert isinstance(frozen["result"], Snapshot)
    return done.get("result")


def test_a_redelivered_check_of_an_accepted_contribution_during_a_freeze_does_not_deadlock(
    monkeypatch: pytest.MonkeyPatch, accepted: Contribution
) -> None:
    checked = _freeze_while(monkeypatch, accepted, lambda: checks.contribution_check(contribution_id=accepted.pk))
    assert checked.check_status == Contribution.CheckStatus.DONE
    assert Snapshot.objects.get(datanet=accepted.datanet).contribution_count == 1


def test_deciding_again_on_an_accepted_contribution_during_a_freeze_does_not_deadlock(
    monkeypatch: pytest.MonkeyPatch, accepted: Contribution
) -> None:
    def accept_again() -> str:
        try:
            services.contribution_accept(curator=accepted.datanet.owner, contribution=accepted)
        except ValidationError as e:
            return str(e)
        return "accepted twice"

    assert "already accepted" in _freeze_while(monkeypatch, accepted, accept_again)


def test_a_contribution_accepted_before_its_checks_ran_is_scanned_by_its_checks_task() -> None:
    # given a contribution accepted before its queued checks ran, with an e-mail address and a key in it
    datanet = DatanetFactory(record_type="text")
    contribution = submit(
        datanet,
        content=jsonl({"text": "write to jane.doe@example.org"}, {"text": "key AKIAABCDEFGHIJKLMNOP here"}),
    )
    services.contribution_accept(curator=datanet.owner, contribution=contribution)
    # when the checks task runs afterwards
    checked = checks.contribution_check(contribution_id=contribution.pk)
    # then it scanned it and kept the evidence, and the decision stands
    assert checked is not None and checked.check_status == Contribution.CheckStatus.DONE
    stored = Contribution.objects.get(pk=contribution.pk)
    assert stored.status == Contribution.Status.ACCEPTED and stored.checked_at is not None
    assert stored.checks["personal_data"]["records_flagged"] == 1 and stored.checks["secrets"]["records_flagged"] == 1
    assert {span["kind"] for r in stored.records.all() for span in r.flags} == {"email", "aws_access_key"}


def test_a_freeze_scans_accepted_contributions_that_were_never_checked_first() -> None:
    datanet = DatanetFactory(record_type="text")
    contribution = submit(datanet, content=jsonl({"text": "call me at jane.doe@example.org please"}))
    services.contribution_accept(curator=datanet.owner, contribution=contribution)
    assert Contribution.objects.get(pk=contribution.pk).check_status == Contribution.CheckStatus.QUEUED

    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)

    stored = Contribution.objects.get(pk=contribution.pk)
    assert stored.check_status == Contribution.CheckStatus.DONE
    assert stored.checks["personal_data"]["records_flagged"] == 1
    assert snapshot.record_count == 1


def test_a_freeze_refuses_while_an_accepted_contribution_could_not_be_scanned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    datanet = DatanetFactory(record_type="text")
    contribution = submit(datanet, content=jsonl({"text": "a record whose checks will fail"}))
    services.contribution_accept(curator=datanet.owner, contribution=contribution)

    def broken(contribution: Contribution) -> Any:
        raise RuntimeError("the scanner broke")

    monkeypatch.setattr(checks, "run_checks", broken)
    with pytest.raises(ValidationError, match=f"#{contribution.pk} have not been scanned.*checks failed"):
        services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    assert not Snapshot.objects.exists()
    assert Contribution.objects.get(pk=contribution.pk).check_status == Contribution.CheckStatus.FAILED

    monkeypatch.undo()
    assert services.snapshot_freeze(datanet=datanet, user=datanet.owner).record_count == 1


def test_a_contribution_accepted_while_the_snapshot_was_built_is_in_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The leaves and the tree are built before the freeze's write transaction; a decision in between is not lost.
    datanet = DatanetFactory(record_type="text")
    first = submit(datanet, content=jsonl({"text": "accepted before the freeze"}))
    late = submit(datanet, content=jsonl({"text": "accepted while the freeze built its tree"}))
    for contribution in (first, late):
        checks.contribution_check(contribution_id=contribution.pk)
    services.contribution_accept(curator=datanet.owner, contribution=first)
    build = services._snapshot_build
    builds: list[int] = []

    def build_then_accept(datanet: Any, **rules: Any) -> Any:
        built = build(datanet, **rules)
        builds.append(len(built.record_ids))
        if len(builds) == 1:
            services.contribution_accept(curator=datanet.owner, contribution=late)
        return built

    monkeypatch.setattr(services, "_snapshot_build", build_then_accept)
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    assert builds == [1, 2] and (snapshot.record_count, snapshot.contribution_count) == (2, 2)
    assert services.snapshot_rebuild_root(snapshot=snapshot) == snapshot.merkle_root
