"""Moving a large upload's records from the staging table into ``Record``: the step that both a curator's decision
(``services``) and the checks (``checks``) take first, so each can call it without the other."""

from __future__ import annotations

from django.db import connection, transaction

from .models import Contribution, Record, StagedRecord

# What an upload writes: StagedRecord has exactly these; Record adds its exclusion fields, flags and minhash.
UPLOAD_COLUMNS = "contribution_id, datanet_id, position, source, line, canonical, record_hash, words, size_bytes"
RECORD_EXTRA_COLUMNS = ", excluded, excluded_reason, flags"


def contribution_records_settle(contribution: Contribution) -> int:
    """Move the records of a large upload from ``StagedRecord`` into ``Record``, in file order, and return how many
    moved (0 when none wait: it is safe to call again).

    Runs in the caller's transaction, which must hold the contribution's row lock (``select_for_update``): the
    checks task calls it first, and so does any decision or withdrawal that comes before the checks, so a
    contribution leaves ``pending`` only with its records in place. Done by the database in two statements, with
    no row through Python.
    """
    if not contribution.records_staged:
        return 0
    postgres = connection.vendor == "postgresql"
    # Record's columns that an upload leaves to their defaults, spelled for the database at hand
    defaults = "false, '', '[]'::jsonb" if postgres else "0, '', '[]'"
    record, staged = Record._meta.db_table, StagedRecord._meta.db_table
    with connection.cursor() as cursor:  # the names below are our own tables and columns, no input
        move = (
            f"INSERT INTO {record} ({UPLOAD_COLUMNS}{RECORD_EXTRA_COLUMNS}) "  # noqa: S608
            f"SELECT {UPLOAD_COLUMNS}, {defaults} FROM {staged} WHERE contribution_id = %s ORDER BY position"
        )
        cursor.execute(move, [contribution.pk])
        moved = cursor.rowcount
        cursor.execute(f"DELETE FROM {staged} WHERE contribution_id = %s", [contribution.pk])  # noqa: S608
    Contribution.objects.filter(pk=contribution.pk).update(records_staged=False)
    contribution.records_staged = False
    return moved


SETTLE_BATCH = 5_000


def contribution_records_settle_in_steps(contribution_id: int, *, batch: int = SETTLE_BATCH) -> int:
    """``contribution_records_settle`` in short transactions of ``batch`` rows each, for SQLite, where a write
    transaction holds the database's only write lock: moving a million rows in one would stop every other writer for
    as long. Each step moves the next rows (in id order, which is file order) and deletes them from the staging
    table in one transaction, so a step is whole or not done and a crash between steps leaves the rest to move;
    a decision that settles meanwhile just leaves less. Returns how many rows moved; marks the contribution settled
    once none wait. Needs no transaction of the caller's."""
    record, staged = Record._meta.db_table, StagedRecord._meta.db_table
    defaults = "false, '', '[]'::jsonb" if connection.vendor == "postgresql" else "0, '', '[]'"
    moved, last = 0, 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:  # our own tables and columns below, no input
            cursor.execute(
                f"SELECT MAX(id) FROM (SELECT id FROM {staged} WHERE contribution_id = %s AND id > %s "  # noqa: S608
                "ORDER BY id LIMIT %s) AS step",
                [contribution_id, last, batch],
            )
            upto = cursor.fetchone()[0]
            if upto is None:
                Contribution.objects.filter(pk=contribution_id).update(records_staged=False)
                return moved
            cursor.execute(
                f"INSERT INTO {record} ({UPLOAD_COLUMNS}{RECORD_EXTRA_COLUMNS}) "  # noqa: S608
                f"SELECT {UPLOAD_COLUMNS}, {defaults} FROM {staged} "
                "WHERE contribution_id = %s AND id > %s AND id <= %s ORDER BY id",
                [contribution_id, last, upto],
            )
            moved += cursor.rowcount
            cursor.execute(
                f"DELETE FROM {staged} WHERE contribution_id = %s AND id > %s AND id <= %s",  # noqa: S608
                [contribution_id, last, upto],
            )
        last = upto
