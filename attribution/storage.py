"""Where attribution indexes live: content-addressed folders under ``INDEX_PREFIX`` in the media root, each path
guarded by a lock while a version names it or a folder is dropped. Below ``services`` and ``revocation``, which both
store and drop index folders."""

from __future__ import annotations

import logging
import shutil

from django.db import connection, transaction

from datanets.storage import media_path

from .models import AttributionIndex

logger = logging.getLogger(__name__)

INDEX_PREFIX = "attribution"


def index_folder_drop(relative: str) -> bool:
    """Remove an attribution index folder a job built but did not keep (cancelled, failed, or lost the job to a
    newer attempt); True when it was removed.

    Index folders are content-addressed, so an identical index may be shared: a folder that any AttributionIndex row
    names (of any version, published or not) is never touched. The check and the removal run under a transaction
    advisory lock on the path, which ``index_record`` takes too, so a version storing the same index at the same
    moment either commits its row first (and the folder stays) or finds the folder gone (and records the index as
    failed rather than naming a missing folder).
    """
    if not relative or not relative.startswith(f"{INDEX_PREFIX}/"):
        return False
    folder = media_path(relative)
    with transaction.atomic():
        lock_index_path(relative)
        if AttributionIndex.objects.filter(path=relative).exists():
            return False
        if not folder.exists():
            return False
        shutil.rmtree(folder, ignore_errors=True)
    logger.info("dropped the unkept attribution index %s", relative)
    return not folder.exists()


def lock_index_path(relative: str) -> None:
    """A transaction-scoped lock on one index path (PostgreSQL advisory lock; a no-op elsewhere)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"attribution-index:{relative}"])
