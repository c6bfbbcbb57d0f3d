"""Every hash we make for the chain, and the canonical forms of what we hash: the one place for both.

keccak256 is Ethereum's Keccak-256 (not NIST SHA3-256), computed by safe-pysha3's C extension (``sha3``), the fastest
measured here. ``keccak256`` and ``keccak_hex`` hash one input; hot loops (Merkle trees, an upload's records) bind
``new_keccak256`` to a local and call ``new_keccak256(data).digest()`` inline: two C calls and no Python frame a hash.

Canonical forms, one per contract:

- ``jcs``: RFC 8785 (JSON Canonicalization Scheme), the form of every document written since schema v2 (model
  manifests ``openledger.model_version.v2``, run facts ``openledger.inference_run.v2``, receipts, reward epochs).
  Keys sorted by UTF-16 code units, no whitespace, numbers as ECMAScript prints them (``1.0`` is ``1``, ``0.1`` is
  ``0.1``), strings with the minimal escapes, UTF-8. Python's ``rfc8785`` and JavaScript's ``canonicalize`` give the
  same bytes for the same parsed value, so a verifier in any language rebuilds a document's bytes from the fields it
  parsed and never needs a server-supplied string.
- ``canonical_json_v1``: the legacy v1 form, Python's ``json.dumps(sort_keys=True, separators=(",", ":"),
  ensure_ascii=False, allow_nan=False)``, that ``v1`` manifests and run facts were hashed with. They keep their stored
  bytes and still verify: a verifier reads the schema and, for those, hashes the stored text (``docs/proofs.md``).
  Never for a new document.

JSON numbers are IEEE doubles to a JavaScript reader: an integer beyond 2**53 - 1 cannot round-trip, so documents
carry such values (seeds, token amounts) as decimal strings (``uint_text``), and ``jcs`` refuses them as numbers
rather than hash something no other reader can rebuild. NaN and infinities are not JSON and are refused too.

A Datanet record's canonical form (``datanets.parsing.canonical_json``) is the v1 encoding of the NFC-normalised
record; a record's values are all text, for which it gives the same bytes as ``jcs`` (the verifier rebuilds record
hashes with JavaScript's ``canonicalize``).
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785
from sha3 import keccak_256

JS_SAFE_INTEGER = (1 << 53) - 1
_V1_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


class CanonicalError(ValueError):
    """A value JCS cannot represent so that every reader rebuilds the same bytes."""


def jcs(value: Any) -> bytes:
    """The RFC 8785 bytes of ``value``, the canonical form of v2 documents (dicts with str keys, lists, str, bool,
    None, finite floats, integers within +-(2**53 - 1)). Raises CanonicalError for anything else."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as e:
        raise CanonicalError(str(e)) from e


def canonical_json_v1(value: Any) -> bytes:
    """The legacy v1 bytes of ``value`` (sorted keys, no whitespace, UTF-8 unescaped), what v1 manifests and run facts
    were hashed with: exactly ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    allow_nan=False).encode()``. Raises ValueError for NaN and infinities (they are not JSON), TypeError for what JSON
    can't carry. For reading and checking what was stored under v1, never for a new document (those are ``jcs``); a
    Datanet record's canonical form is this encoding of the NFC-normalised record."""
    return _V1_ENCODER.encode(value).encode()


new_keccak256 = keccak_256
"""``new_keccak256(data)`` is a fresh Keccak-256 hash object (safe-pysha3's ``keccak_256``); ``.digest()`` gives
``keccak256(data)``. For hot loops, bound to a local; objects are not shared, so it is safe in every thread."""


def keccak256(data: bytes) -> bytes:
    """Ethereum's keccak256 of ``data``: 32 bytes."""
    return keccak_256(data).digest()


def keccak_hex(data: bytes) -> str:
    """keccak256 of ``data`` as 0x-prefixed lowercase hex: a ``bytes32`` the contracts store as is."""
    return "0x" + keccak_256(data).hexdigest()


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
