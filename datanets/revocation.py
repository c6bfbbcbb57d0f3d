"""Taking records back: a contributor withdraws an accepted contribution, or a curator or staff member takes down
records, for a stated reason; either may ask that the bytes be erased.

Each revocation covers the records of one contribution, is logged in the contribution's history, gets a receipt
(``openledger.receipt.revocation.v1``, sealed and anchored in batches like the others) and is shown to the
contributor. A revoked record leaves every snapshot frozen after it (``services._snapshot_leaves``); the snapshots
frozen before stay as anchored. An erasure blanks the records' canonical text (and what was derived from it here:
the MinHash, the flagged spans, the search index), deletes the stored upload that held them and the Parquet exports
of the snapshots that hold them (rebuilt without the text, the rows marked ``erased``); the record's hash and its
leaves stay, so every proof given before still verifies. The apps above are told through ``hooks.records_revoked``
once the revocation commits: ModelFactory flags the versions trained on the records, attribution erases them from
its indexes.

Every refusal (someone else's contribution, a record revoked already, one never accepted) is raised before anything
is written, and all of a call's revocations are written in one transaction: all or none.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.formats import date_format

from ledger import hashing
from ledger.merkle import StandardMerkleTree

from . import hooks, receipts, selectors
from .models import (
    REVOCATION_POLICY,
    Contribution,
    ContributionDecision,
    Receipt,
    Record,
    Revocation,
    RevokedRecord,
    SnapshotRecord,
)
from .storage import media_path

logger = logging.getLogger(__name__)

EXPLANATION_MAX_CHARS = 2000
ERASED_CANONICAL = ""  # never a real record's canonical JSON (the parser refuses empty records)


def _when(moment: datetime) -> str:
    return date_format(timezone.localtime(moment), "j M Y, H:i")


def user_can_take_down(*, user: Any, contribution: Contribution) -> bool:
    """A curator of the contribution's Datanet (owner, curator, global curator) or a staff member."""
    return bool(getattr(user, "is_authenticated", False)) and (
        bool(user.is_staff) or selectors.user_can_curate(user=user, datanet=contribution.datanet)
    )


def _clean(reason: str, explanation: str, *, kind: str) -> tuple[str, str]:
    if reason not in Revocation.Reason.values:
        choices = ", ".join(Revocation.Reason.values)
        raise ValidationError({"reason": f"choose a reason among: {choices}"})
    explanation = (explanation or "").strip()
    if len(explanation) > EXPLANATION_MAX_CHARS:
        raise ValidationError({"explanation": f"keep the explanation under {EXPLANATION_MAX_CHARS} characters"})
    if "\x00" in explanation:
        raise ValidationError({"explanation": "the explanation holds a NUL character"})
    if not explanation and (kind == Revocation.Kind.TAKEDOWN or reason == Revocation.Reason.OTHER):
        raise ValidationError({"explanation": "say why the records are taken back"})
    return reason, explanation


def _refuse_unaccepted(contribution: Contribution) -> None:
    if contribution.status == Contribution.Status.PENDING:
        raise ValidationError(
            f"contribution #{contribution.pk} is still pending: it is in no snapshot, so there is nothing to revoke "
            "(its contributor may withdraw it, which deletes its records)"
        )
    if contribution.status != Contribution.Status.ACCEPTED:
        raise ValidationError(
            f"contribution #{contribution.pk} was never accepted ({contribution.status}): it is in no snapshot, "
            "so there is nothing to revoke"
        )


def _already(record_ids: Sequence[int]) -> dict[int, Revocation]:
    rows = RevokedRecord.objects.filter(record_id__in=record_ids).select_related("revocation")
    return {row.record_id: row.revocation for row in rows}


def _refuse_revoked_twice(record_ids: Sequence[int]) -> None:
    earlier = _already(record_ids)
    if not earlier:
        return
    record_id = min(earlier)
    raise ValidationError(
        f"record {record_id} was already revoked on {_when(earlier[record_id].created_at)} "
        f"({earlier[record_id].get_reason_display()})"
    )


def _locked_contributions(ids: Iterable[int]) -> dict[int, Contribution]:
    # contributions' rows in id order, then the records' (docs/decisions.md, "One lock order")
    rows = Contribution.objects.select_for_update(of=("self",)).select_related("datanet").filter(pk__in=sorted(ids))
    return {row.pk: row for row in rows.order_by("pk")}


@transaction.atomic
def contribution_revoke(
    *,
    contribution: Contribution,
    user: Any,
    reason: str = Revocation.Reason.CONSENT,
    explanation: str = "",
    erase: bool = False,
) -> Revocation:
    """The contributor withdraws an accepted contribution: every record of it not revoked yet leaves the snapshots to
    come, with ``erase`` its bytes are erased too. Refused for someone else's contribution, for one never accepted
    (a pending one is withdrawn instead) and for one revoked already."""
    if getattr(user, "pk", None) != contribution.contributor_id:
        raise PermissionDenied("only the contributor may withdraw a contribution; curators take records down")
    reason, explanation = _clean(reason, explanation, kind=Revocation.Kind.WITHDRAWAL)
    locked = _locked_contributions([contribution.pk])[contribution.pk]
    _refuse_unaccepted(locked)
    records = list(Record.objects.select_for_update().filter(contribution=locked).order_by("pk"))
    revoked = _already([r.pk for r in records])
    if records and len(revoked) == len(records):
        last = max(revoked.values(), key=lambda r: r.created_at)
        raise ValidationError(
            f"contribution #{locked.pk} was already revoked on {_when(last.created_at)} "
            f"({last.get_reason_display()}): there is nothing more to revoke"
        )
    remaining = [r for r in records if r.pk not in revoked]
    return _revoke(
        contribution=locked,
        records=remaining,
        user=user,
        kind=Revocation.Kind.WITHDRAWAL,
        reason=reason,
        explanation=explanation,
        erase=erase,
    )[0]


@transaction.atomic
def records_take_down(
    *, records: Iterable[Record], user: Any, reason: str, explanation: str, erase: bool = False
) -> list[Revocation]:
    """A curator of each record's Datanet, or a staff member, takes records down: one revocation per contribution,
    all or none. Refused when a record was never accepted, was revoked already, or is outside what ``user``
    curates."""
    ids = sorted({r.pk for r in records})
    if not ids:
        raise ValidationError("choose at least one record")
    reason, explanation = _clean(reason, explanation, kind=Revocation.Kind.TAKEDOWN)
    contribution_ids = set(Record.objects.filter(pk__in=ids).values_list("contribution_id", flat=True))
    locked = _locked_contributions(contribution_ids)
    for contribution in locked.values():
        if not user_can_take_down(user=user, contribution=contribution):
            raise PermissionDenied(
                f"only a curator of {contribution.datanet.name!r} or staff may take its records down"
            )
    rows = list(Record.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
    if len(rows) != len(ids):
        raise ValidationError("some of these records do not exist")
    for contribution in locked.values():
        _refuse_unaccepted(contribution)
    _refuse_revoked_twice(ids)
    by_contribution: dict[int, list[Record]] = defaultdict(list)
    for record in rows:
        by_contribution[record.contribution_id].append(record)
    revocations = []
    for contribution_id in sorted(by_contribution):
        revocations += _revoke(
            contribution=locked[contribution_id],
            records=by_contribution[contribution_id],
            user=user,
            kind=Revocation.Kind.TAKEDOWN,
            reason=reason,
            explanation=explanation,
            erase=erase,
        )
    return revocations


@transaction.atomic
def revocation_erase(*, revocation: Revocation, user: Any) -> Revocation:
    """Erase the bytes of an earlier revocation's records (an erasure asked after the withdrawal): its contributor,
    a curator of its Datanet or staff. Refused when they are erased already."""
    contribution = _locked_contributions([revocation.contribution_id])[revocation.contribution_id]
    if user.pk != contribution.contributor_id and not user_can_take_down(user=user, contribution=contribution):
        raise PermissionDenied("only the contributor, a curator of the Datanet or staff may erase these records")
    locked = Revocation.objects.select_for_update().get(pk=revocation.pk)
    if locked.erase:
        raise ValidationError(f"the records of revocation {locked.pk} were already erased on {_when(locked.erased_at)}")
    now = timezone.now()
    records = list(Record.objects.filter(revoked__revocation=locked).order_by("pk"))
    hashes = [r.record_hash for r in records]
    Revocation.objects.filter(pk=locked.pk).update(erase=True, erased_at=now, erased_by=user)
    locked.refresh_from_db()
    _erase(contribution=contribution, records=records, revocation=locked)
    ContributionDecision.objects.create(
        contribution=contribution,
        actor=user,
        action=ContributionDecision.Action.ERASE,
        reason=locked.explanation,
        created_at=now,
    )
    _receipt(revocation=locked, action="erase", hashes=hashes, actor=user, now=now)
    transaction.on_commit(lambda: _after_commit(contribution, [locked.pk], erased=True), robust=True)
    return locked


def _revoke(
    *,
    contribution: Contribution,
    records: list[Record],
    user: Any,
    kind: str,
    reason: str,
    explanation: str,
    erase: bool,
) -> list[Revocation]:
    if not records:
        raise ValidationError(f"contribution #{contribution.pk} has no records left to revoke")
    now = timezone.now()
    revocation = Revocation.objects.create(
        datanet_id=contribution.datanet_id,
        contribution=contribution,
        actor=user,
        kind=kind,
        reason=reason,
        explanation=explanation,
        record_count=len(records),
        erase=erase,
        erased_at=now if erase else None,
        erased_by=user if erase else None,
        policy=REVOCATION_POLICY,
        created_at=now,
    )
    RevokedRecord.objects.bulk_create(
        RevokedRecord(record=record, revocation=revocation, datanet_id=contribution.datanet_id) for record in records
    )
    hashes = [r.record_hash for r in records]
    if erase:
        _erase(contribution=contribution, records=records, revocation=revocation)
    ContributionDecision.objects.create(
        contribution=contribution,
        actor=user,
        action=ContributionDecision.Action.REVOKE,
        reason=f"{revocation.get_reason_display()}: {explanation}" if explanation else revocation.get_reason_display(),
        created_at=now,
    )
    _receipt(revocation=revocation, action="revoke", hashes=hashes, actor=user, now=now)
    transaction.on_commit(lambda: _after_commit(contribution, [revocation.pk], erased=erase), robust=True)
    return [revocation]


def _erase(*, contribution: Contribution, records: list[Record], revocation: Revocation) -> None:
    """Blank the records' text and what was derived from it in this app, in the caller's transaction; the stored
    upload and the exports go once it commits (``_after_commit``)."""
    ids = [r.pk for r in records]
    # ``update`` writes past Record.save's freeze, on purpose: erasure is the one change an accepted record allows
    Record.objects.filter(pk__in=ids).update(canonical=ERASED_CANONICAL, minhash=None, flags=[])
    RevokedRecord.objects.filter(record_id__in=ids).update(erased=True)
    # the checks' evidence quotes a masked excerpt of what they found (a phone number's first characters): erased too
    checks = Contribution.objects.values_list("checks", flat=True).get(pk=contribution.pk)
    Contribution.objects.filter(pk=contribution.pk).update(checks=_excerpts_erased(checks, set(ids)))


def _excerpts_erased(value: Any, ids: set[int]) -> Any:
    """``value`` (a contribution's check report) without the ``excerpt`` of any example naming one of ``ids``."""
    if isinstance(value, dict):
        drop = value.get("record_id") in ids
        return {k: _excerpts_erased(v, ids) for k, v in value.items() if not (drop and k == "excerpt")}
    if isinstance(value, list):
        return [_excerpts_erased(v, ids) for v in value]
    return value


def _receipt(*, revocation: Revocation, action: str, hashes: list[str], actor: Any, now: datetime) -> Receipt:
    address, account = receipts.who(actor.pk)
    document = {
        "schema": Receipt.SCHEMAS[Receipt.Kind.REVOCATION],
        "action": action,
        "revocation": revocation.pk,
        "kind": revocation.kind,
        "reason": revocation.reason,
        "explanation_hash": receipts.reason_hash(revocation.explanation),
        "contribution": revocation.contribution_id,
        "datanet": {"id": revocation.datanet_id, "slug": revocation.contribution.datanet.slug},
        "records_root": StandardMerkleTree.of([(h,) for h in hashes], receipts.RECORDS_LEAF_TYPES).root,
        "record_count": len(hashes),
        "erase": revocation.erase,
        "actor": address,
        "actor_account_hash": account,
        "policy": revocation.policy,
        "at": receipts.utc_text(now),
    }
    return Receipt.objects.create(
        kind=Receipt.Kind.REVOCATION,
        contribution_id=revocation.contribution_id,
        datanet_id=revocation.datanet_id,
        document=document,
        document_hash=hashing.document_hash(document),
        created_at=now,
    )


def _after_commit(contribution: Contribution, revocation_ids: list[int], *, erased: bool) -> None:
    if erased:
        upload_erase(contribution=contribution)
        exports_forget(revocation_ids=revocation_ids)
    hooks.records_revoked_send(revocation_ids=revocation_ids, erased=erased)


def upload_erase(*, contribution: Contribution) -> bool:
    """Delete the stored upload that held erased records; True when a file was deleted. Content addressing shares
    one file between identical uploads: they hold the same bytes, so the file goes for all of them."""
    try:
        media_path(contribution.storage_path).unlink()
    except FileNotFoundError:
        return False
    except OSError:
        logger.exception("could not delete the erased upload at %s", contribution.storage_path)
        return False
    return True


def exports_forget(*, revocation_ids: Sequence[int]) -> int:
    """Delete the built Parquet exports of every snapshot that holds a record of these revocations: the next download
    builds them again, with the erased rows marked. Returns how many files were deleted."""
    snapshots = (
        SnapshotRecord.objects.filter(record__revoked__revocation_id__in=revocation_ids)
        .order_by()
        .values_list("snapshot__datanet_id", "snapshot__number")
        .distinct()
    )
    deleted = 0
    for datanet_id, number in snapshots:
        for path in media_path(f"exports/parquet/{datanet_id}").glob(f"{number}-*.parquet"):
            path.unlink(missing_ok=True)
            deleted += 1
    return deleted


def revocations_replay(*, erased_only: bool = False) -> int:
    """Tell the apps above about every revocation again (their work is idempotent): after a receiver failed, or
    after an index was rebuilt from older files. Returns how many revocations were sent."""
    rows = Revocation.objects.order_by("pk")
    if erased_only:
        rows = rows.filter(erase=True)
    sent = 0
    for revocation_id, erase in rows.values_list("pk", "erase").iterator():
        hooks.records_revoked_send(revocation_ids=[revocation_id], erased=erase)
        sent += 1
    return sent
