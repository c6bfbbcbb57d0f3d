"""In headless chromium, the job page of issue 15: while the attribution index is built it names that phase with its
own progress and the bar is not full; when the job ends the polled fragment lists every phase with its duration
beside its estimate; the "created ... ago" time moves on by itself (timeago.js, no inline script under the CSP).

The job row is written by the test, phase by phase, as the training worker writes it (a real run is in
test_estimates.py and test_browser_modelfactory.py): the page is what is under test here."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from modelfactory.config import TrainingConfig
from modelfactory.models import FineTuneJob
from modelfactory.tests.factories import UserFactory, default_base
from openledger_web.browser import screenshot

pytestmark = [pytest.mark.browser]

DONE = [
    {"phase": "load", "seconds": 4.2, "cold": True},
    {"phase": "eval_base", "seconds": 1.1, "tokens": 300},
    {"phase": "train", "seconds": 31.5, "tokens": 4100, "steps": 10},
    {"phase": "eval", "seconds": 1.0, "tokens": 300},
    {"phase": "samples", "seconds": 14.8},
    {"phase": "saving", "seconds": 0.3},
]
ESTIMATE = {
    "seconds": 75.0,
    "phases": {"load": 5.0, "eval_base": 1.0, "train": 30.0, "eval": 1.0, "samples": 15.0, "saving": 0.5,
               "index": 21.5, "store": 1.0},
    "worker": "training@box",
    "device_label": "CPU (no NVIDIA GPU on this machine), 2 cores",
    "source": "measured by training@box on its last 3 jobs",
    "measured": True,
}  # fmt: skip


def test_the_job_page_names_the_index_phase_then_lists_every_phase_and_keeps_times_live(
    page: Page, login_as: Callable[[Page, Any], None]
) -> None:
    owner = UserFactory(username="mira")
    now = timezone.now()
    history = [{"step": s, "train_loss": 3.0 - s / 10, "eval_loss": 2.2 if s == 10 else None,
                "learning_rate": 3e-4 * (11 - s) / 10} for s in range(1, 11)]  # fmt: skip
    job = FineTuneJob.objects.create(
        name="zorblat tune", owner=owner, base_model=default_base(),
        config=TrainingConfig(max_steps=10, learning_rate=3e-4, schedule="linear", warmup_steps=0).to_dict(),
        status="running", worker="training@box", attempts=1, started_at=now - timedelta(seconds=55),
        heartbeat_at=now, step=10, total_steps=10, train_loss=2.0, eval_loss=2.2, base_eval_loss=2.9,
        learning_rate=3e-5, tokens_per_s=130.0, eta_seconds=0.0, loss_history=history,
        phase="index", phase_done=3, phase_total=5, phase_unit="batches", phase_started_at=now - timedelta(seconds=6),
        phases=DONE, estimate=ESTIMATE,
    )  # fmt: skip

    login_as(page, owner)
    page.goto(f"/models/jobs/{job.pk}/")

    # while the index is built: its name, its own progress, a bar that is not full, time left that is not 0
    expect(page.locator("[data-phase-label]")).to_have_text("Building the attribution index")
    expect(page.locator("[data-phase-progress]")).to_have_text("3/5 batches")
    progress = int(page.locator("progress").get_attribute("value") or "0")
    assert 50 < progress < 100
    assert page.locator("[data-eta]").inner_text() not in ("0 s", "done")
    expect(page.locator('[data-phase-row="index"]')).to_have_class("phase-current")
    screenshot(page, "modelfactory-job-index-phase")

    # relative times keep moving without a reload: "created N seconds ago" counts on
    created = page.locator("time[data-relative]").first
    before = created.inner_text()
    assert before == "now" or before.endswith(("second ago", "seconds ago"))
    expect(created).not_to_have_text(before, timeout=8_000)
    assert re.fullmatch(r"(a second|\d+ seconds) ago", created.inner_text()), created.inner_text()

    # the worker finishes: the polled fragment lists every phase with what it took and what was estimated
    FineTuneJob.objects.filter(pk=job.pk).update(
        status="succeeded", finished_at=timezone.now(), phase="", phase_done=0, phase_total=0,
        phases=[*DONE, {"phase": "index", "seconds": 10.4, "tokens": 2000}, {"phase": "store", "seconds": 0.7}],
    )  # fmt: skip
    expect(page.locator("[data-job-status]")).to_have_text("succeeded", timeout=10_000)
    rows = page.locator("[data-phases] tbody tr")
    expect(rows).to_have_count(8)
    expect(page.locator('[data-phase-row="index"]')).to_contain_text("Building the attribution index")
    expect(page.locator('[data-phase-row="index"]')).to_contain_text("10.4 s")
    expect(page.locator('[data-phase-row="index"]')).to_contain_text("21.5 s")
    expect(page.locator('[data-phase-row="samples"]')).to_contain_text("14.8 s")
    expect(page.locator("progress")).to_have_attribute("value", "100")
    expect(page.locator("[data-learning-rate]")).to_have_text("3.00e-05")
    expect(page.locator("[data-tokens-per-s]")).to_have_text("130")
    expect(page.locator("[data-estimate-source]")).to_contain_text("measured by training@box")
    page.locator("#loss-chart").scroll_into_view_if_needed()
    # the chart's eval curve starts at step 0 with the base model's eval loss
    expect(page.locator("#loss-chart")).to_have_attribute("data-points", "10")
    first_eval = page.evaluate("() => window.Chart.getChart('loss-chart').data.datasets[1].data[0]")
    assert first_eval == {"x": 0, "y": 2.9}
    screenshot(page, "modelfactory-job-phases")
