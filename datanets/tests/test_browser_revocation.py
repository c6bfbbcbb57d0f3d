"""In headless chromium, revocation (issue 17): a contributor withdraws an accepted contribution with an erasure
from its page, reads the confirmation step, confirms, sees the revocation and its receipt on the page with the
erased record's text gone, then opens "where did my data go"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from accounts.tests.factories import UserFactory
from datanets import services
from datanets.models import Record, Revocation
from openledger_web.browser import screenshot

from .factories import DatanetFactory, accepted, texts

pytestmark = [pytest.mark.browser]

SECRET = "Call Maria on 0611 223 344 after six."


def test_a_contributor_withdraws_with_erasure_and_follows_where_the_data_went(
    page: Page, login_as: Callable[[Page, Any], None]
) -> None:
    owner, maria = UserFactory(username="olivia"), UserFactory(username="maria")
    datanet = DatanetFactory(owner=owner, name="Clinic questions", slug="clinic-questions")
    contribution = accepted(
        datanet, maria, texts(SECRET, "Ibuprofen should be taken with food.", "Sleep helps the body repair itself.")
    )
    accepted(datanet, UserFactory(username="otto"), texts("A normal resting heart rate is 60 to 100 beats."))
    snapshot = services.snapshot_freeze(datanet=datanet, user=owner)

    login_as(page, maria)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"/datanets/contributions/{contribution.pk}/")
    expect(page.locator(".canonical").first).to_contain_text("0611 223 344")
    page.locator("[data-revoke-link]").click()

    # the form: a reason, an explanation, the erasure request, and what will happen
    expect(page.locator("hgroup h1")).to_have_text(f"Withdraw contribution #{contribution.pk}")
    expect(page.locator('[data-consequence="past"]')).to_contain_text("stay as anchored")
    page.select_option("select[name=reason]", "personal_data")
    page.fill("textarea[name=explanation]", "The first record holds my phone number.")
    page.check("input[name=erase]")
    screenshot(page, "revocation-form")
    page.locator("[data-revoke-next]").click()

    # the confirmation step says it again, with what was chosen; nothing is done yet
    expect(page.locator("[data-confirm-revoke]")).to_contain_text("and erase")
    expect(page.locator("[data-erase-chosen]")).to_contain_text("the hash stays")
    assert not Revocation.objects.exists()
    screenshot(page, "revocation-confirm")
    page.locator("[data-confirm-revoke]").click()

    # the contribution page: the message, the revocation, its receipt, no text left
    expect(page.get_by_role("status")).to_contain_text("withdrawn and its records' text erased")
    row = page.locator("[data-revocations] tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Withdrawn by the contributor")
    expect(row).to_contain_text("Personal data")
    expect(row.locator('[data-erased="1"]')).to_contain_text("erased")
    expect(page.locator('[data-receipt-kind="revocation"]')).to_contain_text("Withdrawal")
    expect(page.locator("h1 [data-revoked]")).to_contain_text("withdrawn")
    expect(page.locator("main")).not_to_contain_text("0611")  # nor the checks' masked excerpt of it
    expect(page.locator("[data-erased]").first).to_be_visible()
    screenshot(page, "revocation-contribution")
    assert set(Record.objects.filter(contribution=contribution).values_list("canonical", flat=True)) == {""}

    # "my contributions" marks it
    page.goto("/datanets/mine/")
    expect(page.locator(f'tr[data-contribution="{contribution.pk}"] [data-revoked]')).to_contain_text("erased")

    # where did my data go: the reverse lineage still lists the snapshot that held it
    page.goto(f"/datanets/contributions/{contribution.pk}/")
    page.locator("[data-revocations] [data-lineage-link]").click()
    expect(page).to_have_url(
        f"{page.url.split('/attribution/')[0]}/attribution/lineage/contributions/{contribution.pk}/"
    )
    expect(page.locator("main")).to_contain_text(f"#{snapshot.number}")
    expect(page.locator("main")).not_to_contain_text("0611 223 344")
    screenshot(page, "revocation-lineage")
