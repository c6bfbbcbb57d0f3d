"""The record types: what each one holds, and the check that turns a decoded object into a record.

Each check takes the decoded object and returns (record, canonical JSON text, words) or raises ``Invalid``. They build
the canonical text directly, in sorted key order, which is several times faster than json.dumps with sort_keys; tests
hold it equal to ``canonical_json(record)``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Final

from .messages import kind_text, names_text, plural

_CHAT_ROLES = frozenset({"system", "user", "assistant"})
_MESSAGE_KEYS = frozenset({"role", "content"})
MISSING: Final = object()


class Invalid(Exception):
    """A row's content breaks a rule; ``problem`` is the human half of the message."""

    def __init__(self, code: str, problem: str) -> None:
        self.code = code
        self.problem = problem


def _field_text(name: str, value: object) -> str:
    """``value`` as record text, NFC-normalised; raises ``Invalid`` if it isn't usable text."""
    if value.__class__ is not str or not value or value.isspace() or "\x00" in value:  # type: ignore[operator]
        raise _field_problem(name, value)
    if not value.isascii() and not unicodedata.is_normalized("NFC", value):  # type: ignore[union-attr]
        return unicodedata.normalize("NFC", value)  # type: ignore[arg-type]
    return value  # type: ignore[return-value]


def _field_problem(name: str, value: object) -> Invalid:
    if value is MISSING:
        return Invalid("missing_field", f'missing field "{name}"')
    if value.__class__ is not str:
        return Invalid("wrong_type", f'field "{name}" must be text, got {kind_text(value)}')
    if "\x00" in value:  # type: ignore[operator]
        return Invalid("nul_character", f'field "{name}" contains a NUL character (\\u0000)')
    return Invalid("empty_field", f'field "{name}" is empty')


def _flat_check(record_type: str, fields: tuple[tuple[str, bool], ...]) -> Callable[[object], tuple]:
    """A check for a record of text fields; ``fields`` are (name, required) pairs."""
    allowed = frozenset(name for name, _ in fields)
    required = sorted(name for name, needed in fields if needed)
    optional = sorted(name for name, needed in fields if not needed)
    described = names_text(required) + (f" and optionally {names_text(optional)}" if optional else "")
    # Sorted, so that the canonical text comes out with its keys in order.
    spec = tuple((name, needed, f'"{name}":') for name, needed in sorted(fields))

    def check(
        obj: object,
        is_normalized: Callable[[str, str], bool] = unicodedata.is_normalized,
        normalize: Callable[[str, str], str] = unicodedata.normalize,
        encode: Callable[[str], str] = encode_basestring,
    ) -> tuple[dict[str, object], str, int]:
        if obj.__class__ is not dict:
            raise Invalid("shape", f"expected a JSON object, got {kind_text(obj)}")
        if not obj.keys() <= allowed:  # type: ignore[attr-defined]
            unknown = sorted(obj.keys() - allowed)  # type: ignore[attr-defined]
            raise Invalid(
                "unknown_field",
                f"unknown {plural(len(unknown), 'field')} {names_text(unknown)} ({record_type} records have "
                f"{described})",
            )
        parts = []
        words = 0
        for name, needed, prefix in spec:
            value = obj.get(name, MISSING)  # type: ignore[attr-defined]
            # _field_text inlined: this runs for every field of every record.
            if value.__class__ is not str or not value or value.isspace() or "\x00" in value:
                if value is MISSING and not needed:
                    continue
                raise _field_problem(name, value)
            if not value.isascii() and not is_normalized("NFC", value):
                value = obj[name] = normalize("NFC", value)  # type: ignore[index]
            parts.append(prefix + encode(value))
            words += len(value.split())
        # obj now holds exactly the record: only known keys (checked above), values normalised in place.
        return obj, "{" + ",".join(parts) + "}", words  # type: ignore[return-value]

    return check


def check_chat(obj: object) -> tuple[dict[str, object], str, int]:
    if obj.__class__ is not dict:
        raise Invalid("shape", f"expected a JSON object, got {kind_text(obj)}")
    if obj.keys() != {"messages"}:  # type: ignore[attr-defined]
        unknown = sorted(obj.keys() - {"messages"})  # type: ignore[attr-defined]
        if not unknown:
            raise Invalid("missing_field", 'missing field "messages"')
        raise Invalid(
            "unknown_field",
            f'unknown {plural(len(unknown), "field")} {names_text(unknown)} (chat records have only "messages")',
        )
    messages = obj["messages"]  # type: ignore[index]
    if messages.__class__ is not list:
        raise Invalid("wrong_type", f'field "messages" must be a list, got {kind_text(messages)}')
    record_messages = []
    parts = []
    words = 0
    previous = ""
    for index, message in enumerate(messages, 1):
        if message.__class__ is not dict:
            raise Invalid("shape", f"message {index} must be an object, got {kind_text(message)}")
        if message.keys() != _MESSAGE_KEYS:
            missing = sorted(_MESSAGE_KEYS - message.keys())
            if missing:
                raise Invalid("missing_field", f"message {index} is missing {names_text(missing)}")
            unknown = sorted(message.keys() - _MESSAGE_KEYS)
            raise Invalid(
                "unknown_field",
                f"message {index} has unknown {plural(len(unknown), 'field')} {names_text(unknown)} (a message has "
                '"role" and "content")',
            )
        role = message["role"]
        if role.__class__ is not str or role not in _CHAT_ROLES:
            shown = f'"{role}"' if role.__class__ is str else kind_text(role)
            raise Invalid("wrong_type", f'message {index}: role must be "system", "user" or "assistant", not {shown}')
        _check_turn(index, role, previous)
        content = _field_text(f"messages[{index}].content", message["content"])
        record_messages.append({"content": content, "role": role})
        parts.append('{"content":' + encode_basestring(content) + ',"role":"' + role + '"}')
        words += len(content.split())
        previous = role
    if previous != "assistant":
        if previous in ("", "system"):
            raise Invalid("chat_order", "a chat needs at least one user and one assistant message")
        raise Invalid("chat_order", "the last message must be from the assistant")
    return {"messages": record_messages}, '{"messages":[' + ",".join(parts) + "]}", words


def _check_turn(index: int, role: str, previous: str) -> None:
    if role == "system":
        if index != 1:
            raise Invalid("chat_order", f"message {index}: a system message may only come first")
        return
    expected = "assistant" if previous == "user" else "user"
    if role != expected:
        after = f'after a "{previous}" message' if previous else "first"
        article = "an" if expected == "assistant" else "a"
        raise Invalid("chat_order", f'message {index}: expected {article} "{expected}" message {after}, got "{role}"')


FIELDS: Final = {
    "text": (("text", True),),
    "instruction": (("prompt", True), ("response", True), ("system", False)),
    "classification": (("text", True), ("label", True)),
}
RECORD_CHECKS: Final[dict[str, Callable[[object], tuple]]] = {
    "text": _flat_check("text", FIELDS["text"]),
    "instruction": _flat_check("instruction", FIELDS["instruction"]),
    "chat": check_chat,
    "classification": _flat_check("classification", FIELDS["classification"]),
}
