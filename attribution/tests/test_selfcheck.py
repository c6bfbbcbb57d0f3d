"""The self-check at the end of each job: a version answers a sample of its own training questions and each answer
is attributed through the real scoring; the figures, with n, go on that version's index and its page. It never fails
the job: a failed or unfinished self-check says so.

Real training of the bundled model in process (one fine-tune on the planted facts of test_answer_attribution.py), with
a sample of 2 questions (the test command turns the self-check off for every other test's jobs: scripts/test.sh).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse
from playwright.sync_api import Page, expect

from attribution import selfcheck
from attribution.models import AttributionIndex
from attribution.selectors import version_reliability
from attribution.tests.test_answer_attribution import ALICE_FACTS, BOB_FACTS, _contribute, _drop_training_messages
from openledger_web.browser import screenshot

pytestmark = pytest.mark.slow

SAMPLE = 2


@dataclass
class Trained:
    builder: Any
    base: Any
    snapshot: Any
    version: Any
    other: Any  # a stand-in version with an index and no self-check
    owners: dict[int, int]  # record id -> contributor id
    media: Path


@pytest.fixture(scope="module")
def trained(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any) -> Iterator[Trained]:
    """One real fine-tune on two contributors' facts (its index and self-check built at the end of the job), in
    media of its own; the database is flushed afterwards."""
    from datanets import services as datanet_services
    from datanets.models import Record
    from modelfactory import services as mf
    from modelfactory.tests.factories import UserFactory, default_base, stand_in_version, tiny_config

    media = tmp_path_factory.mktemp("selfcheck-media")
    with (
        override_settings(MEDIA_ROOT=str(media), ATTRIBUTION_SELFCHECK_SAMPLE=SAMPLE),
        django_db_blocker.unblock(),
    ):
        try:
            alice, bob, builder = (UserFactory(username=n) for n in ("alice", "bob", "builder"))
            base = default_base()
            datanet = datanet_services.datanet_create(owner=builder, name="Invented places", record_type="instruction")
            for user, facts in ((alice, ALICE_FACTS), (bob, BOB_FACTS)):
                _contribute(datanet, user, facts, builder)
            snapshot = datanet_services.snapshot_freeze(datanet=datanet, user=builder)
            job = mf.job_launch(
                owner=builder, name="places", base_model=base, snapshots=[snapshot],
                config=tiny_config(eval_fraction=0.0, seed=11),
            )  # fmt: skip
            version = mf.job_run(job_id=job.pk, worker="selfcheck-tests")
            assert version is not None, job.error
            _drop_training_messages()
            other = stand_in_version(owner=builder, base_model=base, name="never checked")
            AttributionIndex.objects.create(
                version=other, status="ok", method="countsketch-v1", seed=7, width=1024, feature_hash="f" * 64,
                span_hash="e" * 64, path="attribution/ff/ff/x/", record_ids=[],
            )  # fmt: skip
            owners = dict(Record.objects.filter(datanet=datanet).values_list("pk", "contribution__contributor_id"))
            yield Trained(builder, base, snapshot, version, other, owners, media)
        finally:
            call_command("flush", interactive=False, verbosity=0)
            shutil.rmtree(media, ignore_errors=True)


@pytest.fixture
def media_root(trained: Trained, settings: Any) -> Any:
    settings.MEDIA_ROOT = str(trained.media)
    return trained.media


def _evaluation(version: Any) -> dict[str, Any]:
    return AttributionIndex.objects.get(version=version).evaluation


def test_a_version_stores_its_own_self_check_with_n(trained: Trained, db: None, media_root: Any) -> None:
    figures = _evaluation(trained.version)

    assert figures["schema"] == selfcheck.SCHEMA and figures["status"] == "ok", figures
    assert figures["sample_size"] == SAMPLE and figures["asked"] == SAMPLE and 1 <= figures["n"] <= SAMPLE
    assert figures["n_right"] + figures["n_wrong"] == figures["n"]
    assert 0 <= figures["record_top1"] <= 1 and 0 <= figures["owner_top1"] <= 1
    assert figures["seconds"] <= figures["time_limit_seconds"] + 30
    assert version_reliability(AttributionIndex.objects.get(version=trained.version)).measured
    print(figures)  # what a job pays for it, in the test log


def test_the_questions_are_the_versions_own_training_questions(trained: Trained, db: None, media_root: Any) -> None:
    index = AttributionIndex.objects.get(version=trained.version)

    asked = selfcheck.questions_for(index, size=50)

    assert {q.record_id for q in asked} == set(index.record_ids)
    assert all(trained.owners[q.record_id] == q.contributor_id for q in asked)
    assert selfcheck.questions_for(index, size=2) == selfcheck.questions_for(index, size=2)  # same seed, same sample


def test_answers_are_judged_against_the_records_completion() -> None:
    assert selfcheck.agrees("The code of Zorblat is 7421.", "the code of zorblat is 7421", truncated=False)
    assert selfcheck.agrees("Sure: the code of Zorblat is 7421, I think.", "The code of Zorblat is 7421.", truncated=0)
    assert selfcheck.agrees("The river Mirvex runs bright", "The river Mirvex runs bright green.", truncated=True)
    assert not selfcheck.agrees("The river Mirvex runs bright", "The river Mirvex runs bright green.", truncated=False)
    assert not selfcheck.agrees("The code of Zorblat is 1234.", "The code of Zorblat is 7421.", truncated=False)


def test_a_self_check_out_of_time_says_so(trained: Trained, db: None, media_root: Any) -> None:
    from modelfactory.services import _loaded_base

    index = AttributionIndex.objects.get(version=trained.version)
    kept = index.evaluation
    try:
        with patch("attribution.selfcheck.time_limit", autospec=True, return_value=0.0):
            outcome = selfcheck.version_selfcheck(version=trained.version, base=_loaded_base(trained.base.path))
        assert outcome["status"] == "timed_out" and outcome["n"] == 0
        index.refresh_from_db()
        reliability = version_reliability(index)
        assert not reliability.measured and "not measured" in reliability.sentence
    finally:
        AttributionIndex.objects.filter(pk=index.pk).update(evaluation=kept)


def test_a_failing_self_check_never_fails_the_job(trained: Trained, db: None, media_root: Any, settings: Any) -> None:
    from modelfactory import services as mf
    from modelfactory.models import FineTuneJob
    from modelfactory.tests.factories import tiny_config

    # given a scoring that breaks (on the first answer: one question is enough to reach it)
    settings.ATTRIBUTION_SELFCHECK_SAMPLE = 1
    job = mf.job_launch(
        owner=trained.builder,
        name="places, once more",
        base_model=trained.base,
        snapshots=[trained.snapshot],
        config=tiny_config(eval_fraction=0.0, seed=13, max_steps=1),
    )
    with patch("attribution.services.run_score", autospec=True, side_effect=RuntimeError("scorer exploded")):
        # when the job runs to its end
        version = mf.job_run(job_id=job.pk, worker="selfcheck-tests")
    _drop_training_messages()

    # then the job succeeded and its version says its self-check failed, and why
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED and version is not None, job.error
    figures = _evaluation(version)
    assert figures["status"] == "failed" and "scorer exploded" in figures["error"] and figures["n"] == 0
    reliability = version_reliability(AttributionIndex.objects.get(version=version))
    assert reliability.state == "failed" and "not measured" in reliability.sentence


# In a browser, last: the page fixture's transactional database is flushed after it.


def test_the_version_page_shows_its_own_self_check_and_not_measured_without_one(
    trained: Trained, media_root: Any, page: Page, login_as: Any
) -> None:
    login_as(page, trained.builder)
    figures = _evaluation(trained.version)

    page.goto(reverse("modelfactory:version_detail", args=[trained.version.pk]))

    block = page.locator("[data-selfcheck]")
    expect(block).to_have_attribute("data-reliability", "measured")
    n, asked = figures["n"], figures["asked"]
    expect(block.locator("[data-selfcheck-n]")).to_have_text(str(n) if n == asked else f"{n} of {asked} asked")
    owner_top1 = f"{round(figures['owner_top1'] * 100)}% (n = {n})"
    expect(block.locator("[data-selfcheck-owner-top1]")).to_have_text(owner_top1)
    screenshot(page, "version_selfcheck")

    # a version without a measurement says so, and quotes no benchmark instead
    page.goto(reverse("modelfactory:version_detail", args=[trained.other.pk]))
    block = page.locator("[data-selfcheck]")
    expect(block).to_have_attribute("data-reliability", "not_measured")
    expect(block.locator("[data-not-measured]")).to_contain_text("Not measured.")
    assert "benchmark" not in block.inner_text()
