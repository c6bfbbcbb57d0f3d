"""CSV: comma-separated, ``"``-quoted, a header row naming the fields; rows numbered as a spreadsheet shows them."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from ..base import ParsedRow, RowError, UploadRejected
from ..messages import count_text, names_text, size_text
from ..records import Invalid
from .lines import LineReader, Source, not_utf8

if TYPE_CHECKING:
    from ..parser import UploadParser


def read_csv(parser: UploadParser, source: Source, lines: LineReader) -> Iterator[ParsedRow | RowError]:
    max_row = parser.limits.max_line_bytes
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
                        f"{source.at_line(progress.lines)}: the line is {size_text(raw)} long; a CSV row may be at "
                        f"most {size_text(max_row)}",
                        code="too_large",
                    )
                start = progress.offset
                progress.offset += len(raw) + 1
                progress.row_bytes += len(raw) + 1
                if progress.row_bytes > max_row:
                    raise UploadRejected(
                        f"{source.at_line(progress.row_start)}: the row starting here runs past {size_text(max_row)}; "
                        'a quoted field is probably never closed (a closing " is missing)',
                        code="csv",
                    )
                try:
                    text = raw.decode()
                except UnicodeDecodeError as exc:
                    raise not_utf8(source, progress.lines, lines.skipped_bom + start, raw, exc) from None
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
            if item := parser.error(source, row_number, "csv", f"not valid CSV: {exc}"):
                yield item
            continue
        row_number += 1
        if not cells or not "".join(cells).strip():  # blank lines, and the ",,," rows spreadsheets leave
            continue
        if header is None:
            header, required = _csv_header(cells, parser.record_type, source, row_number)
            continue
        if len(cells) != len(header):
            problem = f"has {count_text(len(cells), 'value')}; the header has {count_text(len(header), 'column')}"
            if item := parser.error(source, row_number, "columns", problem):
                yield item
            continue
        obj = {}
        for name, value in zip(header, cells, strict=True):
            if value or name in required:
                obj[name] = value.replace("\r\n", "\n") if "\r" in value else value
        try:
            record, canonical, words = parser.check(obj)
        except Invalid as exc:
            if item := parser.error(source, row_number, exc.code, exc.problem):
                yield item
            continue
        if item := parser.finish(source, row_number, record, canonical, words):
            yield item
    if header is not None and not parser.in_archive and parser.record_count == 0 and parser.error_count == 0:
        parser.header_only_csv = True


class _CsvProgress:
    __slots__ = ("lines", "offset", "row_bytes", "row_start")

    def __init__(self) -> None:
        self.lines = 0
        self.offset = 0
        self.row_start = 1
        self.row_bytes = 0


_CSV_FIELDS: Final = {
    "text": ({"text"}, set()),
    "instruction": ({"prompt", "response"}, {"system"}),
    "classification": ({"text", "label"}, set()),
}


def _csv_header(cells: list[str], record_type: str, source: Source, number: int) -> tuple[list[str], frozenset[str]]:
    required, optional = _CSV_FIELDS[record_type]
    header = [cell.strip().lower() for cell in cells]
    expected = names_text(sorted(required)) + (f" and optionally {names_text(sorted(optional))}" if optional else "")
    where = source.where(number)
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise UploadRejected(f"{where}: the header names {names_text(duplicated)} more than once", code="columns")
    unknown = [name for name in header if name not in required | optional]
    missing = sorted(required - set(header))
    if unknown or missing:
        raise UploadRejected(
            f"{where}: the header row must name the columns {expected}; it has {names_text(header)}", code="columns"
        )
    return header, frozenset(required)


# JSON helpers
