"""`make run`'s chain mines a block every 2 s (scripts/run.py ``ANVIL_MINING``) instead of one per transaction. On an
anvil started with those very arguments: the deploy, the outbox, a relayed claim within the claim page's wait, and
governance all work without instant mining, and a vote opens with the passing of time alone (no ``anvil_mine``)."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from eth_account import Account

from ledger import chain, deployments, governance, rewards_services
from ledger.devchain import ANVIL_CHAIN_ID, ROOT, Anvil, free_port
from ledger.models import RewardClaim, RewardTransaction
from rewards.services import CLAIM_WAIT_SECONDS

from .gov import delegate_self, propose, vote, wait_confirmed

pytestmark = [pytest.mark.chain, pytest.mark.slow, pytest.mark.django_db]


def _run_module() -> Any:
    spec = importlib.util.spec_from_file_location("openledger_run_mining", ROOT / "scripts" / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dev_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    folder: Path = tmp_path_factory.mktemp("dev-chain")
    mining = _run_module().ANVIL_MINING
    assert "--block-time" in mining
    node = Anvil(port=free_port(), state_file=folder / "state.json", log_file=folder / "anvil.log", mining=mining)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def on_dev_chain(dev_chain: Anvil, settings: Any) -> Anvil:
    settings.EVM_RPC_URL = dev_chain.rpc_url
    settings.EVM_CHAIN_ID = ANVIL_CHAIN_ID
    settings.EVM_SIGNER_KEY = ""
    settings.EVM_KEYSTORE_FILE = ""
    settings.GOVERNANCE_VOTING_DELAY_BLOCKS = 1
    settings.GOVERNANCE_PROPOSAL_THRESHOLD = 10**15
    return dev_chain


def test_blocks_pass_without_transactions(on_dev_chain: Anvil) -> None:
    start = chain.block_number()
    deadline = time.monotonic() + 10
    while chain.block_number() < start + 2:
        assert time.monotonic() < deadline, "no block in 10 s on an idle chain"
        time.sleep(0.2)


def test_deploy_rewards_claims_and_a_vote_work_with_2_s_blocks(on_dev_chain: Anvil) -> None:
    out = StringIO()
    call_command("chain_deploy", stdout=out)
    assert "Governor at" in out.getvalue()
    gov = deployments.active_governance()
    assert gov is not None

    alice = Account.create()
    epoch = rewards_services.epoch_publish(entries=[(alice.address, 10**17)])
    rewards_services.epoch_send(epoch_id=epoch.id)
    wait_confirmed(epoch, rewards_services.rewards_confirm)
    # what the claim button does: relay, then wait up to CLAIM_WAIT_SECONDS for the receipt
    claim = rewards_services.claim_relay(entry=epoch.entries.get(), requested_by="test")
    claim = rewards_services.claim_confirm(claim=RewardClaim.objects.get(id=claim.id), wait_seconds=CLAIM_WAIT_SECONDS)
    assert claim.status == RewardTransaction.Status.CONFIRMED, claim.last_error
    assert chain.token_balance(alice.address) == 10**17

    delegated = delegate_self(alice, gov)
    # votes count from the block after the delegation (the Governor reads getVotes at an earlier block): one block
    while chain.block_number() <= delegated.block_number:
        time.sleep(0.5)
    call = chain.contract("ProtocolParameters", gov.parameters_address).functions.setMinQualityScore(40)
    proposal_id, _ = propose(alice, [gov.parameters_address], [call._encode_transaction_data()], "Quality 40")
    deadline = time.monotonic() + 15
    while governance.proposal_state(proposal_id) == "pending":  # the voting delay passes with the clock alone
        assert time.monotonic() < deadline, "the vote never opened"
        time.sleep(0.5)
    vote(alice, proposal_id, 1)
    assert governance.tally(proposal_id).for_ == 10**17
