"""The canonical form of a record: ``canonical_json()`` (sorted keys, no whitespace, UTF-8, every string
NFC-normalised: ``ledger.hashing.canonical_json_v1`` of the normalised record) and ``record_hash()``, its keccak256."""

from __future__ import annotations

import unicodedata

from ledger.hashing import canonical_json_v1, keccak_hex


def canonical_json(obj: object) -> bytes:
    """Return the canonical JSON bytes of ``obj``: sorted keys, no insignificant whitespace, UTF-8 (not escaped),
    every string (keys included) NFC-normalised. Equal data gives equal bytes however it was written.

    Raises ``TypeError`` for values JSON can't carry (or non-text keys) and ``ValueError`` for NaN or infinity,
    unpaired surrogates, or two keys that become equal once normalised.
    """
    return canonical_json_v1(_nfc(obj))


def record_hash(canonical: bytes) -> str:
    """Return ``keccak256(canonical)`` as 0x-prefixed lowercase hex, the form the ledger stores."""
    return keccak_hex(canonical)


def _nfc(obj: object) -> object:
    if isinstance(obj, str):
        return unicodedata.normalize("NFC", obj)
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"canonical JSON keys must be text, got {type(key).__name__}")
            normal = unicodedata.normalize("NFC", key)
            if normal in out:
                raise ValueError(f"two keys are equal once NFC-normalised: {normal!r}")
            out[normal] = _nfc(value)
        return out
    if isinstance(obj, list | tuple):
        return [_nfc(item) for item in obj]
    if obj is None or isinstance(obj, bool | int | float):
        return obj
    raise TypeError(f"{type(obj).__name__} has no canonical JSON form")
