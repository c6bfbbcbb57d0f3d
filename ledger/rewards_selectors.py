"""Reads of reward epochs for the outside world: where an epoch's root lives on chain, and each leaf's claim proof.

A claim proof is the proof envelope of ``proofs.tree_proof`` (artifact ``claim``, leafEncoding
``["uint256", "address", "uint256"]``, value ``[index, account, amount]``) whose ``anchor`` block names the
RewardDistributor instead of the LineageRegistry: ``RewardDistributor.epochInfo(epoch)`` gives the root the proof
must lead to, and ``claim(epoch, index, account, amount, proof)`` takes the value and proof as they are. ``claim``
says whether the leaf was paid, and by which transaction; a paid leaf keeps its proof.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import merkle
from .models import RewardClaim, RewardEpoch, RewardEpochEntry, RewardTransaction
from .proofs import tree_proof

DISTRIBUTOR = "RewardDistributor"
UNCLAIMED, IN_FLIGHT, CLAIMED = "unclaimed", "in_flight", "claimed"


def distributor_facts(epoch: RewardEpoch) -> dict[str, Any]:
    """Where the epoch's root is published: ``chain_id``, ``contract``, ``contract_address``, ``tx_hash`` and
    ``block_number`` of ``publishEpoch`` (None until it is sent, or mined)."""
    contracts = epoch.contracts
    return {
        "chain_id": contracts.chain_id if contracts is not None else None,
        "contract": DISTRIBUTOR,
        "contract_address": contracts.distributor_address if contracts is not None else None,
        "tx_hash": epoch.tx_hash or None,
        "block_number": epoch.block_number,
    }


def latest_claims(entries: Iterable[RewardEpochEntry]) -> dict[int, RewardClaim]:
    """Each entry's newest claim (a failed try followed by a good one gives the good one), by entry id."""
    latest: dict[int, RewardClaim] = {}
    for claim in RewardClaim.objects.filter(entry__in=list(entries)).order_by("created_at", "id"):
        latest[claim.entry_id] = claim
    return latest


def claim_facts(claim: RewardClaim | None) -> dict[str, Any]:
    """``status`` (unclaimed, in_flight, claimed), and the claim's ``tx_hash`` and ``block_number`` while it is
    in flight or once it paid; a failed or voided claim leaves the leaf unclaimed."""
    if claim is None or claim.status not in (
        RewardTransaction.Status.PENDING,
        RewardTransaction.Status.SUBMITTED,
        RewardTransaction.Status.CONFIRMED,
    ):
        return {"status": UNCLAIMED, "tx_hash": None, "block_number": None}
    status = CLAIMED if claim.status == RewardTransaction.Status.CONFIRMED else IN_FLIGHT
    return {"status": status, "tx_hash": claim.tx_hash or None, "block_number": claim.block_number}


def claim_proof(
    entry: RewardEpochEntry,
    *,
    claim: RewardClaim | None = None,
    tree: merkle.StandardMerkleTree | None = None,
) -> dict[str, Any]:
    """The claim proof of ``entry`` (see the module docstring). ``claim`` is its latest claim (looked up when not
    given) and ``tree`` the epoch's loaded tree, for callers proving many leaves of one epoch."""
    epoch = entry.epoch
    if tree is None:
        tree = merkle.StandardMerkleTree.load(epoch.tree)
    if claim is None:
        claim = latest_claims([entry]).get(entry.id)
    proof = tree_proof(tree, entry.index, artifact="claim", anchor=None, claim=claim_facts(claim))
    proof["anchor"] = {**distributor_facts(epoch), "epoch": epoch.number, "status": epoch.status}
    return proof
