"""In headless chromium: an anonymous visitor follows the footer's link to the chain page and reads the contracts as
deployed on anvil, with an ABI unfolded (no inline script or style: the shared page fixture fails on CSP reports)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from ledger import deployments
from openledger_web.browser import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.chain]


def test_an_anonymous_visitor_reads_the_chain_page(page: Page, deployed_chain: Any) -> None:
    rewards = deployments.ensure_rewards_deployed()

    page.goto("/")
    page.locator("[data-chain-link]").click()

    page.wait_for_url("**/chain/")
    expect(page.locator("[data-chain-id]")).to_have_text("31337")
    expect(page.locator("[data-contract]")).to_have_count(3)
    registry = page.locator('[data-contract="LineageRegistry"]')
    expect(registry.locator("[data-address]")).to_have_text(deployed_chain.contract_address)
    expect(registry.locator("[data-deploy-block]")).to_have_text(str(deployed_chain.deploy_block_number))
    expect(page.locator('[data-contract="RewardDistributor"] [data-address]')).to_have_text(rewards.distributor_address)
    expect(page.locator('[data-anchor-kind="receipt_batch"]')).to_contain_text("receipt_batch:<batch root>")
    expect(page.locator('[data-leaf-encoding="claim"]')).to_contain_text("[uint256, address, uint256]")
    distributor = page.locator('[data-contract="RewardDistributor"]')
    distributor.get_by_text("ABI of RewardDistributor (JSON)").click()
    expect(distributor.locator("[data-abi]")).to_contain_text('"name": "publishEpoch"')
    screenshot(page, "chain")
