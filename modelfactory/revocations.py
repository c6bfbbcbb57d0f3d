"""What a revocation does to the models (issue 17): every version trained on revoked records, directly or through
its parents, is flagged, and its owner is told once per revocation, in the app and by e-mail.

A version's flag (``VersionRevocation``) counts the distinct revoked records in the snapshots of its whole ancestry
(itself, and every version reached up the continued-from and merged-from edges) and how many of them were erased. It
is always recomputed from the ancestry, never incremented, so computing it twice writes the same row: datanets'
receiver call (``records_revoked_receiver``, after each revocation or erasure commits, and again on
``manage.py revocations_replay``) and the version's creation (``_version_create``: a job that was reading a record
when it was revoked finishes on what it read, and its version is flagged as it is stored) may both run.

Notices (``VersionNotice``) are unique per version and revocation: the second computation finds them written. Their
e-mails go from a Celery task on the default queue (``version_notices_email_task``), which marks each one sent in
the same row lock, so a message redelivered sends nothing twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from datanets.models import Revocation, RevokedRecord, SnapshotRecord
from outbox.services import enqueue_on_commit

from .models import ModelVersion, ModelVersionParent, VersionNotice, VersionRevocation

logger = logging.getLogger(__name__)
# Queued by its registered name: modelfactory.tasks imports this module.
VERSION_NOTICES_EMAIL_TASK = "modelfactory.tasks.version_notices_email_task"


def _tables() -> dict[str, str]:
    quote = connection.ops.quote_name
    return {
        "versions": quote(ModelVersion._meta.db_table),
        "edges": quote(ModelVersionParent._meta.db_table),
        "used": quote(ModelVersion.snapshots.through._meta.db_table),
        "leaves": quote(SnapshotRecord._meta.db_table),
        "revoked": quote(RevokedRecord._meta.db_table),
    }


def _placeholders(values: Sequence[int]) -> str:
    return ", ".join(["%s"] * len(values))


def _ancestry_cte(t: dict[str, str], ids: Sequence[int]) -> str:
    """``anc(vid, aid)``: each of ``ids`` (the query's parameters, in order) with every version of its ancestry,
    itself included, reached up the lineage edges; only table names from the models' metadata go into the text."""
    return (
        f"WITH RECURSIVE anc(vid, aid) AS (SELECT id, id FROM {t['versions']} "  # noqa: S608
        f"WHERE id IN ({_placeholders(ids)}) UNION SELECT a.vid, e.parent_id FROM anc a "
        f"JOIN {t['edges']} e ON e.child_id = a.aid) "
    )


def version_ancestry_ids(*, version_ids: Sequence[int]) -> dict[int, set[int]]:
    """Each version's ancestry (itself included), by version id: one recursive query up the lineage edges."""
    ids = sorted({int(pk) for pk in version_ids})
    if not ids:
        return {}
    sql = _ancestry_cte(_tables(), ids) + "SELECT vid, aid FROM anc"  # noqa: S608
    found: dict[int, set[int]] = defaultdict(set)
    with connection.cursor() as cursor:
        cursor.execute(sql, ids)
        for vid, aid in cursor.fetchall():
            found[vid].add(aid)
    return dict(found)


def _revoked_by_version(version_ids: Sequence[int]) -> dict[int, dict[int, tuple[int, int]]]:
    """``{version id: {revocation id: (records, erased)}}``: the revoked records in the snapshots of each version's
    ancestry, counted once each (a record belongs to one revocation, so the counts by revocation add up to the
    distinct records). One recursive query whatever the depth; versions that trained on none are absent."""
    ids = sorted({int(pk) for pk in version_ids})
    if not ids:
        return {}
    t = _tables()
    sql = _ancestry_cte(t, ids) + (
        "SELECT a.vid, r.revocation_id, COUNT(DISTINCT r.record_id), "  # noqa: S608
        "COUNT(DISTINCT CASE WHEN r.erased THEN r.record_id END) "
        f"FROM anc a JOIN {t['used']} u ON u.modelversion_id = a.aid "
        f"JOIN {t['leaves']} l ON l.snapshot_id = u.snapshot_id "
        f"JOIN {t['revoked']} r ON r.record_id = l.record_id "
        "GROUP BY a.vid, r.revocation_id"
    )
    found: dict[int, dict[int, tuple[int, int]]] = defaultdict(dict)
    with connection.cursor() as cursor:
        cursor.execute(sql, ids)
        for vid, revocation_id, records, erased in cursor.fetchall():
            found[vid][revocation_id] = (int(records), int(erased))
    return dict(found)


def versions_reached(*, revocation_ids: Sequence[int]) -> list[int]:
    """The versions trained on a record of these revocations: those whose snapshots hold one, and every version
    built on one of those (continued or merged), down the lineage edges. One recursive query."""
    ids = sorted({int(pk) for pk in revocation_ids})
    if not ids:
        return []
    t = _tables()
    sql = (
        f"WITH RECURSIVE hit(id) AS (SELECT u.modelversion_id FROM {t['revoked']} r "  # noqa: S608
        f"JOIN {t['leaves']} l ON l.record_id = r.record_id JOIN {t['used']} u ON u.snapshot_id = l.snapshot_id "
        f"WHERE r.revocation_id IN ({_placeholders(ids)}) "
        f"UNION SELECT e.child_id FROM {t['edges']} e JOIN hit h ON e.parent_id = h.id) SELECT id FROM hit"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, ids)
        return sorted(row[0] for row in cursor.fetchall())


@transaction.atomic
def versions_flag(*, version_ids: Iterable[int]) -> list[int]:
    """Flag (or update the counts of) each of these versions that trained on revoked records, write one notice per
    version and revocation not written yet, and queue their e-mails once this commits. Idempotent. Returns the ids
    of the versions flagged."""
    ids = sorted(set(version_ids))
    reached = _revoked_by_version(ids)
    if not reached:
        return []
    now = timezone.now()
    owners = dict(ModelVersion.objects.filter(pk__in=reached).values_list("pk", "owner_id"))
    # flagged_at stays what the first computation wrote; the counts are the ancestry's now
    VersionRevocation.objects.bulk_create(
        [
            VersionRevocation(
                version_id=version_id,
                revoked_records=sum(records for records, _ in by_revocation.values()),
                erased_records=sum(erased for _, erased in by_revocation.values()),
                flagged_at=now,
                updated_at=now,
            )
            for version_id, by_revocation in sorted(reached.items())
        ],
        update_conflicts=True,
        unique_fields=["version"],
        update_fields=["revoked_records", "erased_records", "updated_at"],
    )
    VersionNotice.objects.bulk_create(
        [
            VersionNotice(
                version_id=version_id,
                revocation_id=revocation_id,
                owner_id=owners[version_id],
                records=records,
                created_at=now,
            )
            for version_id, by_revocation in sorted(reached.items())
            for revocation_id, (records, _) in sorted(by_revocation.items())
        ],
        ignore_conflicts=True,  # written already: once per version and revocation
    )
    unsent = list(
        VersionNotice.objects.filter(version_id__in=reached, emailed_at__isnull=True)
        .exclude(owner__email="")
        .values_list("pk", flat=True)
    )
    if unsent:
        enqueue_on_commit(VERSION_NOTICES_EMAIL_TASK, sorted(unsent))
    return sorted(reached)


def records_revoked_receiver(*, revocation_ids: Sequence[int], erased: bool) -> None:
    """datanets' ``records revoked`` receiver: flag every version the revocations reached (two queries and a few
    writes, so the revoker is answered at once; the e-mails go from a task)."""
    versions_flag(version_ids=versions_reached(revocation_ids=revocation_ids))


def _notice_email(notice: VersionNotice) -> tuple[str, str]:
    version = notice.version
    revocation = notice.revocation
    flag = getattr(version, "revoked_records_flag", None)
    total = flag.revoked_records if flag is not None else notice.records
    url = settings.SITE_URL + reverse("modelfactory:version_detail", kwargs={"version_id": version.pk})
    subject = f"{version.name}: trained on {total} withdrawn record{'s' if total != 1 else ''}"
    erased = " Their bytes were erased." if revocation.erase else ""
    body = (
        f"Hello {notice.owner.get_username()},\n\n"
        f"{notice.records} record{'s' if notice.records != 1 else ''} of the Datanet {revocation.datanet.name!r} "
        f"that your model version {version.name!r} (#{version.pk}) was trained on, directly or through its parents, "
        f"{'was' if notice.records == 1 else 'were'} {revocation.get_kind_display()} "
        f"({revocation.get_reason_display()}).{erased}\n\n"
        f"In all, the version was trained on {total} withdrawn record{'s' if total != 1 else ''}.\n\n"
        f"You can retrain it without them, with the same configuration, on snapshots that leave them out:\n{url}\n"
    )
    return subject, body


def version_notices_email(*, notice_ids: Sequence[int]) -> int:
    """E-mail each of these notices to its version's owner, once: a notice already sent, or whose owner has no
    address, is skipped. Each is sent under its row's lock and marked sent in the same transaction, so a failed
    send (logged) leaves it to a later call. Returns how many were sent."""
    sent = 0
    for notice_id in sorted(set(notice_ids)):
        try:
            with transaction.atomic():
                notice = (
                    VersionNotice.objects.select_for_update(skip_locked=True, of=("self",))
                    .select_related("owner", "version__revoked_records_flag", "revocation__datanet")
                    .filter(pk=notice_id, emailed_at__isnull=True)
                    .first()
                )
                if notice is None or not notice.owner.email:
                    continue
                subject, body = _notice_email(notice)
                send_mail(subject, body, None, [notice.owner.email])
                VersionNotice.objects.filter(pk=notice.pk).update(emailed_at=timezone.now())
                sent += 1
        except Exception:
            logger.exception("version notice %s: the e-mail could not be sent", notice_id)
    return sent


def notices_mark_read(*, version: ModelVersion, user: Any) -> int:
    """The owner saw the version's page: its notices are read (they leave the navigation's count)."""
    if getattr(user, "pk", None) != version.owner_id:
        return 0
    return VersionNotice.objects.filter(version=version, owner=user, read_at__isnull=True).update(
        read_at=timezone.now()
    )


def revocation_reasons(*, version: ModelVersion) -> list[dict[str, Any]]:
    """The revocations that reached the version (from its notices, one query): kind, reason, Datanet, when, how many
    of its records, whether they were erased. The revoker's explanation is not shown: it may itself name the
    personal data that was taken down."""
    notices = VersionNotice.objects.filter(version=version).select_related("revocation__datanet")
    rows = []
    for notice in notices.order_by("revocation__created_at", "revocation_id"):
        revocation: Revocation = notice.revocation
        rows.append(
            {
                "id": revocation.pk,
                "kind": revocation.kind,
                "kind_label": revocation.get_kind_display(),
                "reason": revocation.reason,
                "reason_label": revocation.get_reason_display(),
                "datanet": {"id": revocation.datanet_id, "name": revocation.datanet.name},
                "records": notice.records,
                "erased": revocation.erase,
                "at": revocation.created_at,
            }
        )
    return rows
