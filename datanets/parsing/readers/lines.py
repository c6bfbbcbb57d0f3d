"""Reading a file as lines, in chunks and bounded memory, and how messages name places in it."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator

from ..base import CHUNK_BYTES, UploadRejected

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


class Source:
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


class LineReader:
    """Iterates over batches of lines (bytes without the newline) read in chunks, in bounded memory.

    A line longer than ``max_line`` comes as an ``int``, its length, and is never held whole. Raises
    ``UploadRejected`` for NUL bytes and for files that are recognisably binary.
    """

    def __init__(self, read: Callable[[int], bytes], max_line: int, source: Source) -> None:
        self._read = read
        self._max_line = max_line
        self._source = source
        self.skipped_bom = 0  # added to offsets in messages, which count from the file's first byte

    def __iter__(self) -> Iterator[list[bytes | int]]:
        read = self._read
        max_line = self._max_line
        # Lines after the first in a chunk are shorter than the chunk, so only the first can be too long.
        chunk_size = min(CHUNK_BYTES, max_line)
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


def not_utf8(source: Source, number: int, offset: int, raw: bytes, exc: UnicodeDecodeError) -> UploadRejected:
    where = f"{source.at_line(number)}, byte {offset + exc.start}"
    return UploadRejected(
        f"{where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8", code="encoding"
    )
