"""In headless chromium: the home page explains the product and shows every real part up, refreshing by itself."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from openledger_web.browser import screenshot
from openledger_web.testing import celery_worker_process

pytestmark = [pytest.mark.browser, pytest.mark.chain]


def test_the_home_page_shows_every_part_up_and_refreshes_its_status(page: Page, deployed_chain) -> None:
    with celery_worker_process(name="home"):
        page.goto("/")
        expect(page.get_by_role("heading", level=1)).to_contain_text("lineage anyone can check")
        expect(page.locator("#status mark")).to_have_text("All systems up", timeout=15_000)
        for component in ("database", "broker", "workers", "chain", "model"):
            expect(page.locator(f'tr[data-component="{component}"] .badge')).to_have_text("up")
        first_check = page.locator("#status small").inner_text()
        # htmx polls the status fragment every 5 s and swaps it in place
        expect(page.locator("#status small")).not_to_have_text(first_check, timeout=12_000)
        screenshot(page, "home")


def test_the_api_docs_page_renders_the_schema_from_vendored_assets(page: Page) -> None:
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.goto("/api/docs/")
    expect(page.get_by_text("OpenLedger Web API").first).to_be_visible(timeout=15_000)
    expect(page.locator(".opblock-tag").first).to_be_visible()
    screenshot(page, "api-docs")
    assert failed == []
