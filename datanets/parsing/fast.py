"""The JSON Lines fast path's checks: orjson has parsed the line, and a check takes the record only if it is good and
the exact path (``records``) would have taken it, with the same result; for anything else it answers None and the
exact path decides, so every error is the one it always was."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import orjson

from .base import ParseLimits
from .records import FIELDS, MISSING, Invalid, check_chat

# A JSON string, in unrolled-loop form. The closing quote is optional so that a match, once started, can't fail:
# retrying from every later quote of an unterminated string full of \" escapes would take quadratic time.
_JSON_STRING_BYTES = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?')


def fast_check_for(record_type: str, limits: ParseLimits) -> Callable[[object, bytes], tuple | None] | None:
    """The JSON Lines fast path's check for ``record_type``: it takes what orjson made of the line ``raw`` and returns
    (record, canonical bytes, words) for a good record that the exact path would take, with the same result, or None
    where the exact path must decide (every bad record included). None for no fast path."""
    if record_type == "chat":
        # A good chat record is nested 3 deep: with a lower limit the exact path refuses it.
        return _chat_fast_check if limits.max_json_depth >= 3 else None
    # See the end of fast_check: a value hidden by a repeated key and longer than this can't have mattered.
    slack = min(limits.max_number_digits, limits.max_json_depth, 64)
    return _flat_fast_check(FIELDS[record_type], slack)


def _flat_fast_check(fields: tuple[tuple[str, bool], ...], slack: int) -> Callable[[object, bytes], tuple | None]:
    spec = tuple(sorted(fields))
    dumps = orjson.dumps
    sort_keys = orjson.OPT_SORT_KEYS

    def fast_check(
        obj: object,
        raw: bytes,
        is_normalized: Callable[[str, str], bool] = unicodedata.is_normalized,
        normalize: Callable[[str, str], str] = unicodedata.normalize,
    ) -> tuple[dict[str, object], bytes, int] | None:
        if obj.__class__ is not dict:
            return None
        # A plain line, ASCII without escapes, gives printable ASCII text (JSON strings can't hold raw control
        # characters): no NUL, already NFC, and " " its only whitespace.
        plain = raw.isascii() and raw.find(b"\\") < 0
        found = words = 0
        normalized = False
        for name, needed in spec:
            value = obj.get(name, MISSING)  # type: ignore[attr-defined]
            if value.__class__ is not str or not value:
                if value is MISSING and not needed:
                    continue
                return None
            found += 1
            if plain and value.strip(" ") is value and "  " not in value:  # type: ignore[attr-defined, operator]
                # Single spaces, none at either end: one word more than spaces (len(value.split()), cheaper).
                words += value.count(" ") + 1  # type: ignore[attr-defined]
                continue
            if "\x00" in value:  # type: ignore[operator]
                return None
            # No words means only whitespace: str.split() and str.isspace() agree on what whitespace is.
            count = len(value.split())  # type: ignore[attr-defined]
            if not count:
                return None
            words += count
            if not value.isascii() and not is_normalized("NFC", value):  # type: ignore[attr-defined]
                obj[name] = normalize("NFC", value)  # type: ignore[index]
                normalized = True
        if found != len(obj):  # type: ignore[arg-type]
            return None  # an unknown key
        # Only known keys, all text, no lone surrogates (orjson refuses them): what canonical_json() gives.
        data = dumps(obj, option=sort_keys)
        # A repeated key may have hidden a value that the exact path would still have read, and refused had it been a
        # number too long or nesting too deep; such a value is longer than `slack`. Unless a value was normalised,
        # no part of the line is shorter than its canonical form (the same text, escaped no more), so a line at
        # most `slack` longer than that hides nothing that matters. Else: two quotes per key and two per value mean
        # no key was repeated, and failing that the line, strings removed, must hold no other value.
        if (
            (normalized or len(raw) - len(data) > slack)
            and raw.count(b'"') != 4 * found
            and _JSON_STRING_BYTES.sub(b"", raw).translate(None, b" \t\r:,") != b"{}"
        ):
            return None
        return obj, data, words  # type: ignore[return-value]

    return fast_check


def _chat_fast_check(obj: object, raw: bytes) -> tuple[dict[str, object], bytes, int] | None:
    """The fast path's check for a chat record; see ``_flat_fast_check``."""
    try:
        record, canonical, words = check_chat(obj)
    except Invalid:
        return None
    # A good chat line has, in strings only, "messages" and two keys and two values per message: a repeated key
    # (and so a hidden value) would add quotes.
    if raw.count(b'"') != 2 + 8 * len(record["messages"]):  # type: ignore[arg-type]
        return None
    return record, canonical.encode(), words
