"""One slow upload must not stop anyone else from writing (issue 11, "what was seen" 2).

A zip of records each followed by thousands of blank lines, with one bad last row, takes seconds to read and is
refused at the end (so it can be sent again and again, and counts for no quota). On SQLite, where a write
transaction holds the whole database's write lock, the upload used to hold one for as long as it was read: every
other write waited for it, and failed with "database is locked" once the busy timeout ran out. Here, while such
uploads run back to back, 20 small writes (other users' uploads, the same contributor's, worker heartbeats, a new
Datanet) and a real training job on a real Celery worker all complete, no database statement of those writes waits
2 s, and "database is locked" appears in no log. Run on whichever database the session uses: SQLite and PostgreSQL
(scripts/test.sh; DATABASE_URL=sqlite:///... for the first).
"""

from __future__ import annotations

import io
import json
import logging
import random
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from accounts.tests.factories import UserFactory
from datanets import services as datanet_services
from modelfactory import services as model_services
from modelfactory.models import FineTuneJob
from modelfactory.tests.factories import default_base, frozen_snapshot, tiny_config
from openledger_web.services import worker_heartbeat_touch
from openledger_web.testing import celery_worker_process

pytestmark = pytest.mark.slow

DB_WAIT_LIMIT = 2.0  # seconds: no statement of a small write may wait longer for the database
SMALL_WRITES = 20
JOB_TIMEOUT = 420


def hostile_zip(*, records: int, blank_lines: int, seed: int = 11) -> bytes:
    """A zip of one JSON Lines file: ``records`` good records, each followed by ``blank_lines`` blank or
    whitespace-only lines, then one bad row. About 45:1 compressed, so no zip-bomb check stops it early."""
    rng = random.Random(seed)
    pad = [b""] * 150 + [b" ", b"\t"]
    # four different blocks in turn, each longer than deflate's window: the archive can't just point back at the last
    blocks = [b"\n".join(rng.choices(pad, k=blank_lines)) + b"\n" for _ in range(4)]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z, z.open("data.jsonl", "w") as out:
        for i in range(records):
            out.write(json.dumps({"text": f"record {i} of a slow upload"}).encode() + b"\n")
            out.write(blocks[i % len(blocks)])
        out.write(b'{"not_a_field": "the bad last row"}\n')
    return archive.getvalue()


@pytest.fixture(scope="module")
def slow_zip() -> bytes:
    return hostile_zip(records=4_000, blank_lines=20_000)  # seconds to read, even on an idle machine


@contextmanager
def statement_clock() -> Iterator[list[float]]:
    """The duration of every statement this thread's connection runs in the block: a lock wait (SQLite's BEGIN
    IMMEDIATE behind another writer, a row lock on PostgreSQL) is spent inside one."""
    durations: list[float] = []

    def timed(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            durations.append(time.perf_counter() - started)

    with connection.execute_wrapper(timed):
        yield durations


class SlowUploads(threading.Thread):
    """Sends the slow zip again and again until told to stop; each one must be refused for its bad last row."""

    def __init__(self, datanet: Any, contributor: Any, content: bytes) -> None:
        super().__init__(name="slow-uploads", daemon=True)
        self.datanet, self.contributor, self.content = datanet, contributor, content
        self.stop = threading.Event()
        self.spans: list[tuple[float, float]] = []
        self.problems: list[str] = []

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    datanet_services.contribution_submit(
                        datanet=self.datanet,
                        contributor=self.contributor,
                        upload=SimpleUploadedFile("slow.zip", self.content),
                        licence="CC-BY-4.0",
                    )
                    self.problems.append("the slow upload was accepted")
                except ValidationError as e:
                    if "not_a_field" not in str(e):
                        self.problems.append(f"refused for another reason: {e}")
                self.spans.append((started, time.monotonic()))
        except Exception as e:  # reported by the test
            self.problems.append(f"{type(e).__name__}: {e}")
        finally:
            connection.close()

    def running_at(self, moment: float) -> bool:
        return any(start <= moment <= end for start, end in self.spans)


def _log_text() -> str:
    return "\n".join(p.read_text(errors="replace") for p in Path(settings.DATA_DIR).rglob("*.log"))


@pytest.mark.django_db(transaction=True)
def test_small_writes_and_a_training_job_complete_while_slow_uploads_run(
    slow_zip: bytes, settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.UPLOAD_MAX_PARSE_SECONDS = 600  # the slow upload must run to its bad last row, however loaded we are
    # given a training job, a Datanet, and a contributor whose slow uploads run back to back
    owner = UserFactory()
    job = model_services.job_launch(
        owner=owner,
        name="trained meanwhile",
        base_model=default_base(),
        snapshots=[frozen_snapshot(owner=owner)],
        config=tiny_config(),
    )
    datanet = datanet_services.datanet_create(
        owner=owner, name="Busy", record_type="text", daily_quota_files=1_000, daily_quota_bytes=2**40
    )
    slow_contributor, others = UserFactory(), [UserFactory() for _ in range(4)]
    uploads = SlowUploads(datanet, slow_contributor, slow_zip)

    small: list[tuple[str, Callable[[int], object]]] = [
        ("another user's upload", lambda i: datanet_services.contribution_submit_pasted(
            datanet=datanet, contributor=others[i % 4], text=f"small record {i} from someone else", licence="CC-BY-4.0"
        )),
        ("the same contributor's small upload", lambda i: datanet_services.contribution_submit_pasted(
            datanet=datanet, contributor=slow_contributor, text=f"small record {i} meanwhile", licence="CC-BY-4.0"
        )),
        ("a worker heartbeat", lambda i: worker_heartbeat_touch(hostname=f"web-{i}@test", queues=["default"], pid=i)),
        ("a new Datanet", lambda i: datanet_services.datanet_create(owner=others[i % 4], name=f"Side {i}")),
    ]  # fmt: skip
    waits: list[tuple[str, float, float, float]] = []  # what, longest statement, whole write, when it started

    # when a real worker trains meanwhile, and the small writes come while the uploads run
    with celery_worker_process(queues="training", name="concurrency", timeout=120, MEDIA_ROOT=str(settings.MEDIA_ROOT)):
        uploads.start()
        try:
            time.sleep(1.0)  # well into the first upload's parse
            for i in range(SMALL_WRITES):
                what, write = small[i % len(small)]
                started = time.monotonic()
                with statement_clock() as durations:
                    write(i)
                ended = time.monotonic()
                waits.append((what, max(durations), ended - started, started))
                time.sleep(0.1)
            deadline = time.monotonic() + JOB_TIMEOUT
            # the slow uploads go on until the job has trained a step (its claim, heartbeats and progress written
            # while they ran); the rest of the job (index, manifest, version) then runs without them, which saves a
            # minute or two of the suite on two cores
            while not job.is_finished and job.step < 1 and time.monotonic() < deadline:
                time.sleep(0.5)
                job.refresh_from_db()
            trained_during_uploads = job.step >= 1 or job.is_finished
            uploads.stop.set()
            while not job.is_finished and time.monotonic() < deadline:
                time.sleep(1.0)
                job.refresh_from_db()
        finally:
            uploads.stop.set()
            uploads.join(timeout=120)

    # then the job succeeded, every small write went through without waiting for the database
    assert job.status == FineTuneJob.Status.SUCCEEDED, (job.status, job.error, job.log_tail[-5:])
    assert trained_during_uploads
    assert not uploads.problems, uploads.problems
    assert len(uploads.spans) >= 1
    took = sorted(end - start for start, end in uploads.spans)
    # each upload must outlast the limit by far, or holding the lock through one would not show
    assert took[len(took) // 2] >= 1.5 * DB_WAIT_LIMIT, f"the slow uploads took only {took} s: too fast to show it"
    during = sum(uploads.running_at(started) for *_, started in waits)
    assert during >= SMALL_WRITES * 3 // 4, f"only {during} of the small writes came while a slow upload ran"
    too_long = [(what, round(wait, 2), round(total, 2)) for what, wait, total, _ in waits if wait > DB_WAIT_LIMIT]
    longest = max(wait for _, wait, _, _ in waits)
    assert not too_long, f"small writes waited for the database (what, longest statement, whole write): {too_long}"
    print(f"longest statement of a small write: {longest:.3f} s; slow uploads took {[round(t, 1) for t in took]} s")
    # and nothing anywhere says the database was locked
    assert "database is locked" not in caplog.text
    assert "database is locked" not in _log_text()
