"""The record table is lean for writes (an upload COPYs up to millions of rows into it), so these pin what it must
still guarantee: well-formed hashes without a database CHECK, its foreign keys, and an index under every hot query."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from eth_hash.auto import keccak

from datanets import services
from datanets.models import Contribution, Record

from .factories import DatanetFactory, accepted, jsonl, submit, texts

pytestmark = pytest.mark.django_db

HASH_FORM = re.compile(r"0x[0-9a-f]{64}")
postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's catalog and planner")


def test_every_stored_record_hash_is_0x_and_64_lowercase_hex_digits_of_its_canonical_keccak() -> None:
    # the database no longer checks the form (docs/decisions.md, "Lean record table"): the parser is the only writer
    awkward = [
        "a",
        "combining e\u0301 and precomposed \u00e9",
        'tab\tnewline\nbackslash\\ quote" nul-free',
        "emoji \U0001f600 and CJK \u6570\u636e",
        "x" * 50_000,
        '{"looks": "like json"}',
    ]
    contribution = submit(DatanetFactory(), content=texts(*awkward) + jsonl({"text": "line two ok"}))
    rows = list(contribution.records.values_list("canonical", "record_hash"))
    assert len(rows) == contribution.record_count >= len(awkward)
    for canonical, record_hash in rows:
        assert HASH_FORM.fullmatch(record_hash), record_hash
        assert record_hash == "0x" + keccak(canonical.encode()).hex()


@postgres_only
def test_the_record_table_keeps_its_foreign_keys() -> None:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Record._meta.db_table)
    targets = {tuple(info["columns"]): info["foreign_key"] for info in constraints.values() if info["foreign_key"]}
    assert targets == {
        ("contribution_id",): ("datanets_contribution", "id"),
        ("datanet_id",): ("datanets_datanet", "id"),
        ("excluded_by_id",): (get_user_model()._meta.db_table, "id"),
    }
    datanet = DatanetFactory()
    contribution = submit(datanet)
    with pytest.raises(IntegrityError), transaction.atomic():
        connection.cursor().execute("SET CONSTRAINTS ALL IMMEDIATE")
        Record.objects.bulk_create(
            [Record(contribution_id=contribution.pk + 10_000, datanet=datanet, position=0, source="x", line=1,
                    canonical="{}", record_hash="0x" + "00" * 32, words=0, size_bytes=2)]
        )  # fmt: skip


@postgres_only
def test_the_record_table_has_only_the_indexes_its_queries_need() -> None:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Record._meta.db_table)
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [Record._meta.db_table])
        definitions = dict(cursor.fetchall())
    indexed = {tuple(info["columns"]) for info in constraints.values() if info["index"] or info["unique"]}
    assert indexed == {
        ("id",),
        ("contribution_id", "position"),
        ("datanet_id", "record_hash"),
        ("datanet_id",),  # small (deduplicated, appended in order): the Datanet-wide reads use it
        ("contribution_id",),  # partial: excluded records only
        ("excluded_by_id",),  # partial: set only when a curator excludes a record
        (),  # the record viewer's full-text index (an expression), partial: checked records only
    }
    assert "WHERE excluded" in definitions["datanets_record_excluded"]
    search = definitions["datanets_record_search"]
    assert "USING gin (to_tsvector('simple'::regconfig, (canonical)::jsonb))" in search
    assert "WHERE (minhash IS NOT NULL)" in search  # an upload writes minhash null: it never enters this index
    assert "WHERE (excluded_by_id IS NOT NULL)" in definitions["datanets_record_excluded_by"]
    checks = {name for name, info in constraints.items() if info["check"]}
    assert "datanets_record_hash" not in checks and "datanets_exclusion_has_reason" in checks


def _plans(queries: dict[str, QuerySet[Any] | Callable[[], str]]) -> dict[str, str]:
    """Each query's plan with sequential scans priced out: one still chosen means no index can serve the query."""
    plans = {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for name, query in queries.items():
            if isinstance(query, QuerySet):
                plans[name] = query.explain()
            else:
                cursor.execute("EXPLAIN " + query())
                plans[name] = "\n".join(row[0] for row in cursor.fetchall())
    return plans


@postgres_only
def test_the_hot_record_queries_are_served_by_an_index() -> None:
    datanet = DatanetFactory()
    curator = datanet.owner
    done = accepted(datanet, content=texts("one accepted record here", "two accepted records here"))
    pending = submit(datanet, content=texts("one accepted record here", "a pending record of its own"))
    record = pending.records.get(position=1)
    services.record_exclude(curator=curator, record=record, reason="off topic")
    hashes = list(pending.records.values_list("record_hash", flat=True))
    others = Record.objects.filter(datanet_id=datanet.pk).exclude(contribution=pending)
    queries: dict[str, QuerySet[Any] | Callable[[], str]] = {
        "duplicate check": others.filter(
            record_hash__in=hashes, contribution__status__in=[Contribution.Status.ACCEPTED, Contribution.Status.PENDING]
        ).values_list("record_hash", "id", "contribution_id", "contribution__status", "excluded"),
        "snapshot leaves": Record.objects.filter(
            datanet=datanet, contribution__status=Contribution.Status.ACCEPTED, excluded=False
        )
        .order_by("contribution__reviewed_at", "contribution_id", "position")
        .values_list("id", "record_hash"),
        "contribution's records": done.records.order_by("position")[:50],
        "excluded count": Record.objects.filter(contribution=pending, excluded=True),
        "records by id": Record.objects.filter(pk__in=[record.pk, record.pk + 1]),
        "records a user excluded (deleting a user)": Record.objects.filter(excluded_by=curator),
        "datanet has records": Record.objects.filter(datanet=datanet).order_by()[:1],
        "datanet's numbers": Record.objects.filter(
            datanet=datanet, contribution__status=Contribution.Status.ACCEPTED, excluded=False
        ).values("datanet"),
    }
    for name, plan in _plans(queries).items():
        assert "Seq Scan on datanets_record" not in plan, f"{name}:\n{plan}"
    assert json.loads(record.canonical)  # the excluded record is still there, whole
