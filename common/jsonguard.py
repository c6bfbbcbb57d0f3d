"""The one way a request's JSON body is read: bounded in size, depth, string length and number length; integers within
the database's 64-bit range; no NaN, no infinity. Every API reads bodies through ``GuardedJSONParser`` (the DRF default
parser, see settings) or ``loads`` (anything else); the limits are settings (docs/configuration.md).

Why the depth is measured before parsing, without recursion: Python's C decoder recurses once per nesting level and
only stops at the interpreter's recursion limit, which a library may raise (importing eth_account raises it to
100,000); a body nested 200,000 deep then overflows the C stack and the worker dies of SIGSEGV, not of an exception.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Any, Final

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import JSONParser

# PostgreSQL's bigint (and SQLite's integer): ids and counts beyond it are no ids, not a database error.
MIN_INTEGER: Final = -(2**63)
MAX_INTEGER: Final = 2**63 - 1

# A string, or the start of an unterminated one up to the end: every match attempt succeeds at once, so the scan is
# linear even on a body of escaped quotes.
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?')
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_STEP: Final = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """What one body may hold. ``from_settings`` gives the site-wide limits; a view may widen or narrow one."""

    max_body_bytes: int
    max_depth: int
    max_string_chars: int
    max_number_chars: int

    @classmethod
    def from_settings(cls, **overrides: int) -> JsonLimits:
        limits = cls(
            max_body_bytes=settings.JSON_MAX_BODY_BYTES,
            max_depth=settings.JSON_MAX_DEPTH,
            max_string_chars=settings.JSON_MAX_STRING_CHARS,
            max_number_chars=settings.JSON_MAX_NUMBER_CHARS,
        )
        return replace(limits, **overrides)


class JsonRefused(ValueError):
    """The body is refused; ``message`` says why, for people, ``code`` for programs, ``status`` is 400 or 413."""

    def __init__(self, message: str, *, code: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw``, ignoring brackets inside strings. Linear time, no
    recursion; meaningful for any bytes, valid JSON or not."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(accumulate(map(_STEP.__getitem__, brackets)))


def _size(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size:,} bytes"
    return f"{size / (1024 * 1024):.1f}".removesuffix(".0") + " MB"


class _Bad:
    """Put in place of a number the decoder refuses, so that the walk after decoding can say where it was."""

    __slots__ = ("code", "message")

    def __init__(self, message: str, code: str) -> None:
        self.message = message
        self.code = code


class _Decoder(json.JSONDecoder):
    """The stdlib decoder with hooks that refuse numbers; ``refused`` says whether any was (then the walk runs)."""

    def __init__(self, max_chars: int) -> None:
        self.refused = False

        def bad(message: str, code: str) -> _Bad:
            self.refused = True
            return _Bad(message, code)

        def too_long(text: str) -> _Bad | None:
            # Before conversion: int() of a long run of digits is quadratic.
            if len(text) > max_chars:
                return bad(f"a number has {len(text):,} characters; at most {max_chars} are allowed", "number_too_long")
            return None

        def parse_int(text: str) -> int | _Bad:
            if refused := too_long(text):
                return refused
            value = int(text)
            if not MIN_INTEGER <= value <= MAX_INTEGER:
                return bad(
                    f"the integer {text} is out of range: integers must lie between -2^63 and 2^63-1",
                    "integer_out_of_range",
                )
            return value

        def parse_float(text: str) -> float | _Bad:
            if refused := too_long(text):
                return refused
            value = float(text)
            if not math.isfinite(value):
                return bad(f"the number {text} is too large: only finite numbers are allowed", "not_finite")
            return value

        def parse_constant(name: str) -> _Bad:
            return bad(f"{name} is not a number JSON allows: only finite numbers are allowed", "not_finite")

        super().__init__(parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)


def _path(where: tuple[Any, Any] | None) -> str:
    keys = []
    while where is not None:
        where, key = where
        keys.append(key)
    text = ""
    for key in reversed(keys):
        text += f"[{key}]" if isinstance(key, int) else (f".{key[:100]}" if text else key[:100])
    return text


def _check_values(value: Any, max_chars: int) -> None:
    """Raise for the first refused number or over-long string, in document order, naming where it is. Paths are
    linked pairs, turned into text only for the one reported."""
    stack: list[tuple[Any, Any]] = [(None, value)]
    pop, push = stack.pop, stack.append
    while stack:
        where, item = pop()
        kind = type(item)
        if kind is list:
            for index in range(len(item) - 1, -1, -1):
                push(((where, index), item[index]))
        elif kind is dict:
            for key, child in reversed(item.items()):
                push(((where, key), child))
                if len(key) > max_chars:
                    push((where, key))  # an over-long key is reported where its object is
        elif kind is str:
            if len(item) > max_chars:
                path = _path(where)
                message = f"a string has {len(item):,} characters; at most {max_chars:,} are allowed"
                raise JsonRefused(f"{path}: {message}" if path else message, code="string_too_long")
        elif kind is _Bad:
            path = _path(where)
            raise JsonRefused(f"{path}: {item.message}" if path else item.message, code=item.code)


def _longest_string(raw: bytes) -> int:
    """An upper bound of the longest string's length in characters: its longest token in bytes, escapes and all."""
    return max(map(len, _STRING.findall(raw)), default=0)


def loads(raw: bytes, limits: JsonLimits | None = None) -> Any:
    """The JSON value in ``raw`` (UTF-8), or ``JsonRefused`` saying which limit it broke or why it is not JSON.

    Nothing recursive touches the bytes before their depth is known to be within ``limits.max_depth``.
    """
    limits = limits or JsonLimits.from_settings()
    if len(raw) > limits.max_body_bytes:
        raise JsonRefused(
            f"the body is {_size(len(raw))}; at most {_size(limits.max_body_bytes)} here", code="too_large", status=413
        )
    if (depth := json_depth(raw)) > limits.max_depth:
        raise JsonRefused(
            f"the JSON is nested too deeply ({depth:,} levels); at most {limits.max_depth} levels are allowed",
            code="too_deep",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonRefused("the body is not UTF-8 text", code="not_utf8") from None
    decoder = _Decoder(limits.max_number_chars)
    try:
        value = decoder.decode(text)
    except ValueError as e:
        raise JsonRefused(f"JSON parse error - {e}", code="parse_error") from None
    if decoder.refused or _longest_string(raw) > limits.max_string_chars:
        _check_values(value, limits.max_string_chars)
    return value


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "the request is too large"
    default_code = "too_large"


class GuardedJSONParser(JSONParser):
    """DRF's JSON parser reading through ``loads``: the limits come from the view's ``json_limits()`` when it has
    one, else from settings. Reads at most one byte more than the size limit, whatever the request claims."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        view = (parser_context or {}).get("view")
        limits = view.json_limits() if hasattr(view, "json_limits") else JsonLimits.from_settings()
        raw = stream.read(limits.max_body_bytes + 1) if stream is not None else b""
        try:
            return loads(raw, limits)
        except JsonRefused as e:
            if e.status == 413:
                raise PayloadTooLarge(e.message) from None
            raise exceptions.ParseError(e.message, code=e.code) from None
