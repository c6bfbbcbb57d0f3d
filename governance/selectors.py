"""Reading governance for the pages and the API: proposals from the mirror (``governance.indexer``), their actions
in words, their timeline, the rules in force and their history, and a person's voting power."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from accounts.models import User
from ledger import chain
from ledger import governance as ledger_governance
from ledger.models import GovernanceContracts
from modelfactory.models import ModelVersion

from .models import ChainEvent, IndexerCursor, ParameterChange, Proposal, Vote, VotingPower

# ProtocolParameters' names (as in ParameterSet) -> what a person reads, and how to show a value
PARAMETER_LABELS = {
    "contributorsBps": ("Contributors' share of each fee", "bps"),
    "builderBps": ("Builder's share of each fee", "bps"),
    "minQualityScore": ("Minimum quality score to enter a snapshot", "score"),
    "deploymentGate": ("Deployment gate", "bool"),
    "deploymentStake": ("Stake on a deployment proposal", "amount"),
    "stakeSlashBps": ("Share of a defeated proposal's stake forfeited to the pool", "bps"),
    "pool": ("Pool address", "address"),
}


def active_contracts() -> GovernanceContracts | None:
    return GovernanceContracts.objects.current()


def proposals(*, state: str | None = None, kind: str | None = None) -> QuerySet[Proposal]:
    """The current contracts' proposals, newest first, optionally of one state and kind."""
    contracts = active_contracts()
    rows = Proposal.objects.filter(contracts=contracts).select_related("model_version", "stake")
    if state:
        rows = rows.filter(state=state)
    if kind:
        rows = rows.filter(kind=kind)
    return rows


def proposal(proposal_id: str) -> Proposal | None:
    return proposals().filter(proposal_id=proposal_id).first()


def state_counts() -> dict[str, int]:
    counts = dict.fromkeys(Proposal.State.values, 0)
    for state in proposals().values_list("state", flat=True):
        counts[state] += 1
    return counts


def format_value(unit: str, value: Any) -> str:
    if unit == "bps":
        return f"{int(value) / 100:.2f} %"
    if unit == "bool":
        return "on" if str(value) in ("1", "True", "true") else "off"
    if unit == "address":
        return chain_address(value)
    if unit == "amount":
        return f"{Decimal(int(value)) / Decimal(10**18):f} OLTR".replace(".000000000000000000", "")
    return str(value)


def chain_address(value: Any) -> str:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value
    number = int(value)
    return "0x" + number.to_bytes(20, "big").hex()


@dataclass(frozen=True)
class Action:
    """One action of a proposal: what it calls, and the sentence a person reads."""

    target: str
    value: int
    calldata: str
    function: str
    words: str


def decode_action(contracts: GovernanceContracts, target: str, value: int, calldata: str) -> Action:
    """The action in words, decoded with the ABI of the contract it calls; an unknown call says so plainly."""
    names = {address.lower(): name for name, address in contracts.addresses.items()}
    name = names.get(target.lower())
    if name is None:
        return Action(target, value, calldata, "", f"Call {target} with data {calldata[:18]}… (not one of ours)")
    try:
        fn, args = chain.contract(name, target).decode_function_input(calldata)
    except Exception:
        return Action(target, value, calldata, "", f"Call {name} with data it does not recognise ({calldata[:18]}…)")
    words = _words(fn.fn_name, args) or f"{name}.{fn.fn_name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
    return Action(target, value, calldata, fn.fn_name, words)


def _words(function: str, args: dict[str, Any]) -> str:
    if function == "setRewardSplit":
        c, b = args["contributorsBps_"], args["builderBps_"]
        return (
            f"Set the reward split to {c / 100:.2f} % for contributors, {b / 100:.2f} % for the builder and "
            f"{(10_000 - c - b) / 100:.2f} % for the pool"
        )
    if function == "setMinQualityScore":
        return f"Require a quality score of at least {args['score']} for a contribution to enter a snapshot"
    if function == "setDeploymentGate":
        return (
            "Turn the deployment gate on: a version is served to others only once approved"
            if args["on"]
            else "Turn the deployment gate off: every published version is served"
        )
    if function == "setDeploymentStake":
        return (
            f"Set the deployment stake to {format_value('amount', args['stake'])}, forfeiting "
            f"{args['slashBps'] / 100:.2f} % of it when a proposal is defeated"
        )
    if function == "setPool":
        return f"Pay the pool's share to {args['pool_']}"
    if function in ("approve", "withdrawApproval"):
        manifest = "0x" + bytes(args["manifestHash"]).hex()
        version = ModelVersion.objects.filter(manifest_hash=manifest).first()
        what = f"model version “{version}”" if version else "the model version"
        if function == "approve":
            return f"Approve {what} (manifest {manifest[:10]}…) for deployment"
        return f"Withdraw the deployment approval of {what} (manifest {manifest[:10]}…)"
    return ""


def actions(proposal: Proposal) -> list[Action]:
    return [decode_action(proposal.contracts, t, v, c) for t, v, c in proposal.actions]


@dataclass(frozen=True)
class Moment:
    """A step of a proposal's life: done (``at`` set) or to come (``block`` or ``eta`` known)."""

    what: str
    at: datetime | None
    block: int | None
    tx_hash: str = ""
    done: bool = True


def timeline(proposal: Proposal) -> list[Moment]:
    """Created, voting opens, each vote, voting closes, queued, executable from, executed (or cancelled)."""
    indexed = IndexerCursor.objects.filter(contracts=proposal.contracts).values_list("block_number", flat=True)
    head = next(iter(indexed), 0)
    moments = [Moment("Proposed", proposal.created_at, proposal.created_block, proposal.created_tx)]
    moments.append(Moment("Voting opens", None, proposal.vote_start + 1, done=head > proposal.vote_start))
    for vote in proposal.votes.all():
        moments.append(
            Moment(f"{vote.voter[:10]}… voted {vote.get_support_display()}", vote.cast_at, vote.block_number,
                   vote.tx_hash)
        )  # fmt: skip
    moments.append(Moment("Voting closes", None, proposal.vote_end, done=head > proposal.vote_end))
    stake_events = ChainEvent.objects.filter(
        contracts=proposal.contracts, name__in=["StakeBonded", "StakeReturned", "StakeSlashed"],
        args__proposalId=proposal.proposal_id,
    )  # fmt: skip
    words = {"StakeBonded": "Stake bonded", "StakeReturned": "Stake returned", "StakeSlashed": "Stake slashed"}
    for event in stake_events:
        moments.append(Moment(words[event.name], event.block_time, event.block_number, event.tx_hash))
    if proposal.queued_at:
        moments.append(Moment("Queued in the timelock", proposal.queued_at, None))
    if proposal.eta and not proposal.executed_at:
        moments.append(Moment(f"Executable from {datetime.fromtimestamp(proposal.eta, tz=UTC):%Y-%m-%d %H:%M:%S} UTC",
                              None, None, done=False))  # fmt: skip
    if proposal.executed_at:
        moments.append(Moment("Executed", proposal.executed_at, None, proposal.executed_tx))
    if proposal.canceled_at:
        moments.append(Moment("Cancelled", proposal.canceled_at, None))
    return sorted(moments, key=lambda m: (m.block or 10**18, m.at.timestamp() if m.at else 0))


def quorum_progress(proposal: Proposal) -> dict[str, Any]:
    """The votes that count toward the quorum (for and abstain) against the quorum, as numbers and a fraction."""
    counted = proposal.for_votes + proposal.abstain_votes
    quorum = proposal.quorum
    return {
        "counted": counted,
        "quorum": quorum,
        "fraction": float(min(counted / quorum, Decimal(1))) if quorum else None,
        "reached": quorum is not None and counted >= quorum,
    }


def parameters_now() -> list[dict[str, Any]]:
    """The rules in force, each with its label, value in words, raw value and the proposal that last set it."""
    rules = ledger_governance.parameters()
    contracts = active_contracts()
    last = {}
    if contracts is not None:
        for change in ParameterChange.objects.filter(contracts=contracts).select_related("proposal"):
            last.setdefault(change.name, change)
    raw = {
        "contributorsBps": rules.contributors_bps,
        "builderBps": rules.builder_bps,
        "minQualityScore": rules.min_quality_score,
        "deploymentGate": int(rules.deployment_gate),
        "deploymentStake": rules.deployment_stake,
        "stakeSlashBps": rules.stake_slash_bps,
        "pool": rules.pool,
    }
    return [
        {
            "name": name,
            "label": label,
            "value": raw[name],
            "display": format_value(unit, raw[name]) if raw[name] != "" else "—",
            "changed": last.get(name),
        }
        for name, (label, unit) in PARAMETER_LABELS.items()
    ]


def parameter_history(*, name: str | None = None) -> QuerySet[ParameterChange]:
    rows = ParameterChange.objects.filter(contracts=active_contracts()).select_related("proposal")
    return rows.filter(name=name) if name else rows


def voting_power(user: User) -> list[dict[str, Any]]:
    """Each linked wallet's balance, votes and delegate: from the chain when it answers, else from the mirror."""
    contracts = active_contracts()
    rows = []
    for wallet in user.wallets.all():
        entry: dict[str, Any] = {"account": wallet.address, "source": "chain"}
        try:
            entry.update(ledger_governance.voting_power(wallet.address, contracts=contracts))
        except (chain.ChainError, ledger_governance.GovernanceRefused):
            mirrored = VotingPower.objects.filter(contracts=contracts, account=wallet.address).first()
            entry.update(
                {"balance": None, "votes": int(mirrored.votes) if mirrored else 0, "delegate": None, "source": "mirror"}
            )
        entry["votes_cast"] = Vote.objects.filter(proposal__contracts=contracts, voter=wallet.address).count()
        rows.append(entry)
    return rows
