"""Plain text (one record per paragraph) and Markdown (one record per top-level section), ``text`` records only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..base import ParsedRow, RowError
from ..messages import size_text
from ..records import Invalid
from .lines import LineReader, Source, not_utf8

if TYPE_CHECKING:
    from ..parser import UploadParser


def read_txt(parser: UploadParser, source: Source, lines: LineReader) -> Iterator[ParsedRow | RowError]:
    block = _TextBlock(parser.limits.max_record_bytes, source, lines)
    number = 0
    for batch in lines:
        for raw in batch:
            number += 1
            if raw.__class__ is not int and (not raw or raw.isspace()):
                block.skip(raw)
                if item := _flush(parser, source, block, "paragraph"):
                    yield item
                continue
            block.add(raw, number)
    if item := _flush(parser, source, block, "paragraph"):
        yield item


def read_md(parser: UploadParser, source: Source, lines: LineReader) -> Iterator[ParsedRow | RowError]:
    block = _TextBlock(parser.limits.max_record_bytes, source, lines)
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
                and (item := _flush(parser, source, block, "section"))  # a heading ends the section before it
            ):
                yield item
            if block.start or (raw and not raw.isspace()):
                block.add(raw, number)
            else:
                block.skip(raw)
    if item := _flush(parser, source, block, "section"):
        yield item


def _flush(parser: UploadParser, source: Source, block: _TextBlock, what: str) -> ParsedRow | RowError | None:
    if block.too_large:
        problem = (
            f"{what} is {size_text(block.size)}; a record may be at most {size_text(parser.limits.max_record_bytes)}"
        )
        item: ParsedRow | RowError | None = parser.error(source, block.start, "too_large", problem)
    else:
        text = block.text()
        if not text:
            block.clear()
            return None
        try:
            record, canonical, words = parser.check({"text": text})
        except Invalid as exc:
            item = parser.error(source, block.start, exc.code, exc.problem)
        else:
            item = parser.finish(source, block.start, record, canonical, words)
    block.clear()
    return item


class _TextBlock:
    """The paragraph or section being collected from a text file, held only up to the record size limit."""

    __slots__ = ("limit", "lines", "offset", "reader", "size", "source", "start", "too_large")

    def __init__(self, limit: int, source: Source, reader: LineReader) -> None:
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
            raise not_utf8(self.source, number, self.reader.skipped_bom + offset, raw, exc) from None  # type: ignore[arg-type]

    def text(self) -> str:
        lines = self.lines
        while lines and not lines[-1].strip():
            lines.pop()
        return "\n".join(lines)
