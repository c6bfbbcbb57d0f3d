"""In headless chromium, a model builder's whole path: open the fine-tune form, fill it from the quick-test preset,
pick a real snapshot, launch, watch the progress bar and the loss chart move while a real Celery worker trains a
LoRA adapter on the bundled model (Redis, PostgreSQL, anvil), land on the version page with its lineage and anchor,
then the version list and the compare view. Four steps of rank-4 LoRA: the run takes seconds of training."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from ledger.tasks import anchor_confirm_task
from modelfactory import services
from modelfactory.config import PRESETS
from modelfactory.models import FineTuneJob, ModelVersion
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, instructions
from openledger_web.browser import screenshot
from openledger_web.testing import celery_worker_process

pytestmark = [pytest.mark.browser, pytest.mark.chain, pytest.mark.slow]

TRAIN_TIMEOUT_MS = 240_000


def confirm_anchor(version: ModelVersion, timeout: float = 30) -> None:
    """Ask the worker to confirm anchors until the version's is confirmed (the beat would do it every 5 s)."""
    deadline = time.monotonic() + timeout
    anchor = version.anchor
    while time.monotonic() < deadline:
        anchor.refresh_from_db()
        if anchor.status == "confirmed":
            return
        if anchor.status == "submitted":
            anchor_confirm_task.delay()
        time.sleep(0.5)
    raise AssertionError(f"anchor stayed {anchor.status}: {anchor.last_error}")


def wait_for_job(job: FineTuneJob, timeout: float = TRAIN_TIMEOUT_MS / 1000) -> FineTuneJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job #{job.pk} is still {job.status}: {job.log_tail[-5:]}")


def test_fill_from_a_preset_launch_watch_it_train_and_land_on_the_version(
    page: Page, login_as: Callable[[Page, Any], None], deployed_chain: Any, anvil: Any, settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"  # the worker gets the same folder below
    builder = UserFactory(username="mira")
    base = default_base()
    snapshot = frozen_snapshot(owner=builder, records=instructions(8), name="Zorblat facts")
    frozen_snapshot(owner=UserFactory(), name="Poems", record_type="text", licence="CC-BY-SA-4.0")

    with celery_worker_process(
        name="modelfactory-browser",
        queues="training,default,chain",
        timeout=90,
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        EVM_RPC_URL=anvil.rpc_url,
    ):
        login_as(page, builder)
        page.goto("/models/")
        page.get_by_role("button", name="New fine-tune").click()  # a link styled as a button
        expect(page.locator("hgroup h1")).to_have_text("New fine-tune")

        # the preset fills every setting; the estimate panel follows the form
        page.get_by_label("Name", exact=True).fill("Zorblat expert")
        page.get_by_label("Description").fill("Knows the secret code of Zorblat.")
        page.locator('[data-preset="quick-test"]').click()
        expect(page.get_by_label("LoRA rank")).to_have_value("4")
        expect(page.get_by_label("Max steps")).to_have_value("10")
        page.get_by_label("Zorblat facts snapshot #1").check()
        expect(page.locator("[data-records]")).to_have_text("8")
        expect(page.locator('[data-licence="ok"]')).to_be_visible()
        expect(page.locator("[data-estimate-steps]")).to_have_text("10")
        # a tiny run for the test: four steps
        page.get_by_label("Max steps").fill("4")
        expect(page.locator("[data-estimate-steps]")).to_have_text("4")
        page.get_by_label("Learning rate").fill("0.003")
        expect(page.locator("[data-estimate-steps]")).to_have_text("4")
        page.evaluate("window.scrollTo(0, 0)")  # the estimate panel is sticky: shoot it beside the top of the form
        screenshot(page, "modelfactory-form")

        # an invalid combination is explained next to the field, nothing launched
        page.get_by_label("LoRA rank").fill("0")
        page.get_by_role("button", name="Launch fine-tune").click()
        expect(page.locator("#id_lora_rank_error")).to_contain_text("between 1 and 256")
        assert not FineTuneJob.objects.exists()
        page.get_by_label("LoRA rank").fill("4")
        page.get_by_role("button", name="Launch fine-tune").click()

        # the job page: the bar and the chart move as the worker trains
        expect(page.locator("hgroup h1")).to_have_text("Zorblat expert")
        job = FineTuneJob.objects.get(name="Zorblat expert")
        assert job.config["max_steps"] == 4 and job.config["lora_rank"] == 4
        seen_screens: set[str] = set()
        # watch the bar and the chart move: the values seen while it trains
        seen_progress: set[int] = set()
        seen_points: set[int] = set()
        expect(page.locator("[data-job-status]")).to_have_text("running", timeout=TRAIN_TIMEOUT_MS)
        deadline = time.monotonic() + TRAIN_TIMEOUT_MS / 1000
        while page.locator("[data-job-status]").inner_text() in ("queued", "running"):
            assert time.monotonic() < deadline, "the job did not finish in time"
            seen_progress.add(int(page.locator("#progress [data-progress]").get_attribute("data-progress") or 0))
            seen_points.add(page.evaluate("() => Number(document.getElementById('loss-chart').dataset.points || 0)"))
            if max(seen_points) > 0 and "modelfactory-job-running" not in seen_screens:
                screenshot(page, "modelfactory-job-running")
                seen_screens.add("modelfactory-job-running")
            page.wait_for_timeout(300)
        expect(page.locator("[data-job-status]")).to_have_text("succeeded")
        expect(page.locator("#progress [data-progress]")).to_have_attribute("data-progress", "100")
        assert (len(seen_progress) >= 2 and max(seen_progress) < 100) or min(seen_progress) < 100, seen_progress
        assert min(seen_points) < 4, seen_points
        assert page.evaluate("() => Chart.getChart('loss-chart').data.datasets[0].data.length") == 4

        # the version page: lineage, metrics, samples, anchor and downloads
        page.locator("[data-version-link]").click()
        version = ModelVersion.objects.get(job=job)
        expect(page.locator("hgroup h1")).to_contain_text("Zorblat expert")
        expect(page.locator(f'[data-lineage] [data-node="s{snapshot.pk}"]')).to_be_visible()
        expect(page.locator("[data-manifest-hash]")).to_have_text(version.manifest_hash)
        confirm_anchor(version)
        expect(page.locator("#anchor [data-anchor-status]")).to_have_text("on chain", timeout=10_000)
        with page.expect_download() as download:
            page.locator('[data-download="manifest"]').click()
        assert Path(download.value.path()).read_bytes() == version.manifest.encode()
        page.get_by_role("button", name="Publish").click()
        expect(page.locator("[data-published]")).to_have_text("published")
        screenshot(page, "modelfactory-version")

        # a second version on the same data with other settings, for the list and the compare view
        second = services.job_launch(
            owner=builder,
            name="Zorblat expert r8",
            description="The same data with rank 8 on all linear layers.",
            base_model=base,
            snapshots=[snapshot],
            config=PRESETS["quick-test"].with_changes(
                lora_rank=8, lora_alpha=16.0, target_modules="all-linear", max_steps=2, learning_rate=3e-3
            ),
        )
        assert wait_for_job(second).status == "succeeded", second.error
        page.goto("/models/?q=zorblat")
        expect(page.locator("[data-version]")).to_have_count(2)
        screenshot(page, "modelfactory-version-list")
        page.goto(f"/models/compare/?a={version.pk}&b={second.version.pk}")
        expect(page.locator("[data-differences]")).to_have_attribute("data-differences", "4")
        expect(page.locator("[data-compare-samples] tbody tr").first).to_be_visible()
        screenshot(page, "modelfactory-compare")

        page.goto("/models/bases/")
        expect(page.locator("[data-default]")).to_be_visible()
        screenshot(page, "modelfactory-bases")
