"""The Anchor outbox: request an anchor inside your own transaction; Celery sends, confirms and retries it.

The nonce rule, which everything here serves: one anchor never spends two nonces. An anchor's nonce and signed
transaction are committed (under row locks) before the first broadcast, every retry rebroadcasts those same bytes,
and the nonce is given up only when the chain proves it consumed (our transaction mined without our event, a
revert, another transaction on that nonce) or forgot it (a reset chain). Hence too: an anchor holding a nonce the
chain has not consumed is never marked failed, since that would leave a gap that blocks every later transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from outbox.services import enqueue_on_commit

from . import chain, hashing, merkle
from .models import Anchor, AnchorEvent, ChainDeployment, SignerNonce

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 15 * 60
DISPATCH_BATCH = 100
REBROADCAST_AFTER_SECONDS = 30
CONFIRM_BATCH = 200
URI_MAX_LENGTH = 2048
SUBJECT_MAX_LENGTH = 200
BATCH_LEAF_TYPES = ("bytes32",)
ZERO_BYTES32 = "0x" + "00" * 32


def _bytes32_hex(value: object, field: str) -> str:
    if isinstance(value, bytes | bytearray):
        if len(value) != 32:
            raise ValidationError({field: f"must be 32 bytes, got {len(value)}"})
        return "0x" + bytes(value).hex()
    if not isinstance(value, str):
        raise ValidationError({field: f"must be a 0x-prefixed 32-byte hex string, got {type(value).__name__}"})
    text = value[2:] if value[:2] in ("0x", "0X") else None
    if text is None:
        raise ValidationError({field: f"must start with 0x, got {value!r}"})
    if len(text) != 64:
        raise ValidationError({field: f"must be 32 bytes (64 hex digits), got {len(text)} digits"})
    try:
        bytes.fromhex(text)
    except ValueError:
        raise ValidationError({field: f"is not hex: {value!r}"}) from None
    return "0x" + text.lower()


def anchor_subject(*parts: object) -> str:
    """A readable subject from its parts joined with ``:``, e.g. ``anchor_subject("snapshot", datanet.id, 3)`` is
    ``snapshot:1:3``; the anchored subject id is keccak256 of it (``anchor_subject_id``)."""
    return ":".join(str(p) for p in parts)


def anchor_subject_id(*parts: object) -> str:
    """A bytes32 subject id from readable parts, e.g. ``anchor_subject_id("snapshot", datanet.id, 3)``:
    keccak256 of the parts joined with ``:``."""
    return hashing.subject_id(anchor_subject(*parts))


def batch_due(*, count: int, limit: int, oldest: datetime, max_age_seconds: int, now: datetime) -> bool:
    """Whether a batch of ``count`` waiting items is to be sealed now: full (``limit``), or its oldest item has waited
    ``max_age_seconds``. The one rule of inference-run and receipt batches."""
    return count >= limit or oldest <= now - timedelta(seconds=max_age_seconds)


def batch_anchor_request(*, kind: str, hashes: list[str]) -> tuple[merkle.StandardMerkleTree, Anchor]:
    """A StandardMerkleTree over ``hashes`` (one ``bytes32`` leaf each) and the anchor of its root, subject
    ``<kind>:<root>``: how a batch of documents (inference runs, receipts) goes on chain in one transaction. Call it
    in the transaction that writes the batch."""
    tree = merkle.StandardMerkleTree.of([(h,) for h in hashes], BATCH_LEAF_TYPES)
    return tree, anchor_request(kind=kind, subject=anchor_subject(kind, tree.root), root=tree.root)


def _enqueue_send(anchor_id: int) -> None:
    from .tasks import anchor_send_task

    enqueue_on_commit(anchor_send_task, anchor_id)


def _event(anchor: Anchor, type_: str, detail: str = "", **fields: object) -> None:
    AnchorEvent.objects.create(anchor=anchor, type=type_, detail=detail, **fields)


@transaction.atomic
def anchor_request(
    *, kind: str, root: str | bytes, subject: str = "", subject_id: str | bytes | None = None, uri: str = ""
) -> Anchor:
    """Queue ``root`` to be anchored on chain for a subject; returns the pending Anchor.

    ``subject`` is the readable subject (``snapshot:1:3``), stored so that proofs can show what the anchored
    ``subject_id`` (keccak256 of its UTF-8) stands for; a bare ``subject_id`` is still taken, and when both are given
    they must agree.

    Call it inside the transaction that creates the thing anchored: the anchor exists exactly when that commits,
    and the send is enqueued only then. Raises ValidationError, writing nothing, on a malformed value.
    """
    errors: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    if not isinstance(subject, str) or len(subject) > SUBJECT_MAX_LENGTH:
        errors["subject"] = [f"must be a string of at most {SUBJECT_MAX_LENGTH} characters"]
        subject = ""
    if subject_id is None and not subject:
        errors.setdefault("subject", ["give the subject (or its subject_id)"])
    for field, value in (("subject_id", subject_id), ("root", root)):
        if value is None:
            continue
        try:
            values[field] = _bytes32_hex(value, field)
        except ValidationError as e:
            errors.update(e.message_dict)
    if kind not in Anchor.Kind.values:
        errors["kind"] = [f"unknown kind {kind!r}; expected one of {', '.join(Anchor.Kind.values)}"]
    if subject:
        derived = hashing.subject_id(subject)
        if subject_id is not None and values.get("subject_id", derived) != derived:
            errors["subject_id"] = [f"is not keccak256({subject!r})"]
        values["subject_id"] = derived
    if values.get("root") == ZERO_BYTES32:
        errors["root"] = ["must not be zero"]
    if not isinstance(uri, str) or len(uri) > URI_MAX_LENGTH:
        errors["uri"] = [f"must be a string of at most {URI_MAX_LENGTH} characters"]
    if errors:
        raise ValidationError(errors)
    anchor = Anchor.objects.create(
        kind=kind, subject_id=values["subject_id"], subject=subject, root=values["root"], uri=uri
    )
    _event(anchor, AnchorEvent.Type.REQUESTED)
    # robust: the row is committed whatever the broker does, and the dispatcher sends what no message announced
    _enqueue_send(anchor.id)
    return anchor


def _backoff_seconds(attempts: int) -> int:
    return min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS)


@transaction.atomic
def _record_error(anchor_id: int, error: Exception | str, *, permanent: bool = False) -> Anchor:
    """Count a failed try and schedule the next one; a pending anchor fails after ANCHOR_MAX_ATTEMPTS (or at once
    when ``permanent``). A submitted one keeps retrying: its nonce must still be used."""
    anchor = Anchor.objects.select_for_update().get(id=anchor_id)
    message = str(error)
    anchor.attempts += 1
    anchor.last_error = message
    anchor.next_attempt_at = timezone.now() + timedelta(seconds=_backoff_seconds(anchor.attempts))
    _event(anchor, AnchorEvent.Type.ERROR, message, nonce=anchor.nonce, tx_hash=anchor.tx_hash)
    if anchor.status == Anchor.Status.PENDING and (permanent or anchor.attempts >= settings.ANCHOR_MAX_ATTEMPTS):
        anchor.status = Anchor.Status.FAILED
        _event(anchor, AnchorEvent.Type.FAILED, f"after {anchor.attempts} attempt(s): {message}")
    anchor.save()
    logger.warning("anchor %s: attempt %s failed: %s", anchor.id, anchor.attempts, message)
    return anchor


def _take_nonce(deployment: ChainDeployment, address: str) -> int:
    """The next nonce for ``address``; the caller's transaction holds the signer's row lock until it commits."""
    row, _ = SignerNonce.objects.get_or_create(deployment=deployment, address=address)
    row = SignerNonce.objects.select_for_update().get(id=row.id)
    # never below the chain (another sender with this key moved it on), never below our own record (a transaction
    # we signed that the node has not seen yet still owns its nonce)
    nonce = max(row.next_nonce, chain.account_nonce(address, block="pending"))
    row.next_nonce = nonce + 1
    row.save(update_fields=["next_nonce", "updated_at"])
    return nonce


def _sign(anchor: Anchor, *, now: datetime) -> Anchor:
    """pending -> submitted: choose a nonce and commit it with the signed transaction, before any broadcast."""
    try:
        deployment = chain.active_deployment() or chain.ensure_deployed()
        tx = chain.anchor_transaction(
            deployment, kind=anchor.kind_code, subject_id=anchor.subject_id, root=anchor.root, uri=anchor.uri
        )
    except chain.ContractReverted as e:
        return _record_error(anchor.id, e, permanent=True)
    except chain.ChainError as e:
        return _record_error(anchor.id, e)
    address = chain.signer().address
    try:
        with transaction.atomic():
            locked = Anchor.objects.select_for_update().get(id=anchor.id)
            if locked.status != Anchor.Status.PENDING or locked.next_attempt_at > now:
                return locked  # another worker took it meanwhile
            # a reset retires deployments under this row's lock: never sign for a contract that is gone
            if not ChainDeployment.objects.select_for_update().filter(id=deployment.id, active=True).exists():
                return locked
            signed = chain.sign(tx, nonce=_take_nonce(deployment, address))
            locked.status = Anchor.Status.SUBMITTED
            locked.deployment = deployment
            locked.signer = address
            locked.nonce = signed.nonce
            locked.raw_tx = signed.raw
            locked.tx_hash = signed.hash
            locked.submitted_at = timezone.now()
            locked.broadcast_at = None
            locked.save()
            _event(locked, AnchorEvent.Type.SIGNED, deployment=deployment, nonce=signed.nonce, tx_hash=signed.hash)
            return locked
    except chain.ChainError as e:
        return _record_error(anchor.id, e)


def _broadcast(anchor: Anchor) -> Anchor:
    """Send the stored signed transaction (again): the same bytes every time, so the same nonce."""
    try:
        chain.broadcast(anchor.raw_tx)
    except chain.ChainError as e:
        # "nonce too low" lands here too: our transaction was mined, or another took its nonce; the dispatcher tells
        # which from the chain
        return _record_error(anchor.id, e)
    updated = Anchor.objects.filter(id=anchor.id, status=Anchor.Status.SUBMITTED, tx_hash=anchor.tx_hash).update(
        broadcast_at=timezone.now(), last_error="", updated_at=timezone.now()
    )
    if updated:
        _event(
            anchor, AnchorEvent.Type.BROADCAST, deployment=anchor.deployment, nonce=anchor.nonce, tx_hash=anchor.tx_hash
        )
    anchor.refresh_from_db()
    return anchor


def anchor_send(*, anchor_id: int, now: datetime | None = None) -> Anchor | None:
    """Send one anchor if it is due: sign it (pending) and broadcast it (signed, not yet broadcast).

    Safe to run twice for the same anchor (a redelivered message, the dispatcher racing the first send): the second
    finds the row claimed or rebroadcasts the identical transaction.
    """
    now = now or timezone.now()
    anchor = Anchor.objects.filter(id=anchor_id).first()
    if anchor is None:
        return None
    if anchor.status == Anchor.Status.PENDING and anchor.next_attempt_at <= now:
        anchor = _sign(anchor, now=now)
    if anchor.status == Anchor.Status.SUBMITTED and anchor.broadcast_at is None:
        anchor = _broadcast(anchor)
    return anchor


@transaction.atomic
def _requeue(anchor_id: int, *, tx_hash: str, reason: str, count_attempt: bool) -> Anchor:
    """Back to pending, giving up the nonce: only for a nonce the chain has consumed or forgotten. Nothing happens
    unless the anchor still holds ``tx_hash`` (another worker may have moved it on)."""
    anchor = Anchor.objects.select_for_update().get(id=anchor_id)
    if anchor.tx_hash != tx_hash or anchor.status not in (Anchor.Status.SUBMITTED, Anchor.Status.CONFIRMED):
        return anchor
    _event(
        anchor,
        AnchorEvent.Type.REQUEUED,
        reason,
        deployment=anchor.deployment,
        nonce=anchor.nonce,
        tx_hash=anchor.tx_hash,
        block_number=anchor.block_number,
    )
    _back_to_pending(anchor)
    anchor.last_error = reason
    if count_attempt:
        anchor.attempts += 1
        anchor.next_attempt_at = timezone.now() + timedelta(seconds=_backoff_seconds(anchor.attempts))
        if anchor.attempts >= settings.ANCHOR_MAX_ATTEMPTS:
            anchor.status = Anchor.Status.FAILED
            _event(anchor, AnchorEvent.Type.FAILED, f"after {anchor.attempts} attempt(s): {reason}")
    else:
        anchor.attempts = 0
        anchor.next_attempt_at = timezone.now()
    anchor.save()
    if anchor.status == Anchor.Status.PENDING and not count_attempt:
        _enqueue_send(anchor.id)
    return anchor


def _settle_submitted(anchor: Anchor) -> None:
    """A submitted anchor with no receipt yet: (re)broadcast it while its nonce is free, give the nonce up only when
    the chain shows another transaction took it."""
    # the count before the receipt: had our transaction been mined in between, the receipt would show it
    mined_count = chain.account_nonce(anchor.signer, block="latest")
    if chain.get_receipt(anchor.tx_hash) is not None:
        return  # mined: anchors_confirm takes it from here
    if mined_count > anchor.nonce:
        reason = f"nonce {anchor.nonce} was used by another transaction"
        _requeue(anchor.id, tx_hash=anchor.tx_hash, reason=reason, count_attempt=False)
    elif anchor.broadcast_at is None or not chain.transaction_known(anchor.tx_hash):
        _broadcast(anchor)


def anchors_dispatch(*, now: datetime | None = None) -> dict[str, int]:
    """The beat's sweep: check the deployment (a reset re-queues anchors), send the due pending anchors, and
    rebroadcast submitted ones whose transaction the node lost. Returns counts for the log."""
    now = now or timezone.now()
    try:
        chain.ensure_deployed()
    except chain.ChainError as e:
        logger.warning("anchor dispatch skipped: %s", e)
        return {"sent": 0, "checked": 0}
    due = list(
        Anchor.objects.filter(status=Anchor.Status.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "id")
        .values_list("id", flat=True)[:DISPATCH_BATCH]
    )
    for anchor_id in due:
        anchor_send(anchor_id=anchor_id, now=now)
    # a transaction broadcast moments ago is in the mempool or in a block: leave it to anchors_confirm for a while
    submitted = (
        Anchor.objects.filter(status=Anchor.Status.SUBMITTED, next_attempt_at__lte=now)
        .filter(Q(broadcast_at__isnull=True) | Q(broadcast_at__lte=now - timedelta(seconds=REBROADCAST_AFTER_SECONDS)))
        .order_by("id")
    )
    checked = 0
    for anchor in submitted[:DISPATCH_BATCH]:
        try:
            _settle_submitted(anchor)
        except chain.ChainError as e:
            _record_error(anchor.id, e)
        checked += 1
    return {"sent": len(due), "checked": checked}


@transaction.atomic
def _confirm(anchor_id: int, receipt: chain.Receipt, confirmations: int) -> None:
    anchor = Anchor.objects.select_for_update().get(id=anchor_id)
    if anchor.status != Anchor.Status.SUBMITTED or anchor.tx_hash != receipt.tx_hash:
        return
    anchor.status = Anchor.Status.CONFIRMED
    anchor.block_number = receipt.block_number
    anchor.block_hash = receipt.block_hash
    anchor.confirmations = confirmations
    anchor.confirmed_at = timezone.now()
    anchor.last_error = ""
    anchor.save()
    _event(
        anchor,
        AnchorEvent.Type.CONFIRMED,
        f"{confirmations} confirmation(s)",
        deployment=anchor.deployment,
        nonce=anchor.nonce,
        tx_hash=anchor.tx_hash,
        block_number=receipt.block_number,
    )


@transaction.atomic
def _fail_reverted(anchor_id: int, receipt: chain.Receipt) -> None:
    anchor = Anchor.objects.select_for_update().get(id=anchor_id)
    if anchor.status != Anchor.Status.SUBMITTED or anchor.tx_hash != receipt.tx_hash:
        return
    anchor.status = Anchor.Status.FAILED
    anchor.block_number = receipt.block_number
    anchor.block_hash = receipt.block_hash
    anchor.last_error = f"transaction {receipt.tx_hash} reverted in block {receipt.block_number}"
    anchor.save()
    _event(
        anchor,
        AnchorEvent.Type.FAILED,
        anchor.last_error,
        deployment=anchor.deployment,
        nonce=anchor.nonce,
        tx_hash=anchor.tx_hash,
        block_number=receipt.block_number,
    )


def anchors_confirm() -> dict[str, int]:
    """The beat's confirmation pass over submitted anchors.

    Confirmed needs a receipt that carries our Anchored event for this very root from the deployment's contract,
    CHAIN_CONFIRMATIONS blocks, and the receipt's block still on the chain. A receipt without the event (the
    contract vanished: a reset) sends the anchor back to pending and triggers the reset check; a revert fails it.
    """
    counts = {"confirmed": 0, "waiting": 0, "requeued": 0, "failed": 0}
    submitted = list(
        Anchor.objects.filter(status=Anchor.Status.SUBMITTED)
        .select_related("deployment")
        .order_by("id")[:CONFIRM_BATCH]
    )
    if not submitted:
        return counts
    try:
        latest = chain.block_number()
    except chain.ChainError as e:
        logger.warning("anchor confirmation skipped: %s", e)
        return counts
    check_reset = False
    for anchor in submitted:
        try:
            receipt = chain.get_receipt(anchor.tx_hash)
            if receipt is None:
                counts["waiting"] += 1
                continue
            if receipt.status != 1:
                _fail_reverted(anchor.id, receipt)
                counts["failed"] += 1
                continue
            events = chain.decode_anchored(receipt, contract_address=anchor.deployment.contract_address)
            if not any(
                e.root == anchor.root and e.subject_id == anchor.subject_id and e.kind == anchor.kind_code
                for e in events
            ):
                reason = (
                    f"transaction {receipt.tx_hash} was mined in block {receipt.block_number} without our Anchored "
                    f"event from {anchor.deployment.contract_address} (no contract there: was the chain reset?)"
                )
                _requeue(anchor.id, tx_hash=anchor.tx_hash, reason=reason, count_attempt=True)
                counts["requeued"] += 1
                check_reset = True
                continue
            confirmations = latest - receipt.block_number + 1
            if confirmations < settings.CHAIN_CONFIRMATIONS:
                Anchor.objects.filter(id=anchor.id, status=Anchor.Status.SUBMITTED).update(
                    block_number=receipt.block_number, block_hash=receipt.block_hash, confirmations=confirmations
                )
                counts["waiting"] += 1
            elif chain.block_hash(receipt.block_number) == receipt.block_hash:
                _confirm(anchor.id, receipt, confirmations)
                counts["confirmed"] += 1
            else:
                counts["waiting"] += 1  # reorganised away: the receipt moves with the transaction
        except chain.ChainError as e:
            logger.warning("anchor %s: confirmation check failed: %s", anchor.id, e)
    if check_reset:
        chain_check()
    return counts


def anchors_requeue_after_reset(*, old: ChainDeployment, new: ChainDeployment, reason: str) -> int:
    """Every anchor sent to ``old`` (submitted or confirmed) goes back to pending for ``new``, its history kept in
    AnchorEvent rows. Called by ``chain.ensure_deployed`` inside its transaction."""
    sent = list(
        Anchor.objects.filter(
            deployment=old, status__in=[Anchor.Status.SUBMITTED, Anchor.Status.CONFIRMED]
        ).values_list("id", "tx_hash")
    )
    for anchor_id, tx_hash in sent:
        _requeue(
            anchor_id,
            tx_hash=tx_hash,
            reason=f"chain reset ({reason}); anchoring again on {new.contract_address}",
            count_attempt=False,
        )
    if sent:
        logger.warning("chain reset: %s anchor(s) re-queued for the new deployment", len(sent))
    return len(sent)


@transaction.atomic
def anchor_retry(*, anchor: Anchor) -> Anchor:
    """Try a failed anchor again now (from the admin); a pending one in backoff is made due at once.

    A failed anchor never holds an unconsumed nonce (see the module docstring), so it may take a new one.
    """
    anchor = Anchor.objects.select_for_update().get(id=anchor.id)
    if anchor.status == Anchor.Status.FAILED:
        _event(
            anchor,
            AnchorEvent.Type.RETRIED,
            f"retried by hand after: {anchor.last_error}",
            deployment=anchor.deployment,
            nonce=anchor.nonce,
            tx_hash=anchor.tx_hash,
        )
        _back_to_pending(anchor)
    elif anchor.status != Anchor.Status.PENDING:
        return anchor
    anchor.attempts = 0
    anchor.next_attempt_at = timezone.now()
    anchor.save()
    _enqueue_send(anchor.id)
    return anchor


def chain_check() -> ChainDeployment | None:
    """The beat's reset check: ``chain.ensure_deployed()``, logging instead of raising when the chain is away."""
    try:
        return chain.ensure_deployed()
    except chain.ChainError as e:
        logger.warning("chain check failed: %s", e)
        return None


def _back_to_pending(anchor: Anchor) -> None:
    """Forget the anchor's transaction (the caller has logged it in an AnchorEvent): it will take a new nonce."""
    anchor.status = Anchor.Status.PENDING
    anchor.deployment = None
    anchor.signer = ""
    anchor.nonce = None
    anchor.raw_tx = ""
    anchor.tx_hash = ""
    anchor.block_number = None
    anchor.block_hash = ""
    anchor.confirmations = 0
    anchor.submitted_at = anchor.broadcast_at = anchor.confirmed_at = None
