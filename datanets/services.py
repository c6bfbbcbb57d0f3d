"""Every write to Datanets, contributions, records and snapshots.

Keyword-only and typed. A refused action raises ``PermissionDenied`` (who may not) or ``ValidationError`` (what is
wrong with the input), each with a message meant for a person, and leaves nothing written: writers run in one
transaction, and the only thing that can outlive a refused upload is its content-addressed file (harmless: the same
bytes would be stored at the same path, and nothing points at it).
"""

from __future__ import annotations

import io
import logging
import queue
import re
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from datetime import UTC, datetime, time, timedelta
from pathlib import PurePath
from typing import Any, BinaryIO, NamedTuple, Protocol

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone
from django.utils.text import slugify
from eth_utils import to_checksum_address

from ledger import chain, merkle
from ledger.proofs import PROOF_SCHEMA, anchor_facts_for
from ledger.rules import rules_in_force
from ledger.services import anchor_request, anchor_subject
from outbox.services import enqueue_on_commit

from . import receipts, selectors
from .checks import CONTRIBUTION_CHECK_TASK, contribution_check
from .licences import LICENCES, compatible_licences, licence_compatible
from .models import (
    PARSE_ERRORS_KEPT,
    ZERO_ADDRESS,
    Contribution,
    ContributionDecision,
    Datanet,
    Record,
    RevokedRecord,
    Snapshot,
    SnapshotRecord,
    StagedRecord,
)
from .parsing import ParsedRow, ParseLimits, RowError, UploadRejected, parse_upload
from .staging import RECORD_EXTRA_COLUMNS, UPLOAD_COLUMNS, contribution_records_settle
from .storage import StoredFile, TooLarge, media_path, store_bytes_file, storing_stream

logger = logging.getLogger(__name__)

RECORD_BATCH = 500  # parsed rows held before they are encoded: few enough to stay in the CPU's cache
SNAPSHOT_BATCH = 5_000
ERRORS_SHOWN = 10
MAX_TAGS = 20
MAX_TAG_LENGTH = 40
NODE_BYTES = 32
TREE_FORMAT = "standard-v1"

DATANET_FIELDS = (
    "name",
    "summary",
    "description",
    "tags",
    "domain",
    "record_type",
    "licence",
    "visibility",
    "contribution_policy",
    "language",
    "daily_quota_bytes",
    "daily_quota_files",
    "near_duplicate_threshold",
)


class Upload(Protocol):
    """What ``contribution_submit`` reads: Django's ``UploadedFile`` or any binary file with a name and a size."""

    name: str | None
    size: int | None

    def read(self, size: int = -1, /) -> bytes: ...


def _user_label(user: Any) -> str:
    return getattr(user, "username", "") or "an anonymous user"


# Datanets


def _clean_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        tags = tags.split(",")
    cleaned: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise ValidationError({"tags": "tags must be words"})
        word = tag.strip().lower()
        if not word or word in cleaned:
            continue
        if len(word) > MAX_TAG_LENGTH:
            raise ValidationError({"tags": f"a tag may have at most {MAX_TAG_LENGTH} characters: {word[:50]!r}"})
        cleaned.append(word)
    if len(cleaned) > MAX_TAGS:
        raise ValidationError({"tags": f"at most {MAX_TAGS} tags"})
    return cleaned


# Path segments the HTML pages and the API mount beside `<slug>/`: a Datanet named like one would be shadowed.
RESERVED_SLUGS = frozenset(
    {
        "new",
        "create",
        "mine",
        "curation",
        "leaderboard",
        "contributions",
        "records",
        "snapshots",
        "queue",
        "decide",
        "revocations",
    }
)


def _unique_slug(name: str) -> str:
    base = slugify(name)[:120] or "datanet"
    taken = set(Datanet.objects.filter(slug__startswith=base).values_list("slug", flat=True)) | RESERVED_SLUGS
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def _require_user(user: Any, action: str) -> None:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        raise PermissionDenied(f"sign in to {action}")


@transaction.atomic
def datanet_create(
    *,
    owner: Any,
    name: str,
    record_type: str = "text",
    licence: str = "CC-BY-4.0",
    summary: str = "",
    description: str = "",
    tags: Iterable[str] = (),
    domain: str = "",
    visibility: str = Datanet.Visibility.PUBLIC,
    contribution_policy: str = Datanet.Policy.OPEN,
    language: str = "",
    daily_quota_bytes: int | None = None,
    daily_quota_files: int | None = None,
    near_duplicate_threshold: float | None = None,
) -> Datanet:
    """Create a Datanet owned by ``owner`` with a unique slug derived from its name (never changed afterwards)."""
    _require_user(owner, "create a Datanet")
    if not name or not name.strip():
        raise ValidationError({"name": "a Datanet needs a name"})
    datanet = Datanet(
        owner=owner,
        name=name.strip(),
        slug=_unique_slug(name),
        record_type=record_type,
        licence=licence,
        summary=summary.strip(),
        description=description,
        tags=_clean_tags(tags),
        domain=domain.strip().lower(),
        visibility=visibility,
        contribution_policy=contribution_policy,
        language=language,
    )
    for field, value in (
        ("daily_quota_bytes", daily_quota_bytes),
        ("daily_quota_files", daily_quota_files),
        ("near_duplicate_threshold", near_duplicate_threshold),
    ):
        if value is not None:
            setattr(datanet, field, value)
    datanet.full_clean()
    datanet.save()
    return datanet


@transaction.atomic
def datanet_update(*, datanet: Datanet, user: Any, **changes: Any) -> Datanet:
    """Change a Datanet's settings (owner or global curator). The slug never changes; the record type is fixed once
    the Datanet has records; the licence may change only to one every live contribution's licence still fits."""
    if not selectors.user_can_manage(user=user, datanet=datanet):
        raise PermissionDenied(f"only the owner of {datanet.name!r} may change its settings")
    unknown = sorted(set(changes) - set(DATANET_FIELDS))
    if unknown:
        raise ValidationError(f"these fields can't be changed here: {', '.join(unknown)}")
    datanet = Datanet.objects.select_for_update().get(pk=datanet.pk)
    if "tags" in changes:
        changes["tags"] = _clean_tags(changes["tags"])
    if "record_type" in changes and changes["record_type"] != datanet.record_type and datanet.contributions.exists():
        raise ValidationError(
            {"record_type": f"the record type is fixed at {datanet.record_type!r} once the Datanet has records"}
        )
    if "licence" in changes and changes["licence"] != datanet.licence:
        live = set(
            datanet.contributions.exclude(status__in=[Contribution.Status.REJECTED, Contribution.Status.WITHDRAWN])
            .values_list("licence", flat=True)
            .distinct()
        )
        unfit = sorted(
            lic for lic in live if not licence_compatible(datanet_licence=changes["licence"], contribution_licence=lic)
        )
        if unfit:
            raise ValidationError(
                {"licence": f"contributions under {', '.join(unfit)} can't be part of a {changes['licence']} Datanet"}
            )
    for field, value in changes.items():
        setattr(datanet, field, value.strip() if isinstance(value, str) and field != "description" else value)
    datanet.full_clean()
    datanet.save()
    return datanet


def _require_manager(user: Any, datanet: Datanet, action: str) -> None:
    if not selectors.user_can_manage(user=user, datanet=datanet):
        raise PermissionDenied(f"only the owner of {datanet.name!r} may {action}")


def _require_curator(user: Any, datanet: Datanet, action: str) -> None:
    if not selectors.user_can_curate(user=user, datanet=datanet):
        raise PermissionDenied(f"only the owner or a curator of {datanet.name!r} may {action}")


@transaction.atomic
def datanet_add_curator(*, datanet: Datanet, user: Any, curator: Any) -> None:
    """Name ``curator`` a curator of ``datanet`` (owner or global curator only). Adding twice is harmless."""
    _require_manager(user, datanet, "name curators")
    datanet.curators.add(curator)


@transaction.atomic
def datanet_remove_curator(*, datanet: Datanet, user: Any, curator: Any) -> None:
    _require_manager(user, datanet, "remove curators")
    datanet.curators.remove(curator)


@transaction.atomic
def datanet_add_member(*, datanet: Datanet, user: Any, member: Any) -> None:
    """Let ``member`` see a private Datanet and contribute to a members-only one (owner or curator)."""
    _require_curator(user, datanet, "add members")
    datanet.members.add(member)


@transaction.atomic
def datanet_remove_member(*, datanet: Datanet, user: Any, member: Any) -> None:
    _require_curator(user, datanet, "remove members")
    datanet.members.remove(member)


# Contributions


def _clean_filename(name: str | None) -> str:
    # only the last path component, without control characters: the name is shown, never used as a path
    base = PurePath((name or "").replace("\\", "/")).name
    base = re.sub(r"[\x00-\x1f\x7f]", "", base).strip()
    return base[:255] or "upload"


def _utc_day_start(now: datetime) -> datetime:
    return datetime.combine(now.astimezone(UTC).date(), time.min, tzinfo=UTC)


def _check_quota(*, datanet: Datanet, contributor: Any, size: int, now: datetime) -> None:
    # Every upload of the day counts, withdrawn ones too: otherwise upload-then-withdraw cycles would store (and
    # parse) without limit. Refused uploads leave no row, so they count for nothing.
    used = Contribution.objects.filter(
        datanet=datanet, contributor=contributor, submitted_at__gte=_utc_day_start(now)
    ).aggregate(files=Count("id"), size=Sum("size_bytes"))
    files, used_bytes = used["files"], used["size"] or 0
    if files + 1 > datanet.daily_quota_files:
        raise ValidationError(
            f"daily quota reached: {files} of {datanet.daily_quota_files} files today (UTC) for this Datanet; "
            "try again tomorrow",
            code="quota_files",
        )
    if used_bytes + size > datanet.daily_quota_bytes:
        left = max(datanet.daily_quota_bytes - used_bytes, 0)
        raise ValidationError(
            f"daily quota exceeded: this upload is {_mb(size)}, and {_mb(left)} of today's "
            f"{_mb(datanet.daily_quota_bytes)} (UTC) are left for this Datanet",
            code="quota_bytes",
        )


def _mb(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f}".removesuffix(".0") + " MB"
    if size >= 1024:
        return f"{size / 1024:.1f}".removesuffix(".0") + " KB"
    return f"{size} bytes"


def _enqueue_checks(contribution_id: int) -> None:
    enqueue_on_commit(CONTRIBUTION_CHECK_TASK, contribution_id)


class _Parsed(NamedTuple):
    """What reading an upload found, for its contribution's row."""

    record_count: int
    error_count: int
    duplicate_count: int
    parse_errors: list[dict[str, Any]]


def _parse_limits() -> ParseLimits:
    return ParseLimits(
        max_expanded_bytes=settings.UPLOAD_MAX_EXPANDED_BYTES, max_seconds=settings.UPLOAD_MAX_PARSE_SECONDS
    )


def _ingest(stream: BinaryIO, *, filename: str, record_type: str, reject_whole: bool, spool: _RecordSpool) -> _Parsed:
    """Parse the stored bytes into ``spool``, in batches, and apply the bad-rows policy: raise ``ValidationError``
    for a refused upload. Holds no transaction: the rows are written once the whole file is known to be good."""
    try:
        parser = parse_upload(stream, filename=filename, record_type=record_type, limits=_parse_limits())
        errors: list[dict[str, Any]] = []
        bad: list[str] = []
        batch: list[ParsedRow] = []
        position = 0  # of the batch's first row
        write = spool.write
        for item in parser:
            if item.__class__ is RowError:
                if len(errors) < PARSE_ERRORS_KEPT:
                    errors.append(
                        {"source": item.source, "line": item.line, "code": item.code, "message": item.message}
                    )
                if item.code != "duplicate" and len(bad) < ERRORS_SHOWN:
                    bad.append(item.message)
                continue
            if reject_whole and bad:
                continue  # the file will be refused: parse on only to count its problems
            batch.append(item)  # type: ignore[arg-type]
            if len(batch) >= RECORD_BATCH:
                write(batch, position)
                position += len(batch)
                batch = []
        if batch and not (reject_whole and bad):
            write(batch, position)
            position += len(batch)
    except UploadRejected as e:
        raise ValidationError(e.message, code=e.code) from None
    bad_count = parser.error_count - parser.duplicate_count
    if bad_count and reject_whole:
        shown = "; ".join(bad)
        more = f" (the first {len(bad)} shown)" if bad_count > len(bad) else ""
        refused = ValidationError(
            f"{bad_count} {'row has a problem' if bad_count == 1 else 'rows have problems'}{more}: {shown}. "
            "Fix them, or choose to leave bad rows out.",
            code="bad_rows",
        )
        # the same rows, structured (source, line, code, message), for pages that show them as a table
        refused.row_errors = [e for e in errors if e["code"] != "duplicate"]  # type: ignore[attr-defined]
        raise refused
    if position == 0:
        raise ValidationError(
            f"no usable records: {bad_count} bad {'row' if bad_count == 1 else 'rows'}"
            + (f" ({'; '.join(bad)})" if bad else "")
            + (f" and {parser.duplicate_count} duplicates" if parser.duplicate_count else ""),
            code="no_records",
        )
    return _Parsed(position, bad_count, parser.duplicate_count, errors)


class _RecordSpool:
    """Where an upload's parsed rows wait while the file is read, outside any transaction, until ``save()`` writes
    them with the new contribution, in the short transaction that creates it.

    A small upload's rows wait in memory and ``save()`` writes them as Records. Once they pass
    ``UPLOAD_STAGE_ABOVE_BYTES`` (from the start, for a stored file that large) they go to the staging table as they
    are parsed, under a contribution id reserved now, each piece committed on its own and holding no lock another
    writer needs: on PostgreSQL one COPY into the unindexed table with no foreign key, on SQLite one short
    transaction per batch, so other writers take the write lock between them. ``save()`` then only creates the
    contribution with that id. Leaving the block with an exception (a refused upload) drops what was staged.
    Databases other than these two never stage.
    """

    def __init__(self, *, datanet_id: int, stage_above: int, stage_now: bool) -> None:
        self.datanet_id = datanet_id
        self.stage_above = stage_above
        self.contribution_id: int | None = None  # reserved once the rows go to the staging table
        self._held: list[tuple[list[ParsedRow], int]] = []
        self._held_bytes = 0
        self._exit = ExitStack()
        self._stage_write: Callable[[list[ParsedRow], int], None] | None = None
        self._stage_now = stage_now and connection.vendor in ("postgresql", "sqlite")

    @property
    def staged(self) -> bool:
        return self.contribution_id is not None

    def __enter__(self) -> _RecordSpool:
        if self._stage_now:
            self._start_staging()
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            self._exit.__exit__(kind, error, trace)  # ends (or on error, aborts) the staging COPY
        finally:
            if kind is not None:
                self.discard()

    def write(self, batch: list[ParsedRow], first: int) -> None:
        if self._stage_write is not None:
            self._stage_write(batch, first)
            return
        # the parsed dicts are never written: only the canonical bytes and their facts are held
        self._held.append(([row._replace(record=None) for row in batch], first))
        self._held_bytes += sum(row.size for row in batch)
        if self._held_bytes > self.stage_above and connection.vendor in ("postgresql", "sqlite"):
            self._start_staging()

    def finish(self) -> None:
        """Every row is written: end the staging COPY (its rows are then committed, under the reserved id)."""
        self._exit.close()

    def save(self, contribution: Contribution) -> None:
        """Write the held rows as Records of ``contribution`` (created with ``contribution_id`` when staged); run in
        the caller's transaction."""
        if self.staged:
            return
        with _record_writer(contribution) as write:
            for batch, first in self._held:
                write(batch, first)
        self._held = []

    def discard(self) -> None:
        """Drop what was staged (a refused upload, or one whose contribution could not be written)."""
        self._held = []
        if self.contribution_id is not None:
            StagedRecord.objects.filter(contribution_id=self.contribution_id).delete()

    def _start_staging(self) -> None:
        self.contribution_id = _reserve_contribution_id()
        postgres = connection.vendor == "postgresql"
        self._stage_write = self._exit.enter_context(_staged_writer(self.contribution_id, self.datanet_id, postgres))
        held, self._held = self._held, []
        for batch, first in held:
            self._stage_write(batch, first)


def _reserve_contribution_id() -> int:
    """A contribution id no other upload will get: the staged rows carry it before the contribution exists."""
    table = Contribution._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id'))", [table])
            return int(cursor.fetchone()[0])
        # SQLite: an AUTOINCREMENT table's last id lives in sqlite_sequence, an ordinary table that may be updated
        with transaction.atomic():
            cursor.execute("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = %s RETURNING seq", [table])
            row = cursor.fetchone()
            if row is not None:
                return int(row[0])
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}")  # noqa: S608 (our own table)
            reserved = int(cursor.fetchone()[0])
            cursor.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [table, reserved])
            return reserved


@contextmanager
def _staged_writer(
    contribution_id: int, datanet_id: int, postgres: bool
) -> Iterator[Callable[[list[ParsedRow], int], None]]:
    """Yield ``write(batch, first)`` that puts parsed rows in the staging table under ``contribution_id``, outside
    the caller's transaction (there should be none). PostgreSQL: one COPY for the whole upload, sent from this
    thread, committed when the block ends and aborted if it ends with an error. SQLite: one short transaction per
    batch."""
    ids = _Ids(contribution_id, datanet_id)
    if postgres:
        connection.ensure_connection()
        statement = f"COPY {StagedRecord._meta.db_table} ({UPLOAD_COLUMNS}) FROM STDIN"
        # inside a caller's transaction (tests), a savepoint: an aborted COPY then leaves that transaction usable
        savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
        with (
            savepoint,
            connection.wrap_database_errors,
            connection.connection.cursor() as cursor,
            cursor.copy(statement) as copy,
        ):
            rows = _CopyRows(ids, b"\n", copy.write)
            yield rows.write
            rows.flush()
        return
    insert = (
        f"INSERT INTO {StagedRecord._meta.db_table} ({UPLOAD_COLUMNS}) "  # noqa: S608 (our own table and columns)
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )

    def write(batch: list[ParsedRow], first: int) -> None:
        values = [
            (contribution_id, datanet_id, position, row.source[:300], row.line, row.canonical.decode(),
             row.record_hash, row.words, row.size)
            for position, row in enumerate(batch, first)
        ]  # fmt: skip
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(insert, values)

    yield write


class _Ids(NamedTuple):
    """What ``_CopyRows`` reads of a contribution: its id and its Datanet's."""

    pk: int
    datanet_id: int


# Rows per COPY statement: the foreign-key checks run at the end of each, while the parser works on the next ones.
_COPY_ROWS = 5_000
_COPY_QUEUE = 4  # encoded chunks (~1.5 MB each) waiting for the writer thread: bounds what the pipeline holds


@contextmanager
def _record_writer(contribution: Contribution) -> Iterator[Callable[[list[ParsedRow], int], None]]:
    """Yield ``write(batch, first)``, which stores parsed rows (at positions ``first``, ``first + 1``, ...) as Records
    of ``contribution``, in the caller's transaction.

    On PostgreSQL the rows are encoded here as COPY text, in chunks of ``_COPY_ROWS``, one COPY per chunk, sent by a
    thread of its own on the same connection and transaction, so the server inserts and indexes one chunk while this
    thread encodes the next; their foreign keys are checked at the end of each COPY instead of all at commit, which
    moves that work into the overlap too. Leaving the block waits for the writer and raises what the database
    raised; an error in the block cancels it, and nothing is left running on the connection either way. Elsewhere:
    ``bulk_create``. (A large upload's rows go to the staging table instead: ``_staged_writer``.)
    """
    if connection.vendor != "postgresql":
        yield lambda batch, first: Record.objects.bulk_create(
            _record(Record, contribution, row, position) for position, row in enumerate(batch, first)
        )
        return
    connection.ensure_connection()
    # Record's other columns have no database default (Django fills them in Python): given here, as new rows have them
    tail = b"\tf\t\t[]\n"
    statement = f"COPY {Record._meta.db_table} ({UPLOAD_COLUMNS + RECORD_EXTRA_COLUMNS}) FROM STDIN"
    foreign_keys = _record_foreign_keys()
    with connection.cursor() as cursor:
        cursor.execute(f"SET CONSTRAINTS {foreign_keys} IMMEDIATE")
    writer = _CopyWriter(statement)
    rows = _CopyRows(contribution, tail, writer.put)
    try:
        yield rows.write
        rows.flush()
    except BaseException:
        writer.close(cancel=True)
        raise
    writer.close(cancel=False)
    with connection.cursor() as cursor:
        cursor.execute(f"SET CONSTRAINTS {foreign_keys} DEFERRED")  # as Django declares them, for what follows


class _CopyRows:
    """Encodes parsed rows of ``contribution`` as lines of COPY text (``UPLOAD_COLUMNS``, then ``tail``) and hands
    ``send`` a chunk of them every ``_COPY_ROWS`` rows, and the rest on ``flush()``."""

    def __init__(self, contribution: Contribution | _Ids, tail: bytes, send: Callable[[bytes], object]) -> None:
        self._ids = b"%d\t%d\t" % (contribution.pk, contribution.datanet_id)
        self._tail = tail
        self._send = send
        self._sources: dict[str, bytes] = {}
        self._pending: list[bytes] = []

    def write(self, batch: list[ParsedRow], first: int) -> None:
        ids, tail, sources = self._ids, self._tail, self._sources
        rows = self._pending
        append = rows.append
        for position, (name, line, _, canonical, digest, words, size) in enumerate(batch, first):
            source = sources.get(name)
            if source is None:
                source = sources[name] = _copy_text(name[:300])
            if b"\\" in canonical:  # JSON escapes every control character, so a backslash is all COPY needs escaped
                canonical = canonical.replace(b"\\", b"\\\\")
            append(
                b"%b%d\t%b\t%d\t%b\t%b\t%d\t%d%b"
                % (ids, position, source, line, canonical, digest.encode(), words, size, tail)
            )
        if len(rows) >= _COPY_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._send(b"".join(self._pending))
            self._pending = []


def _record_foreign_keys() -> str:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Record._meta.db_table)
    names = sorted(name for name, info in constraints.items() if info["foreign_key"])
    return ", ".join(connection.ops.quote_name(name) for name in names)


def _copy_text(value: str) -> bytes:
    """``value`` as a field of PostgreSQL's COPY text format."""
    for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        value = value.replace(char, escaped)
    return value.encode()


class _CopyWriter:
    """Runs one COPY statement per chunk it is given, in order, on a thread of its own.

    It uses the default connection's driver connection, inside its transaction: the caller must not use the
    connection until ``close()`` returns. An error in the writer is raised to the caller, as Django's database
    exception, by its next ``put()`` or by ``close()``; after one, the writer drops what it is given.
    """

    def __init__(self, statement: str) -> None:
        self._connection = connection.connection
        self._statement = statement
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_COPY_QUEUE)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="record-copy", daemon=True)
        self._thread.start()

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            self._raise()
        self._chunks.put(chunk)

    def close(self, *, cancel: bool) -> None:
        self._cancelled = cancel
        self._chunks.put(None)
        self._thread.join()
        if self._error is not None and not cancel:
            self._raise()

    def _raise(self) -> None:
        error, self._error = self._error, None
        self._cancelled = True
        with connection.wrap_database_errors:
            raise error  # type: ignore[misc]

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            if self._error is not None or self._cancelled:
                continue  # drain, so that the caller never blocks on a full queue
            try:
                with self._connection.cursor() as cursor, cursor.copy(self._statement) as copy:
                    copy.write(chunk)
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc


def _record(model: type[Record | StagedRecord], contribution: Contribution, row: ParsedRow, position: int) -> Any:
    return model(
        contribution=contribution,
        datanet_id=contribution.datanet_id,
        position=position,
        source=row.source[:300],
        line=row.line,
        canonical=row.canonical.decode(),
        record_hash=row.record_hash,
        words=row.words,
        size_bytes=row.size,
    )


def contribution_submit(
    *,
    datanet: Datanet,
    contributor: Any,
    upload: Upload,
    licence: str,
    bad_rows: str = Contribution.BadRows.REJECT_WHOLE,
    idempotency_key: str = "",
) -> Contribution:
    """Check who may contribute and what, store the bytes content-addressed, parse them into Records and queue the
    checks once committed.

    A retry stores nothing twice: the contributor's earlier contribution to this Datanet is returned (its
    ``replayed`` set) when it carried the same ``idempotency_key``, or held the same bytes and was submitted within
    CONTRIBUTION_REPLAY_WINDOW_SECONDS (withdrawn ones excepted).

    Refused before a byte is read: a contributor who may not contribute, an incompatible licence, a declared size
    over ``UPLOAD_MAX_BYTES``, a day's quota (files, or bytes by the declared size) already used. Refused while
    reading: more bytes than declared or allowed, more than ``UPLOAD_MAX_EXPANDED_BYTES`` of text once expanded or
    more than ``UPLOAD_MAX_PARSE_SECONDS`` spent reading, an unusable file, and (``reject_whole``) any bad row. Rows
    that repeat an earlier row of the same upload are left out and listed under either policy.

    No write transaction is open while the file is read, however long that takes: the bytes are stored and parsed
    first (a large upload's rows staged as they come, see ``_RecordSpool``), then one short transaction takes the
    contributor's lock, checks the quota again and writes the contribution, its records, its log entry and its
    receipt (the cheap facts only: ``receipts`` computes the records' root off this path).
    """
    _require_user(contributor, "contribute")
    if not selectors.user_can_contribute(user=contributor, datanet=datanet):
        if not selectors.user_can_view(user=contributor, datanet=datanet):
            raise PermissionDenied(f"{datanet.name!r} is private: only its members may contribute")
        raise PermissionDenied(f"only approved members may contribute to {datanet.name!r}")
    if bad_rows not in Contribution.BadRows.values:
        raise ValidationError({"bad_rows": f"choose one of {', '.join(Contribution.BadRows.values)}"})
    if licence not in LICENCES:
        raise ValidationError({"licence": f"unknown licence {licence!r}"})
    if not licence_compatible(datanet_licence=datanet.licence, contribution_licence=licence):
        raise ValidationError(
            {
                "licence": f"{licence} data can't join a {datanet.licence} Datanet; choose one of "
                f"{', '.join(compatible_licences(datanet.licence))}"
            }
        )
    limit = settings.UPLOAD_MAX_BYTES
    declared = getattr(upload, "size", None)
    if declared is not None and declared > limit:
        raise ValidationError(f"the file is {_mb(declared)}; an upload may be at most {_mb(limit)}", code="too_large")
    now = timezone.now()
    if idempotency_key and (earlier := _earlier(datanet, contributor, now, idempotency_key=idempotency_key)):
        return earlier
    _check_quota(datanet=datanet, contributor=contributor, size=declared or 0, now=now)  # again under the lock below
    filename = _clean_filename(upload.name)
    # The bytes are parsed from their temporary copy and linked into place only if the upload is kept: a refused one
    # leaves nothing behind.
    try:
        with storing_stream(upload, prefix="contributions", max_bytes=limit) as stored:  # type: ignore[arg-type]
            if earlier := _earlier(datanet, contributor, now, content_sha256=stored.sha256):
                return earlier
            if stored.size != declared:
                _check_quota(datanet=datanet, contributor=contributor, size=stored.size, now=now)
            stage_above = settings.UPLOAD_STAGE_ABOVE_BYTES
            spool = _RecordSpool(datanet_id=datanet.pk, stage_above=stage_above, stage_now=stored.size > stage_above)
            with spool, stored.temp.open("rb") as stream:
                parsed = _ingest(
                    stream,
                    filename=filename,
                    record_type=datanet.record_type,
                    reject_whole=bad_rows == Contribution.BadRows.REJECT_WHOLE,
                    spool=spool,
                )
                spool.finish()
                contribution = Contribution(
                    id=spool.contribution_id,
                    datanet=datanet,
                    contributor=contributor,
                    licence=licence,
                    source_filename=filename,
                    content_sha256=stored.sha256,
                    size_bytes=stored.size,
                    storage_path=stored.path,
                    bad_rows=bad_rows,
                    submitted_at=now,
                    records_staged=spool.staged,
                    record_count=parsed.record_count,
                    error_count=parsed.error_count,
                    duplicate_row_count=parsed.duplicate_count,
                    parse_errors=parsed.parse_errors,
                    idempotency_key=idempotency_key,
                )
                contribution = _contribution_write(contribution, spool=spool, now=now)
    except TooLarge:  # only ever from reading the upload, before the block runs
        raise ValidationError(f"the file is over the upload limit of {_mb(limit)}", code="too_large") from None
    return contribution


@transaction.atomic
def _contribution_write(contribution: Contribution, *, spool: _RecordSpool, now: datetime) -> Contribution:
    """The upload's one write transaction: replay and quota checks under the contributor's lock, then the rows.
    Returns the contribution written, or the earlier one this upload turned out to repeat (its rows dropped)."""
    contributor = contribution.contributor
    # One contributor's uploads queue on their user row, so two at once can't both slip under the quota, and of two
    # concurrent retries of one upload only the first to take the lock stores anything.
    get_user_model().objects.select_for_update().filter(pk=contributor.pk).first()
    datanet = contribution.datanet
    earlier = _earlier(datanet, contributor, now, content_sha256=contribution.content_sha256)
    if earlier is None and contribution.idempotency_key:
        earlier = _earlier(datanet, contributor, now, idempotency_key=contribution.idempotency_key)
    if earlier is not None:
        spool.discard()
        return earlier
    _check_quota(datanet=datanet, contributor=contributor, size=contribution.size_bytes, now=now)
    contribution.save(force_insert=True)
    spool.save(contribution)
    ContributionDecision.objects.create(contribution=contribution, actor=contributor, action="submit", created_at=now)
    receipts.receipt_contribution_write(contribution=contribution)
    _enqueue_checks(contribution.id)
    return contribution


def _earlier(datanet: Datanet, contributor: Any, now: datetime, **match: str) -> Contribution | None:
    """The contributor's contribution to ``datanet`` that a retried upload repeats (same idempotency key, or same
    bytes within the replay window), flagged ``replayed``; None when there is none."""
    earlier = Contribution.objects.filter(datanet=datanet, contributor=contributor, **match)
    if "content_sha256" in match:
        window = settings.CONTRIBUTION_REPLAY_WINDOW_SECONDS
        if window <= 0:
            return None
        earlier = earlier.filter(submitted_at__gte=now - timedelta(seconds=window)).exclude(
            status=Contribution.Status.WITHDRAWN
        )
    contribution = earlier.order_by("-submitted_at", "-pk").first()
    if contribution is not None:
        contribution.replayed = True
    return contribution


class _PastedUpload(io.BytesIO):
    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name
        self.size = len(data)


def contribution_submit_pasted(
    *,
    datanet: Datanet,
    contributor: Any,
    text: str,
    licence: str,
    bad_rows: str = Contribution.BadRows.REJECT_WHOLE,
    idempotency_key: str = "",
) -> Contribution:
    """Submit records pasted in a form: JSON Lines, or paragraphs separated by blank lines for a text Datanet."""
    if not text or not text.strip():
        raise ValidationError({"text": "paste at least one record"})
    name = "pasted.txt" if datanet.record_type == "text" else "pasted.jsonl"
    return contribution_submit(
        datanet=datanet,
        contributor=contributor,
        upload=_PastedUpload(text.encode("utf-8", errors="surrogatepass"), name),
        licence=licence,
        bad_rows=bad_rows,
        idempotency_key=idempotency_key,
    )


def _locked_pending(contribution: Contribution, action: str, *, settle: bool = True) -> Contribution:
    # the contribution's row only: nothing locks a Datanet after a contribution (docs/decisions.md, "One lock order")
    locked = Contribution.objects.select_for_update(of=("self",)).select_related("datanet").get(pk=contribution.pk)
    if locked.status != Contribution.Status.PENDING:
        raise ValidationError(f"contribution #{locked.pk} is {locked.status}: only a pending one can be {action}")
    if settle:
        contribution_records_settle(locked)
    return locked


@transaction.atomic
def contribution_withdraw(*, contribution: Contribution, user: Any) -> Contribution:
    """The contributor takes back a pending contribution, whether or not they are still a member: it joins no
    snapshot, its records are deleted, and so are its stored bytes once no other contribution refers to them. The
    row stays, with its size and time, as the trail of what happened and because it still counts for the day's quota.
    """
    if getattr(user, "pk", None) != contribution.contributor_id:
        raise PermissionDenied("only the contributor may withdraw a contribution")
    locked = _locked_pending(contribution, "withdrawn", settle=False)  # its staged rows are deleted, not moved
    # its receipt stays, the record of what was submitted: its records' root is taken while they still exist
    receipts.receipt_complete_before_withdrawal(contribution=locked)
    _contribution_records_delete(locked)
    now = timezone.now()
    locked.status = Contribution.Status.WITHDRAWN
    locked.withdrawn_at = now
    locked.records_staged = False
    locked.save()
    ContributionDecision.objects.create(contribution=locked, actor=user, action="withdraw", created_at=now)
    sha256, path = locked.content_sha256, locked.storage_path
    transaction.on_commit(lambda: content_release(sha256=sha256, path=path), robust=True)
    return locked


def _contribution_records_delete(contribution: Contribution) -> None:
    """Delete the records (staged or not) of a pending contribution, in two statements whatever their number.

    Only a pending contribution's records: nothing else refers to them (snapshots take accepted records only, and
    attribution only snapshot records), which the database's foreign keys would enforce anyway. A curator's
    exclusion of one of them stays in the contribution's history, without the record.
    """
    ContributionDecision.objects.filter(contribution=contribution, record__isnull=False).update(record=None)
    record, staged = Record._meta.db_table, StagedRecord._meta.db_table
    with connection.cursor() as cursor:  # our own table names, no input
        cursor.execute(f"DELETE FROM {staged} WHERE contribution_id = %s", [contribution.pk])  # noqa: S608
        cursor.execute(f"DELETE FROM {record} WHERE contribution_id = %s", [contribution.pk])  # noqa: S608


def content_release(*, sha256: str, path: str) -> bool:
    """Delete the stored bytes ``sha256`` at ``path`` if no contribution refers to them any more, other than withdrawn
    ones; True when deleted. Called after a withdrawal commits; never raises (the withdrawal stands either way).

    Content addressing shares one file between identical uploads, so another contribution's row keeps it. An upload
    of the same bytes still in flight (its row not yet committed) links its own copy into place only when the path
    is free, so in the narrow race where it found this file and this call then deletes it, that upload's records
    are intact and only its download copy is gone.
    """
    others = Contribution.objects.filter(content_sha256=sha256, storage_path=path)
    if others.exclude(status=Contribution.Status.WITHDRAWN).exists():
        return False
    try:
        media_path(path).unlink()
    except FileNotFoundError:
        return False
    except OSError:
        logger.exception("could not delete the withdrawn bytes at %s", path)
        return False
    return True


@transaction.atomic
def contributions_decide(
    *, curator: Any, contributions: Iterable[Contribution], action: str, reason: str = ""
) -> list[Contribution]:
    """Accept or reject pending contributions, all or none: every one must be pending and curated by ``curator``
    (owner, curator of its Datanet, or global curator). A rejection needs a reason; each decision is logged and
    gets its receipt, in this transaction."""
    if action not in ("accept", "reject"):
        raise ValidationError({"action": "choose accept or reject"})
    reason = (reason or "").strip()
    if action == "reject" and not reason:
        raise ValidationError({"reason": "say why the contribution is rejected: the contributor will read it"})
    ids = sorted({c.pk for c in contributions})
    if not ids:
        raise ValidationError("choose at least one contribution")
    # One lock order everywhere (docs/decisions.md, "One lock order"): the Datanets first, as a freeze takes its
    # own, then the contributions, each set in id order, so two curators deciding overlapping sets, or a decision
    # and a freeze, can't deadlock. A freeze of the same Datanet waits for this decision, and this one for it.
    datanet_ids = sorted(set(Contribution.objects.filter(pk__in=ids).values_list("datanet_id", flat=True)))
    list(Datanet.objects.select_for_update(no_key=True).filter(pk__in=datanet_ids).order_by("pk").values_list("pk"))
    locked = list(
        Contribution.objects.select_for_update(of=("self",)).select_related("datanet").filter(pk__in=ids).order_by("pk")
    )
    if len(locked) != len(ids):
        raise ValidationError("some of these contributions no longer exist")
    can_curate: dict[int, bool] = {}
    for contribution in locked:
        if contribution.datanet_id not in can_curate:
            can_curate[contribution.datanet_id] = selectors.user_can_curate(user=curator, datanet=contribution.datanet)
        if not can_curate[contribution.datanet_id]:
            raise PermissionDenied(f"only the owner or a curator of {contribution.datanet.name!r} may decide on it")
        if contribution.status != Contribution.Status.PENDING:
            raise ValidationError(f"contribution #{contribution.pk} is already {contribution.status}")
    now = timezone.now()
    status = Contribution.Status.ACCEPTED if action == "accept" else Contribution.Status.REJECTED
    for contribution in locked:
        contribution_records_settle(contribution)  # decided before its checks ran: its records join it now
        contribution.status = status
        contribution.reviewer = curator
        contribution.reviewed_at = now
        contribution.review_reason = reason
        contribution.save()
    ContributionDecision.objects.bulk_create(
        ContributionDecision(contribution=c, actor=curator, action=action, reason=reason, created_at=now)
        for c in locked
    )
    receipts.receipts_curation_write(curator=curator, decision=action, contributions=locked, reason=reason, now=now)
    return locked


def contribution_accept(*, curator: Any, contribution: Contribution, reason: str = "") -> Contribution:
    return contributions_decide(curator=curator, contributions=[contribution], action="accept", reason=reason)[0]


def contribution_reject(*, curator: Any, contribution: Contribution, reason: str) -> Contribution:
    return contributions_decide(curator=curator, contributions=[contribution], action="reject", reason=reason)[0]


def record_exclude(*, curator: Any, record: Record, reason: str) -> Record:
    """Leave one record of a pending contribution out of every snapshot; a reason is required, logged and its hash
    put in the exclusion's receipt."""
    return records_exclude(curator=curator, records=[record], reason=reason)[0]


@transaction.atomic
def records_exclude(*, curator: Any, records: Iterable[Record], reason: str) -> list[Record]:
    """Leave records of pending contributions out of every snapshot, all or none: ``curator`` must curate each
    record's Datanet, each record's contribution must be pending and no record may already be excluded. A reason is
    required; each exclusion is logged and gets its curation receipt (decision ``exclude``), in this transaction."""
    return _records_mark(curator=curator, records=records, reason=(reason or "").strip(), exclude=True)


@transaction.atomic
def records_restore(*, curator: Any, records: Iterable[Record], reason: str = "") -> list[Record]:
    """Put excluded records of pending contributions back, all or none, under the same rules as ``records_exclude``
    (each record must be excluded now); each restoration is logged and gets its receipt (decision ``restore``)."""
    return _records_mark(curator=curator, records=records, reason=(reason or "").strip(), exclude=False)


def _records_mark(*, curator: Any, records: Iterable[Record], reason: str, exclude: bool) -> list[Record]:
    ids = sorted({r.pk for r in records})
    if not ids:
        raise ValidationError("choose at least one record")
    action = "exclude records" if exclude else "restore records"
    contribution_ids = sorted(set(Record.objects.filter(pk__in=ids).values_list("contribution_id", flat=True)))
    contributions = {c.pk: c for c in Contribution.objects.select_related("datanet").filter(pk__in=contribution_ids)}
    checked: set[int] = set()
    for contribution in contributions.values():
        if contribution.datanet_id not in checked:
            _require_curator(curator, contribution.datanet, action)
            checked.add(contribution.datanet_id)
    if exclude and not reason:
        raise ValidationError({"reason": "say why the record is excluded"})
    # the contributions' rows in id order, then the records' (docs/decisions.md, "One lock order")
    locked = {pk: _locked_pending(contributions[pk], "changed") for pk in contribution_ids}
    rows = list(Record.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
    if len(rows) != len(ids):
        raise ValidationError("some of these records no longer exist")
    for record in rows:
        if record.excluded == exclude:
            state = "already excluded" if exclude else "not excluded"
            raise ValidationError(
                f"record {record.pk} (record {record.position} of #{record.contribution_id}) is {state}"
            )
    now = timezone.now()
    for record in rows:
        record.excluded = exclude
        record.excluded_reason = reason if exclude else ""
        record.excluded_by = curator if exclude else None
        record.excluded_at = now if exclude else None
    Record.objects.bulk_update(rows, ["excluded", "excluded_reason", "excluded_by", "excluded_at"])
    for contribution in locked.values():
        contribution.excluded_count = contribution.records.filter(excluded=True).count()
        contribution.save()
    ContributionDecision.objects.bulk_create(
        ContributionDecision(
            contribution=locked[record.contribution_id],
            actor=curator,
            action="exclude_record" if exclude else "restore_record",
            reason=reason,
            record=record,
            created_at=now,
        )
        for record in rows
    )
    for record in rows:
        receipts.receipts_curation_write(
            curator=curator,
            decision="exclude" if exclude else "restore",
            contributions=[locked[record.contribution_id]],
            reason=reason,
            now=now,
            record=record,
        )
    return rows


# Snapshots


def _below_quality(min_quality: int) -> Q:
    """Contributions under the quality minimum: a score below it, or none at all (nothing shows it meets it)."""
    if min_quality <= 0:
        return Q(pk__in=[])
    return Q(quality_score__lt=min_quality) | Q(quality_score__isnull=True)


def _snapshot_leaves(datanet: Datanet, min_quality: int = 0) -> tuple[array, array, list[bytes], list[str], int, int]:
    """The leaves of a new snapshot, in build order: every accepted, non-excluded, non-revoked record of a
    contribution scoring at least ``min_quality``, first accepted copy of each hash only. Returns record ids,
    contribution ids, hashes (raw), addresses, words and duplicates skipped."""
    rows = Record.objects.filter(
        datanet=datanet, contribution__status=Contribution.Status.ACCEPTED, excluded=False, revoked__isnull=True
    )
    if min_quality > 0:
        rows = rows.filter(contribution__quality_score__gte=min_quality)  # a contribution never scored stays out
    rows = rows.order_by("contribution__reviewed_at", "contribution_id", "position").values_list(
        "id", "contribution_id", "record_hash", "words", "contribution__contributor_id"
    )
    addresses_by_user = selectors.primary_addresses(
        user_ids=datanet.contributions.filter(status=Contribution.Status.ACCEPTED).values("contributor_id")
    )
    record_ids, contribution_ids = array("q"), array("q")
    hashes: list[bytes] = []
    addresses: list[str] = []
    seen: set[bytes] = set()
    words = duplicates = 0
    for record_id, contribution_id, record_hash, record_words, contributor_id in rows.iterator(chunk_size=20_000):
        raw = bytes.fromhex(record_hash[2:])
        if raw in seen:
            duplicates += 1
            continue
        seen.add(raw)
        record_ids.append(record_id)
        contribution_ids.append(contribution_id)
        hashes.append(raw)
        addresses.append(addresses_by_user.get(contributor_id, ZERO_ADDRESS))
        words += record_words
    return record_ids, contribution_ids, hashes, addresses, words, duplicates


def _accepted_unscanned(datanet: Datanet) -> list[Contribution]:
    return list(
        datanet.contributions.filter(status=Contribution.Status.ACCEPTED)
        .exclude(check_status=Contribution.CheckStatus.DONE)
        .order_by("pk")
    )


def _scan_accepted(datanet: Datanet) -> None:
    """Run the checks, here and now, of every accepted contribution of ``datanet`` that has none yet (accepted
    before they ran): outside any transaction, as the checks task does."""
    for contribution in _accepted_unscanned(datanet):
        try:
            contribution_check(contribution_id=contribution.pk)
        except Exception:  # noqa: S112 (logged by the checks; the freeze then refuses and says why)
            continue


def snapshot_freeze(*, datanet: Datanet, user: Any) -> Snapshot:
    """Freeze the Datanet's accepted records now into the next numbered snapshot, with its Merkle root anchored
    through the outbox in this same transaction (one anchor whatever the size).

    Leaf values are ``(record_hash, contributor's primary wallet or the zero address, contribution id)``; a hash
    accepted more than once is in the snapshot once, for the contribution accepted first. Refuses an empty snapshot.

    Every accepted contribution is scanned (personal data, secrets and the other checks) before it can enter a
    snapshot: one accepted before its checks ran is checked first, here; a freeze refuses, saying which and why,
    while one still is not (accepted meanwhile, or its checks failed).

    The governed quality minimum (``ProtocolParameters.minQualityScore``, read by ``ledger.rules.rules_in_force``)
    applies: an accepted contribution whose quality score is below it stays out, and the snapshot records the
    minimum, how many contributions it left out and where the minimum was read. Earlier snapshots never change.
    """
    _require_curator(user, datanet, "freeze a snapshot")
    return _snapshot_freeze(datanet=datanet, user=user)


def _snapshot_freeze(*, datanet: Datanet, user: Any) -> Snapshot:
    _scan_accepted(datanet)
    rules = rules_in_force()
    # The leaves and the tree are built before the write transaction: reading and hashing a large Datanet takes
    # seconds, and on SQLite a write transaction is the database's one write lock. The accepted contributions of a
    # Datanet and its revoked records only ever grow in number (an accepted one is frozen and can't be deleted), so
    # their counts, taken before the leaves are read and again under the lock, say whether the leaves still hold.
    for _ in range(FREEZE_ATTEMPTS):
        accepted = _accepted_count(datanet)
        built = _snapshot_build(datanet, min_quality=int(rules.min_quality_score), rules_source=rules.source)
        snapshot = _snapshot_write(datanet=datanet, user=user, built=built, accepted=accepted)
        if snapshot is not None:
            return snapshot
    raise ValidationError(
        "contributions kept being accepted while the snapshot was built: freeze again in a moment", code="busy"
    )


FREEZE_ATTEMPTS = 3


class _Built(NamedTuple):
    """A snapshot's leaves (``_snapshot_leaves``), its tree and the stored file of the tree's nodes."""

    record_ids: array
    contribution_ids: array
    addresses: list[str]
    words: int
    duplicates: int
    tree: merkle.StandardMerkleTree
    stored: StoredFile
    min_quality: int
    below_quality: int
    rules_source: str


def _accepted_count(datanet: Datanet) -> tuple[int, int]:
    """(accepted contributions, revoked records): both only ever grow, so equal counts mean the same leaves."""
    accepted = datanet.contributions.filter(status=Contribution.Status.ACCEPTED).count()
    return accepted, RevokedRecord.objects.filter(datanet=datanet).count()


def _snapshot_build(datanet: Datanet, *, min_quality: int = 0, rules_source: str = "") -> _Built:
    record_ids, contribution_ids, hashes, addresses, words, duplicates = _snapshot_leaves(datanet, min_quality)
    below = (
        datanet.contributions.filter(status=Contribution.Status.ACCEPTED).filter(_below_quality(min_quality)).count()
    )
    if not record_ids:
        if below:
            raise ValidationError(
                f"{datanet.name!r} has no records to freeze: its {below} accepted contribution"
                f"{'s score' if below != 1 else ' scores'} below the minimum quality score of {min_quality} that "
                "governance set, so none can enter a snapshot",
                code="empty",
            )
        raise ValidationError(
            f"{datanet.name!r} has no accepted records to freeze: accept a contribution first", code="empty"
        )
    tree = merkle.StandardMerkleTree.of(zip(hashes, addresses, contribution_ids, strict=True))
    nodes = tree.nodes()
    stored = store_bytes_file(lambda out: out.writelines(nodes), prefix="snapshots", suffix=".nodes")
    return _Built(
        record_ids, contribution_ids, addresses, words, duplicates, tree, stored, min_quality, below, rules_source
    )


@transaction.atomic
def _snapshot_write(*, datanet: Datanet, user: Any, built: _Built, accepted: tuple[int, int]) -> Snapshot | None:
    """Write the snapshot ``built`` from ``accepted`` (accepted contributions, revoked records), or None when more
    were accepted or revoked since (the caller builds it again). Refuses while an accepted contribution is unscanned."""
    # One freeze at a time per Datanet: numbers are consecutive and a snapshot sees a settled set of decisions.
    # FOR NO KEY UPDATE: uploads and checks that insert rows pointing at the Datanet (a foreign key's KEY SHARE) go on
    # meanwhile; decisions and other freezes wait. The Datanet first, then (by the foreign keys of the leaves, at
    # commit) the contributions: the lock order every writer keeps (docs/decisions.md, "One lock order").
    datanet = Datanet.objects.select_for_update(no_key=True).get(pk=datanet.pk)
    unscanned = _accepted_unscanned(datanet)
    if unscanned:
        failed = [c for c in unscanned if c.check_status == Contribution.CheckStatus.FAILED]
        names = ", ".join(f"#{c.pk}" for c in unscanned[:ERRORS_SHOWN])
        more = f" and {len(unscanned) - ERRORS_SHOWN} more" if len(unscanned) > ERRORS_SHOWN else ""
        why = (
            "their checks failed; run them again or reject them"
            if failed
            else "their checks are running; try again in a minute"
        )
        raise ValidationError(
            f"accepted contributions {names}{more} have not been scanned for personal data and secrets yet, so they "
            f"can't enter a snapshot: {why}",
            code="unscanned",
        )
    if _accepted_count(datanet) != accepted:
        return None
    record_ids, contribution_ids, addresses = built.record_ids, built.contribution_ids, built.addresses
    tree = built.tree
    previous = datanet.snapshots.order_by("-number").first()
    number = (previous.number if previous else 0) + 1
    anchor = anchor_request(
        kind="snapshot",
        subject=anchor_subject("snapshot", datanet.id, number),
        root=tree.root,
        uri=f"datanet:{datanet.slug}/snapshot/{number}",
    )
    snapshot = Snapshot.objects.create(
        datanet=datanet,
        number=number,
        created_by=user,
        previous=previous,
        record_count=len(record_ids),
        contribution_count=len(set(contribution_ids)),
        contributor_count=datanet.contributions.filter(pk__in=set(contribution_ids))
        .values("contributor_id")
        .distinct()
        .count(),
        words=built.words,
        duplicates_skipped=built.duplicates,
        min_quality_score=built.min_quality,
        below_quality_count=built.below_quality,
        rules_source=built.rules_source,
        merkle_root=tree.root,
        tree_path=built.stored.path,
        tree_sha256=built.stored.sha256,
        anchor=anchor,
    )
    batch: list[SnapshotRecord] = []
    for i, record_id in enumerate(record_ids):
        batch.append(
            SnapshotRecord(
                snapshot=snapshot,
                record_id=record_id,
                contribution_id=contribution_ids[i],
                address=addresses[i],
                leaf_index=i,
                tree_index=tree.tree_index(i),
            )
        )
        if len(batch) >= SNAPSHOT_BATCH:
            SnapshotRecord.objects.bulk_create(batch)
            batch = []
    if batch:
        SnapshotRecord.objects.bulk_create(batch)
    if previous is not None:
        diff = selectors.snapshot_diff(snapshot=snapshot)
        Snapshot.objects.filter(pk=snapshot.pk).update(added_count=diff["added"], removed_count=diff["removed"])
        snapshot.added_count, snapshot.removed_count = diff["added"], diff["removed"]
    else:
        Snapshot.objects.filter(pk=snapshot.pk).update(added_count=snapshot.record_count)
        snapshot.added_count = snapshot.record_count
    return snapshot


def _read_nodes(snapshot: Snapshot, indices: Sequence[int]) -> list[bytes]:
    with media_path(snapshot.tree_path).open("rb") as nodes:
        out = []
        for index in indices:
            nodes.seek(index * NODE_BYTES)
            node = nodes.read(NODE_BYTES)
            if len(node) != NODE_BYTES:
                raise ValueError(f"the tree file of snapshot {snapshot.pk} is truncated")
            out.append(node)
        return out


def snapshot_anchor_facts(snapshot: Snapshot) -> dict[str, Any] | None:
    """Where the snapshot's root is anchored (``ledger.proofs.anchor_facts``), its subject named as
    ``snapshot:<datanet id>:<number>`` even on anchors requested before subjects were stored."""
    return anchor_facts_for(snapshot.anchor, anchor_subject("snapshot", snapshot.datanet_id, snapshot.number))


def record_proof(*, snapshot: Snapshot, record: Record) -> dict[str, Any]:
    """The inclusion proof of ``record`` in ``snapshot``: the proof envelope of ``ledger.proofs.tree_proof``
    (artifact ``record``; OpenZeppelin's ``format``, ``leafEncoding``, ``value``, ``treeIndex``, ``leaf``, ``proof``,
    ``root``; the ``anchor`` on chain), plus ``snapshot`` (``id``, ``datanet`` slug, ``datanet_id``, ``number``).
    Built from the stored node file, not a rebuilt tree. Raises ``Record.DoesNotExist`` when the record is not in the
    snapshot; the answer is checked before it is returned."""
    leaf = SnapshotRecord.objects.filter(snapshot=snapshot, record=record).first()
    if leaf is None:
        raise Record.DoesNotExist(f"record {record.pk} is not in snapshot {snapshot.number}")
    siblings, node = [], leaf.tree_index
    while node > 0:
        siblings.append(node + 1 if node % 2 else node - 1)
        node = (node - 1) // 2
    read = _read_nodes(snapshot, [leaf.tree_index, *siblings])
    value = (record.record_hash, leaf.address, leaf.contribution_id)
    proof = ["0x" + n.hex() for n in read[1:]]
    leaf_hash = merkle.leaf_hash(merkle.DEFAULT_LEAF_TYPES, value)
    if leaf_hash != "0x" + read[0].hex() or not merkle.verify(
        snapshot.merkle_root, merkle.DEFAULT_LEAF_TYPES, value, proof
    ):
        raise ValueError(f"the stored tree of snapshot {snapshot.pk} does not prove record {record.pk}")

    return {
        "schema": PROOF_SCHEMA,
        "artifact": "record",
        "format": TREE_FORMAT,
        "leafEncoding": list(merkle.DEFAULT_LEAF_TYPES),
        "value": [record.record_hash, to_checksum_address(leaf.address), str(leaf.contribution_id)],
        "treeIndex": leaf.tree_index,
        "leaf": leaf_hash,
        "proof": proof,
        "root": snapshot.merkle_root,
        "anchor": snapshot_anchor_facts(snapshot),
        "snapshot": {
            "id": snapshot.pk,
            "datanet": snapshot.datanet.slug,
            "datanet_id": snapshot.datanet_id,
            "number": snapshot.number,
        },
    }


def proof_verify_on_chain(*, snapshot: Snapshot, record: Record) -> bool:
    """Ask ``LineageRegistry.verify`` (an eth_call) whether the record's proof leads to the snapshot's anchored root.
    Raises ``ledger.chain.ChainError`` when the chain can't be reached."""
    proof = record_proof(snapshot=snapshot, record=record)
    return chain.verify_on_chain(proof["root"], proof["leaf"], proof["proof"])


def snapshot_rebuild_root(*, snapshot: Snapshot) -> str:
    """The snapshot's Merkle root recomputed from its stored leaves and records (not from the tree file)."""
    rows = (
        SnapshotRecord.objects.filter(snapshot=snapshot)
        .order_by("leaf_index")
        .values_list("record__record_hash", "address", "contribution_id")
    )
    return merkle.StandardMerkleTree.of(list(rows.iterator(chunk_size=20_000))).root


def snapshot_freeze_without_revoked(*, datanet: Datanet, user: Any) -> Snapshot:
    """Freeze a snapshot that leaves out the Datanet's revoked records on behalf of someone who may train on it (the
    owner of a model version trained on them, retraining without them), not only a curator. Only while the
    Datanet's newest snapshot holds revoked records: otherwise that snapshot is the one to train on, and when a
    Datanet gets a new snapshot stays its curators' decision. The snapshot is ``created_by`` the requester and is
    built exactly as ``snapshot_freeze`` builds one (checks, quality minimum, anchor)."""
    if not selectors.user_can_train(user=user, datanet=datanet):
        raise PermissionDenied(f"only those who may train on {datanet.name!r} may have a snapshot frozen for it")
    newest = datanet.snapshots.order_by("-number").first()
    if newest is None:
        raise ValidationError(f"{datanet.name!r} has no snapshot yet: its curators freeze the first one")
    if not selectors.snapshots_revoked_counts(snapshot_ids=[newest.pk]):
        raise ValidationError(
            f"snapshot #{newest.number} of {datanet.name!r} holds no revoked record: train on it, "
            "only a curator freezes a new snapshot"
        )
    return _snapshot_freeze(datanet=datanet, user=user)
