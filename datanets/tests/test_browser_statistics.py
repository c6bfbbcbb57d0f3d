"""In headless chromium: a Datanet's statistics page draws its charts (words, tokens, languages, contributors,
licences) from the same numbers its tables list, and a snapshot's page offers the Parquet download."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from accounts.tests.factories import UserFactory
from datanets import services
from datanets.tests.factories import DatanetFactory, accepted, texts
from openledger_web.browser import screenshot

pytestmark = [pytest.mark.browser]


def test_the_statistics_page_draws_its_charts_and_the_snapshot_offers_parquet(page: Page) -> None:
    datanet = DatanetFactory(name="River facts", slug="river-facts")
    accepted(
        datanet,
        UserFactory(username="ada"),
        texts(*(f"The river number {i} runs {'far ' * i}to the sea." for i in range(1, 40))),
    )
    accepted(
        datanet,
        UserFactory(username="bo"),
        texts("La rivière coule vers la mer depuis les collines.", "Der Fluss fließt ins Meer."),
        licence="CC0-1.0",
    )
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    page.goto(f"/datanets/{datanet.slug}/")
    page.locator("[data-statistics-link]").click()
    expect(page.locator("hgroup h1")).to_have_text("Statistics of River facts")
    expect(page.locator('[data-stat="records"]')).to_have_text("41")
    for chart in ("words", "tokens", "languages", "contributors", "licences"):
        expect(page.locator(f"#chart-{chart}")).to_have_attribute("data-bars", re.compile(r"^[1-9]\d*$"))
    expect(page.locator("[data-contributors] tbody tr")).to_have_count(2)
    screenshot(page, "datanet-statistics")
    page.goto(f"/datanets/{datanet.slug}/snapshots/{snapshot.number}/")
    with page.expect_download() as download:
        page.locator('[data-download="parquet"]').click()
    assert download.value.suggested_filename == "river-facts-snapshot-1.parquet"
