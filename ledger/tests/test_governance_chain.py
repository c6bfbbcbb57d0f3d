"""Governance on a real anvil, through the ledger's relays: both kinds of proposal from signature to execution, the
stake bonded, returned and slashed, and every refusal in words with nothing sent."""

from __future__ import annotations

import time

import pytest
from eth_account import Account

from ledger import chain, governance
from ledger.governance import GovernanceRefused
from ledger.models import GovernanceTransaction

from .gov import delegate_self, fund, governance_contracts, mine, propose, settled, sign, travel, vote

pytestmark = [pytest.mark.chain, pytest.mark.django_db]

TOKEN = 10**18
# the protocol pool the contracts are deployed with: one address for the module, so that its tests share one
# deployment (ledger.tests.gov.governance_contracts); each starts with the pool holding nothing all the same
POOL = Account.create().address


@pytest.fixture
def gov(chain_settings, db, settings):
    settings.GOVERNANCE_VOTING_DELAY_BLOCKS = 1
    settings.GOVERNANCE_VOTING_PERIOD_BLOCKS = 20
    settings.GOVERNANCE_TIMELOCK_SECONDS = 60
    settings.GOVERNANCE_PROPOSAL_THRESHOLD = 10**15
    settings.GOVERNANCE_QUORUM_PERCENT = 4
    settings.GOVERNANCE_DEPLOYMENT_STAKE = 10**16
    settings.GOVERNANCE_STAKE_SLASH_BPS = 5000
    settings.REWARDS_POOL_ADDRESS = POOL
    return governance_contracts()


@pytest.fixture
def voters(gov, anvil):
    alice, bob, carol = Account.create(), Account.create(), Account.create()
    fund({alice: TOKEN, bob: TOKEN // 10, carol: TOKEN // 2})
    for key in (alice, bob, carol):
        delegate_self(key, gov)
    mine(anvil, 1)
    return alice, bob, carol


def split_call(gov, contributors: int, builder: int) -> str:
    fn = chain.contract("ProtocolParameters", gov.parameters_address).functions.setRewardSplit(contributors, builder)
    return fn._encode_transaction_data()


def actions(targets, calldatas, description):
    return {"targets": targets, "values": [0] * len(targets), "calldatas": calldatas, "description": description}


def test_governance_deploys_once_owned_by_the_timelock_with_the_configured_rules(gov) -> None:
    assert governance_contracts() == gov
    timelock = gov.timelock_address
    assert chain.call("ProtocolParameters", gov.parameters_address, "owner") == timelock
    assert chain.call("ModelRegistry", gov.registry_address, "owner") == timelock
    assert chain.call("OpenLedgerGovernor", gov.governor_address, "timelock") == timelock
    assert chain.call("OpenLedgerGovernor", gov.governor_address, "token") == gov.rewards.token_address
    admin = chain.call("OpenLedgerTimelock", timelock, "DEFAULT_ADMIN_ROLE")
    assert not chain.call("OpenLedgerTimelock", timelock, "hasRole", admin, chain.signer().address)
    proposer = chain.call("OpenLedgerTimelock", timelock, "PROPOSER_ROLE")
    assert chain.call("OpenLedgerTimelock", timelock, "hasRole", proposer, gov.governor_address)
    rules = governance.read_parameters(gov)
    assert (rules.contributors_bps, rules.builder_bps, rules.pool_bps) == (7000, 2000, 1000)
    assert (rules.min_quality_score, rules.deployment_gate, rules.deployment_stake) == (0, False, 10**16)


def test_a_parameter_proposal_goes_from_signatures_to_execution_and_the_rules_change(gov, voters, anvil) -> None:
    alice, bob, carol = voters
    call = split_call(gov, 6000, 3000)
    proposal = actions([gov.parameters_address], [call], "Pay builders more: 60 / 30 / 10")
    proposal_id, created = propose(alice, proposal["targets"], proposal["calldatas"], proposal["description"])
    assert created.kind == "propose" and created.proposal_id == str(proposal_id)
    assert governance.proposal_state(proposal_id) == "pending"

    mine(anvil, 2)
    vote(alice, proposal_id, 1)
    vote(bob, proposal_id, 0)
    vote(carol, proposal_id, 2)
    tally = governance.tally(proposal_id)
    assert (tally.for_, tally.against, tally.abstain) == (TOKEN, TOKEN // 10, TOKEN // 2)
    assert tally.quorum == (TOKEN + TOKEN // 10 + TOKEN // 2) * 4 // 100
    before = governance.parameters()
    assert before.contributors_bps == 7000

    mine(anvil, 25)
    assert governance.proposal_state(proposal_id) == "succeeded"
    settled(governance.request_queue(**proposal))
    assert governance.proposal_state(proposal_id) == "queued"
    with pytest.raises(GovernanceRefused, match="delay is not over") as refused:
        governance.request_execute(**proposal)
    assert refused.value.code == "not_ready"
    travel(anvil, 61)
    settled(governance.request_execute(**proposal))
    assert governance.proposal_state(proposal_id) == "executed"

    assert governance.parameters().contributors_bps == 7000  # cached until the indexer sees ProposalExecuted
    governance.rules_changed()
    after = governance.parameters()
    assert (after.contributors_bps, after.builder_bps, after.pool_bps, after.source) == (6000, 3000, 1000, "chain")


def deployment(gov, builder, manifest: str, description: str, anvil):
    calldata = governance.deployment_calldata(manifest)
    proposal = actions([gov.registry_address], [calldata], description)
    proposal_id, _ = propose(builder, proposal["targets"], proposal["calldatas"], description)
    deadline = int(time.time()) + 3600
    stake = governance.parameters().deployment_stake
    typed = governance.permit_typed_data(builder.address, gov.registry_address, stake, deadline=deadline)
    settled(
        governance.relay_bond(
            manifest_hash=manifest, description=description, builder=builder.address, deadline=deadline,
            signature=sign(typed, builder),
        )
    )  # fmt: skip
    mine(anvil, 2)
    return proposal_id, proposal


def balance(gov, key_or_address) -> int:
    address = getattr(key_or_address, "address", key_or_address)
    return chain.token_balance(address, contracts=gov.rewards)


def test_a_deployment_proposal_that_passes_approves_the_version_and_returns_the_stake(gov, voters, anvil) -> None:
    alice, _, carol = voters
    manifest = "0x" + "ab" * 32
    start = balance(gov, carol)
    proposal_id, proposal = deployment(gov, carol, manifest, "Deploy carol's model v1", anvil)
    assert balance(gov, carol) == start - 10**16
    bond = chain.call("ModelRegistry", gov.registry_address, "bondOf", proposal_id)
    assert bond[0] == carol.address and bond[2] == 10**16 and bond[3] == 1

    vote(alice, proposal_id, 1)
    mine(anvil, 25)
    settled(governance.request_queue(**proposal))
    travel(anvil, 61)
    assert not governance.is_approved(manifest)
    settled(governance.request_execute(**proposal))
    governance.rules_changed()

    assert governance.is_approved(manifest)
    assert balance(gov, carol) == start  # returned in full when it passed
    assert chain.call("ModelRegistry", gov.registry_address, "bondOf", proposal_id)[3] == 2


def test_a_defeated_deployment_proposal_forfeits_its_stake_share_to_the_pool(gov, voters, anvil, settings) -> None:
    alice, _, carol = voters
    pool = settings.REWARDS_POOL_ADDRESS
    start = balance(gov, carol)
    proposal_id, proposal = deployment(gov, carol, "0x" + "cd" * 32, "Deploy an untested model", anvil)
    vote(alice, proposal_id, 0)
    vote(carol, proposal_id, 1)
    with pytest.raises(GovernanceRefused, match="voting is over") as early:
        governance.request_settle(proposal_id=proposal_id)
    assert early.value.code == "not_decided" or "voting" in early.value.message
    mine(anvil, 25)
    assert governance.proposal_state(proposal_id) == "defeated"
    with pytest.raises(GovernanceRefused, match="defeated proposal is never queued"):
        governance.request_queue(**proposal)

    settled(governance.request_settle(proposal_id=proposal_id))

    assert balance(gov, pool) == 10**16 // 2
    assert balance(gov, carol) == start - 10**16 // 2
    assert not governance.is_approved("0x" + "cd" * 32)


def test_an_unstaked_deployment_proposal_passes_but_cannot_take_effect(gov, voters, anvil) -> None:
    alice, _, _ = voters
    manifest = "0x" + "ef" * 32
    proposal = actions([gov.registry_address], [governance.deployment_calldata(manifest)], "No stake")
    proposal_id, _ = propose(alice, proposal["targets"], proposal["calldatas"], proposal["description"])
    mine(anvil, 2)
    vote(alice, proposal_id, 1)
    mine(anvil, 25)
    settled(governance.request_queue(**proposal))
    travel(anvil, 61)
    row = governance.request_execute(**proposal)
    row.refresh_from_db()
    assert row.status == "failed" and "NoStake" in row.last_error
    assert not governance.is_approved(manifest)


# Refusals: each in words, and nothing written or sent


def nothing_sent(anvil, before: int) -> None:
    assert int(anvil.rpc("eth_getTransactionCount", chain.signer().address, "pending"), 16) == before


def signer_nonce(anvil) -> int:
    return int(anvil.rpc("eth_getTransactionCount", chain.signer().address, "pending"), 16)


def test_proposing_below_the_threshold_is_refused(gov, voters, anvil) -> None:
    poor = Account.create()
    fund({poor: 10**14})
    delegate_self(poor, gov)
    mine(anvil, 1)
    rows, before = GovernanceTransaction.objects.count(), signer_nonce(anvil)
    with pytest.raises(GovernanceRefused, match="proposing needs 1000000000000000") as refused:
        propose(poor, [gov.parameters_address], [split_call(gov, 5000, 3000)], "Too poor to propose")
    assert refused.value.code == "below_threshold"
    assert GovernanceTransaction.objects.count() == rows
    nothing_sent(anvil, before)


def test_voting_twice_outside_the_window_or_without_votes_is_refused(gov, voters, anvil) -> None:
    alice, bob, _ = voters
    proposal = actions([gov.parameters_address], [split_call(gov, 6500, 2500)], "Window test")
    proposal_id, _ = propose(alice, proposal["targets"], proposal["calldatas"], proposal["description"])
    with pytest.raises(GovernanceRefused, match="voting has not started yet") as pending:
        vote(bob, proposal_id, 1)
    assert pending.value.code == "not_active"
    mine(anvil, 2)
    vote(bob, proposal_id, 1)
    rows, before = GovernanceTransaction.objects.count(), signer_nonce(anvil)
    with pytest.raises(GovernanceRefused, match="already voted") as twice:
        vote(bob, proposal_id, 0)
    assert twice.value.code == "already_voted"
    stranger = Account.create()
    with pytest.raises(GovernanceRefused, match="no votes at the proposal's snapshot") as none:
        vote(stranger, proposal_id, 1)
    assert none.value.code == "no_votes"
    mine(anvil, 25)
    with pytest.raises(GovernanceRefused, match="voting is over") as late:
        vote(alice, proposal_id, 1)
    assert late.value.code == "not_active"
    assert GovernanceTransaction.objects.count() == rows
    nothing_sent(anvil, before)


def test_executing_early_and_queueing_an_open_proposal_are_refused(gov, voters, anvil) -> None:
    alice, _, _ = voters
    proposal = actions([gov.parameters_address], [split_call(gov, 6600, 2400)], "Early")
    proposal_id, _ = propose(alice, proposal["targets"], proposal["calldatas"], proposal["description"])
    mine(anvil, 2)
    with pytest.raises(GovernanceRefused, match="voting is still open"):
        governance.request_queue(**proposal)
    with pytest.raises(GovernanceRefused, match="only a queued proposal can be executed"):
        governance.request_execute(**proposal)
    vote(alice, proposal_id, 1)
    mine(anvil, 25)
    with pytest.raises(GovernanceRefused, match="passed but is not queued"):
        governance.request_execute(**proposal)


def test_a_replayed_or_foreign_signature_is_refused(gov, anvil) -> None:
    dave = Account.create()
    fund({dave: 10**16})
    expiry = int(time.time()) + 3600
    typed = governance.delegation_typed_data(dave.address, dave.address, expiry=expiry)
    signature = sign(typed, dave)
    request = {"delegator": dave.address, "delegatee": dave.address, "expiry": expiry, "nonce": 0}
    settled(governance.relay_delegate(**request, signature=signature))
    with pytest.raises(GovernanceRefused, match="already relayed") as replay:
        governance.relay_delegate(**request, signature=signature)
    assert replay.value.code == "replayed"

    # signed for another chain: the domain differs, so the signature names someone else
    eve = Account.create()
    fund({eve: 10**16})
    typed = governance.delegation_typed_data(eve.address, eve.address, expiry=expiry)
    typed["domain"]["chainId"] = 1
    with pytest.raises(GovernanceRefused, match="not " + eve.address) as foreign:
        governance.relay_delegate(delegator=eve.address, delegatee=eve.address, expiry=expiry, nonce=0,
                                  signature=sign(typed, eve))  # fmt: skip
    assert foreign.value.code == "bad_signature"
    # for another contract
    typed = governance.delegation_typed_data(eve.address, eve.address, expiry=expiry)
    typed["domain"]["verifyingContract"] = gov.governor_address
    with pytest.raises(GovernanceRefused, match="not " + eve.address):
        governance.relay_delegate(delegator=eve.address, delegatee=eve.address, expiry=expiry, nonce=0,
                                  signature=sign(typed, eve))  # fmt: skip
    # and the contract itself refuses a replay sent directly, whatever the server thinks
    v, r, s = governance._split_signature(signature)
    with pytest.raises(chain.ContractReverted):
        chain.transaction("RewardToken", gov.rewards.token_address, "delegateBySig", dave.address, 0, expiry, v, r, s,
                          chain_id=gov.chain_id)  # fmt: skip


@pytest.mark.parametrize(
    "signature, message",
    [
        ("0x1234", "65 bytes"),
        ("", "65 bytes"),
        ("0x" + "zz" * 65, "65 bytes"),
        ("0x" + "00" * 65, "malformed"),
    ],
)
def test_a_malformed_signature_is_refused_in_words(gov, voters, signature, message) -> None:
    alice, _, _ = voters
    with pytest.raises(GovernanceRefused, match=message):
        governance.relay_delegate(delegator=alice.address, delegatee=alice.address, expiry=int(time.time()) + 60,
                                  nonce=1, signature=signature)  # fmt: skip
