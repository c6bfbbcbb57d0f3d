"""Test helpers for governance on a real anvil: voters funded through a real reward epoch and claim, EIP-712
signatures made with their keys (as a wallet would), and time travel (``anvil_mine``, ``evm_increaseTime``)."""

from __future__ import annotations

import time
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data

from ledger import deployments, governance, rewards_services
from ledger.models import GovernanceContracts, GovernanceTransaction, RewardClaim, RewardEpoch


def sign(typed: dict[str, Any], key: Any) -> str:
    """What a wallet's eth_signTypedData_v4 returns: the 65-byte signature, 0x-hex."""
    return "0x" + Account.sign_message(encode_typed_data(full_message=typed), key.key).signature.hex().removeprefix(
        "0x"
    )


def wait_confirmed(row: Any, confirm: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        confirm()
        row.refresh_from_db()
        if row.status not in ("pending", "submitted") or time.monotonic() > deadline:
            assert row.status == "confirmed", f"{row}: {row.last_error}"
            return row
        time.sleep(0.05)


def fund(amounts: dict[Any, int]) -> RewardEpoch:
    """Pay ``amounts`` (account -> smallest units) through a real epoch and relayed claims."""
    epoch = rewards_services.epoch_publish(entries=[(key.address, amount) for key, amount in amounts.items()])
    rewards_services.epoch_send(epoch_id=epoch.id)
    wait_confirmed(epoch, rewards_services.rewards_confirm)
    for entry in epoch.entries.all():
        claim = rewards_services.claim_relay(entry=entry)
        wait_confirmed(RewardClaim.objects.get(id=claim.id), rewards_services.rewards_confirm)
    return epoch


def settled(row: GovernanceTransaction) -> GovernanceTransaction:
    """Wait for a relayed governance transaction to be confirmed (the beat would)."""
    return wait_confirmed(row, governance.governance_confirm)


def delegate_self(key: Any, contracts: GovernanceContracts) -> GovernanceTransaction:
    expiry = int(time.time()) + 3600
    typed = governance.delegation_typed_data(key.address, key.address, expiry=expiry, contracts=contracts)
    return settled(
        governance.relay_delegate(
            delegator=key.address,
            delegatee=key.address,
            expiry=expiry,
            nonce=typed["message"]["nonce"],
            signature=sign(typed, key),
        )
    )


def propose(key: Any, targets: list[str], calldatas: list[str], description: str) -> tuple[int, GovernanceTransaction]:
    values = [0] * len(targets)
    proposal_id = governance.proposal_id_of(targets, values, calldatas, description)
    typed = governance.proposal_typed_data(proposal_id, key.address)
    row = governance.relay_propose(
        targets=targets,
        values=values,
        calldatas=calldatas,
        description=description,
        proposer=key.address,
        signature=sign(typed, key),
    )
    return proposal_id, settled(row)


def vote(key: Any, proposal_id: int, support: int) -> GovernanceTransaction:
    typed = governance.ballot_typed_data(proposal_id, support, key.address)
    return settled(
        governance.relay_vote(proposal_id=proposal_id, support=support, voter=key.address, signature=sign(typed, key))
    )


def mine(anvil: Any, blocks: int) -> None:
    anvil.rpc("anvil_mine", hex(blocks))


def travel(anvil: Any, seconds: int) -> None:
    anvil.rpc("evm_increaseTime", hex(seconds))
    anvil.rpc("anvil_mine", "0x1")


def governance_contracts() -> GovernanceContracts:
    return deployments.ensure_governance_deployed()
