"""The reward split of new runs comes from the rules in force (ProtocolParameters on chain): after a parameter
proposal is executed the next run is split by the new basis points, exact to the unit, and a run split before keeps
its split; each accrual records the rules it was split by (source, contract, block), which an eth_call at that block
confirms. Without governance contracts the configured rules apply, and with the chain unreadable the last rules
read, else the configured ones, each recorded as such: a run is never left unsplit for want of the chain."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from attribution import hooks
from attribution import services as attribution_services
from attribution.models import RunAttribution
from inference.models import InferenceRun
from ledger import governance
from ledger.tests.gov_flow import enact, parameters_call, short_governance, voter
from modelfactory.tests.factories import stand_in_version
from rewards.api import run_rewards_data
from rewards.models import RewardAccrual

from .support import build_world

pytestmark = pytest.mark.django_db

FEE = 10**15 + 7  # not a multiple of 10,000: the flooring leaves dust for the pool


def finished_run(world: Any, version: Any = None) -> InferenceRun:
    return InferenceRun.objects.create(
        user=world.asker,
        version=version or world.version,
        base_model=world.version.base_model,
        kind=InferenceRun.Kind.CHAT,
        messages=[{"role": "user", "content": "What does the lantern burn?"}],
        answer="The lantern burns oil.",
        finish_reason="stop",
        status=InferenceRun.Status.SUCCEEDED,
    )


def attributed(world: Any, shares: dict[int, Fraction]) -> InferenceRun:
    """A run attributed with these contribution shares, its fee split as attribution's ``_store`` has it split:
    the registered fee split's policy read once, recorded on the row, and handed to the split."""
    run = finished_run(world)
    split = hooks.fee_split()
    policy = split.policy
    attribution = RunAttribution.objects.create(
        run=run, status=RunAttribution.Status.OK, fee=FEE, reward_policy_version=policy.version
    )
    split.run_attributed(run=run, attribution=attribution, contribution_shares=shares, policy=policy)
    return run


def expected(contributors_bps: int, builder_bps: int, shares: dict[int, Fraction]) -> dict[Any, int]:
    """The split by hand: floors, and everything else to the pool."""
    builder = FEE * builder_bps // 10_000
    pool = FEE * contributors_bps // 10_000
    paid = {c: pool * s.numerator // s.denominator for c, s in shares.items()}
    return {**paid, "builder": builder, "pool": FEE - builder - sum(paid.values())}


def amounts(run: InferenceRun) -> dict[Any, int]:
    return {
        a.contribution_id if a.recipient_kind == "contributor" else a.recipient_kind: int(a.amount)
        for a in RewardAccrual.objects.filter(run=run)
    }


def rules_of(run: InferenceRun) -> set[tuple[Any, ...]]:
    return set(
        RewardAccrual.objects.filter(run=run).values_list(
            "policy_version", "contributors_bps", "builder_bps", "rules_source", "rules_address", "rules_block"
        )
    )


@pytest.fixture
def world(settings) -> Any:
    settings.INFERENCE_RUN_FEE = FEE
    return build_world()


@pytest.fixture
def shares(world) -> dict[int, Fraction]:
    return {world.alice_contribution.pk: Fraction(2, 3), world.bob_contribution.pk: Fraction(1, 3)}


@pytest.mark.chain
def test_after_a_split_proposal_is_executed_the_next_run_uses_the_new_basis_points_and_an_earlier_run_keeps_its_own(
    chain_settings, settings, anvil, world, shares
) -> None:
    # given: governance deployed with 70 / 20 / 10, and a run split under it
    gov = short_governance(settings)
    key = voter(gov, anvil)
    earlier = attributed(world, shares)
    assert amounts(earlier) == expected(7000, 2000, shares)
    ((*_, before_block),) = rules_of(earlier)
    assert rules_of(earlier) == {(2, 7000, 2000, "chain", gov.parameters_address, before_block)}
    earlier_rows = list(RewardAccrual.objects.filter(run=earlier).values("id", "amount", "share", "rules_block"))

    # when: a proposal to pay 60 / 30 / 10 is executed (and the indexer says the rules changed)
    enact(anvil, key, gov.parameters_address, parameters_call(gov, "setRewardSplit", 6000, 3000), "60 / 30 / 10")
    later = attributed(world, shares)

    # then: the next run's split uses the new basis points to the unit; the earlier one is untouched
    split = expected(6000, 3000, shares)
    assert amounts(later) == split and sum(split.values()) == FEE
    assert split["pool"] - FEE // 10 == 2  # the dust of flooring 2/3 and 1/3 of the contributors' part
    ((*_, after_block),) = rules_of(later)
    assert after_block > before_block
    assert rules_of(later) == {(2, 6000, 3000, "chain", gov.parameters_address, after_block)}
    assert list(RewardAccrual.objects.filter(run=earlier).values("id", "amount", "share", "rules_block")) == (
        earlier_rows
    )
    # each split can be checked from chain data alone: ProtocolParameters at the recorded block
    for block, bps in ((before_block, (7000, 2000)), (after_block, (6000, 3000))):
        read = governance.read_parameters(gov, block=block)
        assert (read.contributors_bps, read.builder_bps) == bps

    # and a run attributed for real (a version without an index: builder and pool only) takes the new rules too
    older = stand_in_version(owner=world.builder, base_model=world.version.base_model, name="before indexes")
    unindexed = finished_run(world, older)
    row = attribution_services.run_attribute(run_id=unindexed.pk)
    assert row.status == RunAttribution.Status.NO_INDEX and row.reward_policy_version == 2
    assert amounts(unindexed) == {"builder": FEE * 3000 // 10_000, "pool": FEE - FEE * 3000 // 10_000}
    # its panel and its API say which rules split it
    panel = Client().get(reverse("attribution:run_panel", args=[unindexed.public_id])).content.decode()
    assert 'data-split-rules="6000/3000/1000"' in panel
    assert "contributors 60%, builder 30%, protocol pool 10%" in panel
    assert f"{gov.parameters_address}</code> held them at block {after_block}" in panel
    data = run_rewards_data(run=later, user=None)
    assert {d["kind"] for d in data} == {"contributor", "builder", "pool"}
    assert data[0]["rules"] == {
        "policy_version": 2, "contributors_bps": 6000, "builder_bps": 3000, "pool_bps": 1000, "source": "chain",
        "address": gov.parameters_address, "block": after_block,
    }  # fmt: skip


@pytest.mark.chain
def test_with_the_chain_away_a_run_is_split_by_the_last_rules_read_recorded_as_cached(
    chain_settings, settings, anvil, world, shares
) -> None:
    gov = short_governance(settings)
    first = attributed(world, shares)
    ((*_, block),) = rules_of(first)
    governance.rules_changed()  # the next run must read again
    anvil.stop()
    try:
        run = attributed(world, shares)
    finally:
        anvil.start()

    assert amounts(run) == expected(7000, 2000, shares)
    assert rules_of(run) == {(2, 7000, 2000, "cached", gov.parameters_address, block)}


@pytest.mark.chain
def test_with_the_chain_away_and_nothing_read_before_a_run_is_split_by_the_settings_recorded_as_fallback(
    chain_settings, settings, anvil, world, shares
) -> None:
    short_governance(settings)
    settings.GOVERNANCE_CONTRIBUTORS_BPS, settings.GOVERNANCE_BUILDER_BPS = 6500, 2500  # not what the chain holds
    anvil.stop()
    try:
        run = attributed(world, shares)
    finally:
        anvil.start()

    assert amounts(run) == expected(6500, 2500, shares)
    assert rules_of(run) == {(2, 6500, 2500, "fallback", "", None)}
    panel = Client().get(reverse("attribution:run_panel", args=[run.public_id])).content.decode()
    assert "the chain could not be read and no value had been read before" in panel


def test_without_governance_contracts_a_run_is_split_by_the_configured_rules_recorded_as_settings(
    settings, world, shares
) -> None:
    settings.GOVERNANCE_CONTRIBUTORS_BPS, settings.GOVERNANCE_BUILDER_BPS = 5000, 4000

    run = attributed(world, shares)

    assert amounts(run) == expected(5000, 4000, shares)
    assert rules_of(run) == {(2, 5000, 4000, "settings", "", None)}


def test_a_run_split_before_governance_shows_its_policys_fixed_basis_points(world, shares) -> None:
    from .support import paid_run

    run = paid_run(world)

    data = run_rewards_data(run=run, user=None)

    assert data[0]["rules"]["source"] == "policy"
    assert (data[0]["rules"]["contributors_bps"], data[0]["rules"]["builder_bps"]) == (7000, 2000)


@pytest.mark.chain
def test_the_pools_accruals_go_where_governance_moves_the_pool(chain_settings, db, anvil, settings) -> None:
    from eth_account import Account

    from rewards.services import pool_address

    settings.REWARDS_POOL_ADDRESS = ""
    assert pool_address() == chain_signer_address()  # before governance: the signer
    gov = short_governance(settings)
    assert pool_address() == settings.REWARDS_POOL_ADDRESS  # deployed with it as ProtocolParameters' pool
    new_pool = Account.create().address
    enact(anvil, voter(gov, anvil), gov.parameters_address, parameters_call(gov, "setPool", new_pool), "Move the pool")

    settings.REWARDS_POOL_ADDRESS = Account.create().address  # no longer read once governance is deployed
    assert pool_address() == new_pool


def chain_signer_address() -> str:
    from ledger import chain

    return chain.signer().address
