"""Revoked records in attribution (issue 17): what they may still earn, and erasure from the attribution indexes.

Policy ``openledger.revocation.v1`` (``datanets.models.REVOCATION_POLICY``; docs/revocation-policy.md says it in
full):

- A record revoked (withdrawn or taken down) at or before the moment an answer was asked, or erased at any time
  before the answer is scored, earns nothing from that answer. It is kept out of the scoring itself
  (``index.Scorer.score``'s ``exclude``): no gradient score, no span credit, never a candidate of the support
  evidence. The answer is judged on the records that remain: content only the revoked record supported is
  unsupported content, whose part of the contributors' pool goes to the protocol pool like any other unsupported
  content; it is never handed to the remaining records. When nothing remains, the answer is unsupported.
- Credit given before (answers asked before the revocation) stands: accruals are never reversed.
- Each attribution records the policy it was scored under (``RunAttribution.revocation_policy``) and the records it
  kept out (``revoked_excluded``).

Erasure: ``records_revoked`` (a ``datanets.hooks`` receiver) queues ``tasks.attribution_revocation_erase_task``
for each erasure; the task (``revocation_erase``, idempotent) rewrites every index holding the erased records
without them (``index.reissue_without``: feature rows zeroed, tokens gone from the span index, every record id and
place kept), records each re-issue (``IndexReissue``: the anchored hashes and the new ones), deletes the old folders
and blanks what attribution stored about where the erased text was (``SpanMatch`` record ranges). Shares, ids and
hashes stay.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import reduce
from operator import or_
from typing import Any

from django.db import transaction
from django.db.models import Q

from datanets.models import REVOCATION_POLICY, RevokedRecord
from datanets.storage import content_path, media_path
from outbox.services import enqueue_on_commit

from . import index as index_mod
from . import storage
from .models import AttributionIndex, IndexReissue, SpanMatch

logger = logging.getLogger(__name__)

POLICY = REVOCATION_POLICY
# Queued by its registered name: attribution.tasks imports this module (its name routes it: CELERY_TASK_ROUTES).
REVOCATION_ERASE_TASK = "attribution.tasks.attribution_revocation_erase_task"


def excluded_records(*, record_ids: Iterable[int], asked_at: datetime) -> frozenset[int]:
    """Which of ``record_ids`` an answer asked at ``asked_at`` may not credit under ``POLICY``: revoked at or before
    then, or erased (whenever: their bytes are gone from the index)."""
    wanted = {int(r) for r in record_ids}
    if not wanted:
        return frozenset()
    rows = RevokedRecord.objects.filter(Q(revocation__created_at__lte=asked_at) | Q(erased=True)).values_list(
        "record_id", flat=True
    )
    return frozenset(int(r) for r in rows.iterator() if r in wanted)


def revoked_twin_filter(*, asked_at: datetime) -> Q:
    """The records (``SnapshotRecord``'s ``record__``) that ``excluded_records`` would keep out, as a condition: the
    twins of a credited record (the same hash, contributed by someone else) are its owners only when not revoked."""
    return Q(record__revoked__revocation__created_at__lte=asked_at) | Q(record__revoked__erased=True)


def records_revoked(*, revocation_ids: Sequence[int], erased: bool) -> None:
    """A ``datanets.hooks`` records-revoked receiver: an erasure's records leave every attribution index and the
    text attribution stored about them, in the background (a revocation without erasure needs nothing here: the
    policy reads the revocations when an answer is scored)."""
    if not erased:
        return
    with transaction.atomic():
        enqueue_on_commit(REVOCATION_ERASE_TASK, sorted(int(r) for r in revocation_ids))


def _erased_ids(revocation_ids: Sequence[int]) -> list[int]:
    return sorted(
        RevokedRecord.objects.filter(revocation_id__in=list(revocation_ids), erased=True).values_list(
            "record_id", flat=True
        )
    )


def indexes_holding(record_ids: Sequence[int]) -> list[int]:
    """The ids of the usable indexes whose records include any of ``record_ids``."""
    if not record_ids:
        return []
    holds = reduce(or_, (Q(record_ids__contains=[int(r)]) for r in record_ids))
    return sorted(
        AttributionIndex.objects.filter(holds, status=AttributionIndex.Status.OK).values_list("pk", flat=True)
    )


def revocation_erase(*, revocation_ids: Sequence[int]) -> list[IndexReissue]:
    """Take the erased records of these revocations out of attribution: every index holding them is re-issued
    without them (``index_reissue``), the folders that held their tokens are deleted once no index names them,
    and the stored spans forget where their text was. Idempotent: an index already without them is left alone.
    Returns the re-issues made."""
    erased = _erased_ids(revocation_ids)
    if not erased:
        return []
    SpanMatch.objects.filter(record_id__in=erased).exclude(record_start=None, record_end=None).update(
        record_start=None, record_end=None
    )
    made, old_paths = [], []
    for index_id in indexes_holding(erased):
        reissue = index_reissue(index_id=index_id, revocation_ids=revocation_ids)
        if reissue is not None:
            made.append(reissue)
            old_paths.append(reissue.old_path)
    for path in dict.fromkeys(old_paths):
        storage.index_folder_drop(path)  # never one that an index row still names
    return made


def index_reissue(*, index_id: int, revocation_ids: Sequence[int] = ()) -> IndexReissue | None:
    """Re-issue one index without every erased record it holds (whichever revocation erased it); None when it holds
    no erased record that its files still have. The new files are stored content-addressed before the row names
    them; the row and its ``IndexReissue`` commit together. The old folder stays for the caller to drop."""
    with transaction.atomic():
        index = AttributionIndex.objects.select_for_update().get(pk=index_id)
        if not index.is_ok:
            return None
        indexed = set(index.record_ids)
        erased = {
            r
            for r in RevokedRecord.objects.filter(erased=True).values_list("record_id", flat=True).iterator()
            if r in indexed
        }
        already = set(index.erased_record_ids)
        new = sorted(erased - already)
        if not new:
            return None
        started = time.monotonic()
        reissued = index_mod.reissue_without(
            media_path(index.path),
            feature_hash=index.feature_hash,
            span_hash=index.span_hash,
            erased=sorted(erased | already),
            scratch=media_path("tmp/attribution"),
        )
        relative = content_path(storage.INDEX_PREFIX, index_mod.storage_key(reissued.feature_hash, reissued.span_hash))
        storage.lock_index_path(relative)  # as index_folder_drop does
        index_mod.place(reissued, media_path(relative))
        old = (index.feature_hash, index.span_hash, index.path)
        index.feature_hash, index.span_hash, index.path = reissued.feature_hash, reissued.span_hash, relative
        index.erased_record_ids = sorted(erased | already)
        index.save(update_fields=["feature_hash", "span_hash", "path", "erased_record_ids"])
        reissue = IndexReissue.objects.create(
            index=index,
            revocation_ids=sorted(
                set(RevokedRecord.objects.filter(record_id__in=new).values_list("revocation_id", flat=True))
                | {int(r) for r in revocation_ids}
            ),
            erased_record_ids=new,
            old_feature_hash=old[0],
            old_span_hash=old[1],
            new_feature_hash=reissued.feature_hash,
            new_span_hash=reissued.span_hash,
            old_path=old[2],
            new_path=relative,
            seconds=round(time.monotonic() - started, 3),
        )
        transaction.on_commit(lambda: index_mod.forget_index(feature_hash=old[0], span_hash=old[1]))
    logger.info("attribution index %s re-issued without records %s", index_id, new)
    return reissue


def anchored_hashes(version: Any) -> dict[str, str]:
    """The index hashes the version's lineage manifest anchored (empty when it anchored none)."""
    entry = json.loads(version.manifest or "{}").get("attribution_index") or {}
    return {"feature_hash": entry.get("feature_hash") or "", "span_hash": entry.get("span_hash") or ""}


def hashes_trace_to_anchor(index: AttributionIndex) -> bool:
    """Whether the index's current hashes are the anchored ones, or follow from them through its recorded
    re-issues (each re-issue's old hashes the previous one's new): what an auditor checks after an erasure."""
    anchored = anchored_hashes(index.version)
    current = (anchored["feature_hash"], anchored["span_hash"])
    for reissue in index.reissues.order_by("pk"):
        if (reissue.old_feature_hash, reissue.old_span_hash) != current:
            return False
        current = (reissue.new_feature_hash, reissue.new_span_hash)
    return current == (index.feature_hash, index.span_hash)
