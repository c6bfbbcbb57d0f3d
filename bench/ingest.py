"""Upload ingest speed: a generated JSONL of 200+ MB (about a million instruction records) through the same code path as
an upload (``services.contribution_submit`` with a file object) into PostgreSQL, beside a bare ``json.loads`` loop
and a bare SHA-256 over the same file, measured in the same run.

An upload this large (over ``UPLOAD_STAGE_ABOVE_BYTES``, 16 MB by default) commits its records to the unindexed
staging table and returns; the checks task's first step then moves them into the indexed record table
(``services.contribution_records_settle``). That step is timed here too, after the upload, as the checks task runs
it, and reported beside: the upload's figure is what a contributor waits for, upload plus move what it takes until
a curator sees the records.

Then the database's own share of the upload: the same rows, already encoded (exported with COPY TO from what the
ingest wrote), copied into an empty copy of the staging table in COPY statements of the upload's size, with no
Python in the loop: the floor for any client on this schema.

Memory: peak growth of the process's resident set (RSS, sampled every 5 ms by a thread with psutil) over its value
just before the ingest starts. The rest of the checks are not run: they are a Celery task, not part of the upload.

Needs PostgreSQL at 127.0.0.1:5432 (user postgres; override with BENCH_PG_URL): it creates a throwaway database
``openledger_bench``, migrates it and drops it at the end.

Run from the repository root: .venv/bin/python bench/ingest.py
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_URL = os.getenv("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
DB_NAME = "openledger_bench"
WORK = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
TARGET_BYTES = int(os.getenv("BENCH_INGEST_MB", "200")) * 1024 * 1024  # smaller for a quick profile
os.environ.update(
    DJANGO_SETTINGS_MODULE="openledger_web.settings",
    DATA_DIR=str(WORK),
    DATABASE_URL=f"{PG_URL}/{DB_NAME}",
    CELERY_BROKER_URL="memory://",
    UPLOAD_MAX_BYTES=str(1024 * 1024 * 1024),
    UPLOAD_MAX_EXPANDED_BYTES=str(1024 * 1024 * 1024),
    UPLOAD_MAX_PARSE_SECONDS="3600",  # a loaded machine must not turn the measurement into a refusal
    DEBUG="0",  # DEBUG keeps every SQL statement in memory
    SECRET_KEY="bench-only-not-a-secret",
)

_WORD_TEXT = (
    "the a of to and in is it you that he was for on are with as his they be at one have this from or had by hot "
    "word but what some we can out other were all there when up use your how said an each she which do their time "
    "if will way about many then them write would like so these her long make thing see him two has look more day "
    "could go come did number sound no most people my over know water than call first who may down side been now"
)
WORDS = _WORD_TEXT.split()


def generate(path: Path) -> tuple[int, int]:
    """Write instruction records until the file passes TARGET_BYTES; every record differs from every other."""
    rng = random.Random(1234)
    size = count = 0
    with path.open("w", encoding="utf-8") as out:
        while size < TARGET_BYTES:
            lines = []
            for _ in range(10_000):
                prompt = " ".join(rng.choices(WORDS, k=12)) + f" (question {count})?"
                response = " ".join(rng.choices(WORDS, k=22)) + "."
                lines.append(json.dumps({"prompt": prompt, "response": response}) + "\n")
                count += 1
            chunk = "".join(lines)
            out.write(chunk)
            size += len(chunk.encode())
    return size, count


def bare_parse(path: Path) -> float:
    started = time.perf_counter()
    with path.open("rb") as f:
        for line in f:
            json.loads(line)
    return time.perf_counter() - started


def bare_sha256(path: Path) -> float:
    started = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return time.perf_counter() - started


class PeakRss:
    """The highest RSS seen while the block runs, sampled by a thread."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._stop = threading.Event()
        self.start_rss = self.peak_rss = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self.start_rss = self.peak_rss = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak_rss - self.start_rss) / (1024 * 1024)


def admin_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def database_floor(path: Path) -> float:
    """Seconds to COPY the rows the upload wrote, already encoded, into an empty copy of the staging table (its
    columns, checks and primary key), in one transaction, in COPY statements of the upload's size."""
    from django.db import connection, transaction

    from datanets import services
    from datanets.models import Contribution, StagedRecord

    table = StagedRecord._meta.db_table
    columns = services.UPLOAD_COLUMNS
    raw = connection.connection
    with path.open("wb") as out, raw.cursor().copy(f"COPY (SELECT {columns} FROM {table}) TO STDOUT") as copy:
        for chunk in copy:
            out.write(chunk)
    connection.cursor().execute(f"CREATE TABLE bench_floor (LIKE {table} INCLUDING ALL)")
    statement = f"COPY bench_floor ({columns}) FROM STDIN"
    started = time.perf_counter()
    with transaction.atomic(), path.open("rb") as rows:
        while chunk := b"".join(islice(rows, services._COPY_ROWS)):
            with raw.cursor().copy(statement) as copy:
                copy.write(chunk)
    seconds = time.perf_counter() - started
    connection.cursor().execute("DROP TABLE bench_floor")
    path.unlink()
    assert Contribution.objects.filter(records_staged=True).count() == 1
    return seconds


def settle() -> tuple[float, int]:
    """The checks task's first step, timed: the staged records into the indexed record table, in one transaction."""
    from django.db import transaction

    from datanets import services
    from datanets.models import Contribution, Record, StagedRecord

    started = time.perf_counter()
    with transaction.atomic():
        contribution = Contribution.objects.select_for_update().get()
        moved = services.contribution_records_settle(contribution)
    seconds = time.perf_counter() - started
    assert not StagedRecord.objects.exists() and Record.objects.count() == moved
    return seconds, moved


def ingest(path: Path) -> tuple[float, int, PeakRss]:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from accounts.models import User
    from datanets import services
    from datanets.models import Datanet

    services._enqueue_checks = lambda contribution_id: None  # the checks are a later Celery task, not the upload
    owner = User.objects.create_user("bench-owner")
    contributor = User.objects.create_user("bench-contributor")
    datanet = Datanet.objects.create(
        name="Bench instructions",
        slug="bench-instructions",
        owner=owner,
        record_type="instruction",
        licence="CC-BY-4.0",
        daily_quota_bytes=2**40,
        daily_quota_files=10,
    )
    with path.open("rb") as upload, PeakRss() as memory:
        upload.size = path.stat().st_size  # type: ignore[attr-defined]  # what Django's UploadedFile declares
        started = time.perf_counter()
        if os.getenv("BENCH_PROFILE"):
            import cProfile

            with cProfile.Profile() as profile:
                contribution = services.contribution_submit(
                    datanet=datanet, contributor=contributor, upload=upload, licence="CC-BY-4.0"
                )
            profile.dump_stats(os.environ["BENCH_PROFILE"])
        else:
            contribution = services.contribution_submit(
                datanet=datanet, contributor=contributor, upload=upload, licence="CC-BY-4.0"
            )
        seconds = time.perf_counter() - started
    return seconds, contribution.record_count, memory


def main() -> None:
    path = WORK / "records.jsonl"
    print(f"generating {TARGET_BYTES // 2**20} MB of instruction records in {WORK} ...", flush=True)
    size, count = generate(path)
    mb = size / (1024 * 1024)
    print(f"file: {mb:.1f} MB, {count:,} records", flush=True)
    parse_s = bare_parse(path)
    sha_s = bare_sha256(path)
    admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME}")
    admin_sql(f"CREATE DATABASE {DB_NAME}")
    try:
        ingest_s, records, memory = ingest(path)
        path.unlink()
        floor_s = database_floor(WORK / "rows.copy")
        settle_s, moved = settle()
        from django.db import connections

        connections.close_all()
    finally:
        admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        shutil.rmtree(WORK, ignore_errors=True)
    assert records == count == moved, f"ingested {records} and moved {moved} of {count} records"

    def line(label: str, seconds: float) -> None:
        print(f"{label:<38} {seconds:8.2f} s  {mb / seconds:8.1f} MB/s  {count / seconds:12,.0f} records/s")

    line("bare sha256 of the file", sha_s)
    line("bare json.loads of each line", parse_s)
    line("ingest (contribution_submit)", ingest_s)
    line("database alone (COPY into staging)", floor_s)
    line("move into the record table (checks)", settle_s)
    line("upload + move", ingest_s + settle_s)
    print(f"peak RSS growth during the ingest: {memory.growth_mb:.1f} MB (psutil RSS sampled every 5 ms)")
    figures = {
        "file_mb": round(mb, 1),
        "records": count,
        "ingest_seconds": round(ingest_s, 2),
        "ingest_mb_per_s": round(mb / ingest_s, 2),
        "ingest_records_per_s": round(count / ingest_s),
        "parse_mb_per_s": round(mb / parse_s, 2),
        "sha256_mb_per_s": round(mb / sha_s, 2),
        "ingest_over_parse": round(parse_s / ingest_s, 3),
        "ingest_over_sha256": round(sha_s / ingest_s, 4),
        "database_floor_seconds": round(floor_s, 2),
        "floor_over_parse": round(parse_s / floor_s, 3),
        "move_seconds": round(settle_s, 2),
        "upload_and_move_over_parse": round(parse_s / (ingest_s + settle_s), 3),
        "peak_memory_growth_mb": round(memory.growth_mb, 1),
        "memory_method": "psutil RSS sampled every 5 ms, peak minus the value before the ingest",
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
