"""The one signed-transaction outbox: every transaction the ledger sends (an anchor, an epoch publication, a relayed
claim) moves through the states of ``SignedTransaction`` here, driven by the ``Spec`` of its kind.

The nonce rule, which everything here serves: one row never spends two nonces. A row's nonce and signed transaction
are committed (under row locks) before the first broadcast, every retry rebroadcasts those same bytes, and the nonce
is given up only when the chain proves it consumed (our transaction mined without our event, a revert, another
transaction on that nonce) or forgot it (a reset chain). Hence too: a row holding a nonce the chain has not consumed
is never marked failed, since that would leave a gap that blocks every later transaction.

The steps: ``send`` (take a nonce, build and sign, store the bytes, broadcast the stored bytes), ``dispatch`` (the
beat: send what is due, rebroadcast what the node lost, give up a nonce another transaction took), ``confirm`` (the
row's own contract event in the receipt, CHAIN_CONFIRMATIONS blocks, the block still there), ``record_error`` (retry
with exponential backoff; failed after ANCHOR_MAX_ATTEMPTS, or at once for a refusal the spec calls permanent),
``retry`` (by hand), and the requeue after a chain reset (``deployments.deployment_retired``). A new kind (a
governance call, a receipt) is a model deriving from SignedTransaction and a ``Spec`` passed to ``register``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.dispatch import receiver
from django.utils import timezone

from outbox.services import enqueue_on_commit

from . import chain, deployments
from .models import ChainDeployment, SignedTransaction

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 15 * 60
DISPATCH_BATCH = 100
REBROADCAST_AFTER_SECONDS = 30
CONFIRM_BATCH = 200

Status = SignedTransaction.Status
Row = Any  # a SignedTransaction subclass instance; its spec says which


def _always(_error: chain.ContractReverted) -> bool:
    return True


def _same(target: Any) -> Any:
    return target


@dataclass(frozen=True)
class Spec:
    """What the outbox needs to know about one kind of transaction.

    - ``model``: the SignedTransaction subclass; ``target_field`` its foreign key to what the transaction is sent
      to (a ChainDeployment, RewardContracts: any model with ``chain_id``, ``active`` and ``objects.current()``).
    - ``ensure_target``: the active target, deployed first when missing or reset (``deployments.ensure_*``).
    - ``build(row, target)``: the unsigned transaction (``chain.*_transaction``); raises ContractReverted when the
      contract would refuse it, which fails the row at once when ``permanent(error)`` says retrying cannot help.
    - ``has_event(row, receipt)``: whether the receipt carries the row's own event (named ``event``) from the
      target's contract at ``contract_address(target)``: the only proof of success.
    - ``send_task``: the Celery task name that sends one row by id.
    - ``nonce_deployment(target)``: the deployment whose SignerNonce row hands out the nonces.
    - ``related``: what ``build`` and ``has_event`` read through foreign keys (select_related).
    - ``log(row, type, detail, target=, nonce=, tx_hash=, block_number=)``: a history row per step, if the kind
      keeps one (anchors: AnchorEvent); types are AnchorEvent.Type's values.
    - ``on_reset(spec, old=, new=, reason=)``: what a chain reset does to the kind's rows; by default
      ``requeue_sent``, every row sent to the old target goes back to pending to be sent to the new one.
    """

    name: str
    model: type[SignedTransaction]
    target_field: str
    ensure_target: Callable[[], Any]
    build: Callable[[Row, Any], dict[str, Any]]
    has_event: Callable[[Row, chain.Receipt], bool]
    event: str
    contract_address: Callable[[Any], str]
    send_task: str
    permanent: Callable[[chain.ContractReverted], bool] = _always
    nonce_deployment: Callable[[Any], ChainDeployment] = _same
    related: tuple[str, ...] = ()
    log: Callable[..., None] | None = None
    on_reset: Callable[..., int] | None = None

    @property
    def target_model(self) -> type[models.Model]:
        return self.model._meta.get_field(self.target_field).related_model


SPECS: dict[str, Spec] = {}


def register(spec: Spec) -> Spec:
    """Make ``spec``'s kind known to the outbox (for chain resets); returns it, for a module-level constant."""
    SPECS[spec.name] = spec
    return spec


def backoff_seconds(attempts: int) -> int:
    return min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS)


def _history(spec: Spec, row: Row) -> dict[str, Any]:
    return {
        "target": getattr(row, spec.target_field),
        "nonce": row.nonce,
        "tx_hash": row.tx_hash,
        "block_number": row.block_number,
    }


def _log(spec: Spec, row: Row, type_: str, detail: str = "", **fields: Any) -> None:
    if spec.log is not None:
        spec.log(row, type_, detail, **fields)


def _enqueue_send(spec: Spec, row_id: int) -> None:
    enqueue_on_commit(spec.send_task, row_id)


def _forget(spec: Spec, row: Row) -> None:
    """Back to pending without a transaction (the caller has logged it): the row will take a new nonce."""
    row.status = Status.PENDING
    setattr(row, spec.target_field, None)
    row.signer = ""
    row.nonce = None
    row.raw_tx = ""
    row.tx_hash = ""
    row.block_number = None
    row.block_hash = ""
    row.confirmations = 0
    row.submitted_at = row.broadcast_at = row.confirmed_at = None


def created(spec: Spec, row: Row) -> None:
    """Announce a new pending row: its send is enqueued when the caller's transaction commits (and the dispatcher
    sends whatever no message announced)."""
    _enqueue_send(spec, row.id)


@transaction.atomic
def record_error(spec: Spec, row_id: int, error: Exception | str, *, permanent: bool = False) -> Row:
    """Count a failed try and schedule the next one; a pending row fails after ANCHOR_MAX_ATTEMPTS (or at once when
    ``permanent``). A submitted one keeps retrying: its nonce must still be used."""
    row = spec.model.objects.select_for_update().get(id=row_id)
    message = str(error)
    row.attempts += 1
    row.last_error = message
    row.next_attempt_at = timezone.now() + timedelta(seconds=backoff_seconds(row.attempts))
    _log(spec, row, "error", message, **_history(spec, row))
    if row.status == Status.PENDING and (permanent or row.attempts >= settings.ANCHOR_MAX_ATTEMPTS):
        row.status = Status.FAILED
        _log(spec, row, "failed", f"after {row.attempts} attempt(s): {message}")
    row.save()
    logger.warning("%s %s: attempt %s failed: %s", spec.name, row.id, row.attempts, message)
    return row


def _sign(spec: Spec, row: Row, *, now: datetime) -> Row:
    """pending -> submitted: choose a nonce and commit it with the signed transaction, before any broadcast."""
    try:
        target = spec.target_model.objects.current() or spec.ensure_target()
        tx = spec.build(row, target)
        address = chain.signer().address
    except chain.ContractReverted as e:
        return record_error(spec, row.id, e, permanent=spec.permanent(e))
    except chain.ChainError as e:
        return record_error(spec, row.id, e)
    try:
        with transaction.atomic():
            locked = spec.model.objects.select_for_update().get(id=row.id)
            if locked.status != Status.PENDING or locked.next_attempt_at > now:
                return locked  # another worker took it meanwhile
            # a reset retires targets under this row's lock: never sign for a contract that is gone
            if not spec.target_model.objects.select_for_update().filter(id=target.id, active=True).exists():
                return locked
            nonce = deployments.signer_nonce_take(deployment=spec.nonce_deployment(target), address=address)
            signed = chain.sign(tx, nonce=nonce)
            locked.status = Status.SUBMITTED
            setattr(locked, spec.target_field, target)
            locked.signer = address
            locked.nonce = signed.nonce
            locked.raw_tx = signed.raw
            locked.tx_hash = signed.hash
            locked.submitted_at = timezone.now()
            locked.broadcast_at = None
            locked.save()
            _log(spec, locked, "signed", **_history(spec, locked))
            return locked
    except chain.ChainError as e:
        return record_error(spec, row.id, e)


def _broadcast(spec: Spec, row: Row) -> Row:
    """Send the stored signed transaction (again): the same bytes every time, so the same nonce."""
    try:
        chain.broadcast(row.raw_tx)
    except chain.ChainError as e:
        # "nonce too low" lands here too: our transaction was mined, or another took its nonce; the dispatcher tells
        # which from the chain
        return record_error(spec, row.id, e)
    now = timezone.now()
    updated = spec.model.objects.filter(id=row.id, status=Status.SUBMITTED, tx_hash=row.tx_hash).update(
        broadcast_at=now, last_error="", updated_at=now
    )
    if updated:
        _log(spec, row, "broadcast", **_history(spec, row))
    row.refresh_from_db()
    return row


def send(spec: Spec, row_id: int, *, now: datetime | None = None) -> Row | None:
    """Send one row if it is due: sign it (pending) and broadcast it (signed, not yet broadcast).

    Safe to run twice for the same row (a redelivered message, the dispatcher racing the first send): the second
    finds the row claimed or rebroadcasts the identical transaction.
    """
    now = now or timezone.now()
    row = spec.model.objects.select_related(*spec.related).filter(id=row_id).first()
    if row is None:
        return None
    if row.status == Status.PENDING and row.next_attempt_at <= now:
        row = _sign(spec, row, now=now)
    if row.status == Status.SUBMITTED and row.broadcast_at is None:
        row = _broadcast(spec, row)
    return row


@transaction.atomic
def requeue(spec: Spec, row_id: int, *, tx_hash: str, reason: str, count_attempt: bool) -> Row:
    """Back to pending, giving up the nonce: only for a nonce the chain has consumed or forgotten. Nothing happens
    unless the row still holds ``tx_hash`` (another worker may have moved it on)."""
    row = spec.model.objects.select_for_update().get(id=row_id)
    if row.tx_hash != tx_hash or row.status not in (Status.SUBMITTED, Status.CONFIRMED):
        return row
    _log(spec, row, "requeued", reason, **_history(spec, row))
    _forget(spec, row)
    row.last_error = f"{reason} (was transaction {tx_hash})"
    if count_attempt:
        row.attempts += 1
        row.next_attempt_at = timezone.now() + timedelta(seconds=backoff_seconds(row.attempts))
        if row.attempts >= settings.ANCHOR_MAX_ATTEMPTS:
            row.status = Status.FAILED
            _log(spec, row, "failed", f"after {row.attempts} attempt(s): {reason}")
    else:
        row.attempts = 0
        row.next_attempt_at = timezone.now()
    row.save()
    if row.status == Status.PENDING and not count_attempt:
        _enqueue_send(spec, row.id)
    return row


def _settle_submitted(spec: Spec, row: Row) -> None:
    """A submitted row with no receipt yet: (re)broadcast it while its nonce is free, give the nonce up only when
    the chain shows another transaction took it."""
    # the count before the receipt: had our transaction been mined in between, the receipt would show it
    mined_count = chain.account_nonce(row.signer, block="latest")
    if chain.get_receipt(row.tx_hash) is not None:
        return  # mined: confirm takes it from here
    if mined_count > row.nonce:
        reason = f"nonce {row.nonce} was used by another transaction"
        requeue(spec, row.id, tx_hash=row.tx_hash, reason=reason, count_attempt=False)
    elif row.broadcast_at is None or not chain.transaction_known(row.tx_hash):
        _broadcast(spec, row)


def _ensure_targets(specs: Sequence[Spec], what: str) -> bool:
    try:
        for ensure in dict.fromkeys(spec.ensure_target for spec in specs):
            ensure()
    except chain.ChainError as e:
        logger.warning("%s: %s", what, e)
        return False
    return True


def dispatch(specs: Sequence[Spec], *, now: datetime | None = None) -> dict[str, int]:
    """The beat's sweep over ``specs``: check their targets (a reset re-queues rows), send the due pending rows, and
    rebroadcast submitted ones whose transaction the node lost. Returns counts for the log."""
    if not _ensure_targets(specs, f"{'/'.join(s.name for s in specs)} dispatch skipped"):
        return {"sent": 0, "checked": 0}
    now = now or timezone.now()  # after the check, so rows it just re-queued are due
    sent = checked = 0
    for spec in specs:
        due = list(
            spec.model.objects.filter(status=Status.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at", "id")
            .values_list("id", flat=True)[:DISPATCH_BATCH]
        )
        for row_id in due:
            send(spec, row_id, now=now)
        sent += len(due)
        # a transaction broadcast moments ago is in the mempool or in a block: leave it to confirm for a while
        stale = (
            spec.model.objects.filter(status=Status.SUBMITTED, next_attempt_at__lte=now)
            .filter(
                Q(broadcast_at__isnull=True) | Q(broadcast_at__lte=now - timedelta(seconds=REBROADCAST_AFTER_SECONDS))
            )
            .order_by("id")
        )
        for row in stale[:DISPATCH_BATCH]:
            try:
                _settle_submitted(spec, row)
            except chain.ChainError as e:
                record_error(spec, row.id, e)
            checked += 1
    return {"sent": sent, "checked": checked}


@transaction.atomic
def _finish(spec: Spec, row_id: int, receipt: chain.Receipt, *, status: str, confirmations: int = 0,
            error: str = "") -> None:  # fmt: skip
    row = spec.model.objects.select_for_update().get(id=row_id)
    if row.status != Status.SUBMITTED or row.tx_hash != receipt.tx_hash:
        return
    row.status = status
    row.block_number = receipt.block_number
    row.block_hash = receipt.block_hash
    row.confirmations = confirmations
    row.last_error = error
    if status == Status.CONFIRMED:
        row.confirmed_at = timezone.now()
    row.save()
    detail = f"{confirmations} confirmation(s)" if status == Status.CONFIRMED else error
    _log(spec, row, status, detail, **_history(spec, row))


def confirm_one(spec: Spec, row: Row, *, latest: int) -> str:
    """One confirmation check of a submitted row; returns what happened: waiting, confirmed, failed or requeued.

    Confirmed needs a receipt that carries the row's own event from its target's contract, CHAIN_CONFIRMATIONS
    blocks, and the receipt's block still on the chain. A receipt without the event (the contract vanished: a reset)
    sends the row back to pending; a revert fails it.
    """
    receipt = chain.get_receipt(row.tx_hash)
    if receipt is None:
        return "waiting"
    if receipt.status != 1:
        error = f"transaction {receipt.tx_hash} reverted in block {receipt.block_number}"
        _finish(spec, row.id, receipt, status=Status.FAILED, error=error)
        return "failed"
    if not spec.has_event(row, receipt):
        reason = (
            f"transaction {receipt.tx_hash} was mined in block {receipt.block_number} without our {spec.event} event "
            f"from {spec.contract_address(getattr(row, spec.target_field))} (no contract there: was the chain reset?)"
        )
        requeue(spec, row.id, tx_hash=row.tx_hash, reason=reason, count_attempt=True)
        return "requeued"
    confirmations = latest - receipt.block_number + 1
    if confirmations < settings.CHAIN_CONFIRMATIONS:
        spec.model.objects.filter(id=row.id, status=Status.SUBMITTED).update(
            block_number=receipt.block_number, block_hash=receipt.block_hash, confirmations=confirmations
        )
        return "waiting"
    if chain.block_hash(receipt.block_number) != receipt.block_hash:
        return "waiting"  # reorganised away: the receipt moves with the transaction
    _finish(spec, row.id, receipt, status=Status.CONFIRMED, confirmations=confirmations)
    return "confirmed"


def confirm_waiting(spec: Spec, row_id: int, *, wait_seconds: float = 0.0, poll_seconds: float = 0.1) -> Row:
    """Check a submitted row's receipt for up to ``wait_seconds`` (a page does, right after relaying, to show the
    result at once; the beat confirms whatever still waits); returns the row as it stands then."""
    deadline = time.monotonic() + wait_seconds
    while True:
        row = spec.model.objects.select_related(spec.target_field, *spec.related).get(id=row_id)
        if row.status != Status.SUBMITTED:
            return row
        try:
            confirm_one(spec, row, latest=chain.block_number())
        except chain.ChainError as e:
            logger.warning("%s %s: confirmation check failed: %s", spec.name, row.id, e)
        row.refresh_from_db()
        if row.status != Status.SUBMITTED or time.monotonic() >= deadline:
            return row
        time.sleep(poll_seconds)


def confirm(specs: Sequence[Spec]) -> dict[str, int]:
    """The beat's confirmation pass over the submitted rows of ``specs`` (``confirm_one`` each); a requeue (a
    receipt without our event) triggers the targets' reset check."""
    counts = {"confirmed": 0, "waiting": 0, "requeued": 0, "failed": 0}
    rows = [
        (spec, row)
        for spec in specs
        for row in spec.model.objects.filter(status=Status.SUBMITTED)
        .select_related(spec.target_field, *spec.related)
        .order_by("id")[:CONFIRM_BATCH]
    ]
    if not rows:
        return counts
    try:
        latest = chain.block_number()
    except chain.ChainError as e:
        logger.warning("confirmation skipped: %s", e)
        return counts
    for spec, row in rows:
        try:
            counts[confirm_one(spec, row, latest=latest)] += 1
        except chain.ChainError as e:
            logger.warning("%s %s: confirmation check failed: %s", spec.name, row.id, e)
    if counts["requeued"]:
        _ensure_targets(specs, "reset check failed")
    return counts


@transaction.atomic
def retry(spec: Spec, row: Row) -> Row:
    """Try a failed row again now (from the admin); a pending one in backoff is made due at once.

    A failed row never holds an unconsumed nonce (see the module docstring), so it may take a new one.
    """
    row = spec.model.objects.select_for_update().get(id=row.id)
    if row.status == Status.FAILED:
        _log(spec, row, "retried", f"retried by hand after: {row.last_error}", **_history(spec, row))
        _forget(spec, row)
    elif row.status != Status.PENDING:
        return row
    row.attempts = 0
    row.next_attempt_at = timezone.now()
    row.save()
    _enqueue_send(spec, row.id)
    return row


def requeue_sent(spec: Spec, *, old: Any, new: Any, reason: str) -> int:
    """The default reset rule: every row sent to ``old`` (submitted or confirmed) goes back to pending, to be sent
    to ``new``. Returns how many."""
    sent = list(
        spec.model.objects.filter(
            **{spec.target_field: old}, status__in=[Status.SUBMITTED, Status.CONFIRMED]
        ).values_list("id", "tx_hash")
    )
    for row_id, tx_hash in sent:
        requeue(
            spec,
            row_id,
            tx_hash=tx_hash,
            reason=f"chain reset ({reason}); sending again to {spec.contract_address(new)}",
            count_attempt=False,
        )
    if sent:
        logger.warning("chain reset: %s %s row(s) re-queued for %s", len(sent), spec.name, spec.contract_address(new))
    return len(sent)


@receiver(deployments.deployment_retired, dispatch_uid="ledger.transactions.after_reset")
def _after_reset(sender: type[models.Model], *, old: Any, new: Any, reason: str, **kwargs: Any) -> None:
    # inside ensure_*'s transaction, so the rows move exactly when the old target is retired
    for spec in SPECS.values():
        if spec.target_model is sender:
            (spec.on_reset or requeue_sent)(spec, old=old, new=new, reason=reason)
