"""Test helpers for the effects of governance in the apps above the ledger: short governance settings (as the
``gov`` fixture of ``test_governance_chain``), one funded and self-delegated voter, and a proposal taken through
its whole life on anvil (propose, vote, queue, wait out the timelock, execute), then ``rules_changed()`` as the
governance indexer calls it when it sees ``ProposalExecuted``."""

from __future__ import annotations

import time
from typing import Any

from eth_account import Account

from ledger import chain, governance
from ledger.models import GovernanceContracts

from .gov import delegate_self, fund, governance_contracts, mine, propose, settled, sign, travel, vote

TOKEN = 10**18
VOTING_PERIOD = 20
TIMELOCK = 60
# the protocol pool the contracts are deployed with: one address for the module, so that its tests share one
# deployment (ledger.tests.gov.governance_contracts); each starts with the pool holding nothing all the same
POOL = Account.create().address


def short_governance(settings: Any, **overrides: Any) -> GovernanceContracts:
    """Deploy governance on the session's anvil with a 20-block vote and a 60 s timelock (``overrides``: more
    GOVERNANCE_* settings, e.g. ``GOVERNANCE_DEPLOYMENT_GATE=True``)."""
    settings.GOVERNANCE_VOTING_DELAY_BLOCKS = 1
    settings.GOVERNANCE_VOTING_PERIOD_BLOCKS = VOTING_PERIOD
    settings.GOVERNANCE_TIMELOCK_SECONDS = TIMELOCK
    settings.GOVERNANCE_PROPOSAL_THRESHOLD = 10**15
    settings.GOVERNANCE_QUORUM_PERCENT = 4
    settings.GOVERNANCE_DEPLOYMENT_STAKE = 10**16
    settings.GOVERNANCE_STAKE_SLASH_BPS = 5000
    settings.REWARDS_POOL_ADDRESS = POOL
    for name, value in overrides.items():
        setattr(settings, name, value)
    return governance_contracts()


def voter(gov: GovernanceContracts, anvil: Any) -> Any:
    """A key holding one token (earned through a real epoch), delegated to itself: enough to propose, to bond a
    deployment stake and to carry any vote alone."""
    key = Account.create()
    fund({key: TOKEN})
    delegate_self(key, gov)
    mine(anvil, 1)
    return key


def parameters_call(gov: GovernanceContracts, function: str, *args: Any) -> str:
    """The calldata of ``ProtocolParameters.function(*args)``: a parameter proposal's one action."""
    fn = getattr(chain.contract("ProtocolParameters", gov.parameters_address).functions, function)(*args)
    return fn._encode_transaction_data()


def enact(anvil: Any, key: Any, target: str, calldata: str, description: str, *, bond: str | None = None) -> int:
    """Take a one-action proposal by ``key`` through its life: propose, (bond the deployment stake of manifest
    ``bond`` with a signed permit), vote for, queue, wait out the timelock, execute; then ``rules_changed()``.
    Returns the proposal id."""
    actions = {"targets": [target], "values": [0], "calldatas": [calldata], "description": description}
    proposal_id, _ = propose(key, [target], [calldata], description)
    if bond is not None:
        gov = governance_contracts()
        deadline = int(time.time()) + 3600
        stake = governance.parameters().deployment_stake
        typed = governance.permit_typed_data(key.address, gov.registry_address, stake, deadline=deadline)
        settled(
            governance.relay_bond(
                manifest_hash=bond, description=description, builder=key.address, deadline=deadline,
                signature=sign(typed, key),
            )
        )  # fmt: skip
    mine(anvil, 2)
    vote(key, proposal_id, 1)
    mine(anvil, VOTING_PERIOD + 5)
    settled(governance.request_queue(**actions))
    travel(anvil, TIMELOCK + 1)
    settled(governance.request_execute(**actions))
    assert governance.proposal_state(proposal_id) == "executed"
    governance.rules_changed()
    return proposal_id
