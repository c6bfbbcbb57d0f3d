"""The parts of messages for contributors: extensions allowed per record type, sizes in binary units, lists of
quoted names."""

from __future__ import annotations

from .base import ALLOWED_EXTENSIONS, EXTENSIONS_BY_RECORD_TYPE, GiB, KiB, MiB, UploadRejected


def extension_allowed(name: str, record_type: str, *, prefix: str) -> str:
    base = name.rsplit("/", 1)[-1]
    extension = "." + base.rsplit(".", 1)[-1].lower() if "." in base else ""
    allowed = EXTENSIONS_BY_RECORD_TYPE[record_type]
    if extension in allowed:
        return extension
    if extension == ".csv" and record_type == "chat":
        reason = "chat records can't be uploaded as CSV: a conversation doesn't fit in a table; use .jsonl"
    elif extension in ALLOWED_EXTENSIONS:
        reason = f"{extension} files can't hold {record_type} records; use {extension_list(record_type)}"
    elif extension:
        reason = f"{extension} files are not accepted; use {extension_list(record_type)}"
    else:
        reason = f"the file name has no extension; use {extension_list(record_type)}"
    raise UploadRejected(prefix + reason, code="extension")


def extension_list(record_type: str) -> str:
    extensions = EXTENSIONS_BY_RECORD_TYPE[record_type]
    return ", ".join(extensions[:-1]) + " or " + extensions[-1]


def kind_text(value: object) -> str:
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


def names_text(names: list[str]) -> str:
    quoted = [f'"{name}"' for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def plural(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"


def count_text(count: int, noun: str) -> str:
    return f"{count} {plural(count, noun)}"


def size_text(size: int, other: int | None = None) -> str:
    """``2.1 MB``-style size; exact bytes when rounding would make it look equal to ``other``."""
    for unit, name in ((GiB, "GB"), (MiB, "MB"), (KiB, "KB")):
        if size >= unit:
            shown = f"{size / unit:.1f}".removesuffix(".0") + " " + name
            break
    else:
        shown = f"{size} bytes"
    if other is not None and shown == size_text(other) and size != other:
        return f"{size:,} bytes"
    return shown
