"""In headless chromium, the record viewer (issue 15): a curator follows the near-duplicate evidence link on a
contribution's checks to the flagged record, sees it beside its twin with the changed words marked, excludes it with
the keyboard, accepts the contribution, freezes a snapshot, and the snapshot's records leave it out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from accounts.tests.factories import UserFactory
from datanets import checks
from datanets.models import Contribution, Snapshot
from openledger_web.browser import screenshot

from .factories import DatanetFactory, accepted, submit, texts

pytestmark = [pytest.mark.browser]

LONG = (
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch and "
    "the children laugh in the garden near the old oak tree by the river."
)
TWIN = LONG.replace("river", "stream")
OTHERS = (
    "Paracetamol is usually taken every four to six hours.",
    "Write to the clinic at help@clinic.example for an appointment.",
    "A normal resting heart rate for adults is 60 to 100 beats a minute.",
    "Ibuprofen should be taken with food to protect the stomach.",
    "Vaccines train the immune system to recognise a germ.",
    "Sleep helps the body repair itself overnight.",
    "ok",
)


def checked(contribution: Contribution) -> Contribution:
    checks.contribution_check(contribution_id=contribution.pk)
    contribution.refresh_from_db()
    return contribution


def test_a_curator_finds_a_near_duplicate_from_its_evidence_excludes_it_and_the_snapshot_leaves_it_out(
    page: Page, login_as: Callable[[Page, Any], None]
) -> None:
    owner, curator = UserFactory(username="olivia"), UserFactory(username="carl")
    datanet = DatanetFactory(owner=owner, name="Everyday facts", slug="everyday-facts")
    datanet.curators.add(curator)
    original = checked(accepted(datanet, UserFactory(username="otto"), texts(LONG))).records.get()
    pending = checked(submit(datanet, UserFactory(username="nina"), texts(TWIN, *OTHERS)))
    twin = pending.records.get(position=0)
    assert twin.flags[0]["kind"] == "near_duplicate"

    # the curator opens the contribution and follows the near-duplicate evidence link to the record
    login_as(page, curator)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"/datanets/contributions/{pending.pk}/")
    near = page.locator('[data-check="near duplicates"]')
    near.locator(f'a[data-record-link="{twin.pk}"]').click()
    expect(page.locator("hgroup h1")).to_have_text(f"Record #{twin.pk}")
    expect(page).to_have_url(
        f"{page.url.split('/datanets/')[0]}/datanets/{datanet.slug}/records/{twin.pk}/#record-{twin.pk}"
    )
    expect(page.locator("[data-twin] header")).to_contain_text(f"Repeats record #{original.pk}")
    expect(page.locator('[data-diff="twin"] mark.diff-changed')).to_have_text("river.")
    expect(page.locator('[data-diff="record"] mark.diff-changed')).to_have_text("stream.")
    screenshot(page, "record-near-duplicate")

    # x focuses the reason; Enter excludes
    page.keyboard.press("x")
    expect(page.locator('[data-key="x"]')).to_be_focused()
    page.keyboard.type(f"near copy of record #{original.pk}")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("1 record excluded")
    expect(page.locator("[data-excluded]")).to_be_visible()
    expect(page.locator("[data-exclusion]")).to_contain_text(f"near copy of record #{original.pk}")

    # the viewer lists the contribution's records; j moves through them; the filter finds the flagged ones
    page.goto(f"/datanets/{datanet.slug}/records/?contribution={pending.pk}")
    expect(page.locator("tr[data-record]")).to_have_count(len(OTHERS) + 1)
    page.keyboard.press("j")
    page.keyboard.press("j")
    expect(page.locator("tr.current")).to_have_attribute("data-record", str(pending.records.get(position=1).pk))
    page.get_by_label("Check").select_option("flagged")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("tr[data-record]")).to_have_count(2)  # the near-copy and the email address
    page.goto(f"/datanets/{datanet.slug}/records/")
    screenshot(page, "records-viewer")
    page.get_by_label("Search").fill("oak tree")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("tr[data-record]")).to_have_count(2)
    expect(page.locator("[data-record-count]")).to_have_text("2")

    # a accepts the contribution (after a confirmation)
    page.goto(f"/datanets/{datanet.slug}/records/{pending.records.get(position=1).pk}/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("a")
    expect(page.get_by_role("status")).to_contain_text("1 contribution accepted")
    expect(page.locator("[data-status]")).to_have_text("accepted")

    # the owner freezes a snapshot: the excluded near-copy is not in it
    login_as(page, owner)
    page.goto(f"/datanets/{datanet.slug}/")
    page.get_by_role("button", name="Freeze snapshot").click()
    expect(page.locator("hgroup h1")).to_contain_text("Snapshot #1")
    snapshot = Snapshot.objects.get(datanet=datanet, number=1)
    leaves = set(snapshot.leaves.values_list("record_id", flat=True))
    assert twin.pk not in leaves and original.pk in leaves and len(leaves) == len(OTHERS) + 1
    page.get_by_role("button", name="Browse records").click()
    expect(page.locator("tr[data-record]")).to_have_count(len(OTHERS) + 1)
    expect(page.locator(f'tr[data-record="{twin.pk}"]')).to_have_count(0)
    page.goto(f"/datanets/{datanet.slug}/records/{twin.pk}/")
    expect(page.locator("[data-in-no-snapshot]")).to_be_visible()
