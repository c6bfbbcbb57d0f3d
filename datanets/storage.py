"""Content-addressed files under MEDIA_ROOT: the path is the SHA-256 of the bytes, and a path, once written, is never
written again. Identical uploads share one file; a file is complete whenever its path exists (temp file + link).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from django.conf import settings

CHUNK_BYTES = 1024 * 1024


class StoredFile(NamedTuple):
    sha256: str
    size: int
    path: str  # relative to MEDIA_ROOT
    created: bool  # False when identical bytes were already stored


class TooLarge(Exception):
    """The stream held more than the caller's limit; nothing was kept."""

    def __init__(self, read: int) -> None:
        super().__init__(f"more than {read} bytes")
        self.read = read


def media_path(relative: str) -> Path:
    return Path(settings.MEDIA_ROOT) / relative


def content_path(prefix: str, sha256: str, suffix: str = "") -> str:
    return f"{prefix}/{sha256[:2]}/{sha256[2:4]}/{sha256}{suffix}"


def store_stream(stream: BinaryIO, *, prefix: str, suffix: str = "", max_bytes: int | None = None) -> StoredFile:
    """Copy ``stream`` to ``<prefix>/ab/cd/<sha256><suffix>`` while hashing it, in constant memory.

    Raises ``TooLarge`` (keeping nothing) as soon as more than ``max_bytes`` were read. The bytes go to a temporary
    file in the same folder tree, then are hard-linked into place: linking fails rather than replaces when the path
    exists, so a stored file is never rewritten, and a reader never sees a half-written one.
    """
    with storing_stream(stream, prefix=prefix, suffix=suffix, max_bytes=max_bytes) as pending:
        pass
    assert pending.stored is not None
    return pending.stored


@dataclass
class PendingFile:
    """Bytes copied, hashed and durable, not yet in place: ``temp`` holds them, readable now; ``stored`` is set once
    they are in place."""

    sha256: str
    size: int
    path: str  # where they will be, relative to MEDIA_ROOT
    temp: Path
    stored: StoredFile | None = None


@contextmanager
def storing_stream(
    stream: BinaryIO, *, prefix: str, suffix: str = "", max_bytes: int | None = None
) -> Iterator[PendingFile]:
    """``store_stream`` for a caller that decides whether to keep the bytes: copies, hashes and syncs ``stream``
    (raising ``TooLarge`` as ``store_stream`` does), then yields a ``PendingFile`` whose ``temp`` the caller reads.
    Leaving the block normally links the file into place; leaving it with an exception keeps nothing, so a refused
    upload leaves no bytes behind (it counts for no quota, so they would pile up).
    """
    root = Path(settings.MEDIA_ROOT)
    scratch = root / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, temp_name = tempfile.mkstemp(dir=scratch, prefix="upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise TooLarge(size)
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            # Durable before anything reads it: syncing on a thread while the caller parses was measured slower, the
            # disk then serving this and the database's log at once (docs/benchmarks.md, bench/ingest.py).
            os.fsync(out.fileno())
        sha256 = digest.hexdigest()
        relative = content_path(prefix, sha256, suffix)
        pending = PendingFile(sha256=sha256, size=size, path=relative, temp=Path(temp_name))
        yield pending
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(temp_name, 0o444)  # stored content is never written again
        try:
            os.link(temp_name, target)
            created = True
        except FileExistsError:
            created = False
        pending.stored = StoredFile(sha256=sha256, size=size, path=relative, created=created)
    finally:
        os.unlink(temp_name)


def store_bytes_file(write: object, *, prefix: str, suffix: str = "") -> StoredFile:
    """Like ``store_stream`` for content produced by ``write(file)``: written to a temporary file first, hashed on
    the way, then linked into place."""
    root = Path(settings.MEDIA_ROOT)
    scratch = root / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=scratch) as temp:
        write(temp)  # type: ignore[operator]
        temp.seek(0)
        return store_stream(temp, prefix=prefix, suffix=suffix)
