"""In headless chromium with an injected EIP-1193 wallet that signs EIP-712 with a test key, on a real anvil: a
contributor paid through a real epoch delegates to herself, proposes a parameter change on the create form, votes and
watches the tally and quorum move without reloading, then queues and executes it with the page's buttons after time
travel, and the parameters page shows the new rule. The Celery beat's indexing is ``indexer.index_to_head()`` here."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from playwright.sync_api import Page, expect

from accounts.models import User, Wallet
from governance import indexer
from ledger.tests.gov import fund, governance_contracts, mine, travel
from openledger_web.browser import install_wallet, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.chain, pytest.mark.slow]

TOKEN = 10**18
# the protocol pool the contracts are deployed with: one address for the module, so that its tests share one
# deployment (ledger.tests.gov.governance_contracts); each starts with the pool holding nothing all the same
POOL = Account.create().address


@pytest.fixture
def gov(chain_settings: Any, transactional_db: None, settings: Any) -> Any:
    settings.GOVERNANCE_VOTING_DELAY_BLOCKS = 1
    settings.GOVERNANCE_VOTING_PERIOD_BLOCKS = 20
    settings.GOVERNANCE_TIMELOCK_SECONDS = 60
    settings.GOVERNANCE_DEPLOYMENT_STAKE = 10**16
    settings.REWARDS_POOL_ADDRESS = POOL
    return governance_contracts()


def test_a_contributor_delegates_proposes_votes_and_sees_the_rule_change(
    page: Page, login_as: Callable[[Page, Any], None], gov: Any, anvil: Any
) -> None:
    # given a contributor whose earnings (one token) were paid through a real epoch to her linked wallet
    key = Account.create()
    fund({key: TOKEN})
    carol = User.objects.create_user("carol", "carol@example.org")
    Wallet.objects.create(user=carol, address=key.address, chain_id=31337, message="m", signature="0x" + "00" * 65)
    signed = install_wallet(page, key)
    login_as(page, carol)

    # she delegates her votes to herself on the page
    page.goto("/governance/delegate/")
    expect(page.locator(f'[data-power="{key.address}"] [data-votes]')).to_have_attribute("data-votes", "0")
    page.get_by_role("button", name="Sign and delegate").click()
    expect(page.locator(f'[data-power="{key.address}"] [data-votes]')).to_have_attribute(
        "data-votes", str(TOKEN), timeout=20_000
    )
    assert '"primaryType":"Delegation"' in signed[0]
    mine(anvil, 1)

    # she proposes a stricter quality rule on the create form
    page.goto("/governance/new/")
    form = page.locator("#parameter-proposal form")
    form.get_by_label("Title").fill("Stricter quality")
    form.get_by_label("Why (Markdown)").fill("Snapshots should keep **good** records only.")
    page.locator("#id_change_min_quality_score").check()
    page.locator('[data-parameter="min_quality_score"] input[name="min_quality_score"]').fill("40")
    screenshot(page, "governance-new")
    form.get_by_role("button", name="Sign and propose").click()
    expect(page).to_have_url(re.compile(r"/governance/proposals/\d+/$"), timeout=20_000)
    expect(page.get_by_text("is being read from the chain")).to_be_visible()
    indexer.index_to_head(gov)  # the beat's indexing
    expect(page.get_by_role("heading", name="Stricter quality")).to_be_visible(timeout=15_000)
    expect(page.locator("[data-action=setMinQualityScore]")).to_have_text(
        "Require a quality score of at least 40 for a contribution to enter a snapshot"
    )

    # voting opens a block after the snapshot: the page's tally notices and offers the vote buttons
    mine(anvil, 2)
    vote_for = page.get_by_role("button", name="Vote for")
    expect(vote_for).to_be_visible(timeout=20_000)
    expect(page.locator("#quorum-progress")).to_have_attribute("data-quorum-percent", "0")
    vote_for.click()

    # the tally and the quorum move on the page, without a reload
    expect(page.locator("[data-sign-status]")).to_contain_text("mined", timeout=20_000)
    expect(page.locator("#quorum-progress")).to_have_attribute("data-quorum-percent", "100", timeout=15_000)
    expect(page.locator("[data-quorum-reached]")).to_be_visible()
    expect(page.locator('[data-tally="for"]')).to_contain_text("1")
    expect(page.locator(f'[data-voted="{key.address}"]')).to_contain_text("voted for")
    expect(page.get_by_role("button", name="Vote for")).to_be_hidden()
    indexer.index_to_head(gov)  # the beat's indexing: the timeline and the votes table list the vote after a reload
    page.reload()
    expect(page.locator(f'[data-vote="{key.address}"]')).to_contain_text("for")
    screenshot(page, "governance-proposal")

    # after the voting period, the page offers to queue it; after the timelock's delay, to execute it
    mine(anvil, 25)
    queue = page.get_by_role("button", name="Queue in the timelock")
    expect(queue).to_be_visible(timeout=20_000)
    queue.click()
    expect(page.get_by_role("status").filter(has_text="Queued in the timelock")).to_be_visible(timeout=15_000)
    travel(anvil, 61)
    page.reload()
    page.get_by_role("button", name="Execute").click()
    expect(page.get_by_role("status").filter(has_text="Executed: transaction")).to_be_visible(timeout=15_000)
    indexer.index_to_head(gov)

    # and the parameters page shows the new rule, with the proposal that set it
    page.goto("/governance/parameters/")
    expect(page.locator('[data-parameter="minQualityScore"] [data-value]')).to_have_attribute("data-value", "40")
    expect(page.locator('[data-change="minQualityScore"]').first).to_contain_text("Stricter quality")
    screenshot(page, "governance-parameters")
    page.goto("/governance/")
    expect(page.locator('[data-tab="executed"] .badge')).to_have_text("1")
    screenshot(page, "governance-proposals")
    assert len(signed) == 3  # the delegation, the proposal and the ballot: nothing else asked the wallet
