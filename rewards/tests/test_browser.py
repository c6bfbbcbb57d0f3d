"""In headless chromium: a contributor reads their earnings (chart included), claims an epoch balance to their
wallet on anvil with the button, and opens a contribution's impact page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from inference.models import InferenceRun
from ledger import chain
from openledger_web.browser import screenshot
from rewards.models import RewardAccrual
from rewards.services import rewards_epoch_close

from .support import build_world, owed, paid_run, publish

pytestmark = [pytest.mark.browser, pytest.mark.chain, pytest.mark.slow]


def test_a_contributor_sees_earnings_claims_to_the_wallet_and_follows_a_contribution(
    page: Page, login_as: Callable[[Page, Any], None], deployed_chain: Any
) -> None:
    world = build_world()
    for days_ago, share in ((6, Fraction(3, 4)), (4, Fraction(1, 2)), (4, Fraction(9, 10)), (1, Fraction(2, 3))):
        run = paid_run(world, alice=share, bob=1 - share)
        when = timezone.now() - timedelta(days=days_ago)
        RewardAccrual.objects.filter(run=run).update(created_at=when)
        InferenceRun.objects.filter(id=run.id).update(created_at=when)
    epoch = rewards_epoch_close().epoch
    publish(epoch)
    paid_run(world)  # earned after the close: accrued, waiting for the next epoch

    login_as(page, world.alice)
    page.goto("/attribution/earnings/")
    expect(page.locator("#earnings-chart")).to_be_visible()
    row = page.locator(f'tr[data-epoch="{epoch.number}"]')
    expect(row).to_have_attribute("data-state", "claimable")
    screenshot(page, "earnings")

    row.get_by_role("button", name="Claim to my wallet").click()

    expect(page.locator(f'tr[data-epoch="{epoch.number}"]')).to_have_attribute("data-state", "claimed")
    expect(page.locator("#balances .message-success")).to_contain_text("paid")
    expect(page.locator('[data-total="claimable"]')).to_have_text("0 OLTR")
    assert chain.token_balance(world.alice_wallet) == owed(world.alice) - owed(world.alice, open_only=True)
    screenshot(page, "earnings-claimed")

    page.goto(f"/attribution/contributions/{world.alice_contribution.pk}/impact/")
    expect(page.locator(f'tr[data-version="{world.version.pk}"]')).to_be_visible()
    expect(page.locator("[data-run]")).to_have_count(5)
    screenshot(page, "contribution-impact")
