"""The governance mirror against a real anvil: it follows a whole lifecycle, and rebuilds the same state from the
chain after being dropped, after the indexer and the node are stopped and restarted, and after the blocks under its
cursor change; a reset chain gets a new mirror."""

from __future__ import annotations

import time

import pytest
from eth_account import Account

from governance import indexer
from governance.models import ChainEvent, IndexerCursor, ParameterChange, Proposal, Stake, Vote, VotingPower
from ledger import chain, deployments, governance
from ledger.tests.gov import delegate_self, fund, governance_contracts, mine, propose, settled, sign, travel, vote

pytestmark = [pytest.mark.chain, pytest.mark.django_db]

# the protocol pool the contracts are deployed with: one address for the module, so that its tests share one
# deployment (ledger.tests.gov.governance_contracts); each starts with the pool holding nothing all the same
POOL = Account.create().address

TOKEN = 10**18


@pytest.fixture
def gov(chain_settings, db, settings):
    settings.GOVERNANCE_VOTING_DELAY_BLOCKS = 1
    settings.GOVERNANCE_VOTING_PERIOD_BLOCKS = 20
    settings.GOVERNANCE_TIMELOCK_SECONDS = 60
    settings.GOVERNANCE_DEPLOYMENT_STAKE = 10**16
    settings.REWARDS_POOL_ADDRESS = POOL
    return governance_contracts()


def mirror(contracts) -> dict:
    """Everything the mirror says, in a comparable form (no ids, no timestamps of our own)."""
    return {
        "proposals": sorted(
            Proposal.objects.filter(contracts=contracts).values_list(
                "proposal_id", "kind", "state", "for_votes", "against_votes", "abstain_votes", "quorum", "eta",
                "executed_tx", "manifest_hash", "title",
            )
        ),
        "votes": sorted(Vote.objects.filter(proposal__contracts=contracts).values_list("voter", "support", "weight")),
        "power": sorted(VotingPower.objects.filter(contracts=contracts).values_list("account", "votes")),
        "changes": sorted(
            ParameterChange.objects.filter(contracts=contracts).values_list(
                "name", "old_value", "new_value", "block_number", "proposal__proposal_id"
            )
        ),
        "stakes": sorted(Stake.objects.filter(contracts=contracts).values_list("onchain_id", "amount", "status")),
        "events": ChainEvent.objects.filter(contracts=contracts).count(),
    }  # fmt: skip


def lifecycle(gov, anvil):
    alice, bob = Account.create(), Account.create()
    fund({alice: TOKEN, bob: TOKEN // 4})
    delegate_self(alice, gov)
    delegate_self(bob, gov)
    mine(anvil, 1)
    call = chain.contract("ProtocolParameters", gov.parameters_address).functions.setRewardSplit(6000, 3000)
    description = "# Pay builders more\n\n60 / 30 / 10."
    proposal = {
        "targets": [gov.parameters_address],
        "values": [0],
        "calldatas": [call._encode_transaction_data()],
        "description": description,
    }
    proposal_id, _ = propose(alice, proposal["targets"], proposal["calldatas"], description)
    # a deployment proposal with its stake, defeated
    manifest = "0x" + "77" * 32
    deploy = {
        "targets": [gov.registry_address],
        "values": [0],
        "calldatas": [governance.deployment_calldata(manifest)],
        "description": "Deploy v7",
    }
    deployment_id, _ = propose(bob, deploy["targets"], deploy["calldatas"], deploy["description"])
    deadline = int(time.time()) + 3600
    typed = governance.permit_typed_data(bob.address, gov.registry_address, 10**16, deadline=deadline)
    settled(governance.relay_bond(manifest_hash=manifest, description="Deploy v7", builder=bob.address,
                                  deadline=deadline, signature=sign(typed, bob)))  # fmt: skip
    mine(anvil, 2)
    vote(alice, proposal_id, 1)
    vote(bob, proposal_id, 0)
    vote(alice, deployment_id, 0)
    mine(anvil, 25)
    settled(governance.request_queue(**proposal))
    settled(governance.request_settle(proposal_id=deployment_id))
    travel(anvil, 61)
    settled(governance.request_execute(**proposal))
    return proposal_id, deployment_id


def test_the_mirror_follows_a_lifecycle_and_the_rules_cache_is_told(gov, anvil) -> None:
    assert governance.parameters().contributors_bps == 7000
    proposal_id, deployment_id = lifecycle(gov, anvil)
    assert governance.parameters().contributors_bps == 7000  # cached: nothing told it yet

    indexer.index_to_head(gov)

    proposal = Proposal.objects.get(proposal_id=str(proposal_id))
    assert (proposal.kind, proposal.state, proposal.title) == ("parameters", "executed", "Pay builders more")
    assert (int(proposal.for_votes), int(proposal.against_votes)) == (TOKEN, TOKEN // 4)
    assert int(proposal.quorum) == (TOKEN + TOKEN // 4) * 4 // 100
    assert proposal.eta and proposal.executed_tx
    changes = {c.name: c for c in ParameterChange.objects.filter(proposal=proposal)}
    assert (changes["contributorsBps"].new_value, changes["builderBps"].new_value) == ("6000", "3000")
    assert ParameterChange.objects.filter(proposal=None, name="contributorsBps", new_value="7000").exists()
    deployment = Proposal.objects.get(proposal_id=str(deployment_id))
    assert (deployment.kind, deployment.state, deployment.manifest_hash) == ("deployment", "defeated", "0x" + "77" * 32)
    assert deployment.stake.status == "slashed" and int(deployment.stake.slashed) == 10**16 // 2
    assert governance.parameters().contributors_bps == 6000  # the executed proposal reached the cache
    assert indexer.index(gov)["events"] == 0  # nothing twice


def test_a_dropped_mirror_rebuilds_the_same_state(gov, anvil) -> None:
    lifecycle(gov, anvil)
    indexer.index_to_head(gov)
    before = mirror(gov)

    indexer.rebuild(gov)
    assert not Proposal.objects.filter(contracts=gov).exists()
    indexer.index_to_head(gov)

    assert mirror(gov) == before


def test_an_indexer_and_node_stopped_mid_way_resume_to_the_same_state(gov, anvil) -> None:
    proposal_id, _ = lifecycle(gov, anvil)
    # index only part of the way, as a worker killed mid-stream would have
    indexer.BLOCKS_PER_PASS, saved = 3, indexer.BLOCKS_PER_PASS
    try:
        indexer.index(gov)
        indexer.index(gov)
    finally:
        indexer.BLOCKS_PER_PASS = saved
    partial = IndexerCursor.objects.get(contracts=gov).block_number
    assert partial < chain.block_number()
    anvil.stop()
    anvil.start()  # the same chain, from its saved state

    indexer.index_to_head(gov)
    resumed = mirror(gov)
    indexer.rebuild(gov)
    indexer.index_to_head(gov)

    assert mirror(gov) == resumed
    assert Proposal.objects.get(proposal_id=str(proposal_id)).state == "executed"


def test_blocks_changed_under_the_cursor_rebuild_the_mirror_from_the_chain(gov, anvil) -> None:
    alice = Account.create()
    fund({alice: TOKEN})
    delegate_self(alice, gov)
    mine(anvil, 1)
    snapshot = anvil.rpc("evm_snapshot")
    call = chain.contract("ProtocolParameters", gov.parameters_address).functions.setMinQualityScore(40)
    proposal_id, _ = propose(alice, [gov.parameters_address], [call._encode_transaction_data()], "Raise quality")
    indexer.index_to_head(gov)
    assert Proposal.objects.filter(proposal_id=str(proposal_id)).exists()

    anvil.rpc("evm_revert", snapshot)  # the proposal's blocks are gone; others take their numbers
    mine(anvil, 5)
    counts = indexer.index(gov)

    assert counts["rebuilt"] == 1
    indexer.index_to_head(gov)
    assert not Proposal.objects.filter(proposal_id=str(proposal_id)).exists()
    assert IndexerCursor.objects.get(contracts=gov).rebuilds >= 1


def test_a_reset_chain_gets_new_contracts_and_a_new_mirror(gov, anvil) -> None:
    lifecycle(gov, anvil)
    indexer.index_to_head(gov)
    assert Proposal.objects.filter(contracts=gov).count() == 2

    anvil.stop()
    anvil.start(state=False)
    fresh = deployments.ensure_governance_deployed()
    indexer.index_to_head(fresh)

    gov.refresh_from_db()
    assert fresh != gov and not gov.active
    assert Proposal.objects.filter(contracts=fresh).count() == 0
    assert Proposal.objects.filter(contracts=gov).count() == 2  # the old chain's history stays
    assert ParameterChange.objects.filter(contracts=fresh, name="contributorsBps").count() == 1  # the constructor's


def test_a_wallet_with_gas_may_vote_and_delegate_directly_and_the_mirror_counts_it(gov, anvil) -> None:
    """No relay: anvil's second development account (it holds ether) sends delegate() and castVote() itself."""
    from web3 import Web3

    direct = Account.from_key("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
    alice = Account.create()
    fund({direct: TOKEN // 2, alice: TOKEN})
    delegate_self(alice, gov)
    w3 = Web3(Web3.HTTPProvider(anvil.rpc_url))

    def send(name: str, address: str, function: str, *args) -> None:
        contract = w3.eth.contract(address=address, abi=chain.load_contract_artifact(name)["abi"])
        tx = getattr(contract.functions, function)(*args).build_transaction(
            {"from": direct.address, "nonce": w3.eth.get_transaction_count(direct.address), "chainId": gov.chain_id}
        )
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(
            direct.sign_transaction(tx).raw_transaction))  # fmt: skip
        assert receipt["status"] == 1

    send("RewardToken", gov.rewards.token_address, "delegate", direct.address)
    mine(anvil, 1)
    call = chain.contract("ProtocolParameters", gov.parameters_address).functions.setMinQualityScore(10)
    proposal_id, _ = propose(alice, [gov.parameters_address], [call._encode_transaction_data()], "Direct voters")
    mine(anvil, 2)
    send("OpenLedgerGovernor", gov.governor_address, "castVote", proposal_id, 0)
    indexer.index_to_head(gov)

    [counted] = Vote.objects.filter(proposal__proposal_id=str(proposal_id))
    assert (counted.voter, counted.support, int(counted.weight)) == (direct.address, 0, TOKEN // 2)
    assert int(VotingPower.objects.get(contracts=gov, account=direct.address).votes) == TOKEN // 2
    assert governance.tally(proposal_id).against == TOKEN // 2
