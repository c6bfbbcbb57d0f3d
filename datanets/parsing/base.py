"""What every part of the parser shares: the record types and extensions, the limits, the two results a row can
give, and the refusal of a whole upload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

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

CHUNK_BYTES: Final = 1 * MiB


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
