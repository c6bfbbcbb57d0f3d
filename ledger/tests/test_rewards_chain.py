"""RewardToken and RewardDistributor on a real anvil: deployment, epochs, claims, the contract's own refusals."""

from __future__ import annotations

import time

import pytest
from eth_account import Account

from ledger import chain, deployments, merkle
from ledger.models import ChainDeployment, RewardContracts
from ledger.rewards_services import LEAF_TYPES

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def send(tx: dict) -> chain.Receipt:
    """Sign with the next pending nonce and wait for the receipt (these tests use no outbox)."""
    signed = chain.sign(tx, nonce=chain.account_nonce(chain.signer().address))
    chain.broadcast(signed.raw)
    return mined(signed.hash)


def mined(tx_hash: str, timeout: float = 10) -> chain.Receipt:
    """The receipt, once anvil has mined the transaction (automine answers the send before the block is sealed)."""
    deadline = time.monotonic() + timeout
    while (receipt := chain.get_receipt(tx_hash)) is None:
        assert time.monotonic() < deadline, f"{tx_hash} not mined within {timeout} s"
        time.sleep(0.05)
    return receipt


@pytest.fixture
def rewards(deployed_chain: ChainDeployment) -> RewardContracts:
    return deployments.ensure_rewards_deployed()


def tree_of(payouts: list[tuple[str, int]]) -> merkle.StandardMerkleTree:
    return merkle.StandardMerkleTree.of([(i, a, amount) for i, (a, amount) in enumerate(payouts)], LEAF_TYPES)


def test_the_reward_contracts_deploy_once_and_no_token_exists_before_an_epoch_pays_it(rewards, deployed_chain) -> None:
    assert deployments.ensure_rewards_deployed() == rewards
    assert RewardContracts.objects.filter(active=True).count() == 1
    assert rewards.deployment == deployed_chain
    assert rewards.treasury == chain.signer().address
    assert chain.reward_token_of(rewards.distributor_address) == rewards.token_address
    assert chain.call("RewardToken", rewards.token_address, "totalSupply") == 0
    assert chain.call("RewardToken", rewards.token_address, "minter") == rewards.distributor_address


def test_only_the_distributor_mints_and_it_mints_exactly_each_epochs_total(rewards, settings) -> None:
    tree = tree_of([(Account.create().address, 1_234), (Account.create().address, 5)])
    send(chain.publish_epoch_transaction(rewards, epoch=1, root=tree.root, total=1_239))
    assert chain.call("RewardToken", rewards.token_address, "totalSupply") == 1_239
    assert chain.token_balance(rewards.distributor_address, contracts=rewards) == 1_239
    with pytest.raises(chain.ContractReverted, match="NotMinter"):
        chain.transaction("RewardToken", rewards.token_address, "mint", chain.signer().address, 1,
                          chain_id=rewards.chain_id)  # fmt: skip


def test_a_claim_pays_the_leaf_once_and_the_contract_refuses_a_second(rewards) -> None:
    alice, bob = Account.create().address, Account.create().address
    tree = tree_of([(alice, 1_000), (bob, 2_345)])
    send(chain.publish_epoch_transaction(rewards, epoch=1, root=tree.root, total=3_345))
    info = chain.epoch_info(1, contracts=rewards)
    assert (info.root, info.total, info.claimed) == (tree.root, 3_345, 0)

    receipt = send(chain.claim_transaction(rewards, epoch=1, index=1, account=bob, amount=2_345, proof=tree.proof(1)))

    [event] = chain.decode_reward_events(receipt, contracts=rewards)
    assert (event.epoch, event.index, event.account, event.amount) == (1, 1, bob, 2_345)
    assert chain.token_balance(bob, contracts=rewards) == 2_345
    assert chain.is_claimed(1, 1, contracts=rewards) and not chain.is_claimed(1, 0, contracts=rewards)
    with pytest.raises(chain.ContractReverted, match="AlreadyClaimed"):
        chain.claim_transaction(rewards, epoch=1, index=1, account=bob, amount=2_345, proof=tree.proof(1))
    assert chain.token_balance(bob, contracts=rewards) == 2_345


def test_the_contract_refuses_forged_proofs_and_inflated_amounts(rewards) -> None:
    alice, mallory = Account.create().address, Account.create().address
    tree = tree_of([(alice, 500), (mallory, 1)])
    send(chain.publish_epoch_transaction(rewards, epoch=1, root=tree.root, total=501))

    with pytest.raises(chain.ContractReverted, match="InvalidProof"):
        chain.claim_transaction(rewards, epoch=1, index=1, account=mallory, amount=500, proof=tree.proof(1))
    with pytest.raises(chain.ContractReverted, match="InvalidProof"):
        chain.claim_transaction(rewards, epoch=1, index=0, account=mallory, amount=500, proof=tree.proof(0))
    with pytest.raises(chain.ContractReverted, match="InvalidProof"):
        chain.claim_transaction(rewards, epoch=1, index=0, account=alice, amount=500, proof=["0x" + "ab" * 32])
    with pytest.raises(chain.ContractReverted, match="UnknownEpoch"):
        chain.claim_transaction(rewards, epoch=2, index=0, account=alice, amount=500, proof=tree.proof(0))
    assert chain.token_balance(mallory, contracts=rewards) == 0


def test_an_epoch_is_published_once_and_only_by_the_owner(rewards, settings) -> None:
    tree = tree_of([(Account.create().address, 7)])
    send(chain.publish_epoch_transaction(rewards, epoch=1, root=tree.root, total=7))

    with pytest.raises(chain.ContractReverted, match="EpochAlreadyPublished"):
        chain.publish_epoch_transaction(rewards, epoch=1, root=tree.root, total=7)
    settings.EVM_SIGNER_KEY = "0x" + "42" * 32
    with pytest.raises(chain.ContractReverted, match="OwnableUnauthorizedAccount"):
        chain.publish_epoch_transaction(rewards, epoch=2, root=tree.root, total=7)


def test_a_reset_chain_gets_new_reward_contracts(rewards, anvil) -> None:
    anvil.stop()
    anvil.start(state=False)

    fresh = deployments.ensure_rewards_deployed()

    rewards.refresh_from_db()
    assert fresh != rewards and fresh.active
    assert not rewards.active and rewards.retired_reason
    assert chain.call("RewardToken", fresh.token_address, "totalSupply") == 0


def test_chain_deploy_deploys_the_reward_contracts_once_and_prints_them(chain_settings) -> None:
    from io import StringIO

    from django.core.management import call_command

    outputs = []
    for _ in range(2):
        out = StringIO()
        call_command("chain_deploy", stdout=out)
        outputs.append(out.getvalue())

    rewards = RewardContracts.objects.get()
    assert rewards.distributor_address in outputs[0] and rewards.token_address in outputs[0]
    assert outputs[0] == outputs[1]
