"""Receipts: a hashed document for every action on a contribution, sealed in batches whose roots go on chain.

Each submission gets a contribution receipt and each curation decision (accept, reject, excluding a record) a
curation receipt, written in the transaction of the action it records: there is never an action without its receipt,
nor a receipt of an action that rolled back. A document is RFC 8785 JSON (``ledger.hashing.jcs``) with a ``schema``;
its ``document_hash`` = keccak256 of those bytes is the receipt's leaf value (``["bytes32"]``).

A beat task (``receipts_seal_batches``) seals unsealed receipts into a StandardMerkleTree, one anchor per batch of up
to RECEIPT_BATCH_SIZE receipts (or whatever waits once the oldest is RECEIPT_BATCH_SECONDS old), as inference runs are.

The upload is the one path that must stay cheap (bench/ingest.py): a submission writes its receipt with the facts it
already has, and the receipt's ``records_root`` (a tree over the records' hashes, which may still be staged) is
computed and the document hashed later, by ``receipts_complete`` before sealing, or by a withdrawal before it deletes
the records. The document's ``submitted_at`` is still the submission's time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from ledger import hashing
from ledger.merkle import StandardMerkleTree
from ledger.services import seal_batches

from . import selectors
from .models import Contribution, Receipt, ReceiptBatch, Record, StagedRecord

logger = logging.getLogger(__name__)

RECORDS_LEAF_TYPES = ("bytes32",)
COMPLETE_MAX_PER_CALL = 100


def utc_text(moment: datetime) -> str:
    """A time as documents carry it: ISO 8601 in UTC, microseconds, ending in ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def account_hash(user_id: int) -> str:
    """What a document names an account by when it has no wallet: keccak256 of ``openledger:account:<user id>``."""
    return hashing.keccak_hex(f"openledger:account:{user_id}".encode())


def reason_hash(reason: str) -> str:
    """keccak256 of the reason's UTF-8 (of the empty string when none was given)."""
    return hashing.keccak_hex((reason or "").encode("utf-8"))


def who(user_id: int) -> tuple[str | None, str | None]:
    """(primary wallet address, None) for a user with a wallet, else (None, account hash)."""
    address = selectors.primary_addresses(user_ids=[user_id]).get(user_id)
    return (address, None) if address else (None, account_hash(user_id))


def receipt_contribution_write(*, contribution: Contribution) -> Receipt:
    """Write the receipt of a submission, in the caller's (the upload's) transaction: every fact but the records'
    root, which ``receipt_complete`` adds off the upload's path."""
    contributor, account = who(contribution.contributor_id)
    document = {
        "schema": Receipt.SCHEMAS[Receipt.Kind.CONTRIBUTION],
        "contribution": contribution.pk,
        "datanet": {"id": contribution.datanet_id, "slug": contribution.datanet.slug},
        "records_root": None,
        "record_count": contribution.record_count,
        "content_sha256": contribution.content_sha256,
        "contributor": contributor,
        "account_hash": account,
        "licence": contribution.licence,
        "submitted_at": utc_text(contribution.submitted_at),
    }
    return Receipt.objects.create(
        kind=Receipt.Kind.CONTRIBUTION,
        contribution=contribution,
        datanet_id=contribution.datanet_id,
        document=document,
        created_at=contribution.submitted_at,
    )


def receipts_curation_write(
    *,
    curator: Any,
    decision: str,
    contributions: Iterable[Contribution],
    reason: str,
    now: datetime,
    record: Record | None = None,
) -> list[Receipt]:
    """Write one complete curation receipt per contribution for ``decision`` (accept, reject, exclude), in the
    caller's (the decision's) transaction."""
    address, account = who(curator.pk)
    receipts = []
    for contribution in contributions:
        document = {
            "schema": Receipt.SCHEMAS[Receipt.Kind.CURATION],
            "decision": decision,
            "contribution": contribution.pk,
            "record": record.pk if record is not None else None,
            "datanet": {"id": contribution.datanet_id, "slug": contribution.datanet.slug},
            "curator": address,
            "curator_account_hash": account,
            "reason_hash": reason_hash(reason),
            "decided_at": utc_text(now),
        }
        receipts.append(
            Receipt(
                kind=Receipt.Kind.CURATION,
                contribution=contribution,
                datanet_id=contribution.datanet_id,
                document=document,
                document_hash=hashing.document_hash(document),
                created_at=now,
            )
        )
    return Receipt.objects.bulk_create(receipts)


def records_root(contribution_id: int) -> str | None:
    """The StandardMerkleTree root over the contribution's ``[record_hash]`` leaves (leafEncoding ``["bytes32"]``),
    wherever its records are (staged or settled); None when it has none.

    One statement reads both tables, so the records moving from one to the other meanwhile are seen once, before or
    after the move. The root does not depend on the order of the leaves (the tree sorts them)."""
    settled = Record.objects.filter(contribution_id=contribution_id).order_by().values_list("record_hash", flat=True)
    staged = StagedRecord.objects.filter(contribution_id=contribution_id).order_by().values_list("record_hash")
    hashes = list(settled.union(staged, all=True))
    if not hashes:
        return None
    return StandardMerkleTree.of([(h,) for h in hashes], RECORDS_LEAF_TYPES).root


def _complete(receipt: Receipt) -> None:
    document = dict(receipt.document)
    document["records_root"] = records_root(receipt.contribution_id)
    receipt.document = document
    receipt.document_hash = hashing.document_hash(document)
    receipt.save(update_fields=["document", "document_hash"])


def receipt_complete(*, receipt_id: int) -> bool:
    """Add the records' root to a contribution receipt and hash its document; False when it is already complete or
    being completed by someone else (skipped, not waited for)."""
    with transaction.atomic():
        receipt = (
            Receipt.objects.select_for_update(skip_locked=True)
            .filter(pk=receipt_id, kind=Receipt.Kind.CONTRIBUTION, document_hash="")
            .first()
        )
        if receipt is None:
            return False
        _complete(receipt)
        return True


def receipt_complete_before_withdrawal(*, contribution: Contribution) -> None:
    """Complete the contribution's receipt while its records still exist: call it in the withdrawal's transaction,
    holding the contribution's row lock, before the records are deleted. Waits for a seal completing it now."""
    receipt = (
        Receipt.objects.select_for_update()
        .filter(contribution=contribution, kind=Receipt.Kind.CONTRIBUTION, document_hash="")
        .first()
    )
    if receipt is not None:
        _complete(receipt)


def receipts_complete(*, limit: int = COMPLETE_MAX_PER_CALL) -> int:
    """Complete waiting contribution receipts, each in its own short transaction (a large contribution's tree takes
    seconds); returns how many were completed."""
    waiting = Receipt.objects.filter(kind=Receipt.Kind.CONTRIBUTION, document_hash="", batch__isnull=True)
    done = 0
    for receipt_id in list(waiting.order_by("id").values_list("id", flat=True)[:limit]):
        try:
            done += receipt_complete(receipt_id=receipt_id)
        except Exception:  # one receipt that can't be completed must not hold back the sealing of all the others
            logger.exception("could not complete receipt %s; it waits for the next try", receipt_id)
    return done


def receipts_seal_batches(*, now: datetime | None = None, force: bool = False) -> list[ReceiptBatch]:
    """Complete waiting contribution receipts, then seal complete, unsealed receipts into batches: one per
    RECEIPT_BATCH_SIZE receipts, or whatever is there once the oldest has waited RECEIPT_BATCH_SECONDS
    (``force``: now). Each batch's root is anchored on chain in the batch's transaction: one anchor per batch."""
    receipts_complete()
    waiting = Receipt.objects.filter(batch__isnull=True).exclude(document_hash="")
    return seal_batches(ReceiptBatch, waiting, now=now or timezone.now(), force=force)
