"""The canonical form of every document we hash for the chain, and its hash.

RFC 8785 (JSON Canonicalization Scheme): keys sorted by UTF-16 code units, no whitespace, numbers as ECMAScript
prints them (``1.0`` is ``1``, ``0.1`` is ``0.1``), strings with the minimal escapes, UTF-8. Python's ``rfc8785``
and JavaScript's ``canonicalize`` give the same bytes for the same parsed value, so a verifier in any language
rebuilds a document's bytes from the fields it parsed and never needs a server-supplied string.

JSON numbers are IEEE doubles to a JavaScript reader: an integer beyond 2**53 - 1 cannot round-trip, so documents
carry such values (seeds, token amounts) as decimal strings (``uint_text``), and ``jcs`` refuses them as numbers
rather than hash something no other reader can rebuild. NaN and infinities are not JSON and are refused too.

Every hashed document names its ``schema`` (``openledger.<kind>.v<n>``); documents written before JCS (the ``v1``
manifests and run facts, Python's ``json.dumps(sort_keys=True)``) keep their stored bytes and still verify: a
verifier reads the schema and, for those, hashes the stored text (``docs/proofs.md``).
"""

from __future__ import annotations

from typing import Any

import rfc8785

from .merkle import keccak256

JS_SAFE_INTEGER = (1 << 53) - 1


class CanonicalError(ValueError):
    """A value JCS cannot represent so that every reader rebuilds the same bytes."""


def jcs(value: Any) -> bytes:
    """The RFC 8785 bytes of ``value`` (dicts with str keys, lists, str, bool, None, finite floats, integers within
    +-(2**53 - 1)). Raises CanonicalError for anything else."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as e:
        raise CanonicalError(str(e)) from e


def keccak_hex(data: bytes) -> str:
    """keccak256 of ``data`` as 0x-prefixed lowercase hex: a ``bytes32`` the contracts store as is."""
    return "0x" + keccak256(data).hex()


def document_hash(document: Any) -> str:
    """keccak256 of the document's JCS bytes."""
    return keccak_hex(jcs(document))


def uint_text(value: int | None) -> str | None:
    """An unsigned integer as a decimal string, the form a document gives numbers a JavaScript reader could not
    hold exactly (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CanonicalError(f"expected a non-negative integer, got {value!r}")
    return str(value)


def subject_id(subject: str) -> str:
    """The bytes32 subject id anchored for a subject string such as ``snapshot:1:3``: keccak256 of its UTF-8."""
    return keccak_hex(subject.encode("utf-8"))
