"""Migrating today's balances and claims to the governance token, on a real anvil.

The reward contracts before governance (``ledger/contracts/legacy/*.v1.json``: a token pre-minted to a treasury, a
distributor pulling each epoch's total from it after an ``approve``) are deployed as that release deployed them, an
epoch is published and one entry claimed on them through the outbox; then today's code looks at the chain. It must
retire them as upgraded, deploy the new ones, publish the same epoch (root, total) on the new distributor, void the
claim paid in the retired token so the entry can be claimed in the new one, and count nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Sum
from eth_account import Account

from ledger import chain, deployments, governance, rewards_selectors, rewards_services
from ledger.models import ChainDeployment, RewardClaim, RewardContracts, RewardEpoch, RewardTransaction

from .gov import delegate_self, mine, wait_confirmed

pytestmark = [pytest.mark.chain, pytest.mark.django_db]

LEGACY = chain.ARTIFACT_PATH.parent.parent / "legacy"
V1_SUPPLY = 10**27
Status = RewardTransaction.Status


def legacy_artifact(name: str) -> dict[str, Any]:
    return json.loads((LEGACY / f"{name}.v1.json").read_text())


def legacy_sha256(name: str) -> str:
    """What ``chain.contract_artifact_sha256`` said of the contract when the v1 release was built."""
    return hashlib.sha256(bytes.fromhex(legacy_artifact(name)["bytecode"][2:])).hexdigest()


def mined(tx_hash: str, timeout: float = 10) -> chain.Receipt:
    deadline = time.monotonic() + timeout
    while (receipt := chain.get_receipt(tx_hash)) is None:
        assert time.monotonic() < deadline, f"{tx_hash} not mined within {timeout} s"
        time.sleep(0.05)
    assert receipt.status == 1, f"{tx_hash} reverted"
    return receipt


def send(tx: dict[str, Any]) -> chain.Receipt:
    """Sign with the server's key and the chain's pending nonce, as the v1 release's deploy did."""
    signed = chain.sign(tx, nonce=chain.account_nonce(chain.signer().address))
    chain.broadcast(signed.raw)
    return mined(signed.hash)


def v1_deploy(name: str, *args: Any, chain_id: int) -> chain.Receipt:
    artifact = legacy_artifact(name)
    factory = chain.connect().eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    return send(factory.constructor(*args).build_transaction({"from": chain.signer().address, "chainId": chain_id}))


def v1_contract(name: str, address: str) -> Any:
    return chain.connect().eth.contract(address=address, abi=legacy_artifact(name)["abi"])


@pytest.fixture
def v1(deployed_chain: ChainDeployment) -> RewardContracts:
    """The v1 reward contracts on chain and the row the v1 release wrote for them: token pre-minted to the
    treasury (the server's signer), distributor approved to pull each epoch's total from it."""
    treasury = chain.signer().address
    cid = deployed_chain.chain_id
    token = v1_deploy("RewardToken", treasury, V1_SUPPLY, chain_id=cid)
    distributor = v1_deploy("RewardDistributor", token.contract_address, treasury, chain_id=cid)
    approve = send(
        v1_contract("RewardToken", token.contract_address)
        .functions.approve(distributor.contract_address, chain.MAX_UINT256)
        .build_transaction({"from": treasury, "chainId": cid})
    )
    return RewardContracts.objects.create(
        deployment=deployed_chain,
        chain_id=cid,
        token_address=token.contract_address,
        distributor_address=distributor.contract_address,
        treasury=treasury,
        token_tx_hash=token.tx_hash,
        distributor_tx_hash=distributor.tx_hash,
        approve_tx_hash=approve.tx_hash,
        deploy_block_number=approve.block_number,
        deploy_block_hash=approve.block_hash,
        token_artifact_sha256=legacy_sha256("RewardToken"),
        distributor_artifact_sha256=legacy_sha256("RewardDistributor"),
    )


def v1_balance(v1: RewardContracts, address: str) -> int:
    return v1_contract("RewardToken", v1.token_address).functions.balanceOf(address).call()


def confirmed(row: Any) -> Any:
    return wait_confirmed(row, rewards_services.rewards_confirm)


def claimed(entry: Any) -> RewardClaim:
    claim = rewards_services.claim_relay(entry=entry, requested_by="test")
    return confirmed(RewardClaim.objects.get(id=claim.id))


@pytest.fixture
def v1_epoch(v1: RewardContracts) -> tuple[RewardEpoch, Any, Any]:
    """Epoch 1 published on v1 through the outbox, alice's entry claimed there, bob's not."""
    alice, bob = Account.create(), Account.create()
    epoch = rewards_services.epoch_publish(entries=[(alice.address, 1_000 * 10**15), (bob.address, 2_345 * 10**15)])
    rewards_services.epoch_send(epoch_id=epoch.id)
    confirmed(epoch)
    assert epoch.contracts == v1
    claim = claimed(epoch.entries.get(account=alice.address))
    assert claim.contracts == v1 and v1_balance(v1, alice.address) == 1_000 * 10**15
    assert v1_balance(v1, v1.treasury) == V1_SUPPLY - int(epoch.total)  # the distributor pulled the total
    return epoch, alice, bob


def test_the_v1_reward_contracts_are_retired_as_upgraded_and_their_epochs_and_claims_move(v1, v1_epoch, anvil) -> None:
    epoch, alice, bob = v1_epoch
    v1_claim = RewardClaim.objects.get(entry__account=alice.address)

    # when today's code looks at the chain (the beat's first dispatch would do the same)
    new = deployments.ensure_rewards_deployed()

    # then the v1 row is retired, as upgraded rather than reset, and new contracts stand beside the same registry
    v1.refresh_from_db()
    assert not v1.active and "RewardToken was upgraded" in v1.retired_reason
    assert new.active and new.deployment == v1.deployment and new.distributor_address != v1.distributor_address
    assert new.token_artifact_sha256 == chain.contract_artifact_sha256("RewardToken")
    assert chain.call("RewardToken", new.token_address, "totalSupply") == 0  # no pre-mint any more
    # the epoch goes back to the outbox, and the claim paid in the retired token is voided and says so truthfully
    epoch.refresh_from_db()
    assert epoch.status == Status.PENDING and epoch.contracts is None
    v1_claim.refresh_from_db()
    assert v1_claim.status == RewardClaim.VOIDED
    assert "upgraded" in v1_claim.last_error and "chain reset" not in v1_claim.last_error
    assert v1.token_address in v1_claim.last_error and "claim it again" in v1_claim.last_error
    # the old chain is still there: the retired token keeps its balances, and the platform counts them no more
    assert v1_balance(v1, alice.address) == 1_000 * 10**15

    # when the beat publishes again
    rewards_services.rewards_dispatch()
    confirmed(epoch)

    # then the same epoch, root and total, is on the new distributor, which minted exactly its total
    assert epoch.contracts == new
    info = chain.epoch_info(epoch.number, contracts=new)
    assert (info.root, info.total, info.claimed) == (epoch.root, int(epoch.total), 0)
    assert chain.call("RewardToken", new.token_address, "totalSupply") == int(epoch.total)
    assert RewardEpoch.objects.count() == 1

    # and both entries are claimable in the new token, for the same amounts
    alice_entry, bob_entry = epoch.entries.get(account=alice.address), epoch.entries.get(account=bob.address)
    for proof in (rewards_selectors.claim_proof(alice_entry), rewards_selectors.claim_proof(bob_entry)):
        assert proof["claim"]["status"] == rewards_selectors.UNCLAIMED
        assert proof["anchor"]["contract_address"] == new.distributor_address
    again, bob_claim = claimed(alice_entry), claimed(bob_entry)
    assert again.contracts == new and bob_claim.contracts == new
    assert chain.token_balance(alice.address, contracts=new) == int(alice_entry.amount)
    assert chain.token_balance(bob.address, contracts=new) == int(bob_entry.amount)
    assert chain.epoch_info(epoch.number, contracts=new).claimed == int(epoch.total)
    with pytest.raises(rewards_services.ClaimRefused, match="already claimed"):
        rewards_services.claim_relay(entry=alice_entry)

    # nothing is counted twice: one paid claim per entry, paying the epoch's total once
    paid = RewardClaim.objects.filter(status=Status.CONFIRMED)
    assert sorted(paid.values_list("entry_id", flat=True)) == sorted([alice_entry.id, bob_entry.id])
    assert paid.aggregate(total=Sum("entry__amount"))["total"] == epoch.total == Decimal(3_345 * 10**15)
    assert RewardClaim.objects.filter(status=RewardClaim.VOIDED).get() == v1_claim
    assert rewards_selectors.claim_proof(alice_entry)["claim"]["tx_hash"] == again.tx_hash

    # and the new token carries votes: delegated, the migrated balance is voting power in the Governor
    gov = deployments.ensure_governance_deployed()
    assert gov.rewards == new
    assert chain.call("RewardToken", new.token_address, "getVotes", alice.address) == 0
    delegate_self(alice, gov)
    mine(anvil, 1)
    assert chain.call("RewardToken", new.token_address, "getVotes", alice.address) == int(alice_entry.amount)
    assert governance.voting_power(alice.address, contracts=gov)["votes"] == int(alice_entry.amount)
    past = chain.block_number() - 1
    assert chain.call("OpenLedgerGovernor", gov.governor_address, "getVotes", alice.address, past) == int(
        alice_entry.amount
    )


def test_a_second_look_after_the_upgrade_changes_nothing(v1, v1_epoch) -> None:
    new = deployments.ensure_rewards_deployed()
    rewards_services.rewards_dispatch()
    epoch, _, _ = v1_epoch
    confirmed(epoch)

    assert deployments.ensure_rewards_deployed() == new
    rewards_services.rewards_dispatch()
    epoch.refresh_from_db()
    assert epoch.status == Status.CONFIRMED and epoch.contracts == new
    assert RewardContracts.objects.filter(active=True).get() == new
    assert RewardContracts.objects.count() == 2
    assert RewardClaim.objects.filter(status=RewardClaim.VOIDED).count() == 1


def test_a_claim_in_flight_on_v1_fails_and_the_entry_is_claimed_on_the_new_token(v1, v1_epoch) -> None:
    epoch, _, bob = v1_epoch
    bob_entry = epoch.entries.get(account=bob.address)
    # a claim written but not sent when the upgrade lands (the node was away)
    stuck = RewardClaim.objects.create(entry=bob_entry, requested_by="test")

    new = deployments.ensure_rewards_deployed()

    stuck.refresh_from_db()
    assert stuck.status == Status.FAILED and "claim again" in stuck.last_error
    assert v1_balance(v1, bob.address) == 0
    rewards_services.rewards_dispatch()
    confirmed(epoch)
    claimed(bob_entry)
    assert chain.token_balance(bob.address, contracts=new) == int(bob_entry.amount)
