"""In headless chromium, the owner's side of a revocation (issue 17): a contributor withdraws records that a model
version was trained on; the owner sees the count in the navigation and the warning on the version's page (counts,
reason, the action), clicks "Retrain without them", watches a real Celery worker train the retrained version on a
snapshot frozen for it without the records, and lands on the new version, which says what it supersedes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from datanets import revocation as datanet_revocation
from datanets import services as datanet_services
from datanets.models import SnapshotRecord
from modelfactory.models import FineTuneJob, ModelVersion
from modelfactory.tests.factories import UserFactory, default_base, instructions, stand_in_version
from openledger_web.browser import screenshot
from openledger_web.testing import celery_worker_process

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRAIN_TIMEOUT_MS = 900_000  # one training step, but on a 2-core machine shared with other test runs


def test_the_owner_retrains_a_flagged_version_without_the_withdrawn_records(
    page: Page, login_as: Callable[[Page, Any], None], settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"  # the worker gets the same folder below
    mira, alice = UserFactory(username="mira"), UserFactory(username="alice")
    datanet = datanet_services.datanet_create(owner=mira, name="Zorblat facts", record_type="instruction")
    contributions = {}
    for user, topic in ((alice, "Alice town"), (mira, "Zorblat")):
        text = "".join(json.dumps(r) + "\n" for r in instructions(4, topic))
        contribution = datanet_services.contribution_submit_pasted(
            datanet=datanet, contributor=user, text=text, licence="CC-BY-4.0"
        )
        datanet_services.contribution_accept(curator=mira, contribution=contribution)
        contributions[user] = contribution
    snapshot = datanet_services.snapshot_freeze(datanet=datanet, user=mira)
    # the version to retrain: its row and lineage (what the flag and the retrain read); one training step for the new
    version = stand_in_version(owner=mira, base_model=default_base(), name="Zorblat expert")
    version.snapshots.set([snapshot])

    with celery_worker_process(
        name="revocation-browser", queues="training,default", timeout=90, MEDIA_ROOT=str(settings.MEDIA_ROOT)
    ):
        datanet_revocation.contribution_revoke(
            contribution=contributions[alice], user=alice, reason="consent", explanation=""
        )
        login_as(page, mira)
        page.goto("/models/")
        expect(page.locator("[data-version-notices]").first).to_have_text("1")
        expect(page.locator("[data-notices]")).to_contain_text("Zorblat expert: 4 of its records of Zorblat facts")
        page.locator("[data-notices] a").first.click()
        warning = page.locator("[data-revoked]")
        expect(warning).to_be_visible()
        expect(warning.locator("header")).to_have_text("Trained on 4 withdrawn records")
        expect(warning.locator("[data-revoked-reasons]")).to_contain_text(
            "4 records of Zorblat facts: withdrawn by the contributor (consent withdrawn)"
        )
        screenshot(page, "modelfactory-revoked-version")

        page.get_by_role("button", name="Retrain without them").click()
        expect(page.locator("hgroup h1")).to_have_text("Zorblat expert (without withdrawn records)")
        job = FineTuneJob.objects.get(supersedes=version)
        expect(page.locator("[data-job-status]")).to_have_text("succeeded", timeout=TRAIN_TIMEOUT_MS)
        page.locator("[data-version-link]").click()
        retrained = ModelVersion.objects.get(job=job)
        expect(page.locator("[data-supersedes]")).to_contain_text("Supersedes Zorblat expert")
        assert json.loads(retrained.manifest)["supersedes"]["id"] == version.pk
        [fresh] = retrained.snapshots.all()
        assert fresh.number == 2 and fresh.created_by == mira
        assert not SnapshotRecord.objects.filter(snapshot=fresh, contribution=contributions[alice]).exists()
        screenshot(page, "modelfactory-retrained-version")

        # the flagged version now points at its successor instead of offering the action again
        page.goto(f"/models/versions/{version.pk}/")
        expect(page.locator("[data-revoked] [data-superseded-by]")).to_contain_text("Zorblat expert (without")
        expect(page.get_by_role("button", name="Retrain without them")).to_have_count(0)
