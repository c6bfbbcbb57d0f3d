"""Turn the bytes of an upload into Datanet records, streaming, with a reason for every row refused.

``parse_upload()`` checks what it can from the file name, the record type and (for a zip) the archive's central
directory, then returns an ``UploadParser``: iterate it to get, in file order, a ``ParsedRow`` for every good record
and a ``RowError`` for every bad one. Memory stays bounded whatever the file size: lines are read in chunks, a line
longer than ``ParseLimits.max_line_bytes`` is skipped without being held, and only a 16-byte hash prefix per record
is kept (to flag duplicates). Problems that make the whole file unusable raise ``UploadRejected``, either from
``parse_upload()`` or while iterating, so a consumer should hold no database transaction while it iterates: it
collects the rows and writes them once the whole file has been read (``services.contribution_submit``).

Record types (every value is text; empty or blank text is refused; unknown keys are refused, not dropped, so that
nothing a contributor sent is silently lost):

- ``text``: ``{"text"}``
- ``instruction``: ``{"prompt", "response"}`` and optionally ``"system"``
- ``chat``: ``{"messages": [{"role", "content"}, ...]}``: an optional leading ``system`` message, then turns that
  alternate ``user``, ``assistant``, ..., starting with ``user`` and ending with ``assistant``.
- ``classification``: ``{"text", "label"}``

Formats:

- ``.jsonl``: one JSON object per line; blank lines are skipped. A JSON number is never a valid value, and numbers
  longer than ``max_number_digits`` are refused before conversion.
- ``.csv``: comma-separated, ``"``-quoted, a header row naming the fields (case and surrounding spaces ignored).
  An empty optional cell means the field is absent; CRLF inside a cell becomes LF. Rows are numbered as a
  spreadsheet shows them (the header is row 1). Not allowed for ``chat``: a conversation does not fit in a table.
- ``.txt`` (``text`` only): one record per paragraph, paragraphs being separated by blank lines.
- ``.md`` (``text`` only): one record per top-level section, a section starting at a ``# `` or ``## `` heading
  outside fenced code; text before the first heading is a record of its own.
- ``.zip``: an archive of the above, each entry parsed by its extension. Directories, ``__MACOSX/`` and
  ``.DS_Store`` entries are skipped; any other entry that is not an accepted file refuses the whole archive, as do
  nested archives, unsafe names (``..``, absolute paths, drive letters), symlinks, encrypted entries, too many
  entries, and entries that expand too much (checked from the declared sizes first, then while reading).

Files are UTF-8; a UTF-8 byte-order mark at the start is dropped. In text and CSV files line endings (LF or CRLF) are
not part of the record. Canonical form: ``canonical_json()`` of the record (sorted keys, no whitespace, UTF-8,
strings NFC-normalised), ``record_hash = keccak256(canonical)``. Sizes in messages use binary units (1 MB = 2**20).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import lzma
import re
import shutil
import stat
import tempfile
import time
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from json.encoder import encode_basestring
from typing import BinaryIO, Final, NamedTuple

import orjson
from eth_hash.auto import keccak as _eth_keccak

from common.jsonguard import json_depth
from ledger.merkle import keccak256_hasher, keccak256_object

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB

RECORD_TYPES: Final = ("text", "instruction", "chat", "classification")
ALLOWED_EXTENSIONS: Final = (".jsonl", ".csv", ".txt", ".md", ".zip")
EXTENSIONS_BY_RECORD_TYPE: Final[dict[str, tuple[str, ...]]] = {
    "text": (".jsonl", ".csv", ".txt", ".md", ".zip"),
    "instruction": (".jsonl", ".csv", ".zip"),
    "chat": (".jsonl", ".zip"),
    "classification": (".jsonl", ".csv", ".zip"),
}

_CHUNK_BYTES = 1 * MiB
# A zip entry smaller than this is never called a bomb: tiny, very repetitive files compress far beyond 100:1.
_ZIP_RATIO_FLOOR_BYTES = 1 * MiB
# Generous for names and extra fields, yet it caps what zipfile reads and builds before we can count entries.
_ZIP_DIRECTORY_BYTES_PER_ENTRY = 1 * KiB
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
_ZIP_SKIPPED_NAMES = frozenset({".DS_Store", "Thumbs.db"})
_FILE_KINDS = {".jsonl": "JSON Lines", ".csv": "CSV", ".txt": "text", ".md": "Markdown"}
_BINARY_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"\xfd7zXZ\x00", "an xz-compressed file"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"PAR1", "a Parquet file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\xd0\xcf\x11\xe0", "a Microsoft Office document"),
    (b"\x7fELF", "a program"),
    (codecs.BOM_UTF16_LE, "UTF-16 text (save it as UTF-8)"),
    (codecs.BOM_UTF16_BE, "UTF-16 text (save it as UTF-8)"),
)
# A JSON string, in unrolled-loop form. The closing quote is optional so that a match, once started, can't fail:
# retrying from every later quote of an unterminated string full of \" escapes would take quadratic time.
_JSON_STRING_BYTES = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?')
_CHAT_ROLES = frozenset({"system", "user", "assistant"})
_MESSAGE_KEYS = frozenset({"role", "content"})
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on what one upload may make the parser read, hold or report.

    ``max_line_bytes`` is larger than ``max_record_bytes`` because ``\\u`` escapes (the default of Python's
    ``json.dumps``) can double a record's size on the line; a longer line is skipped unread, a shorter one is parsed
    and then held to ``max_record_bytes`` (measured on the canonical bytes). The zip limits hold per archive.
    ``max_expanded_bytes`` and ``max_seconds`` hold for the whole upload, whatever its format: every byte the
    parser reads counts (a zip's entries as they expand, blank and whitespace-only lines too), and so does every
    second from the first read; each is checked at every chunk read, so a file of nothing but blank lines is
    stopped as surely as one of records.
    """

    max_record_bytes: int = 1 * MiB
    max_line_bytes: int = 2 * MiB + 64 * KiB
    max_json_depth: int = 64
    max_number_digits: int = 100
    max_records: int = 2_000_000  # duplicate detection holds ~120 bytes per record
    max_errors_reported: int = 1000
    max_zip_entries: int = 10_000
    max_zip_uncompressed_bytes: int = 1 * GiB
    max_zip_ratio: int = 100
    max_expanded_bytes: int = 1 * GiB
    max_seconds: float = 600.0

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 1:
                raise ValueError(f"ParseLimits.{name} must be positive")


DEFAULT_LIMITS: Final = ParseLimits()


class UploadRejected(Exception):
    """The upload as a whole cannot be used; ``message`` says why, for the contributor, with a location if any.

    ``code`` is stable, for code: extension, binary, encoding, empty, csv, columns, too_large, too_many_records,
    too_slow, zip, zip_bomb.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ParsedRow(NamedTuple):
    """One good record. ``line`` is where it starts: a line number, or for CSV a row number (header = row 1)."""

    source: str  # the file name, or the entry name inside the archive
    line: int
    record: dict[str, object]  # NFC-normalised, only the known fields
    canonical: bytes
    record_hash: str  # 0x-prefixed keccak256 of canonical
    words: int  # whitespace-separated words over all text values (chat roles excluded)
    size: int  # len(canonical)


class RowError(NamedTuple):
    """One refused row: ``message`` is for a person and starts with the location (``line 12: missing field ...``)."""

    source: str
    line: int
    code: str  # stable, for code: invalid_json, too_deep, number_too_long, shape, missing_field, unknown_field,
    # wrong_type, empty_field, nul_character, bad_surrogate, chat_order, too_large, columns, csv, duplicate
    message: str


def canonical_json(obj: object) -> bytes:
    """Return the canonical JSON bytes of ``obj``: sorted keys, no insignificant whitespace, UTF-8 (not escaped),
    every string (keys included) NFC-normalised. Equal data gives equal bytes however it was written.

    Raises ``TypeError`` for values JSON can't carry (or non-text keys) and ``ValueError`` for NaN or infinity,
    unpaired surrogates, or two keys that become equal once normalised.
    """
    return _CANONICAL_ENCODER.encode(_nfc(obj)).encode()


def record_hash(canonical: bytes) -> str:
    """Return ``keccak256(canonical)`` as 0x-prefixed lowercase hex, the form the ledger stores."""
    return "0x" + _eth_keccak(canonical).hex()


def parse_upload(
    stream: BinaryIO, *, filename: str, record_type: str, limits: ParseLimits = DEFAULT_LIMITS
) -> UploadParser:
    """Check the upload's name, type and (for a zip) directory now, and return a parser that reads it lazily.

    ``stream`` must stay open while the parser is iterated; a zip is spooled to a temporary file if ``stream`` can't
    seek. Raises ``UploadRejected`` for an extension that isn't accepted for ``record_type`` or an unsafe archive,
    and ``ValueError`` for an unknown ``record_type`` (a programming error: the Datanet declares it).
    """
    return UploadParser(stream, filename=filename, record_type=record_type, limits=limits)


class UploadParser:
    """Iterable, once, over ``ParsedRow | RowError`` in file order; counts what it has seen so far.

    Only the first ``limits.max_errors_reported`` errors are yielded; ``errors_omitted`` counts the rest.
    Iteration raises ``UploadRejected`` when it meets a whole-file problem, including an upload with no rows.
    """

    def __init__(self, stream: BinaryIO, *, filename: str, record_type: str, limits: ParseLimits) -> None:
        if record_type not in RECORD_TYPES:
            raise ValueError(f"unknown record type {record_type!r}; expected one of {', '.join(RECORD_TYPES)}")
        self.filename = filename
        self.record_type = record_type
        self.limits = limits
        self.record_count = 0
        self.error_count = 0
        self.errors_omitted = 0
        self.duplicate_count = 0
        self.expanded_bytes = 0  # read so far, every entry of an archive as it expands
        self._deadline = 0.0  # time.monotonic() past which reading stops; set when iteration starts
        self._stream = stream
        self._extension = _extension_allowed(filename, record_type, prefix="")
        self._sources: list[_Source] = []
        self._seen: dict[bytes, int] = {}
        self._started = False
        self._header_only_csv = False
        self._check = _RECORD_CHECKS[record_type]
        # one hashing state per parser: the fast hasher must not be shared between threads
        self._keccak256 = keccak256_hasher()
        self._finish, self._finish_bytes = self._make_finish()
        self._zip: zipfile.ZipFile | None = None
        self._zip_entries: list[tuple[zipfile.ZipInfo, str]] = []
        self._spool: BinaryIO | None = None
        if self._extension == ".zip":
            self._open_zip()

    def __iter__(self) -> Iterator[ParsedRow | RowError]:
        if self._started:
            raise RuntimeError("an upload can be parsed only once")
        self._started = True
        self._deadline = time.monotonic() + self.limits.max_seconds
        if self._zip is None:
            source = self._add_source(self.filename, self._extension, prefix="")
            yield from self._parse_file(source, self._stream.read)
        else:
            yield from self._parse_zip(self._zip)
        if self.record_count == 0 and self.error_count == 0:
            if self._zip is not None:
                raise UploadRejected(f"{self.filename}: the archive holds no records", code="empty")
            if self._header_only_csv:
                raise UploadRejected("the CSV file has a header row but no records", code="empty")
            raise UploadRejected("the file is empty", code="empty")

    # Whole files

    def _parse_file(self, source: _Source, read: Callable[[int], bytes]) -> Iterator[ParsedRow | RowError]:
        lines = _LineReader(self._budgeted(read), self.limits.max_line_bytes, source)
        if source.extension == ".jsonl":
            return self._parse_jsonl(source, lines)
        if source.extension == ".csv":
            return self._parse_csv(source, lines)
        if source.extension == ".txt":
            return self._parse_txt(source, lines)
        return self._parse_md(source, lines)

    def _budgeted(self, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
        """``read``, counting what it returns against ``max_expanded_bytes`` and the clock against ``max_seconds``."""
        limits = self.limits
        clock = time.monotonic

        def counted(size: int) -> bytes:
            data = read(size)
            self.expanded_bytes += len(data)
            if self.expanded_bytes > limits.max_expanded_bytes:
                raise UploadRejected(
                    f"{self.filename}: the upload holds more than {_size(limits.max_expanded_bytes)} of text (blank "
                    "lines included, and a zip's entries once expanded); split it into smaller uploads",
                    code="too_large",
                )
            if clock() > self._deadline:
                raise UploadRejected(
                    f"{self.filename}: reading the upload took more than {limits.max_seconds:g} s "
                    f"({_size(self.expanded_bytes)} read), the most one upload may take; split it into smaller uploads",
                    code="too_slow",
                )
            return data

        return counted

    def _parse_jsonl(self, source: _Source, lines: _LineReader) -> Iterator[ParsedRow | RowError]:
        # The hot loop of the module: names are bound locally and the common path has no extra calls.
        limits = self.limits
        check = self._check
        finish = self._finish
        error = self._error
        decoder = _json_decoder(limits.max_number_digits)
        scan = decoder.scan_once
        decode = decoder.decode
        max_depth = limits.max_json_depth
        # The fast path: orjson parses the line and a fast check takes the record only if it is good and the exact
        # path below would have taken it, with the same result; anything else (invalid JSON, a bad record, a number
        # anywhere) goes on to the exact path, so every error is the one it always was.
        fast = _fast_check(self.record_type, limits)
        loads = orjson.loads
        finish_bytes = self._finish_bytes
        # what finish_bytes() uses, bound here for its inlined common case below
        max_bytes = limits.max_record_bytes
        max_records = limits.max_records
        new_keccak = keccak256_object()
        keccak256 = self._keccak256
        seen_setdefault = self._seen.setdefault
        packed_source = source.index << 40
        source_name = source.name
        new_row = partial(tuple.__new__, ParsedRow)
        number = 0
        offset = 0
        for batch in lines:
            for raw in batch:
                number += 1
                if raw.__class__ is int:
                    offset += raw + 1
                    problem = f"line is {_size(raw)} long; a record may be at most {_size(limits.max_record_bytes)}"
                    if item := error(source, number, "too_large", problem):
                        yield item
                    continue
                start = offset
                offset += len(raw) + 1
                if not raw or raw.isspace():
                    continue
                if fast is not None:
                    try:
                        obj = loads(raw)
                    except ValueError:  # orjson.JSONDecodeError is one
                        pass
                    else:
                        if (good := fast(obj, raw)) is not None:
                            record, data, words = good
                            # finish_bytes() inlined for a new record of allowed size, the common case; anything
                            # else (too large, a duplicate) goes through it, which says why.
                            size = len(data)
                            if size <= max_bytes:
                                digest = new_keccak(data).digest() if new_keccak is not None else keccak256(data)
                                packed = packed_source | number
                                if seen_setdefault(digest[:16], packed) == packed:
                                    self.record_count += 1
                                    if self.record_count > max_records:
                                        raise UploadRejected(
                                            f"the upload has more than {max_records:,} records, the most one upload "
                                            "may hold",
                                            code="too_many_records",
                                        )
                                    yield new_row((source_name, number, record, data, "0x" + digest.hex(), words, size))
                                    continue
                            if item := finish_bytes(source, number, record, data, words):
                                yield item
                            continue
                try:
                    text = raw.decode()
                except UnicodeDecodeError as exc:
                    raise _not_utf8(source, number, lines.skipped_bom + start, raw, exc) from None
                try:
                    # Counting brackets is cheap (and cheaper on bytes than on wide strings); the exact scan runs
                    # only when there could be too many. Done before parsing, so depth never reaches C recursion.
                    if raw.count(b"{") + raw.count(b"[") > max_depth and json_depth(raw) > max_depth:
                        raise _Invalid("too_deep", f"JSON is nested more than {max_depth} levels deep")
                    try:
                        obj, end = scan(text, 0)
                        if end != len(text) and text[end:].strip(" \t\r"):  # JSON's whitespace, no more
                            raise StopIteration
                    except StopIteration:
                        obj = decode(text)  # the slow path raises a JSONDecodeError that says where
                    record, canonical, words = check(obj)
                except _Invalid as exc:
                    if item := error(source, number, exc.code, exc.problem):
                        yield item
                    continue
                except json.JSONDecodeError as exc:
                    if item := error(source, number, "invalid_json", f"not valid JSON: {exc.msg} (column {exc.colno})"):
                        yield item
                    continue
                except RecursionError:  # not reached with a sane max_json_depth; kept so no input can crash us
                    if item := error(source, number, "too_deep", "JSON is nested too deeply"):
                        yield item
                    continue
                if item := finish(source, number, record, canonical, words):
                    yield item

    def _parse_csv(self, source: _Source, lines: _LineReader) -> Iterator[ParsedRow | RowError]:
        max_row = self.limits.max_line_bytes
        # csv's own field limit (128 Ki characters by default, process-wide) would refuse legitimate records; our
        # line reader already bounds a row's size, so raising it costs no safety. It is only ever raised.
        if csv.field_size_limit() < max_row:
            csv.field_size_limit(max_row)
        progress = _CsvProgress()

        def feed() -> Iterator[str]:
            for batch in lines:
                for raw in batch:
                    progress.lines += 1
                    if raw.__class__ is int:
                        raise UploadRejected(
                            f"{source.at_line(progress.lines)}: the line is {_size(raw)} long; a CSV row may be at "
                            f"most {_size(max_row)}",
                            code="too_large",
                        )
                    start = progress.offset
                    progress.offset += len(raw) + 1
                    progress.row_bytes += len(raw) + 1
                    if progress.row_bytes > max_row:
                        raise UploadRejected(
                            f"{source.at_line(progress.row_start)}: the row starting here runs past {_size(max_row)}; "
                            'a quoted field is probably never closed (a closing " is missing)',
                            code="csv",
                        )
                    try:
                        text = raw.decode()
                    except UnicodeDecodeError as exc:
                        raise _not_utf8(source, progress.lines, lines.skipped_bom + start, raw, exc) from None
                    yield text + "\n"

        rows = csv.reader(feed(), strict=True)
        header: list[str] | None = None
        required: frozenset[str] = frozenset()
        row_number = 0
        while True:
            progress.row_start = progress.lines + 1
            progress.row_bytes = 0
            try:
                cells = next(rows)
            except StopIteration:
                break
            except csv.Error as exc:
                row_number += 1
                if "unexpected end of data" in str(exc):
                    raise UploadRejected(
                        f"{source.where(row_number)}, starting on line {progress.row_start}: a quoted field is never "
                        'closed (a closing " is missing)',
                        code="csv",
                    ) from None
                if item := self._error(source, row_number, "csv", f"not valid CSV: {exc}"):
                    yield item
                continue
            row_number += 1
            if not cells or not "".join(cells).strip():  # blank lines, and the ",,," rows spreadsheets leave
                continue
            if header is None:
                header, required = _csv_header(cells, self.record_type, source, row_number)
                continue
            if len(cells) != len(header):
                problem = f"has {_count(len(cells), 'value')}; the header has {_count(len(header), 'column')}"
                if item := self._error(source, row_number, "columns", problem):
                    yield item
                continue
            obj = {}
            for name, value in zip(header, cells, strict=True):
                if value or name in required:
                    obj[name] = value.replace("\r\n", "\n") if "\r" in value else value
            try:
                record, canonical, words = self._check(obj)
            except _Invalid as exc:
                if item := self._error(source, row_number, exc.code, exc.problem):
                    yield item
                continue
            if item := self._finish(source, row_number, record, canonical, words):
                yield item
        if header is not None and self._zip is None and self.record_count == 0 and self.error_count == 0:
            self._header_only_csv = True

    def _parse_txt(self, source: _Source, lines: _LineReader) -> Iterator[ParsedRow | RowError]:
        block = _TextBlock(self.limits.max_record_bytes, source, lines)
        number = 0
        for batch in lines:
            for raw in batch:
                number += 1
                if raw.__class__ is not int and (not raw or raw.isspace()):
                    block.skip(raw)
                    if item := self._flush(source, block, "paragraph"):
                        yield item
                    continue
                block.add(raw, number)
        if item := self._flush(source, block, "paragraph"):
            yield item

    def _parse_md(self, source: _Source, lines: _LineReader) -> Iterator[ParsedRow | RowError]:
        block = _TextBlock(self.limits.max_record_bytes, source, lines)
        fence = b""
        number = 0
        for batch in lines:
            for raw in batch:
                number += 1
                if raw.__class__ is int:
                    block.add(raw, number)
                    continue
                stripped = raw.lstrip(b" ")
                if stripped[:3] in (b"```", b"~~~") and len(raw) - len(stripped) <= 3:
                    # A fence closes with the character that opened it, and nothing else on the line.
                    if not fence:
                        fence = stripped[:1]
                    elif stripped[:1] == fence and not stripped.rstrip().strip(fence):
                        fence = b""
                elif (
                    not fence
                    and (raw.startswith((b"# ", b"## ")) or raw.rstrip() in (b"#", b"##"))
                    and (item := self._flush(source, block, "section"))  # a heading ends the section before it
                ):
                    yield item
                if block.start or (raw and not raw.isspace()):
                    block.add(raw, number)
                else:
                    block.skip(raw)
        if item := self._flush(source, block, "section"):
            yield item

    def _flush(self, source: _Source, block: _TextBlock, what: str) -> ParsedRow | RowError | None:
        if block.too_large:
            problem = f"{what} is {_size(block.size)}; a record may be at most {_size(self.limits.max_record_bytes)}"
            item: ParsedRow | RowError | None = self._error(source, block.start, "too_large", problem)
        else:
            text = block.text()
            if not text:
                block.clear()
                return None
            try:
                record, canonical, words = self._check({"text": text})
            except _Invalid as exc:
                item = self._error(source, block.start, exc.code, exc.problem)
            else:
                item = self._finish(source, block.start, record, canonical, words)
        block.clear()
        return item

    # Rows

    def _make_finish(
        self,
    ) -> tuple[
        Callable[[_Source, int, dict[str, object], str, int], ParsedRow | RowError | None],
        Callable[[_Source, int, dict[str, object], bytes, int], ParsedRow | RowError | None],
    ]:
        """The last step for every record (size, hash, duplicate check), as closures over what they need: they run
        once per record, and locals are faster than attribute lookups. The first takes the canonical text, the
        second its UTF-8 bytes (which the fast path makes directly)."""
        seen = self._seen
        keccak256 = self._keccak256
        error = self._error
        max_bytes = self.limits.max_record_bytes
        max_records = self.limits.max_records
        parser = self
        # What ParsedRow._make does, without its Python frame: cheaper than the generated __new__ and than _make.
        new_row = partial(tuple.__new__, ParsedRow)

        def finish(
            source: _Source, number: int, record: dict[str, object], canonical: str, words: int
        ) -> ParsedRow | RowError | None:
            try:
                data = canonical.encode()
            except UnicodeEncodeError:
                return error(source, number, "bad_surrogate", "contains an unpaired surrogate (a lone \\ud8xx escape)")
            return finish_bytes(source, number, record, data, words)

        def finish_bytes(
            source: _Source, number: int, record: dict[str, object], data: bytes, words: int
        ) -> ParsedRow | RowError | None:
            size = len(data)
            if size > max_bytes:
                return error(
                    source, number, "too_large", f"record is {_size(size, max_bytes)}; the limit is {_size(max_bytes)}"
                )
            digest = keccak256(data)
            # A 128-bit prefix identifies a record as well as the whole hash here and halves what we hold per record.
            packed = (source.index << 40) | number
            first = seen.setdefault(digest[:16], packed)
            if first != packed:
                parser.duplicate_count += 1
                return error(source, number, "duplicate", f"duplicate of {parser._describe(first, source)}")
            parser.record_count += 1
            if parser.record_count > max_records:
                raise UploadRejected(
                    f"the upload has more than {max_records:,} records, the most one upload may hold",
                    code="too_many_records",
                )
            return new_row((source.name, number, record, data, "0x" + digest.hex(), words, size))

        return finish, finish_bytes

    def _error(self, source: _Source, number: int, code: str, problem: str) -> RowError | None:
        self.error_count += 1
        if self.error_count > self.limits.max_errors_reported:
            self.errors_omitted += 1
            return None
        return RowError(source.name, number, code, f"{source.where(number)}: {problem}")

    def _describe(self, packed: int, current: _Source) -> str:
        source = self._sources[packed >> 40]
        number = packed & ((1 << 40) - 1)
        if source is current:
            return f"{source.unit} {number}"
        return f"{source.name} {source.unit} {number}"

    def _add_source(self, name: str, extension: str, *, prefix: str) -> _Source:
        source = _Source(len(self._sources), name, extension, prefix)
        self._sources.append(source)
        return source

    # Archives

    def _open_zip(self) -> None:
        limits = self.limits
        label = self.filename
        stream = self._stream
        if not stream.seekable():
            self._spool = stream = tempfile.TemporaryFile()  # noqa: SIM115 (closed after the archive is parsed)
            shutil.copyfileobj(self._stream, stream, _CHUNK_BYTES)
        archive_size = stream.seek(0, 2)
        entries, directory_size = _zip_directory_counts(stream, archive_size, label)
        if entries > limits.max_zip_entries:
            raise UploadRejected(
                f"{label}: the archive has {entries:,} entries; at most {limits.max_zip_entries:,} are allowed",
                code="zip",
            )
        if directory_size > limits.max_zip_entries * _ZIP_DIRECTORY_BYTES_PER_ENTRY:
            raise UploadRejected(f"{label}: the archive's directory is {_size(directory_size)}, too large", code="zip")
        stream.seek(0)
        try:
            archive = zipfile.ZipFile(stream)
        except (zipfile.BadZipFile, ValueError, EOFError) as exc:
            raise UploadRejected(f"{label}: not a valid zip archive ({exc})", code="zip") from None
        infos = archive.infolist()
        if len(infos) > limits.max_zip_entries:  # the end record under-reported them
            raise UploadRejected(
                f"{label}: the archive has {len(infos):,} entries; at most {limits.max_zip_entries:,} are allowed",
                code="zip",
            )
        names: set[str] = set()
        total_size = total_compressed = 0
        for info in infos:
            name = info.filename
            where = f"{label}:{name}"
            _check_zip_name(name, where)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UploadRejected(f"{where}: symbolic links are not allowed in an archive", code="zip")
            if info.is_dir() or name.startswith("__MACOSX/") or name.rsplit("/", 1)[-1] in _ZIP_SKIPPED_NAMES:
                continue
            if name in names:
                raise UploadRejected(f"{where}: the archive holds two entries with this name", code="zip")
            names.add(name)
            if name.lower().endswith(".zip"):
                raise UploadRejected(f"{where}: archives inside an archive are not accepted", code="zip")
            extension = _extension_allowed(name, self.record_type, prefix=f"{where}: ")
            if info.flag_bits & 0x1:
                raise UploadRejected(f"{where}: encrypted entries are not accepted", code="zip")
            if info.compress_type not in _ZIP_METHODS:
                raise UploadRejected(f"{where}: unsupported compression method {info.compress_type}", code="zip")
            _check_expansion(info.file_size, info.compress_size, limits.max_zip_ratio, where)
            total_size += info.file_size
            total_compressed += info.compress_size
            self._zip_entries.append((info, extension))
        if total_size > limits.max_zip_uncompressed_bytes:
            raise UploadRejected(
                f"{label}: the archive expands to {_size(total_size)}; at most "
                f"{_size(limits.max_zip_uncompressed_bytes)} is allowed",
                code="zip_bomb",
            )
        _check_expansion(total_size, total_compressed, limits.max_zip_ratio, label)
        if total_compressed > archive_size:  # entries share compressed data: the overlapping-entries zip bomb
            raise UploadRejected(f"{label}: the archive's entries overlap", code="zip_bomb")
        if not self._zip_entries:
            raise UploadRejected(
                f"{label}: the archive holds no {_extension_list(self.record_type)} files", code="empty"
            )
        self._zip = archive

    def _parse_zip(self, archive: zipfile.ZipFile) -> Iterator[ParsedRow | RowError]:
        limits = self.limits
        totals = _ZipTotals()
        with archive, self._spool or contextlib.nullcontext():
            for info, extension in self._zip_entries:
                where = f"{self.filename}:{info.filename}"
                source = self._add_source(info.filename, extension, prefix=f"{where} ")
                try:
                    with archive.open(info) as entry:
                        yield from self._parse_file(source, _EntryReader(entry, info, where, limits, totals).read)
                except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, NotImplementedError) as exc:
                    raise UploadRejected(f"{where}: the archive is damaged ({exc})", code="zip") from None


class _ZipTotals:
    __slots__ = ("expanded",)

    def __init__(self) -> None:
        self.expanded = 0


class _EntryReader:
    """Reads a zip entry, holding the bytes it actually produces to the limits its declared sizes were held to:
    headers can lie."""

    __slots__ = ("_entry", "_info", "_limits", "_read", "_totals", "_where")

    def __init__(
        self, entry: BinaryIO, info: zipfile.ZipInfo, where: str, limits: ParseLimits, totals: _ZipTotals
    ) -> None:
        self._entry = entry
        self._info = info
        self._where = where
        self._limits = limits
        self._totals = totals
        self._read = 0

    def read(self, size: int) -> bytes:
        data = self._entry.read(size)
        self._read += len(data)
        self._totals.expanded += len(data)
        if self._read > self._info.file_size or self._totals.expanded > self._limits.max_zip_uncompressed_bytes:
            raise UploadRejected(f"{self._where}: the entry is larger than its header says", code="zip_bomb")
        _check_expansion(self._read, self._info.compress_size, self._limits.max_zip_ratio, self._where)
        return data


class _Source:
    """One file being parsed (the upload, or an entry of it), and how messages name places in it."""

    __slots__ = ("extension", "index", "name", "prefix", "unit")

    def __init__(self, index: int, name: str, extension: str, prefix: str) -> None:
        self.index = index
        self.name = name
        self.extension = extension
        self.prefix = prefix  # "" for a lone file, "archive.zip:inner/file.csv " for an entry
        self.unit = "row" if extension == ".csv" else "line"

    def where(self, number: int) -> str:
        return f"{self.prefix}{self.unit} {number}"

    def at_line(self, number: int) -> str:
        return f"{self.prefix}line {number}"


class _LineReader:
    """Iterates over batches of lines (bytes without the newline) read in chunks, in bounded memory.

    A line longer than ``max_line`` comes as an ``int``, its length, and is never held whole. Raises
    ``UploadRejected`` for NUL bytes and for files that are recognisably binary.
    """

    def __init__(self, read: Callable[[int], bytes], max_line: int, source: _Source) -> None:
        self._read = read
        self._max_line = max_line
        self._source = source
        self.skipped_bom = 0  # added to offsets in messages, which count from the file's first byte

    def __iter__(self) -> Iterator[list[bytes | int]]:
        read = self._read
        max_line = self._max_line
        # Lines after the first in a chunk are shorter than the chunk, so only the first can be too long.
        chunk_size = min(_CHUNK_BYTES, max_line)
        pending = b""
        skipping = -1  # length so far of an over-long line being skipped
        offset = 0
        lines_done = 0
        chunk = read(chunk_size)
        if chunk:
            chunk = self._check_start(chunk) or read(chunk_size)
            offset = self.skipped_bom
        while chunk:
            nul = chunk.find(b"\x00")
            if nul >= 0:
                line = lines_done + 1 + chunk.count(b"\n", 0, nul)
                raise UploadRejected(
                    f"{self._source.at_line(line)}, byte {offset + nul}: the file contains a NUL byte; "
                    f"a {_FILE_KINDS[self._source.extension]} file holds text only",
                    code="binary",
                )
            offset += len(chunk)
            batch: list[bytes | int] = chunk.split(b"\n")  # type: ignore[assignment]
            first = len(batch[0])  # type: ignore[arg-type]
            if skipping >= 0:
                skipping += first
                if len(batch) == 1:
                    chunk = read(chunk_size)
                    continue
                batch[0] = skipping
                skipping = -1
            elif pending:
                joined = len(pending) + first
                if joined <= max_line:
                    batch[0] = pending + batch[0]  # type: ignore[operator]
                elif len(batch) == 1:  # still no newline: stop holding this line
                    skipping = joined
                    pending = b""
                    chunk = read(chunk_size)
                    continue
                else:
                    batch[0] = joined
            # The last piece is at most one chunk, so never over the limit by itself.
            pending = batch.pop()  # type: ignore[assignment]
            if batch:
                lines_done += len(batch)
                yield batch
            chunk = read(chunk_size)
        if skipping >= 0:
            yield [skipping]
        elif pending:
            yield [pending]

    def _check_start(self, chunk: bytes) -> bytes:
        for signature, what in _BINARY_SIGNATURES:
            if chunk.startswith(signature):
                kind = _FILE_KINDS[self._source.extension]
                raise UploadRejected(f"{self._source.prefix}this looks like {what}, not a {kind} file", code="binary")
        if chunk.startswith(codecs.BOM_UTF8):
            self.skipped_bom = len(codecs.BOM_UTF8)
            return chunk[len(codecs.BOM_UTF8) :]
        return chunk


class _TextBlock:
    """The paragraph or section being collected from a text file, held only up to the record size limit."""

    __slots__ = ("limit", "lines", "offset", "reader", "size", "source", "start", "too_large")

    def __init__(self, limit: int, source: _Source, reader: _LineReader) -> None:
        self.limit = limit
        self.source = source
        self.reader = reader
        self.offset = 0  # of the next line, for encoding errors
        self.clear()

    def clear(self) -> None:
        self.lines: list[str] = []
        self.start = 0
        self.size = 0
        self.too_large = False

    def skip(self, raw: bytes) -> None:
        self.offset += len(raw) + 1

    def add(self, raw: bytes | int, number: int) -> None:
        if not self.start:
            self.start = number
        length = raw if raw.__class__ is int else len(raw)  # type: ignore[arg-type]
        offset = self.offset
        self.offset += length + 1  # type: ignore[operator]
        self.size += length + 1  # type: ignore[operator]
        if raw.__class__ is int or self.size > self.limit:
            self.too_large = True
            self.lines = []
        if self.too_large:
            return
        try:
            self.lines.append(raw.decode().removesuffix("\r"))  # type: ignore[union-attr]
        except UnicodeDecodeError as exc:
            raise _not_utf8(self.source, number, self.reader.skipped_bom + offset, raw, exc) from None  # type: ignore[arg-type]

    def text(self) -> str:
        lines = self.lines
        while lines and not lines[-1].strip():
            lines.pop()
        return "\n".join(lines)


class _CsvProgress:
    __slots__ = ("lines", "offset", "row_bytes", "row_start")

    def __init__(self) -> None:
        self.lines = 0
        self.offset = 0
        self.row_start = 1
        self.row_bytes = 0


class _Invalid(Exception):
    """A row's content breaks a rule; ``problem`` is the human half of the message."""

    def __init__(self, code: str, problem: str) -> None:
        self.code = code
        self.problem = problem


# Record checks: each takes the decoded object and returns (record, canonical JSON text, words) or raises _Invalid.
# They build the canonical text directly, in sorted key order, which is several times faster than json.dumps with
# sort_keys; tests hold it equal to canonical_json(record).


def _field_text(name: str, value: object) -> str:
    """``value`` as record text, NFC-normalised; raises ``_Invalid`` if it isn't usable text."""
    if value.__class__ is not str or not value or value.isspace() or "\x00" in value:  # type: ignore[operator]
        raise _field_problem(name, value)
    if not value.isascii() and not unicodedata.is_normalized("NFC", value):  # type: ignore[union-attr]
        return unicodedata.normalize("NFC", value)  # type: ignore[arg-type]
    return value  # type: ignore[return-value]


def _field_problem(name: str, value: object) -> _Invalid:
    if value is _MISSING:
        return _Invalid("missing_field", f'missing field "{name}"')
    if value.__class__ is not str:
        return _Invalid("wrong_type", f'field "{name}" must be text, got {_kind(value)}')
    if "\x00" in value:  # type: ignore[operator]
        return _Invalid("nul_character", f'field "{name}" contains a NUL character (\\u0000)')
    return _Invalid("empty_field", f'field "{name}" is empty')


def _flat_check(record_type: str, fields: tuple[tuple[str, bool], ...]) -> Callable[[object], tuple]:
    """A check for a record of text fields; ``fields`` are (name, required) pairs."""
    allowed = frozenset(name for name, _ in fields)
    required = sorted(name for name, needed in fields if needed)
    optional = sorted(name for name, needed in fields if not needed)
    described = _names(required) + (f" and optionally {_names(optional)}" if optional else "")
    # Sorted, so that the canonical text comes out with its keys in order.
    spec = tuple((name, needed, f'"{name}":') for name, needed in sorted(fields))

    def check(
        obj: object,
        is_normalized: Callable[[str, str], bool] = unicodedata.is_normalized,
        normalize: Callable[[str, str], str] = unicodedata.normalize,
        encode: Callable[[str], str] = encode_basestring,
    ) -> tuple[dict[str, object], str, int]:
        if obj.__class__ is not dict:
            raise _Invalid("shape", f"expected a JSON object, got {_kind(obj)}")
        if not obj.keys() <= allowed:  # type: ignore[attr-defined]
            unknown = sorted(obj.keys() - allowed)  # type: ignore[attr-defined]
            raise _Invalid(
                "unknown_field",
                f"unknown {_plural(len(unknown), 'field')} {_names(unknown)} ({record_type} records have {described})",
            )
        parts = []
        words = 0
        for name, needed, prefix in spec:
            value = obj.get(name, _MISSING)  # type: ignore[attr-defined]
            # _field_text inlined: this runs for every field of every record.
            if value.__class__ is not str or not value or value.isspace() or "\x00" in value:
                if value is _MISSING and not needed:
                    continue
                raise _field_problem(name, value)
            if not value.isascii() and not is_normalized("NFC", value):
                value = obj[name] = normalize("NFC", value)  # type: ignore[index]
            parts.append(prefix + encode(value))
            words += len(value.split())
        # obj now holds exactly the record: only known keys (checked above), values normalised in place.
        return obj, "{" + ",".join(parts) + "}", words  # type: ignore[return-value]

    return check


def _fast_check(record_type: str, limits: ParseLimits) -> Callable[[object, bytes], tuple | None] | None:
    """The JSON Lines fast path's check for ``record_type``: it takes what orjson made of the line ``raw`` and returns
    (record, canonical bytes, words) for a good record that the exact path would take, with the same result, or None
    where the exact path must decide (every bad record included). None for no fast path."""
    if record_type == "chat":
        # A good chat record is nested 3 deep: with a lower limit the exact path refuses it.
        return _chat_fast_check if limits.max_json_depth >= 3 else None
    # See the end of fast_check: a value hidden by a repeated key and longer than this can't have mattered.
    slack = min(limits.max_number_digits, limits.max_json_depth, 64)
    return _flat_fast_check(_FIELDS[record_type], slack)


def _flat_fast_check(fields: tuple[tuple[str, bool], ...], slack: int) -> Callable[[object, bytes], tuple | None]:
    spec = tuple(sorted(fields))
    dumps = orjson.dumps
    sort_keys = orjson.OPT_SORT_KEYS

    def fast_check(
        obj: object,
        raw: bytes,
        is_normalized: Callable[[str, str], bool] = unicodedata.is_normalized,
        normalize: Callable[[str, str], str] = unicodedata.normalize,
    ) -> tuple[dict[str, object], bytes, int] | None:
        if obj.__class__ is not dict:
            return None
        # A plain line, ASCII without escapes, gives printable ASCII text (JSON strings can't hold raw control
        # characters): no NUL, already NFC, and " " its only whitespace.
        plain = raw.isascii() and raw.find(b"\\") < 0
        found = words = 0
        normalized = False
        for name, needed in spec:
            value = obj.get(name, _MISSING)  # type: ignore[attr-defined]
            if value.__class__ is not str or not value:
                if value is _MISSING and not needed:
                    continue
                return None
            found += 1
            if plain and value.strip(" ") is value and "  " not in value:  # type: ignore[attr-defined, operator]
                # Single spaces, none at either end: one word more than spaces (len(value.split()), cheaper).
                words += value.count(" ") + 1  # type: ignore[attr-defined]
                continue
            if "\x00" in value:  # type: ignore[operator]
                return None
            # No words means only whitespace: str.split() and str.isspace() agree on what whitespace is.
            count = len(value.split())  # type: ignore[attr-defined]
            if not count:
                return None
            words += count
            if not value.isascii() and not is_normalized("NFC", value):  # type: ignore[attr-defined]
                obj[name] = normalize("NFC", value)  # type: ignore[index]
                normalized = True
        if found != len(obj):  # type: ignore[arg-type]
            return None  # an unknown key
        # Only known keys, all text, no lone surrogates (orjson refuses them): what canonical_json() gives.
        data = dumps(obj, option=sort_keys)
        # A repeated key may have hidden a value that the exact path would still have read, and refused had it been a
        # number too long or nesting too deep; such a value is longer than `slack`. Unless a value was normalised,
        # no part of the line is shorter than its canonical form (the same text, escaped no more), so a line at
        # most `slack` longer than that hides nothing that matters. Else: two quotes per key and two per value mean
        # no key was repeated, and failing that the line, strings removed, must hold no other value.
        if (
            (normalized or len(raw) - len(data) > slack)
            and raw.count(b'"') != 4 * found
            and _JSON_STRING_BYTES.sub(b"", raw).translate(None, b" \t\r:,") != b"{}"
        ):
            return None
        return obj, data, words  # type: ignore[return-value]

    return fast_check


def _chat_fast_check(obj: object, raw: bytes) -> tuple[dict[str, object], bytes, int] | None:
    """The fast path's check for a chat record; see ``_flat_fast_check``."""
    try:
        record, canonical, words = _check_chat(obj)
    except _Invalid:
        return None
    # A good chat line has, in strings only, "messages" and two keys and two values per message: a repeated key
    # (and so a hidden value) would add quotes.
    if raw.count(b'"') != 2 + 8 * len(record["messages"]):  # type: ignore[arg-type]
        return None
    return record, canonical.encode(), words


def _check_chat(obj: object) -> tuple[dict[str, object], str, int]:
    if obj.__class__ is not dict:
        raise _Invalid("shape", f"expected a JSON object, got {_kind(obj)}")
    if obj.keys() != {"messages"}:  # type: ignore[attr-defined]
        unknown = sorted(obj.keys() - {"messages"})  # type: ignore[attr-defined]
        if not unknown:
            raise _Invalid("missing_field", 'missing field "messages"')
        raise _Invalid(
            "unknown_field",
            f'unknown {_plural(len(unknown), "field")} {_names(unknown)} (chat records have only "messages")',
        )
    messages = obj["messages"]  # type: ignore[index]
    if messages.__class__ is not list:
        raise _Invalid("wrong_type", f'field "messages" must be a list, got {_kind(messages)}')
    record_messages = []
    parts = []
    words = 0
    previous = ""
    for index, message in enumerate(messages, 1):
        if message.__class__ is not dict:
            raise _Invalid("shape", f"message {index} must be an object, got {_kind(message)}")
        if message.keys() != _MESSAGE_KEYS:
            missing = sorted(_MESSAGE_KEYS - message.keys())
            if missing:
                raise _Invalid("missing_field", f"message {index} is missing {_names(missing)}")
            unknown = sorted(message.keys() - _MESSAGE_KEYS)
            raise _Invalid(
                "unknown_field",
                f"message {index} has unknown {_plural(len(unknown), 'field')} {_names(unknown)} (a message has "
                '"role" and "content")',
            )
        role = message["role"]
        if role.__class__ is not str or role not in _CHAT_ROLES:
            shown = f'"{role}"' if role.__class__ is str else _kind(role)
            raise _Invalid("wrong_type", f'message {index}: role must be "system", "user" or "assistant", not {shown}')
        _check_turn(index, role, previous)
        content = _field_text(f"messages[{index}].content", message["content"])
        record_messages.append({"content": content, "role": role})
        parts.append('{"content":' + encode_basestring(content) + ',"role":"' + role + '"}')
        words += len(content.split())
        previous = role
    if previous != "assistant":
        if previous in ("", "system"):
            raise _Invalid("chat_order", "a chat needs at least one user and one assistant message")
        raise _Invalid("chat_order", "the last message must be from the assistant")
    return {"messages": record_messages}, '{"messages":[' + ",".join(parts) + "]}", words


def _check_turn(index: int, role: str, previous: str) -> None:
    if role == "system":
        if index != 1:
            raise _Invalid("chat_order", f"message {index}: a system message may only come first")
        return
    expected = "assistant" if previous == "user" else "user"
    if role != expected:
        after = f'after a "{previous}" message' if previous else "first"
        article = "an" if expected == "assistant" else "a"
        raise _Invalid("chat_order", f'message {index}: expected {article} "{expected}" message {after}, got "{role}"')


_CSV_FIELDS: Final = {
    "text": ({"text"}, set()),
    "instruction": ({"prompt", "response"}, {"system"}),
    "classification": ({"text", "label"}, set()),
}


def _csv_header(cells: list[str], record_type: str, source: _Source, number: int) -> tuple[list[str], frozenset[str]]:
    required, optional = _CSV_FIELDS[record_type]
    header = [cell.strip().lower() for cell in cells]
    expected = _names(sorted(required)) + (f" and optionally {_names(sorted(optional))}" if optional else "")
    where = source.where(number)
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise UploadRejected(f"{where}: the header names {_names(duplicated)} more than once", code="columns")
    unknown = [name for name in header if name not in required | optional]
    missing = sorted(required - set(header))
    if unknown or missing:
        raise UploadRejected(
            f"{where}: the header row must name the columns {expected}; it has {_names(header)}", code="columns"
        )
    return header, frozenset(required)


# JSON helpers


def _json_decoder(max_digits: int) -> json.JSONDecoder:
    def parse_number(text: str) -> float:
        # Checked before conversion: Python refuses ints over 4300 digits anyway, but only after the work.
        digits = len(text)
        if digits > max_digits:
            raise _Invalid("number_too_long", f"a number has {digits:,} characters; at most {max_digits} are allowed")
        return float(text)

    def parse_int(text: str) -> int:
        if len(text) > max_digits:
            parse_number(text)
        return int(text)

    return json.JSONDecoder(parse_int=parse_int, parse_float=parse_number)


def _nfc(obj: object) -> object:
    if isinstance(obj, str):
        return unicodedata.normalize("NFC", obj)
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"canonical JSON keys must be text, got {type(key).__name__}")
            normal = unicodedata.normalize("NFC", key)
            if normal in out:
                raise ValueError(f"two keys are equal once NFC-normalised: {normal!r}")
            out[normal] = _nfc(value)
        return out
    if isinstance(obj, list | tuple):
        return [_nfc(item) for item in obj]
    if obj is None or isinstance(obj, bool | int | float):
        return obj
    raise TypeError(f"{type(obj).__name__} has no canonical JSON form")


_CANONICAL_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


# Zip helpers


def _zip_directory_counts(stream: BinaryIO, size: int, label: str) -> tuple[int, int]:
    """Entry count and central-directory size from the end record, read before zipfile builds the directory."""
    tail_size = min(size, 22 + 0xFFFF)
    stream.seek(size - tail_size)
    tail = stream.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise UploadRejected(f"{label}: not a valid zip archive", code="zip")
    entries = int.from_bytes(tail[at + 10 : at + 12], "little")
    directory_size = int.from_bytes(tail[at + 12 : at + 16], "little")
    if entries == 0xFFFF or directory_size == 0xFFFFFFFF:
        # Zip64: the real numbers are in a record the locator, just before the end record, points to.
        locator_at = size - tail_size + at - 20
        stream.seek(max(locator_at, 0))
        locator = stream.read(20)
        if locator_at < 0 or locator[:4] != b"PK\x06\x07":
            raise UploadRejected(f"{label}: not a valid zip archive (bad zip64 locator)", code="zip")
        stream.seek(int.from_bytes(locator[8:16], "little"))
        record = stream.read(56)
        if record[:4] != b"PK\x06\x06":
            raise UploadRejected(f"{label}: not a valid zip archive (bad zip64 end record)", code="zip")
        entries = int.from_bytes(record[32:40], "little")
        directory_size = int.from_bytes(record[40:48], "little")
    return entries, directory_size


def _check_zip_name(name: str, where: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise UploadRejected(f"{where}: absolute paths are not allowed in an archive", code="zip")
    if ".." in parts:
        raise UploadRejected(f'{where}: entry names may not point outside the archive ("..")', code="zip")


def _check_expansion(size: int, compressed: int, ratio: int, where: str) -> None:
    if size > _ZIP_RATIO_FLOOR_BYTES and size > ratio * max(compressed, 1):
        raise UploadRejected(
            f"{where}: expands {size // max(compressed, 1):,} times ({_size(compressed)} to {_size(size)}); at most "
            f"{ratio} times is allowed",
            code="zip_bomb",
        )


# Messages


def _extension_allowed(name: str, record_type: str, *, prefix: str) -> str:
    base = name.rsplit("/", 1)[-1]
    extension = "." + base.rsplit(".", 1)[-1].lower() if "." in base else ""
    allowed = EXTENSIONS_BY_RECORD_TYPE[record_type]
    if extension in allowed:
        return extension
    if extension == ".csv" and record_type == "chat":
        reason = "chat records can't be uploaded as CSV: a conversation doesn't fit in a table; use .jsonl"
    elif extension in ALLOWED_EXTENSIONS:
        reason = f"{extension} files can't hold {record_type} records; use {_extension_list(record_type)}"
    elif extension:
        reason = f"{extension} files are not accepted; use {_extension_list(record_type)}"
    else:
        reason = f"the file name has no extension; use {_extension_list(record_type)}"
    raise UploadRejected(prefix + reason, code="extension")


def _extension_list(record_type: str) -> str:
    extensions = EXTENSIONS_BY_RECORD_TYPE[record_type]
    return ", ".join(extensions[:-1]) + " or " + extensions[-1]


def _not_utf8(source: _Source, number: int, offset: int, raw: bytes, exc: UnicodeDecodeError) -> UploadRejected:
    where = f"{source.at_line(number)}, byte {offset + exc.start}"
    return UploadRejected(
        f"{where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8", code="encoding"
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _names(names: list[str]) -> str:
    quoted = [f'"{name}"' for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"


def _count(count: int, noun: str) -> str:
    return f"{count} {_plural(count, noun)}"


def _size(size: int, other: int | None = None) -> str:
    """``2.1 MB``-style size; exact bytes when rounding would make it look equal to ``other``."""
    for unit, name in ((GiB, "GB"), (MiB, "MB"), (KiB, "KB")):
        if size >= unit:
            shown = f"{size / unit:.1f}".removesuffix(".0") + " " + name
            break
    else:
        shown = f"{size} bytes"
    if other is not None and shown == _size(other) and size != other:
        return f"{size:,} bytes"
    return shown


_FIELDS: Final = {
    "text": (("text", True),),
    "instruction": (("prompt", True), ("response", True), ("system", False)),
    "classification": (("text", True), ("label", True)),
}
_RECORD_CHECKS: Final[dict[str, Callable[[object], tuple]]] = {
    "text": _flat_check("text", _FIELDS["text"]),
    "instruction": _flat_check("instruction", _FIELDS["instruction"]),
    "chat": _check_chat,
    "classification": _flat_check("classification", _FIELDS["classification"]),
}
