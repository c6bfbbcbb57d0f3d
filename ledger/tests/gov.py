"""Test helpers for governance on a real anvil: voters funded through a real reward epoch and claim, EIP-712
signatures made with their keys (as a wallet would), time travel (``anvil_mine``, ``evm_increaseTime``), and the
contracts deployed once per configuration and session (``governance_contracts``, by anvil's snapshots)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from eth_account import Account
from eth_account.messages import encode_typed_data

from ledger import chain, deployments, governance, rewards_services
from ledger.models import (
    ChainDeployment,
    GovernanceContracts,
    GovernanceTransaction,
    RewardClaim,
    RewardContracts,
    RewardEpoch,
)


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


@dataclass
class _Deployed:
    """A chain with the contracts freshly deployed (anvil's ``snapshot`` of it, its head), and the rows that
    describe them, as field values."""

    instance: str
    snapshot: str
    head: int
    head_hash: str
    rows: tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


# one per configuration (the deploy settings, the chain, the signer): what governance_contracts() goes back to
_deployed: dict[str, _Deployed] = {}


def _node(method: str, *params: Any) -> Any:
    answer = chain.connect().provider.make_request(method, list(params))
    if "error" in answer:
        raise chain.ChainError(f"{method}: {answer['error']}")
    return answer["result"]


def _fields(row: Any, *, drop: tuple[str, ...]) -> dict[str, Any]:
    return {
        f.attname: getattr(row, f.attname)
        for f in row._meta.concrete_fields
        if f.attname not in ("id", "created_at", *drop)
    }


def _configuration() -> str:
    return json.dumps(
        [settings.EVM_RPC_URL, settings.EVM_CHAIN_ID, chain.signer().address, deployments.governance_deploy_settings()],
        sort_keys=True,
    )


def _back_to(deployed: _Deployed) -> GovernanceContracts | None:
    """Revert the chain to ``deployed``'s snapshot and write its rows again; None when the snapshot is gone (a
    restarted or reset anvil, a test that reverted to an earlier snapshot of its own)."""
    node = _node("anvil_metadata")
    if node["instanceId"] != deployed.instance or node["snapshots"].get(deployed.snapshot) != [
        deployed.head,
        deployed.head_hash,
    ]:
        return None  # anvil was restarted (its snapshots are gone, their ids given out again)
    if chain.block_hash(deployed.head) != deployed.head_hash:
        # reverted to an earlier snapshot since: anvil keeps the later ones listed, but reverting to one whose block
        # is gone leaves it without a head block ("Resource not found" from then on)
        return None
    if not _node("evm_revert", deployed.snapshot):
        return None
    deployed.snapshot = _node("evm_snapshot")  # a snapshot is used up by reverting to it
    registry, rewards, gov = deployed.rows
    row = ChainDeployment.objects.create(**registry)
    row = RewardContracts.objects.create(deployment=row, **rewards)
    GovernanceContracts.objects.create(rewards=row, **gov)
    # the rules cache (the database cache, which transactional tests commit) is keyed by the contracts' addresses,
    # the same again now: what an earlier test's proposals made of them must not be read back
    governance.rules_changed()
    cache.delete(governance._LAST_PARAMETERS_KEY)
    return deployments.ensure_governance_deployed()  # the same checks as any caller: code there, blocks unchanged


def governance_contracts() -> GovernanceContracts:
    """The active governance contracts (with LineageRegistry and the reward contracts), deployed once a session for
    each configuration: a later test with the same deploy settings reverts the chain to anvil's snapshot taken
    right after that deployment and writes the rows describing it again, in its own transaction. That chain is
    exactly the one a new deployment would give (no proposal, no votes, no balances: every earlier test's effects
    are undone) without its nine transactions; the first test of a configuration, and any after the snapshot is
    lost, deploy for real. A test that already has rows of its own for this chain gets them through the usual path."""
    if ChainDeployment.objects.filter(chain_id=settings.EVM_CHAIN_ID, active=True).exists():
        return deployments.ensure_governance_deployed()
    key = _configuration()
    deployed = _deployed.pop(key, None)
    contracts = _back_to(deployed) if deployed is not None else None
    if contracts is None:
        contracts = deployments.ensure_governance_deployed()
        node = _node("anvil_metadata")
        rewards = contracts.rewards
        rows = (
            _fields(rewards.deployment, drop=()),
            _fields(rewards, drop=("deployment_id",)),
            _fields(contracts, drop=("rewards_id",)),
        )
        snapshot = _node("evm_snapshot")
        deployed = _Deployed(node["instanceId"], snapshot, node["latestBlockNumber"], node["latestBlockHash"], rows)
    _deployed[key] = deployed
    return contracts
