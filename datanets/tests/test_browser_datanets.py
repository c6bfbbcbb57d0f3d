"""In headless chromium, the whole path of a Datanet: an owner creates it and names a curator, a contributor uploads a
JSONL and a CSV file with the progress bar and sees the checks, the curator accepts one and rejects the other, the
owner freezes a snapshot that a real worker anchors on anvil, and the contributor downloads a proof and verifies it
on chain."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from accounts.models import User
from accounts.tests.factories import UserFactory
from datanets.models import Contribution, Datanet, Snapshot
from ledger.tasks import anchor_confirm_task
from openledger_web.browser import screenshot
from openledger_web.testing import celery_worker_process

pytestmark = [pytest.mark.browser, pytest.mark.chain, pytest.mark.slow]

JSONL = (
    "".join(
        json.dumps({"text": text}) + "\n"
        for text in (
            "Paracetamol is usually taken every four to six hours.",
            "Write to the clinic at help@clinic.example for an appointment.",
            "A normal resting heart rate for adults is 60 to 100 beats a minute.",
            "Ibuprofen should be taken with food to protect the stomach.",
        )
    )
    + '{"text": 42}\n'
)
CSV = 'text\n"Vaccines train the immune system to recognise a germ."\n"Sleep helps the body repair itself overnight."\n'


def switch_user(page: Page, login_as: Callable[[Page, Any], None], user: User) -> None:
    page.context.clear_cookies()
    login_as(page, user)


def confirm_anchor(snapshot: Snapshot, timeout: float = 30) -> None:
    """Ask the worker to confirm anchors until this one is confirmed (the beat would do it every 5 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot.anchor.refresh_from_db()
        if snapshot.anchor.status == "confirmed":
            return
        if snapshot.anchor.status == "submitted":
            anchor_confirm_task.delay()
        time.sleep(0.5)
    raise AssertionError(f"anchor stayed {snapshot.anchor.status}: {snapshot.anchor.last_error}")


def test_create_contribute_curate_freeze_and_prove_on_chain(
    page: Page, login_as: Callable[[Page, Any], None], deployed_chain: Any, anvil: Any, tmp_path: Path
) -> None:
    owner, curator, contributor = (
        UserFactory(username="olivia"),
        UserFactory(username="carl"),
        UserFactory(username="bea"),
    )
    jsonl_file, csv_file = tmp_path / "health-facts.jsonl", tmp_path / "more-facts.csv"
    jsonl_file.write_text(JSONL)
    csv_file.write_text(CSV)

    with celery_worker_process(name="datanets", queues="default,chain", EVM_RPC_URL=anvil.rpc_url):
        # the owner creates a Datanet and names a curator
        login_as(page, owner)
        page.goto("/datanets/")
        page.get_by_role("button", name="New Datanet").click()  # a link styled as a button
        page.get_by_label("Name").fill("Health facts")
        page.get_by_label("Summary").fill("Short, checked statements about everyday health")
        page.get_by_label("Description").fill("## Rules\n\nOne **plain** sentence per record, with its source.")
        page.get_by_label("Tags").fill("health, medicine, facts")
        page.get_by_label("Domain").fill("medicine")
        page.get_by_role("button", name="Create Datanet").click()
        expect(page.locator("hgroup h1")).to_have_text("Health facts")
        datanet = Datanet.objects.get(name="Health facts")
        page.get_by_role("button", name="Curators & members").click()
        page.get_by_label("Curator username").fill("carl")
        page.get_by_role("button", name="Add curator").click()
        expect(page.locator(".people").first).to_contain_text("carl")

        # a contributor uploads a JSONL and a CSV file, leaving bad rows out, and watches the progress bar
        switch_user(page, login_as, contributor)
        page.goto(f"/datanets/{datanet.slug}/")
        page.get_by_role("button", name="Contribute", exact=True).click()
        page.get_by_label("Files").set_input_files([str(jsonl_file), str(csv_file)])
        page.get_by_label("Leave the bad rows out").check()
        page.get_by_role("button", name="Upload").click()
        expect(page.locator("#upload-progress")).to_have_attribute("data-done", "true")
        expect(page.locator("#result [role=status]")).to_contain_text("2 contributions stored")
        expect(page.locator("[data-row-errors]")).to_contain_text("line 5")
        screenshot(page, "contribute")
        jsonl, csv = (Contribution.objects.get(source_filename=f.name) for f in (jsonl_file, csv_file))
        assert (jsonl.record_count, jsonl.error_count, csv.record_count) == (4, 1, 2)

        # and sees the checks arrive, with the email address marked in its record
        page.locator("#result").get_by_role("link", name=f"contribution #{jsonl.pk}").click()
        expect(page.locator("[data-quality-score]")).to_be_visible(timeout=20_000)
        expect(page.locator('[data-check="personal data"] .badge')).to_have_text("warn")
        expect(page.locator('mark[data-flag="email"]')).to_have_text("help@clinic.example")
        screenshot(page, "contribution-checks")

        # the curator accepts the JSONL and rejects the CSV with a reason
        switch_user(page, login_as, curator)
        page.goto("/datanets/curation/")
        expect(page.locator(".queue-item")).to_have_count(2)
        page.locator(f'[data-contribution="{jsonl.pk}"] details').first.click()
        screenshot(page, "curation")
        page.locator(f'[data-contribution="{jsonl.pk}"]').get_by_role("button", name="Accept").click()
        expect(page.get_by_role("status")).to_contain_text("1 contribution accepted")
        item = page.locator(f'[data-contribution="{csv.pk}"]')
        item.get_by_role("button", name="Reject").click()
        expect(page.get_by_role("alert")).to_contain_text("say why")
        item = page.locator(f'[data-contribution="{csv.pk}"]')
        item.get_by_label(f"Reason for contribution #{csv.pk}").fill("Not sourced: add a reference for each fact")
        item.get_by_role("button", name="Reject").click()
        expect(page.locator("[data-queue-empty]")).to_be_visible()

        # the owner freezes a snapshot and watches it confirm on chain
        switch_user(page, login_as, owner)
        page.goto(f"/datanets/{datanet.slug}/")
        page.get_by_role("button", name="Freeze snapshot").click()
        expect(page.locator("hgroup h1")).to_contain_text("Snapshot #1")
        snapshot = Snapshot.objects.get(datanet=datanet, number=1)
        confirm_anchor(snapshot)
        expect(page.locator("#anchor [data-anchor-status]")).to_have_text("on chain", timeout=10_000)
        expect(page.locator("#anchor [data-tx]")).to_have_text(snapshot.anchor.tx_hash)
        screenshot(page, "snapshot")

        # the contributor sees the decisions, downloads a proof and verifies it on chain
        switch_user(page, login_as, contributor)
        page.goto("/datanets/mine/")
        expect(page.locator(f'tr[data-contribution="{csv.pk}"]')).to_contain_text("add a reference for each fact")
        page.goto(f"/datanets/contributions/{jsonl.pk}/")
        expect(page.locator("[data-status]")).to_have_text("accepted")
        with page.expect_download() as download:
            page.locator("[data-proof-download]").first.click()
        proof = json.loads(Path(download.value.path()).read_text())
        assert proof["root"] == snapshot.merkle_root and proof["format"] == "standard-v1"
        page.get_by_role("button", name="Verify on chain").first.click()
        expect(page.locator("[data-verified]").first).to_have_attribute("data-verified", "true")

        # the list and the detail page, with their numbers and chart
        page.goto("/datanets/?q=health")
        expect(page.locator(f'[data-datanet="{datanet.slug}"]')).to_contain_text("4 records")
        screenshot(page, "datanet-list")
        page.goto(f"/datanets/{datanet.slug}/")
        expect(page.locator('[data-stat="records"]')).to_have_text("4")
        expect(page.locator("#contributions-chart")).to_be_visible()
        page.wait_for_function("() => window.Chart && Chart.getChart('contributions-chart')")
        screenshot(page, "datanet-detail")
        assert re.fullmatch(r"0x[0-9a-f]{64}", snapshot.anchor.tx_hash)
