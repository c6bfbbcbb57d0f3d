"""Reward epochs and claims on the RewardDistributor, sent under the outbox's nonce rule (see ``services``).

- ``epoch_publish`` writes an epoch (Merkle tree over ``(index, account, amount)``, a proof per entry) in the
  caller's transaction; ``epoch_send_task`` publishes its root on commit, and the beat (``rewards_dispatch``,
  ``rewards_confirm``) retries and confirms it. One epoch never spends two nonces: its nonce and signed
  transaction are committed before the first broadcast, and every retry resends those bytes.
- ``claim_relay`` checks a claim (epoch on chain, proof leads to its root, not paid yet, no other live claim),
  writes a RewardClaim and sends it at once from the server's signer, which pays the gas; the tokens go to the
  entry's account. The database holds at most one live claim per entry and the contract pays each leaf once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from eth_utils import is_address, to_checksum_address

from outbox.services import enqueue_on_commit

from . import chain, hashing, merkle
from .models import Anchor, RewardClaim, RewardContracts, RewardEpoch, RewardEpochEntry, RewardTransaction
from .services import _backoff_seconds, _take_nonce, anchor_request, anchor_subject

logger = logging.getLogger(__name__)

LEAF_TYPES = ("uint256", "address", "uint256")
MAX_ENTRIES = 100_000
REBROADCAST_SECONDS = 30
BATCH = 100
_EPOCH_LOCK_ID = 0x45504F43  # "EPOC": one epoch number at a time
_UINT256_LIMIT = 1 << 256

Row = TypeVar("Row", RewardEpoch, RewardClaim)


class ClaimRefused(Exception):
    """A claim that cannot be relayed, with a sentence for the person who asked. ``code`` is stable for callers:
    not_published, bad_proof, already_claimed, in_flight, unavailable."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _enqueue(task_name: str, row_id: int) -> None:
    from . import tasks

    enqueue_on_commit(getattr(tasks, task_name), row_id)


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
    _enqueue("epoch_send_task", epoch.id)
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


# The outbox mechanics, shared by epochs and claims


@transaction.atomic
def _record_error(model: type[Row], row_id: int, error: Exception | str, *, permanent: bool = False) -> Row:
    """Count a failed try and back off; a pending row fails after ANCHOR_MAX_ATTEMPTS (at once when ``permanent``).
    A submitted one keeps retrying: its nonce must still be used."""
    row = model.objects.select_for_update().get(id=row_id)
    row.attempts += 1
    row.last_error = str(error)
    row.next_attempt_at = timezone.now() + timedelta(seconds=_backoff_seconds(row.attempts))
    if row.status == RewardTransaction.Status.PENDING and (permanent or row.attempts >= settings.ANCHOR_MAX_ATTEMPTS):
        row.status = RewardTransaction.Status.FAILED
    row.save()
    logger.warning("%s %s: attempt %s failed: %s", model.__name__, row_id, row.attempts, error)
    return row


def _sign(model: type[Row], row: Row, *, build: Callable[[RewardContracts], dict[str, Any]], now: datetime) -> Row:
    """pending -> submitted: a nonce from the signer's shared SignerNonce row, committed with the signed bytes
    before any broadcast."""
    contracts = chain.active_reward_contracts() or chain.ensure_rewards_deployed()
    tx = build(contracts)
    address = chain.signer().address
    with transaction.atomic():
        locked = model.objects.select_for_update().get(id=row.id)
        if locked.status != RewardTransaction.Status.PENDING or locked.next_attempt_at > now:
            return locked  # another worker took it meanwhile
        # a reset retires contracts under this lock: never sign for a distributor that is gone
        if not RewardContracts.objects.select_for_update().filter(id=contracts.id, active=True).exists():
            return locked
        signed = chain.sign(tx, nonce=_take_nonce(contracts.deployment, address))
        locked.status = RewardTransaction.Status.SUBMITTED
        locked.contracts = contracts
        locked.signer = address
        locked.nonce = signed.nonce
        locked.raw_tx = signed.raw
        locked.tx_hash = signed.hash
        locked.submitted_at = timezone.now()
        locked.broadcast_at = None
        locked.save()
        return locked


def _broadcast(model: type[Row], row: Row) -> Row:
    """Send the stored signed transaction (again): the same bytes every time, so the same nonce."""
    try:
        chain.broadcast(row.raw_tx)
    except chain.ChainError as e:
        return _record_error(model, row.id, e)
    model.objects.filter(id=row.id, status=RewardTransaction.Status.SUBMITTED, tx_hash=row.tx_hash).update(
        broadcast_at=timezone.now(), last_error="", updated_at=timezone.now()
    )
    row.refresh_from_db()
    return row


def _forget_transaction(row: RewardTransaction) -> None:
    row.contracts = None
    row.signer = ""
    row.nonce = None
    row.raw_tx = ""
    row.tx_hash = ""
    row.block_number = None
    row.block_hash = ""
    row.confirmations = 0
    row.submitted_at = row.broadcast_at = row.confirmed_at = None


@transaction.atomic
def _requeue(model: type[Row], row_id: int, *, tx_hash: str, reason: str, count_attempt: bool) -> Row:
    """Back to pending, giving up the nonce: only for a nonce the chain consumed without our event or forgot."""
    row = model.objects.select_for_update().get(id=row_id)
    if row.tx_hash != tx_hash or row.status != RewardTransaction.Status.SUBMITTED:
        return row
    _forget_transaction(row)
    row.status = RewardTransaction.Status.PENDING
    row.last_error = f"{reason} (was transaction {tx_hash})"
    if count_attempt:
        row.attempts += 1
        row.next_attempt_at = timezone.now() + timedelta(seconds=_backoff_seconds(row.attempts))
        if row.attempts >= settings.ANCHOR_MAX_ATTEMPTS:
            row.status = RewardTransaction.Status.FAILED
    else:
        row.next_attempt_at = timezone.now()
    row.save()
    return row


def _settle_submitted(model: type[Row], row: Row) -> None:
    """A submitted row with no receipt yet: rebroadcast while its nonce is free, give the nonce up only when the
    chain shows another transaction took it."""
    mined_count = chain.account_nonce(row.signer, block="latest")
    if chain.get_receipt(row.tx_hash) is not None:
        return
    if mined_count > row.nonce:
        _requeue(model, row.id, tx_hash=row.tx_hash, reason=f"nonce {row.nonce} was used by another transaction",
                 count_attempt=False)  # fmt: skip
    elif row.broadcast_at is None or not chain.transaction_known(row.tx_hash):
        _broadcast(model, row)


@transaction.atomic
def _finish(model: type[Row], row_id: int, receipt: chain.Receipt, *, status: str, confirmations: int = 0,
            error: str = "") -> Row:  # fmt: skip
    row = model.objects.select_for_update().get(id=row_id)
    if row.status != RewardTransaction.Status.SUBMITTED or row.tx_hash != receipt.tx_hash:
        return row
    row.status = status
    row.block_number = receipt.block_number
    row.block_hash = receipt.block_hash
    row.confirmations = confirmations
    row.last_error = error
    if status == RewardTransaction.Status.CONFIRMED:
        row.confirmed_at = timezone.now()
    row.save()
    return row


def _matches(row: RewardEpoch | RewardClaim, event: chain.EpochPublishedEvent | chain.ClaimedEvent) -> bool:
    if isinstance(row, RewardEpoch):
        return isinstance(event, chain.EpochPublishedEvent) and (event.epoch, event.root, event.total) == (
            row.number,
            row.root,
            int(row.total),
        )
    entry = row.entry
    return isinstance(event, chain.ClaimedEvent) and (event.epoch, event.index, event.account, event.amount) == (
        entry.epoch.number,
        entry.index,
        entry.account,
        int(entry.amount),
    )


def _confirm_one(model: type[Row], row: Row, *, latest: int) -> str:
    """One confirmation check; returns what happened: waiting, confirmed, failed or requeued."""
    receipt = chain.get_receipt(row.tx_hash)
    if receipt is None:
        return "waiting"
    if receipt.status != 1:
        _finish(model, row.id, receipt, status=RewardTransaction.Status.FAILED,
                error=f"transaction {receipt.tx_hash} reverted in block {receipt.block_number}")  # fmt: skip
        return "failed"
    events = chain.decode_reward_events(receipt, contracts=row.contracts)
    if not any(_matches(row, event) for event in events):
        reason = (
            f"transaction {receipt.tx_hash} was mined without our event from {row.contracts.distributor_address} "
            "(no contract there: was the chain reset?)"
        )
        _requeue(model, row.id, tx_hash=row.tx_hash, reason=reason, count_attempt=True)
        return "requeued"
    confirmations = latest - receipt.block_number + 1
    if confirmations < settings.CHAIN_CONFIRMATIONS:
        model.objects.filter(id=row.id, status=RewardTransaction.Status.SUBMITTED).update(
            block_number=receipt.block_number, block_hash=receipt.block_hash, confirmations=confirmations
        )
        return "waiting"
    if chain.block_hash(receipt.block_number) != receipt.block_hash:
        return "waiting"  # reorganised away: the receipt moves with the transaction
    _finish(model, row.id, receipt, status=RewardTransaction.Status.CONFIRMED, confirmations=confirmations)
    return "confirmed"


# Epochs


def _epoch_build(epoch: RewardEpoch) -> Callable[[RewardContracts], dict[str, Any]]:
    return lambda contracts: chain.publish_epoch_transaction(
        contracts, epoch=epoch.number, root=epoch.root, total=int(epoch.total)
    )


def epoch_send(*, epoch_id: int, now: datetime | None = None) -> RewardEpoch | None:
    """Publish one epoch if it is due: sign it (pending), broadcast it (signed, not broadcast). Safe to run twice."""
    now = now or timezone.now()
    epoch = RewardEpoch.objects.filter(id=epoch_id).first()
    if epoch is None:
        return None
    if epoch.status == RewardTransaction.Status.PENDING and epoch.next_attempt_at <= now:
        try:
            epoch = _sign(RewardEpoch, epoch, build=_epoch_build(epoch), now=now)
        except chain.ContractReverted as e:
            # EpochAlreadyPublished cannot be retried away; an unfunded treasury can (someone tops it up)
            return _record_error(RewardEpoch, epoch.id, e, permanent="EpochAlreadyPublished" in str(e))
        except chain.ChainError as e:
            return _record_error(RewardEpoch, epoch.id, e)
    if epoch.status == RewardTransaction.Status.SUBMITTED and epoch.broadcast_at is None:
        epoch = _broadcast(RewardEpoch, epoch)
    return epoch


@transaction.atomic
def epoch_retry(*, epoch: RewardEpoch) -> RewardEpoch:
    """Try a failed epoch again now (from the admin). A failed epoch holds no unconsumed nonce."""
    epoch = RewardEpoch.objects.select_for_update().get(id=epoch.id)
    if epoch.status not in (RewardTransaction.Status.FAILED, RewardTransaction.Status.PENDING):
        return epoch
    _forget_transaction(epoch)
    epoch.status = RewardTransaction.Status.PENDING
    epoch.attempts = 0
    epoch.next_attempt_at = timezone.now()
    epoch.save()
    _enqueue("epoch_send_task", epoch.id)
    return epoch


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


def _claim_build(claim: RewardClaim) -> Callable[[RewardContracts], dict[str, Any]]:
    entry = claim.entry

    def build(contracts: RewardContracts) -> dict[str, Any]:
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

    return build


def claim_send(*, claim_id: int, now: datetime | None = None) -> RewardClaim | None:
    """Send one claim if it is due. A refusal by the contract (AlreadyClaimed, InvalidProof) fails it at once."""
    now = now or timezone.now()
    claim = RewardClaim.objects.select_related("entry__epoch").filter(id=claim_id).first()
    if claim is None:
        return None
    if claim.status == RewardTransaction.Status.PENDING and claim.next_attempt_at <= now:
        try:
            claim = _sign(RewardClaim, claim, build=_claim_build(claim), now=now)
        except chain.ContractReverted as e:
            return _record_error(RewardClaim, claim.id, e, permanent=True)
        except chain.ChainError as e:
            return _record_error(RewardClaim, claim.id, e)
    if claim.status == RewardTransaction.Status.SUBMITTED and claim.broadcast_at is None:
        claim = _broadcast(RewardClaim, claim)
    return claim


def claim_confirm(*, claim: RewardClaim, wait_seconds: float = 0.0) -> RewardClaim:
    """Check a submitted claim's receipt, for up to ``wait_seconds`` (the page does, right after relaying, so that
    it can show the result; the beat confirms whatever is still waiting afterwards)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        claim = RewardClaim.objects.select_related("entry__epoch", "contracts").get(id=claim.id)
        if claim.status != RewardTransaction.Status.SUBMITTED:
            return claim
        try:
            _confirm_one(RewardClaim, claim, latest=chain.block_number())
        except chain.ChainError as e:
            logger.warning("claim %s: confirmation check failed: %s", claim.id, e)
        claim.refresh_from_db()
        if claim.status != RewardTransaction.Status.SUBMITTED or time.monotonic() >= deadline:
            return claim
        time.sleep(0.1)


# The beat


def rewards_dispatch(*, now: datetime | None = None) -> dict[str, int]:
    """The beat's sweep: check the reward contracts (a reset re-queues epochs), send due pending epochs and claims,
    and rebroadcast submitted ones the node lost."""
    if not RewardEpoch.objects.exists():
        return {"sent": 0, "checked": 0}  # no deployment until the first epoch needs one
    try:
        chain.ensure_rewards_deployed()
    except chain.ChainError as e:
        logger.warning("rewards dispatch skipped: %s", e)
        return {"sent": 0, "checked": 0}
    now = now or timezone.now()  # after the check, so epochs it just re-queued are due
    sent = checked = 0
    for model, send in ((RewardEpoch, epoch_send), (RewardClaim, claim_send)):
        due = model.objects.filter(status=RewardTransaction.Status.PENDING, next_attempt_at__lte=now)
        key = "epoch_id" if model is RewardEpoch else "claim_id"
        for row_id in list(due.order_by("next_attempt_at", "id").values_list("id", flat=True)[:BATCH]):
            send(**{key: row_id, "now": now})
            sent += 1
        stale = (
            model.objects.filter(status=RewardTransaction.Status.SUBMITTED, next_attempt_at__lte=now)
            .filter(Q(broadcast_at__isnull=True) | Q(broadcast_at__lte=now - timedelta(seconds=REBROADCAST_SECONDS)))
            .order_by("id")
        )
        for row in stale[:BATCH]:
            try:
                _settle_submitted(model, row)
            except chain.ChainError as e:
                _record_error(model, row.id, e)
            checked += 1
    return {"sent": sent, "checked": checked}


def rewards_confirm() -> dict[str, int]:
    """The beat's confirmation pass over submitted epochs and claims: confirmed needs our event in the receipt from
    the distributor, CHAIN_CONFIRMATIONS blocks, and the block still on the chain."""
    counts = {"confirmed": 0, "waiting": 0, "requeued": 0, "failed": 0}
    rows: list[tuple[type[Any], Any]] = [
        (RewardEpoch, row)
        for row in RewardEpoch.objects.filter(status=RewardTransaction.Status.SUBMITTED).select_related("contracts")
    ]
    rows += [
        (RewardClaim, row)
        for row in RewardClaim.objects.filter(status=RewardTransaction.Status.SUBMITTED).select_related(
            "contracts", "entry__epoch"
        )[:BATCH]
    ]
    if not rows:
        return counts
    try:
        latest = chain.block_number()
    except chain.ChainError as e:
        logger.warning("rewards confirmation skipped: %s", e)
        return counts
    for model, row in rows[: 2 * BATCH]:
        try:
            counts[_confirm_one(model, row, latest=latest)] += 1
        except chain.ChainError as e:
            logger.warning("%s %s: confirmation check failed: %s", model.__name__, row.id, e)
    if counts["requeued"]:
        try:
            chain.ensure_rewards_deployed()
        except chain.ChainError as e:
            logger.warning("reward contracts check failed: %s", e)
    return counts


def rewards_requeue_after_reset(*, old: RewardContracts, new: RewardContracts, reason: str) -> dict[str, int]:
    """After a reset: every epoch sent to ``old`` goes back to pending for ``new``; claims confirmed there are voided
    (the new chain never paid them, so the entry may be claimed again there), and claims not yet confirmed fail
    (claim again once the epoch is republished). Called by ``chain.ensure_rewards_deployed`` in its transaction."""
    epochs = RewardEpoch.objects.select_for_update().filter(
        Q(contracts=old) | Q(contracts__isnull=True), status__in=[RewardTransaction.Status.SUBMITTED,
                                                                 RewardTransaction.Status.CONFIRMED]
    )  # fmt: skip
    requeued = 0
    for epoch in epochs:
        was = epoch.tx_hash
        _forget_transaction(epoch)
        epoch.status = RewardTransaction.Status.PENDING
        epoch.attempts = 0
        epoch.next_attempt_at = timezone.now()
        epoch.last_error = f"chain reset ({reason}); publishing again on {new.distributor_address} (was {was})"
        epoch.save()
        _enqueue("epoch_send_task", epoch.id)
        requeued += 1
    voided = RewardClaim.objects.filter(contracts=old, status=RewardTransaction.Status.CONFIRMED).update(
        status=RewardClaim.VOIDED, last_error=f"chain reset ({reason}): this payment is gone with the old chain"
    )
    failed = RewardClaim.objects.filter(
        status__in=[RewardTransaction.Status.PENDING, RewardTransaction.Status.SUBMITTED]
    ).update(status=RewardTransaction.Status.FAILED, last_error=f"chain reset ({reason}): claim again")
    if requeued or voided or failed:
        logger.warning("reward contracts reset: %s epoch(s) requeued, %s claim(s) voided", requeued, voided)
    return {"requeued": requeued, "voided": voided, "failed": failed}
