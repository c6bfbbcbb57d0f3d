"""The governance mirror's indexer: copies the governance contracts' logs into ``ChainEvent`` rows once they have
CHAIN_CONFIRMATIONS blocks, and applies each to the mirror (proposals, votes, delegations, parameters, stakes,
approvals), in the same database transaction as the cursor that says how far it read.

- **Idempotent.** An event is applied once (unique on transaction and log index); a pass run twice, or a worker
  killed mid-pass, leaves the same rows.
- **Restart.** The cursor is in the database: a stopped indexer resumes at the next block.
- **Reorganisation or reset under the cursor.** The cursor keeps the hash of its block; another hash there (a
  reorganised chain, anvil reverted to a snapshot) and the mirror of those contracts is dropped and rebuilt from the
  deployment block: the chain is the source of truth. A chain reset that takes the contracts away is seen by
  ``ensure_governance_deployed`` first: new contracts, a new mirror; the old one stays as the old chain's history.
- **Rules.** A ProposalExecuted (the only way a rule changes: the timelock owns ProtocolParameters and
  ModelRegistry) tells ``ledger.governance.rules_changed`` once the pass commits.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from ledger import chain, deployments, hashing
from ledger import governance as ledger_governance
from ledger.models import GovernanceContracts
from modelfactory.models import ModelVersion

from .models import (
    ChainEvent,
    Delegation,
    IndexerCursor,
    ModelApproval,
    ParameterChange,
    Proposal,
    Stake,
    Vote,
    VotingPower,
)

logger = logging.getLogger(__name__)

BLOCKS_PER_PASS = 5_000
# the token's events that matter to governance (its Transfers and Approvals are the rewards app's business)
TOKEN_EVENTS = {"DelegateChanged", "DelegateVotesChanged"}
FINAL_STATES = {Proposal.State.CANCELED, Proposal.State.EXECUTED, Proposal.State.QUEUED, Proposal.State.EXPIRED}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _time(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def index(contracts: GovernanceContracts | None = None) -> dict[str, int]:
    """One pass: read every confirmed block after the cursor (at most BLOCKS_PER_PASS) and apply its events.
    Returns counts: events stored, blocks read, rebuilt (1 when the mirror was rebuilt)."""
    contracts = contracts or deployments.ensure_governance_deployed()
    cursor = IndexerCursor.objects.filter(contracts=contracts).first()
    rebuilt = 0
    if cursor is not None and chain.block_hash(cursor.block_number) != cursor.block_hash:
        logger.warning("governance mirror %s: block %s changed under it; rebuilding", contracts.id, cursor.block_number)
        rebuild(contracts)
        cursor, rebuilt = None, 1
    start = cursor.block_number + 1 if cursor else contracts.deploy_block_number
    latest = chain.block_number()
    safe = latest - max(settings.CHAIN_CONFIRMATIONS, 1) + 1
    if safe < start:
        return {"events": 0, "blocks": 0, "rebuilt": rebuilt}
    end = min(safe, start + BLOCKS_PER_PASS - 1)
    events = [
        e
        for e in chain.get_logs(contracts.addresses, from_block=start, to_block=end)
        if e.address.lower() != contracts.rewards.token_address.lower() or e.name in TOKEN_EVENTS
    ]
    times = {n: chain.block_time(n) for n in {e.block_number for e in events}}
    end_hash = chain.block_hash(end) or ""
    executed = False
    with transaction.atomic():
        locked = IndexerCursor.objects.select_for_update().filter(contracts=contracts).first()
        if (locked.block_number if locked else start - 1) != start - 1:
            return {"events": 0, "blocks": 0, "rebuilt": rebuilt}  # another pass got here first
        for event in events:
            stored, created = ChainEvent.objects.get_or_create(
                contracts=contracts,
                tx_hash=event.tx_hash,
                log_index=event.log_index,
                defaults={
                    "contract": _contract_name(contracts, event.address),
                    "name": event.name,
                    "args": {k: _jsonable(v) for k, v in event.args.items()},
                    "block_number": event.block_number,
                    "block_hash": event.block_hash,
                    "block_time": _time(times[event.block_number]),
                },
            )
            if created:
                _apply(contracts, stored)
                executed = executed or stored.name == "ProposalExecuted"
        IndexerCursor.objects.update_or_create(
            contracts=contracts, defaults={"block_number": end, "block_hash": end_hash}
        )
        _refresh_states(contracts, end)
    if executed:
        # after the pass's transaction (a spurious bump, should an outer one roll back, costs one re-read)
        ledger_governance.rules_changed()
    return {"events": len(events), "blocks": end - start + 1, "rebuilt": rebuilt}


def index_to_head(contracts: GovernanceContracts | None = None, *, max_passes: int = 100) -> int:
    """Index until the cursor reaches the last confirmed block (tests and the management command); the events."""
    total = 0
    for _ in range(max_passes):
        counts = index(contracts)
        total += counts["events"]
        if counts["blocks"] == 0:
            break
    return total


@transaction.atomic
def rebuild(contracts: GovernanceContracts) -> None:
    """Drop the mirror of ``contracts``; the next pass reads the chain again from the deployment block."""
    cursor = IndexerCursor.objects.filter(contracts=contracts).first()
    rebuilds = cursor.rebuilds + 1 if cursor else 1
    Vote.objects.filter(proposal__contracts=contracts).delete()
    for model in (Stake, ParameterChange, ModelApproval, Proposal, Delegation, VotingPower, ChainEvent):
        model.objects.filter(contracts=contracts).delete()
    IndexerCursor.objects.filter(contracts=contracts).delete()
    IndexerCursor.objects.create(
        contracts=contracts,
        block_number=contracts.deploy_block_number - 1,
        block_hash=chain.block_hash(contracts.deploy_block_number - 1) or "",
        rebuilds=rebuilds,
    )


def _contract_name(contracts: GovernanceContracts, address: str) -> str:
    for name, known in contracts.addresses.items():
        if known.lower() == address.lower():
            return name
    return "unknown"


def _proposal(contracts: GovernanceContracts, proposal_id: str) -> Proposal | None:
    return Proposal.objects.filter(contracts=contracts, proposal_id=proposal_id).first()


def _kind(contracts: GovernanceContracts, targets: list[str], calldatas: list[str]) -> tuple[str, str]:
    """The proposal's kind and, for a deployment, the manifest hash it approves."""
    approve = chain.contract("ModelRegistry", contracts.registry_address).functions.approve
    selector = approve(b"\0" * 32)._encode_transaction_data()[:10]
    one = len(targets) == 1 and targets[0].lower() == contracts.registry_address.lower()
    if one and calldatas[0][:10] == selector and len(calldatas[0]) == 74:
        return Proposal.Kind.DEPLOYMENT, "0x" + calldatas[0][10:]
    if targets and all(t.lower() == contracts.parameters_address.lower() for t in targets):
        return Proposal.Kind.PARAMETERS, ""
    return Proposal.Kind.OTHER, ""


def _apply(contracts: GovernanceContracts, event: ChainEvent) -> None:
    a = event.args
    name = event.name
    if name == "ProposalCreated":
        description = a["description"]
        kind, manifest = _kind(contracts, a["targets"], a["calldatas"])
        title = next((line.strip("# ").strip() for line in description.splitlines() if line.strip()), "")[:200]
        Proposal.objects.get_or_create(
            contracts=contracts,
            proposal_id=a["proposalId"],
            defaults={
                "proposer": a["proposer"],
                "kind": kind,
                "title": title or "(untitled)",
                "description": description,
                "description_hash": hashing.keccak_hex(description.encode()),
                "targets": a["targets"],
                "values": a["values"],
                "calldatas": a["calldatas"],
                "vote_start": int(a["voteStart"]),
                "vote_end": int(a["voteEnd"]),
                "created_block": event.block_number,
                "created_at": event.block_time,
                "created_tx": event.tx_hash,
                "manifest_hash": manifest,
                "model_version": ModelVersion.objects.filter(manifest_hash=manifest).first() if manifest else None,
            },
        )
    elif name in ("VoteCast", "VoteCastWithParams"):
        proposal = _proposal(contracts, a["proposalId"])
        if proposal is None:
            return
        vote, created = Vote.objects.get_or_create(
            proposal=proposal,
            voter=a["voter"],
            defaults={
                "support": int(a["support"]),
                "weight": Decimal(a["weight"]),
                "reason": a.get("reason", ""),
                "block_number": event.block_number,
                "cast_at": event.block_time,
                "tx_hash": event.tx_hash,
            },
        )
        if created:
            field = {0: "against_votes", 1: "for_votes", 2: "abstain_votes"}[vote.support]
            setattr(proposal, field, getattr(proposal, field) + vote.weight)
            proposal.save(update_fields=[field])
    elif name == "ProposalQueued":
        Proposal.objects.filter(contracts=contracts, proposal_id=a["proposalId"]).update(
            state=Proposal.State.QUEUED, eta=int(a["etaSeconds"]), queued_at=event.block_time
        )
    elif name == "ProposalExecuted":
        Proposal.objects.filter(contracts=contracts, proposal_id=a["proposalId"]).update(
            state=Proposal.State.EXECUTED, executed_at=event.block_time, executed_tx=event.tx_hash
        )
        ParameterChange.objects.filter(contracts=contracts, tx_hash=event.tx_hash).update(
            proposal=_proposal(contracts, a["proposalId"])
        )
        ModelApproval.objects.filter(contracts=contracts, tx_hash=event.tx_hash).update(
            proposal=_proposal(contracts, a["proposalId"])
        )
    elif name == "ProposalCanceled":
        Proposal.objects.filter(contracts=contracts, proposal_id=a["proposalId"]).update(
            state=Proposal.State.CANCELED, canceled_at=event.block_time
        )
    elif name == "DelegateChanged":
        Delegation.objects.update_or_create(
            contracts=contracts,
            delegator=a["delegator"],
            defaults={"delegate": a["toDelegate"], "block_number": event.block_number, "tx_hash": event.tx_hash},
        )
    elif name == "DelegateVotesChanged":
        VotingPower.objects.update_or_create(
            contracts=contracts,
            account=a["delegate"],
            defaults={"votes": Decimal(a["newVotes"]), "block_number": event.block_number},
        )
    elif name == "ParameterSet":
        ParameterChange.objects.create(
            contracts=contracts,
            name=bytes.fromhex(a["name"][2:]).rstrip(b"\0").decode("ascii", "replace"),
            old_value=a["oldValue"],
            new_value=a["newValue"],
            block_number=event.block_number,
            changed_at=event.block_time,
            tx_hash=event.tx_hash,
        )
    elif name == "StakeBonded":
        Stake.objects.get_or_create(
            contracts=contracts,
            onchain_id=a["proposalId"],
            defaults={
                "proposal": _proposal(contracts, a["proposalId"]),
                "manifest_hash": a["manifestHash"],
                "builder": a["builder"],
                "amount": Decimal(a["amount"]),
                "bonded_tx": event.tx_hash,
            },
        )
    elif name == "StakeReturned":
        Stake.objects.filter(contracts=contracts, onchain_id=a["proposalId"]).update(
            status=Stake.Status.RETURNED, settled_tx=event.tx_hash
        )
    elif name == "StakeSlashed":
        Stake.objects.filter(contracts=contracts, onchain_id=a["proposalId"]).update(
            status=Stake.Status.SLASHED, slashed=Decimal(a["slashed"]), pool=a["pool"], settled_tx=event.tx_hash
        )
    elif name == "ModelApproved":
        ModelApproval.objects.get_or_create(
            contracts=contracts,
            manifest_hash=a["manifestHash"],
            withdrawn_at=None,
            defaults={
                "proposal": _proposal(contracts, a["proposalId"]),
                "approved_at": event.block_time,
                "tx_hash": event.tx_hash,
                "model_version": ModelVersion.objects.filter(manifest_hash=a["manifestHash"]).first(),
            },
        )
    elif name == "ApprovalWithdrawn":
        ModelApproval.objects.filter(contracts=contracts, manifest_hash=a["manifestHash"], withdrawn_at=None).update(
            withdrawn_at=event.block_time
        )


def _refresh_states(contracts: GovernanceContracts, block: int) -> None:
    """The states that follow from blocks passing (pending, active, succeeded, defeated), as the Governor computes
    them at ``block``: the quorum is read once, at the snapshot block, when that block is past."""
    open_or_unmeasured = ~Q(state__in=FINAL_STATES) | Q(quorum__isnull=True, vote_start__lt=block)
    for proposal in Proposal.objects.filter(open_or_unmeasured, contracts=contracts):
        if proposal.quorum is None and proposal.vote_start < block:
            proposal.quorum = Decimal(
                chain.call("OpenLedgerGovernor", contracts.governor_address, "quorum", proposal.vote_start)
            )
        if proposal.state in FINAL_STATES:
            proposal.save(update_fields=["quorum"])
            continue
        if proposal.vote_start >= block:
            state = Proposal.State.PENDING
        elif proposal.vote_end >= block:
            state = Proposal.State.ACTIVE
        else:
            state = None
        if state is None:
            reached = proposal.quorum is not None and proposal.for_votes + proposal.abstain_votes >= proposal.quorum
            passed = reached and proposal.for_votes > proposal.against_votes
            state = Proposal.State.SUCCEEDED if passed else Proposal.State.DEFEATED
        proposal.state = state
        proposal.save(update_fields=["state", "quorum"])
