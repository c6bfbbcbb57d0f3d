"""The canonical form of a record: ``canonical_json()`` (sorted keys, no whitespace, UTF-8, every string
NFC-normalised) and ``record_hash()``, its keccak256."""

from __future__ import annotations

import json
import unicodedata
from typing import Final

from eth_hash.auto import keccak as _eth_keccak


def canonical_json(obj: object) -> bytes:
    """Return the canonical JSON bytes of ``obj``: sorted keys, no insignificant whitespace, UTF-8 (not escaped),
    every string (keys included) NFC-normalised. Equal data gives equal bytes however it was written.

    Raises ``TypeError`` for values JSON can't carry (or non-text keys) and ``ValueError`` for NaN or infinity,
    unpaired surrogates, or two keys that become equal once normalised.
    """
    return _CANONICAL_ENCODER.encode(_nfc(obj)).encode()


def record_hash(canonical: bytes) -> str:
    """Return ``keccak256(canonical)`` as 0x-prefixed lowercase hex, the form the ledger stores."""
    return "0x" + _eth_keccak(canonical).hex()


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


_CANONICAL_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
