"""Zip archives, safely: the central directory's counts read before zipfile builds it, names that can't point outside
the archive, no symlinks, nested archives or encrypted entries, and expansion held to the limits, from the declared
sizes first and then from the bytes each entry actually produces."""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
import zipfile
from typing import BinaryIO, NamedTuple

from .base import CHUNK_BYTES, KiB, MiB, ParseLimits, UploadRejected
from .messages import extension_allowed, extension_list, size_text

# A zip entry smaller than this is never called a bomb: tiny, very repetitive files compress far beyond 100:1.
_ZIP_RATIO_FLOOR_BYTES = 1 * MiB
# Generous for names and extra fields, yet it caps what zipfile reads and builds before we can count entries.
_ZIP_DIRECTORY_BYTES_PER_ENTRY = 1 * KiB
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
_ZIP_SKIPPED_NAMES = frozenset({".DS_Store", "Thumbs.db"})


class OpenArchive(NamedTuple):
    """An archive whose directory passed every check: the entries to parse, in order, with their extensions, and
    the temporary copy it was read from when the upload's stream couldn't seek (None otherwise)."""

    archive: zipfile.ZipFile
    entries: list[tuple[zipfile.ZipInfo, str]]
    spool: BinaryIO | None


def open_archive(stream: BinaryIO, *, label: str, record_type: str, limits: ParseLimits) -> OpenArchive:
    """Check an archive from its end record and central directory, before any entry is read; raises
    ``UploadRejected`` for an unsafe or unusable one. ``stream`` is spooled to a temporary file if it can't seek."""
    spool = None
    if not stream.seekable():
        spool = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it after the archive is parsed)
        shutil.copyfileobj(stream, spool, CHUNK_BYTES)
        stream = spool
    archive_size = stream.seek(0, 2)
    entries, directory_size = _zip_directory_counts(stream, archive_size, label)
    if entries > limits.max_zip_entries:
        raise UploadRejected(
            f"{label}: the archive has {entries:,} entries; at most {limits.max_zip_entries:,} are allowed",
            code="zip",
        )
    if directory_size > limits.max_zip_entries * _ZIP_DIRECTORY_BYTES_PER_ENTRY:
        raise UploadRejected(f"{label}: the archive's directory is {size_text(directory_size)}, too large", code="zip")
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
    chosen: list[tuple[zipfile.ZipInfo, str]] = []
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
        extension = extension_allowed(name, record_type, prefix=f"{where}: ")
        if info.flag_bits & 0x1:
            raise UploadRejected(f"{where}: encrypted entries are not accepted", code="zip")
        if info.compress_type not in _ZIP_METHODS:
            raise UploadRejected(f"{where}: unsupported compression method {info.compress_type}", code="zip")
        _check_expansion(info.file_size, info.compress_size, limits.max_zip_ratio, where)
        total_size += info.file_size
        total_compressed += info.compress_size
        chosen.append((info, extension))
    if total_size > limits.max_zip_uncompressed_bytes:
        raise UploadRejected(
            f"{label}: the archive expands to {size_text(total_size)}; at most "
            f"{size_text(limits.max_zip_uncompressed_bytes)} is allowed",
            code="zip_bomb",
        )
    _check_expansion(total_size, total_compressed, limits.max_zip_ratio, label)
    if total_compressed > archive_size:  # entries share compressed data: the overlapping-entries zip bomb
        raise UploadRejected(f"{label}: the archive's entries overlap", code="zip_bomb")
    if not chosen:
        raise UploadRejected(f"{label}: the archive holds no {extension_list(record_type)} files", code="empty")
    return OpenArchive(archive, chosen, spool)


class ZipTotals:
    __slots__ = ("expanded",)

    def __init__(self) -> None:
        self.expanded = 0


class EntryReader:
    """Reads a zip entry, holding the bytes it actually produces to the limits its declared sizes were held to:
    headers can lie."""

    __slots__ = ("_entry", "_info", "_limits", "_read", "_totals", "_where")

    def __init__(
        self, entry: BinaryIO, info: zipfile.ZipInfo, where: str, limits: ParseLimits, totals: ZipTotals
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
            f"{where}: expands {size // max(compressed, 1):,} times ({size_text(compressed)} to {size_text(size)}); "
            f"at most {ratio} times is allowed",
            code="zip_bomb",
        )
