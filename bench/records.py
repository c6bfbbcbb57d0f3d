"""The record viewer on a 100,000-record Datanet: the first page, filtered pages, search pages, a deep keyset page and
a record page, each timed through the Django test client (the whole view: permission checks, queries, template),
with the number of queries each page ran. Target: under 1 s a page, and the same number of queries on every page of
a kind whatever its depth.

The records go into PostgreSQL by COPY (not through the upload path: bench/ingest.py measures that) as checked
records, the way the checks task leaves them: ``minhash`` set (so they are in the full-text index), personal-data
spans and near-duplicate flags on a few. 50 contributions of 2,000 records from 25 contributors: 30 accepted, 15
pending, 5 rejected; a few records of the pending ones excluded. Then ANALYZE, as autovacuum would after a load.

Last, what the search index costs, with it and without it, alternating: an upload's COPY of 100,000 records into the
record table (``minhash`` null: the partial index's condition is false, so they never enter it), and the checks'
update that sets ``minhash`` on every record (which is what puts a record into the index), off the upload's path.

Needs PostgreSQL at 127.0.0.1:5432 (user postgres; override with BENCH_PG_URL): it creates a throwaway database
``openledger_bench_records``, migrates it and drops it at the end.

Run from the repository root: OMP_NUM_THREADS=1 .venv/bin/python bench/records.py
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_URL = os.getenv("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
DB_NAME = "openledger_bench_records"
WORK = Path(tempfile.mkdtemp(prefix="bench-records-"))
RECORDS = int(os.getenv("BENCH_RECORDS", "100000"))
CONTRIBUTIONS = 50
CONTRIBUTORS = 25
RUNS = 5
TARGET_SECONDS = 1.0
os.environ.update(
    DJANGO_SETTINGS_MODULE="openledger_web.settings",
    DATA_DIR=str(WORK),
    DATABASE_URL=f"{PG_URL}/{DB_NAME}",
    CELERY_BROKER_URL="memory://",
    DEBUG="0",
    SECRET_KEY="bench-only-not-a-secret",
    ALLOWED_HOSTS="testserver",
    SECURE_SSL_REDIRECT="0",
)

_VOCABULARY_TEXT = (
    "the a of to and in is it you that he was for on are with as his they be at one have this from or had by word "
    "but what some we can out other were all there when up use your how said an each she which do their time if will "
    "way about many then them write would like so these her long make thing see him two has look more day could go "
    "come did number sound no most people my over know water than call first who may down side been now find river "
    "oak garden children farmer porch fox dog lazy quick brown jumps tree old laugh watches"
)
VOCABULARY = _VOCABULARY_TEXT.split()
RARE = "zanzibar"  # in one record of 2,000


def admin_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def populate() -> dict[str, Any]:
    """The Datanet, its contributions and RECORDS checked records; returns what the pages ask for."""
    from django.db import connection
    from django.utils import timezone

    from accounts.models import User
    from datanets.models import Contribution, Datanet

    rng = random.Random(15)
    owner = User.objects.create_user("bench-owner")
    datanet = Datanet.objects.create(name="Bench records", slug="bench-records", owner=owner, record_type="text")
    users = User.objects.bulk_create(User(username=f"contributor-{i}") for i in range(CONTRIBUTORS))
    now = timezone.now()
    per = RECORDS // CONTRIBUTIONS
    statuses = ["accepted"] * 30 + ["pending"] * 15 + ["rejected"] * 5
    contributions = Contribution.objects.bulk_create(
        Contribution(
            datanet=datanet,
            contributor=users[i % CONTRIBUTORS],
            licence="CC-BY-4.0",
            status=statuses[i % len(statuses)],
            check_status=Contribution.CheckStatus.DONE,
            source_filename=f"bench-{i}.jsonl",
            content_sha256=secrets.token_hex(32),
            size_bytes=per * 200,
            storage_path="contributions/bench",
            record_count=per,
            reviewer=None if statuses[i % len(statuses)] == "pending" else owner,
            reviewed_at=None if statuses[i % len(statuses)] == "pending" else now,
            review_reason="bench" if statuses[i % len(statuses)] == "rejected" else "",
            submitted_at=now,
        )
        for i in range(CONTRIBUTIONS)
    )
    columns = (
        "contribution_id, datanet_id, position, source, line, canonical, record_hash, words, size_bytes, minhash, "
        "excluded, excluded_reason, excluded_at, flags"
    )
    started = time.perf_counter()
    n = 0
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY datanets_record ({columns}) FROM STDIN") as copy:
        for contribution in contributions:
            pending = contribution.status == "pending"
            for position in range(per):
                words = rng.choices(VOCABULARY, k=rng.randint(12, 60))
                if n % 2_000 == 7:
                    words.insert(3, RARE)
                flags: list[dict[str, Any]] = []
                if n % 50 == 3:
                    flags.append({"kind": "near_duplicate", "other_record_id": max(n - 1, 1), "similarity": 0.9})
                text = " ".join(words)
                if n % 100 == 5:
                    start = len('{"text":"') + len(text) + 1
                    text += " mail bob@example.org"
                    flags.append({"kind": "email", "start": start, "end": start + 15})
                canonical = json.dumps({"text": text}, separators=(",", ":"))
                excluded = pending and position % 500 == 1
                copy.write_row(
                    (
                        contribution.pk,
                        datanet.pk,
                        position,
                        contribution.source_filename,
                        position + 1,
                        canonical,
                        "0x" + secrets.token_hex(32),
                        len(words),
                        len(canonical),
                        secrets.token_bytes(256),
                        excluded,
                        "bench exclusion" if excluded else "",
                        now if excluded else None,
                        json.dumps(flags),
                    )
                )
                n += 1
    load_seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE datanets_record")
        cursor.execute("ANALYZE datanets_contribution")
        cursor.execute("SELECT id FROM datanets_record ORDER BY id OFFSET %s LIMIT 1", [int(RECORDS * 0.9)])
        deep_after = cursor.fetchone()[0]
        cursor.execute(
            'SELECT id FROM datanets_record WHERE flags @> \'[{"kind": "near_duplicate"}]\' ORDER BY id DESC LIMIT 1'
        )
        near_copy = cursor.fetchone()[0]
    return {
        "datanet": datanet,
        "owner": owner,
        "pending": next(c for c in contributions if c.status == "pending"),
        "deep_after": deep_after,
        "near_copy": near_copy,
        "load_seconds": load_seconds,
        "records": n,
    }


def measure(client: Any, url: str) -> tuple[float, int, int]:
    """(median seconds of RUNS requests after one warm-up, queries of one request, rows listed)."""
    from django.db import connection

    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    queries: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        queries.append(sql)
        return execute(sql, params, many, context)

    # a wrapper rather than CaptureQueriesContext: the request closes the connection at its end (CONN_MAX_AGE)
    with connection.execute_wrapper(count):
        client.get(url)
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - started)
    return statistics.median(times), len(queries), response.content.decode().count("<tr data-record=")


SEARCH_INDEX = """
CREATE INDEX datanets_record_search ON datanets_record
USING gin (to_tsvector('simple'::regconfig, (canonical)::jsonb)) WHERE minhash IS NOT NULL
"""


def _upload_like_copy(contribution: Any, rows: int) -> float:
    """Seconds to COPY ``rows`` records as an upload writes them (``minhash`` null) into the record table, in one
    transaction, the rows encoded beforehand; they are deleted after."""
    from django.db import connection, transaction

    columns = "contribution_id, datanet_id, position, source, line, canonical, record_hash, words, size_bytes, "
    columns += "excluded, excluded_reason, flags"
    base = 1_000_000
    lines = []
    for i in range(rows):
        canonical = f'{{"text":"an uploaded record number {i} with a few more words in it"}}'
        fields = (contribution.pk, contribution.datanet_id, base + i, "up.jsonl", i + 1, canonical)
        lines.append("\t".join(map(str, (*fields, "0x" + secrets.token_hex(32), 12, len(canonical), "f", "", "[]"))))
    data = ("\n".join(lines) + "\n").encode()
    started = time.perf_counter()
    statement = f"COPY datanets_record ({columns}) FROM STDIN"
    with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        copy.write(data)
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM datanets_record WHERE position >= %s", [base])
        cursor.execute("VACUUM datanets_record")
    return seconds


def _checks_like_update() -> float:
    """Seconds to set ``minhash`` on every record, as the checks' update does (what enters the partial index)."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE datanets_record SET minhash = NULL")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM datanets_record")
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE datanets_record SET minhash = decode(repeat('ab', 256), 'hex')")
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM datanets_record")
    return seconds


def index_cost(contribution: Any) -> dict[str, list[float]]:
    """What the full-text index costs, with it and without it, in the order with, without, without, with (so that a
    drift of the machine's load cancels out): an upload's write of 100,000 records into the record table (the partial
    index's condition is false for them), and the checks' update."""
    from django.db import connection

    cost: dict[str, list[float]] = {"upload_with": [], "upload_without": [], "checks_with": [], "checks_without": []}
    indexed = True
    for state in ("with", "without", "without", "with"):
        if (state == "with") != indexed:
            with connection.cursor() as cursor:
                cursor.execute(SEARCH_INDEX if state == "with" else "DROP INDEX datanets_record_search")
            indexed = state == "with"
        cost[f"upload_{state}"].append(round(_upload_like_copy(contribution, 100_000), 2))
        cost[f"checks_{state}"].append(round(_checks_like_update(), 2))
    return cost


def main() -> None:
    admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME}")
    admin_sql(f"CREATE DATABASE {DB_NAME}")
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.test import Client, override_settings

        # production settings (DEBUG off) but plain static URLs: the bench does not run collectstatic
        storages = {
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
        override_settings(STORAGES=storages).enable()
        call_command("migrate", verbosity=0)
        world = populate()
        print(f"inserted {world['records']:,} checked records by COPY in {world['load_seconds']:.1f} s", flush=True)
        client = Client()
        client.force_login(world["owner"])
        base = f"/datanets/{world['datanet'].slug}/records/"
        pages = {
            "first page": base,
            "filtered (near-duplicates, pending)": base + "?check=near_duplicates&status=pending",
            "filtered (email flag, not excluded)": base + "?flag=email&excluded=no",
            "filtered (one contribution)": base + f"?contribution={world['pending'].pk}&check=flagged",
            "search (common words)": base + "?q=river+oak",
            f"search (rare word, {RECORDS // 2_000} records)": base + f"?q={RARE}",
            "search + filter (pending)": base + "?q=garden+children&status=pending",
            "deep keyset page (90%)": base + f"?after={world['deep_after']}",
            "deep keyset page, filtered": base + f"?after={world['deep_after']}&check=flagged",
            "record page (near-duplicate, diff)": base + f"{world['near_copy']}/",
        }
        results = {}
        for label, url in pages.items():
            seconds, queries, rows = measure(client, url)
            results[label] = {"seconds": round(seconds, 3), "queries": queries, "rows": rows}
            print(f"{label:<42} {seconds:7.3f} s  {queries:3d} queries  {rows:3d} rows", flush=True)
        cost = index_cost(world["pending"])
        print(
            f"an upload's COPY of 100,000 records: {cost['upload_with']} s with the search index, "
            f"{cost['upload_without']} s without",
            flush=True,
        )
        print(
            f"the checks' update of {world['records']:,} records (sets minhash): {cost['checks_with']} s with the "
            f"search index, {cost['checks_without']} s without",
            flush=True,
        )
        from django.db import connections

        connections.close_all()
    finally:
        admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        shutil.rmtree(WORK, ignore_errors=True)
    list_queries = {v["queries"] for k, v in results.items() if not k.startswith("record page")}
    slowest = max(v["seconds"] for v in results.values())
    summary = {
        "records": world["records"],
        "pages": results,
        "slowest_page_seconds": slowest,
        "target_seconds": TARGET_SECONDS,
        "met": slowest < TARGET_SECONDS,
        "list_page_query_counts": sorted(list_queries),
        "upload_copy_100k_seconds_with_index": cost["upload_with"],
        "upload_copy_100k_seconds_without_index": cost["upload_without"],
        "checks_update_seconds_with_index": cost["checks_with"],
        "checks_update_seconds_without_index": cost["checks_without"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
