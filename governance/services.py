"""What a signed-in person may do in governance, for the pages and the API alike: build the message their wallet
signs, then relay the signature through the ledger (``ledger.governance``), which checks it as the contract would
and sends it from the server's signer.

Every relay is a write: it needs a signed-in user, the signing wallet must be one the user linked (a wallet is
proven by SIWE, accounts), it counts against GOVERNANCE_RELAY_RATE_LIMIT per user, and a refusal
(``GovernanceRefused``, from here or from the ledger) carries a sentence for the person and writes nothing.
Queueing, executing and settling a stake carry no signature: any signed-in user may ask (the chain lets anyone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from eth_utils import is_address, to_checksum_address

from accounts.models import User
from common import ratelimit
from ledger import chain
from ledger import governance as ledger_governance
from ledger.governance import GovernanceRefused
from ledger.models import GovernanceContracts, GovernanceTransaction
from modelfactory.models import ModelVersion

from .models import Proposal

__all__ = ["GovernanceRefused", "ParameterChangeSpec", "PreparedProposal"]

SIGNATURE_SECONDS = 3600  # how long a delegation or permit signature stays good

# Every parameter a proposal may change, by the name the forms and the API use: its setter, its arguments and what
# a person reads. A setter with two arguments (the split, the stake) takes both values.
PARAMETERS: dict[str, dict[str, Any]] = {
    "reward_split": {
        "setter": "setRewardSplit",
        "fields": ("contributors_bps", "builder_bps"),
        "label": "Reward split (contributors and builder, basis points; the pool gets the rest)",
    },
    "min_quality_score": {
        "setter": "setMinQualityScore",
        "fields": ("min_quality_score",),
        "label": "Minimum quality score (0-100) for a contribution to enter a snapshot",
    },
    "deployment_gate": {
        "setter": "setDeploymentGate",
        "fields": ("deployment_gate",),
        "label": "Deployment gate: serve a version to others only once governance approved it",
    },
    "deployment_stake": {
        "setter": "setDeploymentStake",
        "fields": ("deployment_stake", "stake_slash_bps"),
        "label": "Deployment stake (smallest unit) and the share of it a defeated proposal forfeits (basis points)",
    },
    "pool": {"setter": "setPool", "fields": ("pool",), "label": "Pool address (receives the pool share and stakes)"},
}


@dataclass(frozen=True)
class ParameterChangeSpec:
    """One change a parameter proposal makes: ``name`` (a key of PARAMETERS) and its new ``values``."""

    name: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class PreparedProposal:
    """A proposal ready to be signed: its actions, description, the id the Governor will give it, and the EIP-712
    message the proposer's wallet signs."""

    kind: str
    targets: list[str]
    values: list[int]
    calldatas: list[str]
    description: str
    proposal_id: int
    typed_data: dict[str, Any]
    stake: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "targets": self.targets,
            "values": [str(v) for v in self.values],
            "calldatas": self.calldatas,
            "description": self.description,
            "proposal_id": str(self.proposal_id),
            "typed_data": self.typed_data,
            "stake": str(self.stake),
        }


def contracts() -> GovernanceContracts:
    """The active governance contracts (deployed with ``make run``'s chain_deploy, or the first beat)."""
    active = GovernanceContracts.objects.current()
    if active is None:
        raise GovernanceRefused("governance is not deployed on this chain yet; try again in a minute",
                                code="unavailable")  # fmt: skip
    return active


def _limit(user: User) -> None:
    window = ratelimit.current_window(settings.GOVERNANCE_RELAY_RATE_LIMIT, setting="GOVERNANCE_RELAY_RATE_LIMIT")
    key = f"openledger:limit:governance-relay:user:{user.pk}:{window.period}:{window.number}"
    if ratelimit.cache_count(key, window.period) > window.allowed:
        raise GovernanceRefused(
            f"Too many governance requests: at most {settings.GOVERNANCE_RELAY_RATE_LIMIT}. Try again in "
            f"{window.retry_after} s.",
            code="rate_limited",
        )


def own_wallet(user: User, address: Any) -> str:
    """``address`` checksummed, if it is one of ``user``'s linked wallets; GovernanceRefused otherwise."""
    if not isinstance(address, str) or not is_address(address):
        raise GovernanceRefused("the account must be an EVM address (0x and 40 hex digits)", code="bad_input")
    address = to_checksum_address(address)
    if not user.wallets.filter(address=address).exists():
        raise GovernanceRefused(
            f"{address} is not one of your linked wallets: link it on your profile first", code="not_your_wallet"
        )
    return address


def _label(user: User) -> str:
    return f"user:{user.pk}"


# Delegation and votes


def delegation_message(*, user: User, account: Any, delegatee: Any) -> dict[str, Any]:
    """The EIP-712 Delegation ``account`` (a wallet of ``user``) signs to give its votes to ``delegatee``."""
    account = own_wallet(user, account)
    return ledger_governance.delegation_typed_data(
        account, delegatee, expiry=int(time.time()) + SIGNATURE_SECONDS, contracts=contracts()
    )


def delegate(
    *, user: User, account: Any, delegatee: Any, nonce: Any, expiry: Any, signature: Any
) -> GovernanceTransaction:
    """Relay ``account``'s signed delegation."""
    account = own_wallet(user, account)
    _limit(user)
    return ledger_governance.relay_delegate(delegator=account, delegatee=delegatee, nonce=nonce, expiry=expiry,
                                            signature=signature, requested_by=_label(user))  # fmt: skip


def ballot_message(*, user: User, proposal: Proposal, account: Any, support: Any) -> dict[str, Any]:
    """The EIP-712 Ballot ``account`` signs to vote ``support`` (0 against, 1 for, 2 abstain)."""
    account = own_wallet(user, account)
    if support not in (0, 1, 2):
        raise GovernanceRefused("support must be 0 (against), 1 (for) or 2 (abstain)", code="bad_input")
    return ledger_governance.ballot_typed_data(int(proposal.proposal_id), support, account,
                                               contracts=proposal.contracts)  # fmt: skip


def vote(*, user: User, proposal: Proposal, account: Any, support: Any, signature: Any) -> GovernanceTransaction:
    """Relay ``account``'s signed vote on ``proposal``."""
    account = own_wallet(user, account)
    _limit(user)
    return ledger_governance.relay_vote(proposal_id=int(proposal.proposal_id), support=support, voter=account,
                                        signature=signature, requested_by=_label(user))  # fmt: skip


# Proposals


def _calldata(active: GovernanceContracts, change: ParameterChangeSpec) -> str:
    spec = PARAMETERS.get(change.name)
    if spec is None:
        raise GovernanceRefused(f"unknown parameter {change.name!r}; known: {', '.join(PARAMETERS)}", code="bad_input")
    if len(change.values) != len(spec["fields"]):
        raise GovernanceRefused(f"{change.name} takes {', '.join(spec['fields'])}", code="bad_input")
    args = []
    for field, value in zip(spec["fields"], change.values, strict=True):
        if field == "pool":
            if not isinstance(value, str) or not is_address(value):
                raise GovernanceRefused("the pool must be an EVM address", code="bad_input")
            args.append(to_checksum_address(value))
        elif field == "deployment_gate":
            if not isinstance(value, bool):
                raise GovernanceRefused("the deployment gate is true or false", code="bad_input")
            args.append(value)
        else:
            if isinstance(value, float) and not value.is_integer():
                raise GovernanceRefused(f"{field} must be a whole number", code="bad_input")
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise GovernanceRefused(f"{field} must be a whole number", code="bad_input") from None
            limit = {"contributors_bps": 10_000, "builder_bps": 10_000, "stake_slash_bps": 10_000,
                     "min_quality_score": 100}.get(field, 2**256 - 1)  # fmt: skip
            if isinstance(value, bool) or not 0 <= number <= limit:
                raise GovernanceRefused(f"{field} must be from 0 to {limit}", code="bad_input")
            args.append(number)
    if change.name == "reward_split" and args[0] + args[1] > 10_000:
        raise GovernanceRefused("contributors and builder together get at most 10,000 basis points (100 %)",
                                code="bad_input")  # fmt: skip
    fn = getattr(chain.contract("ProtocolParameters", active.parameters_address).functions, spec["setter"])
    return fn(*args)._encode_transaction_data()


def _description(title: Any, body: Any) -> str:
    if not isinstance(title, str) or not title.strip():
        raise GovernanceRefused("a proposal needs a title", code="bad_input")
    if len(title) > 200:
        raise GovernanceRefused("a title is at most 200 characters", code="bad_input")
    body = body if isinstance(body, str) else ""
    if len(body) > 10_000:
        raise GovernanceRefused("a description is at most 10,000 characters", code="bad_input")
    return f"# {title.strip()}\n\n{body.strip()}".strip()


def prepare_parameter_proposal(*, user: User, proposer: Any, changes: list[ParameterChangeSpec], title: Any,
                               body: Any = "") -> PreparedProposal:  # fmt: skip
    """A proposal changing ``changes`` (one action each), ready for ``proposer`` to sign."""
    proposer = own_wallet(user, proposer)
    if not changes or len(changes) > len(PARAMETERS):
        raise GovernanceRefused("a parameter proposal changes one to five parameters", code="bad_input")
    if len({c.name for c in changes}) != len(changes):
        raise GovernanceRefused("each parameter appears once in a proposal", code="bad_input")
    active = contracts()
    calldatas = [_calldata(active, change) for change in changes]
    return _prepared("parameters", active, proposer, [active.parameters_address] * len(changes), calldatas,
                     _description(title, body))  # fmt: skip


def prepare_deployment_proposal(*, user: User, proposer: Any, version: ModelVersion, title: Any = "",
                                body: Any = "") -> PreparedProposal:  # fmt: skip
    """A proposal approving ``version`` (its owner's) for deployment, ready to sign; its stake is bonded after."""
    proposer = own_wallet(user, proposer)
    if version.owner_id != user.pk:
        raise GovernanceRefused("only the version's owner proposes its deployment", code="forbidden")
    active = contracts()
    title = title or f"Deploy {version}"
    calldata = ledger_governance.deployment_calldata(version.manifest_hash)
    prepared = _prepared("deployment", active, proposer, [active.registry_address], [calldata],
                         _description(title, body or f"Manifest hash {version.manifest_hash}."))  # fmt: skip
    return PreparedProposal(**{**prepared.__dict__, "stake": ledger_governance.parameters().deployment_stake})


def _prepared(kind: str, active: GovernanceContracts, proposer: str, targets: list[str], calldatas: list[str],
              description: str) -> PreparedProposal:  # fmt: skip
    values = [0] * len(targets)
    proposal_id = ledger_governance.proposal_id_of(targets, values, calldatas, description)
    typed = ledger_governance.proposal_typed_data(proposal_id, proposer, contracts=active)
    return PreparedProposal(kind, targets, values, calldatas, description, proposal_id, typed)


def propose(*, user: User, proposer: Any, targets: Any, values: Any, calldatas: Any, description: Any,
            signature: Any) -> GovernanceTransaction:  # fmt: skip
    """Relay a prepared proposal with ``proposer``'s signature."""
    proposer = own_wallet(user, proposer)
    if not all(isinstance(x, list) for x in (targets, values, calldatas)):
        raise GovernanceRefused("targets, values and calldatas are lists", code="bad_input")
    _limit(user)
    return ledger_governance.relay_propose(targets=targets, values=values, calldatas=calldatas,
                                           description=description, proposer=proposer, signature=signature,
                                           requested_by=_label(user))  # fmt: skip


def stake_message(*, user: User, proposal: Proposal, account: Any) -> dict[str, Any]:
    """The ERC-2612 permit the proposer signs to bond the deployment proposal's stake."""
    account = own_wallet(user, account)
    if proposal.kind != Proposal.Kind.DEPLOYMENT:
        raise GovernanceRefused("only a deployment proposal carries a stake", code="not_deployment")
    stake = ledger_governance.parameters().deployment_stake
    return ledger_governance.permit_typed_data(account, proposal.contracts.registry_address, stake,
                                               deadline=int(time.time()) + SIGNATURE_SECONDS,
                                               contracts=proposal.contracts)  # fmt: skip


def bond(*, user: User, proposal: Proposal, account: Any, deadline: Any, signature: Any) -> GovernanceTransaction:
    """Relay the proposer's permit and bond the deployment proposal's stake."""
    account = own_wallet(user, account)
    if proposal.kind != Proposal.Kind.DEPLOYMENT:
        raise GovernanceRefused("only a deployment proposal carries a stake", code="not_deployment")
    _limit(user)
    return ledger_governance.relay_bond(manifest_hash=proposal.manifest_hash, description=proposal.description,
                                        builder=account, deadline=deadline, signature=signature,
                                        requested_by=_label(user))  # fmt: skip


# Steps anyone may take


def _actions(proposal: Proposal) -> dict[str, Any]:
    return {
        "targets": proposal.targets,
        "values": proposal.values,
        "calldatas": proposal.calldatas,
        "description": proposal.description,
    }


def queue(*, user: User, proposal: Proposal) -> GovernanceTransaction:
    """Queue a passed proposal in the timelock."""
    _limit(user)
    return ledger_governance.request_queue(**_actions(proposal), requested_by=_label(user))


def execute(*, user: User, proposal: Proposal) -> GovernanceTransaction:
    """Execute a queued proposal whose timelock delay is over."""
    _limit(user)
    return ledger_governance.request_execute(**_actions(proposal), requested_by=_label(user))


def settle(*, user: User, proposal: Proposal) -> GovernanceTransaction:
    """Settle a decided deployment proposal's stake."""
    _limit(user)
    return ledger_governance.request_settle(proposal_id=int(proposal.proposal_id), requested_by=_label(user))
