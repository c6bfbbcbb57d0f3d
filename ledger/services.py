"""Anchors: request one inside your own transaction; the signed-transaction outbox (``ledger.transactions``, under
the ``ANCHOR`` spec below) sends, confirms and retries it with Celery, one nonce per anchor.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet

from . import chain, deployments, hashing, merkle, transactions
from .batches import SealedBatch
from .models import Anchor, AnchorEvent, ChainDeployment

logger = logging.getLogger(__name__)

URI_MAX_LENGTH = 2048
SUBJECT_MAX_LENGTH = 200
BATCH_LEAF_TYPES = ("bytes32",)
SEAL_MAX_BATCHES_PER_CALL = 20
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


Batch = TypeVar("Batch", bound=SealedBatch)


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


@transaction.atomic
def _seal_one(batch_model: type[Batch], waiting: QuerySet[Any], *, now: datetime, force: bool) -> Batch | None:
    leaf, age = batch_model.LEAF_FIELD, batch_model.AGE_FIELD
    limit = getattr(settings, batch_model.SIZE_SETTING)
    # skip_locked: two beat ticks (or a person and beat) never seal the same item twice, nor wait on each other
    items = list(waiting.select_for_update(skip_locked=True).order_by("id").only("id", leaf, age)[:limit])
    if not items:
        return None
    oldest = min(t for item in items if (t := getattr(item, age)) is not None)
    max_age_seconds = getattr(settings, batch_model.AGE_SETTING)
    if not (force or batch_due(count=len(items), limit=limit, oldest=oldest, max_age_seconds=max_age_seconds, now=now)):
        return None
    tree, anchor = batch_anchor_request(kind=batch_model.ANCHOR_KIND, hashes=[getattr(item, leaf) for item in items])
    batch = batch_model.objects.create(root=tree.root, size=len(items), tree=tree.dump(), anchor=anchor, sealed_at=now)
    waiting.model.objects.filter(pk__in=[item.pk for item in items]).update(batch=batch)
    return batch


def seal_batches(batch_model: type[Batch], waiting: QuerySet[Any], *, now: datetime, force: bool) -> list[Batch]:
    """Seal the ``waiting`` items (unbatched, with their hash) into ``batch_model`` batches: one per full batch, or
    whatever is there once the oldest has waited long enough (``force``: now), at most SEAL_MAX_BATCHES_PER_CALL
    batches a call; ``batch_model`` names the fields and settings (``SealedBatch``). Each batch, in its own
    transaction, is written with the anchor of its root (``batch_anchor_request``) and set on its items' ``batch``
    field. The one sealing of inference-run and receipt batches."""
    batches = []
    for _ in range(SEAL_MAX_BATCHES_PER_CALL):
        batch = _seal_one(batch_model, waiting, now=now, force=force)
        if batch is None:
            break
        batches.append(batch)
    return batches


def _log(
    anchor: Anchor,
    type_: str,
    detail: str = "",
    *,
    target: ChainDeployment | None = None,
    nonce: int | None = None,
    tx_hash: str = "",
    block_number: int | None = None,
) -> None:
    AnchorEvent.objects.create(
        anchor=anchor,
        type=type_,
        detail=detail,
        deployment=target,
        nonce=nonce,
        tx_hash=tx_hash,
        block_number=block_number,
    )


def _build(anchor: Anchor, deployment: ChainDeployment) -> dict[str, Any]:
    return chain.anchor_transaction(
        deployment, kind=anchor.kind_code, subject_id=anchor.subject_id, root=anchor.root, uri=anchor.uri
    )


def _has_event(anchor: Anchor, receipt: chain.Receipt) -> bool:
    events = chain.decode_anchored(receipt, contract_address=anchor.deployment.contract_address)
    return any(
        e.root == anchor.root and e.subject_id == anchor.subject_id and e.kind == anchor.kind_code for e in events
    )


def _contract_address(deployment: ChainDeployment) -> str:
    return deployment.contract_address


ANCHOR = transactions.register(
    transactions.Spec(
        name="anchor",
        model=Anchor,
        target_field="deployment",
        ensure_target=deployments.ensure_deployed,
        build=_build,
        has_event=_has_event,
        event="Anchored",
        contract_address=_contract_address,
        send_task="ledger.tasks.anchor_send_task",
        log=_log,
    )
)


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
    _log(anchor, AnchorEvent.Type.REQUESTED)
    # robust: the row is committed whatever the broker does, and the dispatcher sends what no message announced
    transactions.created(ANCHOR, anchor)
    return anchor


def anchor_send(*, anchor_id: int, now: datetime | None = None) -> Anchor | None:
    """Send one anchor if it is due: sign it (pending) and broadcast it (signed, not yet broadcast).

    Safe to run twice for the same anchor (a redelivered message, the dispatcher racing the first send): the second
    finds the row claimed or rebroadcasts the identical transaction.
    """
    return transactions.send(ANCHOR, anchor_id, now=now)


def anchors_dispatch(*, now: datetime | None = None) -> dict[str, int]:
    """The beat's sweep: check the deployment (a reset re-queues anchors), send the due pending anchors, and
    rebroadcast submitted ones whose transaction the node lost. Returns counts for the log."""
    return transactions.dispatch([ANCHOR], now=now)


def anchors_confirm() -> dict[str, int]:
    """The beat's confirmation pass over submitted anchors.

    Confirmed needs a receipt that carries our Anchored event for this very root from the deployment's contract,
    CHAIN_CONFIRMATIONS blocks, and the receipt's block still on the chain. A receipt without the event (the
    contract vanished: a reset) sends the anchor back to pending and triggers the reset check; a revert fails it.
    """
    return transactions.confirm([ANCHOR])


def anchor_retry(*, anchor: Anchor) -> Anchor:
    """Try a failed anchor again now (from the admin); a pending one in backoff is made due at once.

    A failed anchor never holds an unconsumed nonce (see ``ledger.transactions``), so it may take a new one.
    """
    return transactions.retry(ANCHOR, anchor)


def chain_check() -> ChainDeployment | None:
    """The beat's reset check: ``deployments.ensure_deployed()``, logging instead of raising when the chain is
    away."""
    try:
        return deployments.ensure_deployed()
    except chain.ChainError as e:
        logger.warning("chain check failed: %s", e)
        return None
