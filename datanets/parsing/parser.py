"""The parser of one upload: it checks the name, type and (for a zip) directory up front, then reads the file, or
each entry of the archive, with the reader for its format, and gives every record its last step (size, hash,
duplicates) and every refused row its message."""

from __future__ import annotations

import contextlib
import lzma
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import BinaryIO

from ledger.hashing import new_keccak256

from .base import DEFAULT_LIMITS, RECORD_TYPES, ParsedRow, ParseLimits, RowError, UploadRejected
from .messages import extension_allowed, size_text
from .readers.csvfile import read_csv
from .readers.jsonl import read_jsonl
from .readers.lines import LineReader, Source
from .readers.text import read_md, read_txt
from .records import RECORD_CHECKS
from .zipsafe import EntryReader, OpenArchive, ZipTotals, open_archive


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

    The format readers (``readers``) work through ``check``, ``finish``, ``finish_bytes``, ``error`` and
    ``seen``: the parser's state while it reads, not for consumers.
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
        self._extension = extension_allowed(filename, record_type, prefix="")
        self._sources: list[Source] = []
        self._started = False
        self.header_only_csv = False  # a lone CSV file held its header row and nothing else
        self.seen: dict[bytes, int] = {}  # a record's 16-byte hash prefix -> where it was first seen
        self.check = RECORD_CHECKS[record_type]
        self.finish, self.finish_bytes = self._make_finish()
        self._archive: OpenArchive | None = None
        if self._extension == ".zip":
            self._archive = open_archive(stream, label=filename, record_type=record_type, limits=limits)

    def __iter__(self) -> Iterator[ParsedRow | RowError]:
        if self._started:
            raise RuntimeError("an upload can be parsed only once")
        self._started = True
        self._deadline = time.monotonic() + self.limits.max_seconds
        if self._archive is None:
            source = self._add_source(self.filename, self._extension, prefix="")
            yield from self._parse_file(source, self._stream.read)
        else:
            yield from self._parse_zip(self._archive)
        if self.record_count == 0 and self.error_count == 0:
            if self._archive is not None:
                raise UploadRejected(f"{self.filename}: the archive holds no records", code="empty")
            if self.header_only_csv:
                raise UploadRejected("the CSV file has a header row but no records", code="empty")
            raise UploadRejected("the file is empty", code="empty")

    @property
    def in_archive(self) -> bool:
        """Whether the upload is a zip archive, read entry by entry."""
        return self._archive is not None

    # Whole files

    def _parse_file(self, source: Source, read: Callable[[int], bytes]) -> Iterator[ParsedRow | RowError]:
        lines = LineReader(self._budgeted(read), self.limits.max_line_bytes, source)
        if source.extension == ".jsonl":
            return read_jsonl(self, source, lines)
        if source.extension == ".csv":
            return read_csv(self, source, lines)
        if source.extension == ".txt":
            return read_txt(self, source, lines)
        return read_md(self, source, lines)

    def _budgeted(self, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
        """``read``, counting what it returns against ``max_expanded_bytes`` and the clock against ``max_seconds``."""
        limits = self.limits
        clock = time.monotonic

        def counted(size: int) -> bytes:
            data = read(size)
            self.expanded_bytes += len(data)
            if self.expanded_bytes > limits.max_expanded_bytes:
                raise UploadRejected(
                    f"{self.filename}: the upload holds more than {size_text(limits.max_expanded_bytes)} of text "
                    "(blank lines included, and a zip's entries once expanded); split it into smaller uploads",
                    code="too_large",
                )
            if clock() > self._deadline:
                raise UploadRejected(
                    f"{self.filename}: reading the upload took more than {limits.max_seconds:g} s "
                    f"({size_text(self.expanded_bytes)} read), the most one upload may take; split it into smaller "
                    "uploads",
                    code="too_slow",
                )
            return data

        return counted

    # Rows

    def _make_finish(
        self,
    ) -> tuple[
        Callable[[Source, int, dict[str, object], str, int], ParsedRow | RowError | None],
        Callable[[Source, int, dict[str, object], bytes, int], ParsedRow | RowError | None],
    ]:
        """The last step for every record (size, hash, duplicate check), as closures over what they need: they run
        once per record, and locals are faster than attribute lookups. The first takes the canonical text, the
        second its UTF-8 bytes (which the fast path makes directly)."""
        seen = self.seen
        new_keccak = new_keccak256
        error = self.error
        max_bytes = self.limits.max_record_bytes
        max_records = self.limits.max_records
        parser = self
        # What ParsedRow._make does, without its Python frame: cheaper than the generated __new__ and than _make.
        new_row = partial(tuple.__new__, ParsedRow)

        def finish(
            source: Source, number: int, record: dict[str, object], canonical: str, words: int
        ) -> ParsedRow | RowError | None:
            try:
                data = canonical.encode()
            except UnicodeEncodeError:
                return error(source, number, "bad_surrogate", "contains an unpaired surrogate (a lone \\ud8xx escape)")
            return finish_bytes(source, number, record, data, words)

        def finish_bytes(
            source: Source, number: int, record: dict[str, object], data: bytes, words: int
        ) -> ParsedRow | RowError | None:
            size = len(data)
            if size > max_bytes:
                return error(
                    source,
                    number,
                    "too_large",
                    f"record is {size_text(size, max_bytes)}; the limit is {size_text(max_bytes)}",
                )
            digest = new_keccak(data).digest()
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

    def error(self, source: Source, number: int, code: str, problem: str) -> RowError | None:
        """Count a refused row; return it, or None once ``max_errors_reported`` have been given."""
        self.error_count += 1
        if self.error_count > self.limits.max_errors_reported:
            self.errors_omitted += 1
            return None
        return RowError(source.name, number, code, f"{source.where(number)}: {problem}")

    def _describe(self, packed: int, current: Source) -> str:
        source = self._sources[packed >> 40]
        number = packed & ((1 << 40) - 1)
        if source is current:
            return f"{source.unit} {number}"
        return f"{source.name} {source.unit} {number}"

    def _add_source(self, name: str, extension: str, *, prefix: str) -> Source:
        source = Source(len(self._sources), name, extension, prefix)
        self._sources.append(source)
        return source

    # Archives

    def _parse_zip(self, opened: OpenArchive) -> Iterator[ParsedRow | RowError]:
        limits = self.limits
        totals = ZipTotals()
        archive = opened.archive
        with archive, opened.spool or contextlib.nullcontext():
            for info, extension in opened.entries:
                where = f"{self.filename}:{info.filename}"
                source = self._add_source(info.filename, extension, prefix=f"{where} ")
                try:
                    with archive.open(info) as entry:
                        yield from self._parse_file(source, EntryReader(entry, info, where, limits, totals).read)
                except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, NotImplementedError) as exc:
                    raise UploadRejected(f"{where}: the archive is damaged ({exc})", code="zip") from None
