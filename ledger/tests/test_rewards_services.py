"""Reward epochs and relayed claims through the ledger's services, against a real anvil and database."""

from __future__ import annotations

import time
from datetime import timedelta
from unittest.mock import patch

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from eth_account import Account

from ledger import chain, deployments, merkle
from ledger.models import RewardClaim, RewardEpoch, RewardEpochEntry
from ledger.rewards_services import (
    LEAF_TYPES,
    ClaimRefused,
    claim_relay,
    epoch_publish,
    epoch_send,
    rewards_confirm,
    rewards_dispatch,
)

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def signer_count(anvil, *, block: str = "latest") -> int:
    return int(anvil.rpc("eth_getTransactionCount", chain.signer().address, block), 16)


def confirmed(row: RewardEpoch | RewardClaim, timeout: float = 10) -> RewardEpoch | RewardClaim:
    """Run the confirmation pass until ``row`` is confirmed (the beat would, every 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        rewards_confirm()
        row.refresh_from_db()
        if row.status != RewardEpoch.Status.SUBMITTED or time.monotonic() > deadline:
            assert row.status == RewardEpoch.Status.CONFIRMED, row.last_error
            return row
        time.sleep(0.05)


def published(entries: list[tuple[str, int]], **kwargs) -> RewardEpoch:
    epoch = epoch_publish(entries=entries, **kwargs)
    epoch_send(epoch_id=epoch.id)
    return confirmed(epoch)


@pytest.fixture
def rewards(deployed_chain):
    return deployments.ensure_rewards_deployed()


@pytest.mark.parametrize(
    "entries, message",
    [
        ([], "at least one entry"),
        ([("0x1234", 5)], "not an EVM address"),
        ([(Account.create().address, 0)], "positive integer"),
        ([(Account.create().address, -3)], "positive integer"),
        ([(Account.create().address, True)], "positive integer"),
        ([(Account.create().address, 1.5)], "positive integer"),
        ([(Account.create().address, 2**256)], "positive integer"),
        ([("0x" + "11" * 20, 1), ("0x" + "11" * 20, 2)], "appears twice"),
        ([("only-one-value",)], "expected (address, amount)"),
    ],
)
def test_a_bad_epoch_is_refused_and_writes_nothing(entries, message) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        epoch_publish(entries=entries)
    assert not RewardEpoch.objects.exists()
    assert not RewardEpochEntry.objects.exists()


def test_an_epoch_is_published_on_chain_with_its_root_and_its_total_minted(rewards, anvil) -> None:
    alice, bob = Account.create().address, Account.create().address
    supply_before = chain.call("RewardToken", rewards.token_address, "totalSupply")
    nonce_before = signer_count(anvil)

    epoch = published([(bob, 300), (alice.lower(), 700)], beneficiaries={alice: "user:1", bob: "user:2"})

    assert epoch.number == 1 and epoch.entry_count == 2 and int(epoch.total) == 1_000
    info = chain.epoch_info(1, contracts=rewards)
    assert (info.root, info.total, info.claimed) == (epoch.root, 1_000, 0)
    assert chain.token_balance(rewards.distributor_address, contracts=rewards) == 1_000
    assert chain.call("RewardToken", rewards.token_address, "totalSupply") == supply_before + 1_000
    assert signer_count(anvil) == nonce_before + 1  # one transaction, one nonce
    tree = merkle.StandardMerkleTree.load(epoch.tree)
    assert tree.root == epoch.root
    for entry in epoch.entries.all():
        assert entry.account == (alice if entry.beneficiary == "user:1" else bob)  # checksummed, labelled
        assert merkle.verify(epoch.root, LEAF_TYPES, (entry.index, entry.account, int(entry.amount)), entry.proof)
    assert epoch_publish(entries=[(alice, 1)]).number == 2


def test_a_redelivered_epoch_send_spends_one_nonce(rewards, anvil) -> None:
    from ledger.tasks import epoch_send_task

    epoch = epoch_publish(entries=[(Account.create().address, 5)])
    before = signer_count(anvil, block="pending")

    epoch_send_task.apply(args=[epoch.id])
    epoch_send_task.apply(args=[epoch.id])
    rewards_dispatch(now=timezone.now() + timedelta(hours=1))
    confirmed(epoch)
    assert epoch.nonce == before
    assert signer_count(anvil) == before + 1


def test_an_epoch_waits_out_a_node_outage_and_is_published_with_one_nonce(rewards, anvil) -> None:
    epoch = epoch_publish(entries=[(Account.create().address, 9)])
    before = signer_count(anvil)
    with patch.object(chain, "broadcast", autospec=True, side_effect=chain.ChainUnavailable("node away")):
        epoch_send(epoch_id=epoch.id)
    epoch.refresh_from_db()
    assert epoch.status == RewardEpoch.Status.SUBMITTED and epoch.broadcast_at is None
    signed = (epoch.nonce, epoch.raw_tx)

    rewards_dispatch(now=timezone.now() + timedelta(hours=1))
    confirmed(epoch)
    assert (epoch.nonce, epoch.raw_tx) == signed
    assert signer_count(anvil) == before + 1


def test_a_relayed_claim_pays_the_entry_once(rewards) -> None:
    alice, bob = Account.create().address, Account.create().address
    epoch = published([(alice, 1_234), (bob, 66)])
    entry = epoch.entries.get(account=alice)

    claim = confirmed(claim_relay(entry=entry, requested_by="user:1"))

    assert claim.status == RewardClaim.Status.CONFIRMED and claim.tx_hash
    assert chain.token_balance(alice, contracts=rewards) == 1_234
    assert chain.is_claimed(epoch.number, entry.index, contracts=rewards)
    with pytest.raises(ClaimRefused) as refused:
        claim_relay(entry=entry, requested_by="user:1")
    assert refused.value.code == "already_claimed"
    assert claim.tx_hash in refused.value.message
    assert RewardClaim.objects.filter(entry=entry).count() == 1
    assert chain.token_balance(alice, contracts=rewards) == 1_234


def test_a_claim_paid_outside_our_records_is_refused_by_the_chain_check(rewards) -> None:
    alice = Account.create().address
    epoch = published([(alice, 10)])
    entry = epoch.entries.get()
    tx = chain.claim_transaction(rewards, epoch=1, index=0, account=alice, amount=10, proof=entry.proof)
    signed = chain.sign(tx, nonce=chain.account_nonce(chain.signer().address))
    chain.broadcast(signed.raw)
    while chain.get_receipt(signed.hash) is None:
        time.sleep(0.05)

    with pytest.raises(ClaimRefused) as refused:
        claim_relay(entry=entry)
    assert refused.value.code == "already_claimed"
    assert not RewardClaim.objects.exists()


def test_a_forged_proof_or_amount_is_refused_before_anything_is_sent(rewards, anvil) -> None:
    alice, bob = Account.create().address, Account.create().address
    epoch = published([(alice, 50), (bob, 5)])
    entry = epoch.entries.get(account=bob)
    other = epoch.entries.get(account=alice)
    before = signer_count(anvil, block="pending")

    for kwargs in (
        {"proof": ["0x" + "ab" * 32]},
        {"proof": other.proof},
        {"amount": 50},
        {"proof": ["not hex"]},
        {"proof": "0x" + "ab" * 32},
        {"proof": ["0x" + "ab" * 32] * 300},
    ):
        with pytest.raises(ClaimRefused) as refused:
            claim_relay(entry=entry, **kwargs)
        assert refused.value.code == "bad_proof", kwargs
    assert not RewardClaim.objects.exists()
    assert signer_count(anvil, block="pending") == before
    assert chain.token_balance(bob, contracts=rewards) == 0


def test_a_claim_waits_for_its_epoch_to_be_on_chain(rewards) -> None:
    epoch = epoch_publish(entries=[(Account.create().address, 3)])

    with pytest.raises(ClaimRefused) as refused:
        claim_relay(entry=epoch.entries.get())
    assert refused.value.code == "not_published"
    assert not RewardClaim.objects.exists()


def test_a_chain_reset_republishes_epochs_and_voids_the_lost_payments(rewards, anvil) -> None:
    alice = Account.create().address
    epoch = published([(alice, 77)])
    claim = confirmed(claim_relay(entry=epoch.entries.get()))

    anvil.stop()
    anvil.start(state=False)
    rewards_dispatch()
    confirmed(epoch)
    claim.refresh_from_db()
    fresh = deployments.active_reward_contracts()
    assert fresh != rewards
    assert epoch.status == RewardEpoch.Status.CONFIRMED and epoch.contracts == fresh
    assert chain.epoch_info(epoch.number, contracts=fresh).root == epoch.root
    assert claim.status == RewardClaim.VOIDED
    assert claim.last_error.startswith("chain reset (") and "gone with the old chain" in claim.last_error
    confirmed(claim_relay(entry=epoch.entries.get()))
    assert chain.token_balance(alice, contracts=fresh) == 77
