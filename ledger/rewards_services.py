"""Reward epochs and claims on the RewardDistributor, sent under the outbox's nonce rule (see ``services``).

- ``epoch_publish`` writes an epoch (Merkle tree over ``(index, account, amount)``, a proof per entry) in the
  caller's transaction; ``epoch_send_task`` publishes its root on commit, and the beat (``rewards_dispatch``,
  ``rewards_confirm``) retries and confirms it, through the signed-transaction outbox (``ledger.transactions``,
  the ``EPOCH`` and ``CLAIM`` specs below): one nonce per epoch or claim, its signed bytes resent on every retry.
- ``claim_relay`` checks a claim (epoch on chain, proof leads to its root, not paid yet, no other live claim),
  writes a RewardClaim and sends it at once from the server's signer, which pays the gas; the tokens go to the
  entry's account. The database holds at most one live claim per entry and the contract pays each leaf once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from eth_utils import is_address, to_checksum_address

from . import chain, deployments, hashing, merkle, transactions
from .models import Anchor, RewardClaim, RewardContracts, RewardEpoch, RewardEpochEntry, RewardTransaction
from .services import anchor_request, anchor_subject

logger = logging.getLogger(__name__)

LEAF_TYPES = ("uint256", "address", "uint256")
MAX_ENTRIES = 100_000
_EPOCH_LOCK_ID = 0x45504F43  # "EPOC": one epoch number at a time
_UINT256_LIMIT = 1 << 256


class ClaimRefused(Exception):
    """A claim that cannot be relayed, with a sentence for the person who asked. ``code`` is stable for callers:
    not_published, bad_proof, already_claimed, in_flight, unavailable."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# Writing epochs


def _validated_entries(entries: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    if not entries:
        raise ValidationError({"entries": ["an epoch needs at least one entry"]})
    if len(entries) > MAX_ENTRIES:
        raise ValidationError({"entries": [f"at most {MAX_ENTRIES} entries in one epoch, got {len(entries)}"]})
    errors: list[str] = []
    seen: set[str] = set()
    cleaned: list[tuple[str, int]] = []
    for position, item in enumerate(entries):
        try:
            address, amount = item
        except (TypeError, ValueError):
            errors.append(f"entry {position}: expected (address, amount)")
            continue
        if not isinstance(address, str) or not is_address(address):
            errors.append(f"entry {position}: {address!r} is not an EVM address")
            continue
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount < _UINT256_LIMIT:
            errors.append(f"entry {position}: the amount must be a positive integer below 2**256, got {amount!r}")
            continue
        account = to_checksum_address(address)
        if account in seen:
            errors.append(f"entry {position}: {account} appears twice (merge its amounts first)")
            continue
        seen.add(account)
        cleaned.append((account, amount))
    if errors:
        raise ValidationError({"entries": errors})
    return cleaned


@transaction.atomic
def epoch_publish(*, entries: Sequence[tuple[str, int]], beneficiaries: Mapping[str, str] | None = None) -> RewardEpoch:
    """Write the next epoch paying ``amount`` to each ``address`` and queue its publication on chain.

    Call it inside the transaction that marks what the epoch pays (the accruals it closes): the epoch exists exactly
    when that commits. ``beneficiaries`` maps an address to the caller's label for it (``user:12``), stored on the
    entry. Raises ValidationError, writing nothing, for no entries, a bad address, a non-positive amount or an
    address given twice.
    """
    cleaned = _validated_entries(entries)
    labels = {to_checksum_address(a): str(label)[:64] for a, label in (beneficiaries or {}).items() if is_address(a)}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_EPOCH_LOCK_ID])
    last = RewardEpoch.objects.select_for_update().order_by("-number").first()
    number = (last.number if last else 0) + 1
    # sorted by address: the same payouts always make the same tree, whatever order the caller found them in
    values = [(index, account, amount) for index, (account, amount) in enumerate(sorted(cleaned))]
    tree = merkle.StandardMerkleTree.of(values, LEAF_TYPES)
    total = sum(amount for _, _, amount in values)
    epoch = RewardEpoch.objects.create(
        number=number, root=tree.root, total=Decimal(total), entry_count=len(values), tree=tree.dump()
    )
    RewardEpochEntry.objects.bulk_create(
        RewardEpochEntry(
            epoch=epoch,
            index=index,
            account=account,
            amount=Decimal(amount),
            proof=tree.proof(index),
            beneficiary=labels.get(account, ""),
        )
        for index, account, amount in values
    )
    transactions.created(EPOCH, epoch)
    return epoch


@transaction.atomic
def epoch_document_attach(*, epoch: RewardEpoch, document: Mapping[str, Any]) -> RewardEpoch:
    """Store ``document`` (the caller's account of what the epoch pays, e.g. an ``openledger.reward_epoch.v1``
    document) with the epoch, and anchor its keccak256-of-JCS hash as ``reward_epoch:<number>`` in the caller's
    transaction. The ledger reads only ``epoch`` and ``root`` from it, which must be the epoch's own. Raises
    ValidationError, writing nothing, for a mismatched or non-canonical document or an epoch that has one already.
    """
    epoch = RewardEpoch.objects.select_for_update().get(id=epoch.id)
    if epoch.document is not None:
        raise ValidationError({"document": [f"epoch {epoch.number} has its document already"]})
    if document.get("epoch") != epoch.number or document.get("root") != epoch.root:
        raise ValidationError({"document": [f"the document does not name epoch {epoch.number} and its root"]})
    try:
        digest = hashing.document_hash(dict(document))
    except hashing.CanonicalError as e:
        raise ValidationError({"document": [f"cannot be made canonical: {e}"]}) from None
    anchor = anchor_request(
        kind=Anchor.Kind.REWARD_EPOCH, subject=anchor_subject("reward_epoch", epoch.number), root=digest
    )
    epoch.document = dict(document)
    epoch.document_hash = digest
    epoch.document_anchor = anchor
    epoch.save(update_fields=["document", "document_hash", "document_anchor", "updated_at"])
    return epoch


# Epochs


def _epoch_build(epoch: RewardEpoch, contracts: RewardContracts) -> dict[str, Any]:
    return chain.publish_epoch_transaction(contracts, epoch=epoch.number, root=epoch.root, total=int(epoch.total))


def _epoch_has_event(epoch: RewardEpoch, receipt: chain.Receipt) -> bool:
    return any(
        isinstance(event, chain.EpochPublishedEvent)
        and (event.epoch, event.root, event.total) == (epoch.number, epoch.root, int(epoch.total))
        for event in chain.decode_reward_events(receipt, contracts=epoch.contracts)
    )


def _epoch_refusal_is_permanent(error: chain.ContractReverted) -> bool:
    # EpochAlreadyPublished cannot be retried away; anything else may pass on a later try (a node catching up)
    return "EpochAlreadyPublished" in str(error)


def _distributor(contracts: RewardContracts) -> str:
    return contracts.distributor_address


def _nonce_deployment(contracts: RewardContracts) -> Any:
    return contracts.deployment


# What every transaction to the RewardDistributor shares: it goes to the current RewardContracts (deployed when
# missing or reset), its event must come from the distributor, and its nonce is taken on the LineageRegistry
# deployment the reward contracts stand beside.
_distributor_spec = functools.partial(
    transactions.Spec,
    target_field="contracts",
    ensure_target=deployments.ensure_rewards_deployed,
    contract_address=_distributor,
    nonce_deployment=_nonce_deployment,
)

EPOCH = transactions.register(
    _distributor_spec(
        name="epoch",
        model=RewardEpoch,
        build=_epoch_build,
        has_event=_epoch_has_event,
        event="EpochPublished",
        send_task="ledger.tasks.epoch_send_task",
        permanent=_epoch_refusal_is_permanent,
    )
)


def epoch_send(*, epoch_id: int, now: datetime | None = None) -> RewardEpoch | None:
    """Publish one epoch if it is due: sign it (pending), broadcast it (signed, not broadcast). Safe to run twice."""
    return transactions.send(EPOCH, epoch_id, now=now)


def epoch_retry(*, epoch: RewardEpoch) -> RewardEpoch:
    """Try a failed epoch again now (from the admin). A failed epoch holds no unconsumed nonce."""
    return transactions.retry(EPOCH, epoch)


# Claims


def _proof_problem(entry: RewardEpochEntry, *, amount: int | None, proof: Sequence[str] | None) -> str | None:
    """Why the claimed leaf does not lead to the epoch's root, or None when it does."""
    amount = int(entry.amount) if amount is None else amount
    proof = entry.proof if proof is None else proof
    if not isinstance(proof, list | tuple) or len(proof) > 256:
        return "the proof must be a list of at most 256 hashes"
    try:
        ok = merkle.verify(entry.epoch.root, LEAF_TYPES, (entry.index, entry.account, amount), list(proof))
    except (ValueError, TypeError):
        return "the proof is not a list of 32-byte hex hashes"
    if not ok:
        return f"this proof does not lead from leaf {entry.index} to the root of epoch {entry.epoch.number}"
    return None


def claim_relay(
    *,
    entry: RewardEpochEntry,
    requested_by: str = "",
    amount: int | None = None,
    proof: Sequence[str] | None = None,
) -> RewardClaim:
    """Relay ``entry``'s claim from the server's signer, paying the tokens to ``entry.account``.

    ``amount`` and ``proof`` default to the stored ones; when given they must lead to the epoch's root (a forged
    proof is refused here, before anything is written or sent, and by the contract too). Raises ClaimRefused when
    the epoch is not on chain yet, the proof is bad, the entry was paid or has a claim in flight. Returns the claim,
    sent (submitted) or, when the node was away, pending for the beat to send.
    """
    entry = RewardEpochEntry.objects.select_related("epoch").get(id=entry.id)
    epoch = entry.epoch
    if epoch.status != RewardTransaction.Status.CONFIRMED:
        raise ClaimRefused(
            f"epoch {epoch.number} is not on chain yet ({epoch.status}); its claims open once it is confirmed",
            code="not_published",
        )
    problem = _proof_problem(entry, amount=amount, proof=proof)
    if problem:
        raise ClaimRefused(problem, code="bad_proof")
    paid = RewardClaim.objects.filter(entry=entry, status=RewardTransaction.Status.CONFIRMED).first()
    if paid is not None:
        raise ClaimRefused(f"this balance was already claimed, in transaction {paid.tx_hash}", code="already_claimed")
    try:
        if chain.is_claimed(epoch.number, entry.index, contracts=epoch.contracts):
            raise ClaimRefused("this balance was already claimed on chain", code="already_claimed")
    except chain.ChainError as e:
        raise ClaimRefused(f"the chain cannot be reached right now; try again in a minute ({e})",
                           code="unavailable") from e  # fmt: skip
    try:
        with transaction.atomic():
            claim = RewardClaim.objects.create(entry=entry, requested_by=requested_by[:64])
    except IntegrityError:
        raise ClaimRefused("a claim of this balance is already on its way", code="in_flight") from None
    return claim_send(claim_id=claim.id) or claim


def _claim_build(claim: RewardClaim, contracts: RewardContracts) -> dict[str, Any]:
    entry = claim.entry
    epoch = entry.epoch
    if epoch.contracts_id != contracts.id or epoch.status != RewardTransaction.Status.CONFIRMED:
        raise chain.ContractReverted(f"epoch {epoch.number} is not published on the current distributor")
    return chain.claim_transaction(
        contracts,
        epoch=epoch.number,
        index=entry.index,
        account=entry.account,
        amount=int(entry.amount),
        proof=entry.proof,
    )


def _claim_has_event(claim: RewardClaim, receipt: chain.Receipt) -> bool:
    entry = claim.entry
    return any(
        isinstance(event, chain.ClaimedEvent)
        and (event.epoch, event.index, event.account, event.amount)
        == (entry.epoch.number, entry.index, entry.account, int(entry.amount))
        for event in chain.decode_reward_events(receipt, contracts=claim.contracts)
    )


def _claims_after_reset(spec: transactions.Spec, *, old: RewardContracts, new: RewardContracts, reason: str) -> int:
    """Claims confirmed on ``old`` are voided, so that the entry may be claimed again on ``new``; claims not yet
    confirmed fail (claim again once the epoch is republished).

    Two causes, told apart by what the rows were built from: a reset chain (the old payment is gone with it) or an
    upgrade (contracts built from other sources: the old chain and its retired token are still there, but the
    platform counts only the new token; docs/governance.md, "Migrating balances and claims")."""
    upgraded = (old.token_artifact_sha256, old.distributor_artifact_sha256) != (
        new.token_artifact_sha256,
        new.distributor_artifact_sha256,
    )
    if upgraded:
        why = f"reward contracts upgraded ({reason})"
        gone = f"this payment was made in the retired token {old.token_address}; claim it again in the new token"
    else:
        why = f"chain reset ({reason})"
        gone = "this payment is gone with the old chain"
    voided = RewardClaim.objects.filter(contracts=old, status=RewardTransaction.Status.CONFIRMED).update(
        status=RewardClaim.VOIDED, last_error=f"{why}: {gone}"
    )
    failed = RewardClaim.objects.filter(
        status__in=[RewardTransaction.Status.PENDING, RewardTransaction.Status.SUBMITTED]
    ).update(status=RewardTransaction.Status.FAILED, last_error=f"{why}: claim again")
    if voided or failed:
        logger.warning("reward contracts replaced (%s): %s claim(s) voided, %s failed", why, voided, failed)
    return voided + failed


CLAIM = transactions.register(
    _distributor_spec(
        name="claim",
        model=RewardClaim,
        build=_claim_build,
        has_event=_claim_has_event,
        event="Claimed",
        send_task="ledger.tasks.claim_send_task",
        related=("entry__epoch",),
        on_reset=_claims_after_reset,
    )
)


def claim_send(*, claim_id: int, now: datetime | None = None) -> RewardClaim | None:
    """Send one claim if it is due. A refusal by the contract (AlreadyClaimed, InvalidProof) fails it at once."""
    return transactions.send(CLAIM, claim_id, now=now)


def claim_confirm(*, claim: RewardClaim, wait_seconds: float = 0.0) -> RewardClaim:
    """Check a submitted claim's receipt for up to ``wait_seconds`` (``transactions.confirm_waiting``)."""
    return transactions.confirm_waiting(CLAIM, claim.id, wait_seconds=wait_seconds)


# The beat


def rewards_dispatch(*, now: datetime | None = None) -> dict[str, int]:
    """The beat's sweep: check the reward contracts (a reset re-queues epochs), send due pending epochs and claims,
    and rebroadcast submitted ones the node lost."""
    if not RewardEpoch.objects.exists():
        return {"sent": 0, "checked": 0}  # no deployment until the first epoch needs one
    return transactions.dispatch([EPOCH, CLAIM], now=now)


def rewards_confirm() -> dict[str, int]:
    """The beat's confirmation pass over submitted epochs and claims: confirmed needs our event in the receipt from
    the distributor, CHAIN_CONFIRMATIONS blocks, and the block still on the chain."""
    return transactions.confirm([EPOCH, CLAIM])
