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

This module is the package's public API. Inside: ``base`` (limits, results, the refusal), ``parser`` (the parser of
one upload), ``readers`` (lines, then one module per format), ``records`` (the record types' checks), ``fast`` (the
JSON Lines fast path's checks), ``canonical`` (the canonical form and its hash), ``zipsafe`` (archives) and
``messages``.
"""

from .base import (
    ALLOWED_EXTENSIONS,
    DEFAULT_LIMITS,
    EXTENSIONS_BY_RECORD_TYPE,
    RECORD_TYPES,
    GiB,
    KiB,
    MiB,
    ParsedRow,
    ParseLimits,
    RowError,
    UploadRejected,
)
from .canonical import canonical_json, record_hash
from .parser import UploadParser, parse_upload

__all__ = [
    "ALLOWED_EXTENSIONS",
    "DEFAULT_LIMITS",
    "EXTENSIONS_BY_RECORD_TYPE",
    "RECORD_TYPES",
    "GiB",
    "KiB",
    "MiB",
    "ParseLimits",
    "ParsedRow",
    "RowError",
    "UploadParser",
    "UploadRejected",
    "canonical_json",
    "parse_upload",
    "record_hash",
]
