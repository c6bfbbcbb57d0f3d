"""datanets.parsing's JSON Lines fast path (orjson, one canonical dump, pysha3) against the parser it replaced.

A seeded generator writes a large, hostile corpus: ASCII, Unicode, NFD and compatibility text, every control character,
line and paragraph separators, emoji, escaped and raw quotes and backslashes, lone and paired surrogate escapes, NaN and
infinities, big and long numbers hidden behind duplicate keys, nesting near and over the depth limits, unknown, missing
and repeated keys, whitespace-only and NUL values, duplicate rows, trailing whitespace, CR, stray byte-order marks and
trailing garbage. It is parsed as every record type under several limits, and every item (and the parser's counters,
or the whole-file refusal) must equal what the parser gave before the fast path existed: that output is stored, compact,
in ``data/parser_golden.json.gz``. Regenerate it only from a parser known to be right:
``PARSER_GOLDEN_WRITE=1 scripts/test.sh datanets/tests/test_parsing_fast_path.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
from pathlib import Path

import orjson
import pytest
from eth_hash.auto import keccak

from datanets.parsing import (
    RECORD_TYPES,
    ParsedRow,
    ParseLimits,
    RowError,
    UploadRejected,
    canonical_json,
    parse_upload,
)
from datanets.parsing.fast import fast_check_for
from ledger.hashing import keccak256, new_keccak256

GOLDEN = Path(__file__).parent / "data" / "parser_golden.json.gz"
SEED = 20261203

LIMITS = {
    "default": ParseLimits(max_errors_reported=10**6),
    "small": ParseLimits(
        max_record_bytes=300, max_line_bytes=700, max_json_depth=5, max_number_digits=12, max_errors_reported=10**6
    ),
    "shallow": ParseLimits(max_json_depth=2, max_errors_reported=10**6),
    "flat": ParseLimits(max_json_depth=1, max_number_digits=3, max_errors_reported=10**6),
    "few_errors": ParseLimits(max_errors_reported=25),
}

_WORD_TEXT = "the a of to and in is it you that was for on are with as they be at one have this from or had by"
_WORDS = _WORD_TEXT.split()
_SPECIAL = [
    *(chr(code) for code in range(0x20)),
    *["\x7f", "\x85", "\xa0", "\u1680", "\u2000", "\u200b", "\u2028", "\u2029", "\u202f", "\u3000", "\ufeff"],
    *["\x1c", "\x1d", "\x1e", "\x1f", '"', "\\", "/", "\\\\", '\\"', "'", "{", "}", "[", "]", ":", ","],
    *["😀", "👍🏽", "🇫🇷", "\U0001d518", "\U0010ffff", "\ufffd", "\ue000", "\ufdd0"],
    *["é", "e\u0301", "Å", "\u212b", "A\u030a", "ﬁ", "①", "한", "\u1112\u1161\u11ab", "ñ", "n\u0303", "Ω", "\u2126"],
    *["数据", "مرحبا", "שלום", "Привет", "ά", "\u03b1\u0301", "ḍ̇", "\u1e0b\u0323", "q\u0307\u0323"],
]
_SURROGATE_ESCAPES = ["\\ud800", "\\udfff", "\\ud83d", "\\ude00", "\\ude00\\ud83d", "\\ud83d\\ude00", "\\uD834\\uDD1E"]
_NUMBERS = [
    *[
        "0",
        "-0",
        "1",
        "-1",
        "3.5",
        "1e5",
        "1E-5",
        "-2.5e+3",
        "1e400",
        "-1e400",
        "1e-400",
        "NaN",
        "Infinity",
        "-Infinity",
    ],
    *["12345678901234567890", "9" * 30, "1" * 50, "2" * 100, "3" * 101, "-" + "4" * 100, "0." + "0" * 98 + "1"],
    *["1." + "5" * 99, "1." + "5" * 300, "1" * 4400, "01", "1.", ".5", "+1", "0x10", "1e", "--1"],
]


def _text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:
        return " ".join(rng.choices(_WORDS, k=rng.randint(1, 15)))
    if kind < 0.9:
        pieces = rng.choices(_WORDS + _SPECIAL, k=rng.randint(1, 10))
        return rng.choice(["", " ", "\t", "\n"]).join(pieces)
    if kind < 0.97:
        return rng.choice(["", " ", "  ", "\t", "\n", "\r\n", "\u3000", "\u2028", "\x1c", "\x85", "\xa0 ", "\x00"])
    return rng.choice(_WORDS) + "\x00" + rng.choice(_WORDS)


def _string(rng: random.Random, value: str | None = None) -> str:
    """A JSON string token, written one of several equivalent or not-quite-equivalent ways."""
    if value is None:
        value = _text(rng)
    kind = rng.random()
    if kind < 0.45:
        return json.dumps(value)
    if kind < 0.89:
        return json.dumps(value, ensure_ascii=False)
    if kind < 0.93:  # raw control characters, as some writers emit them (invalid JSON)
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind < 0.98:  # surrogate escapes, lone or paired
        body = json.dumps(value, ensure_ascii=False)[1:-1]
        at = rng.randint(0, len(body))
        if at and body[at - 1] == "\\":
            at -= 1
        return '"' + body[:at] + rng.choice(_SURROGATE_ESCAPES) + body[at:] + '"'
    return '"' + value.replace('"', '\\"') + rng.choice(["", '"', '\\"', "\\"])  # odd endings


def _nested(rng: random.Random, depth: int) -> str:
    opening = "".join(rng.choice("[{") for _ in range(depth))
    inner = rng.choice(['"x"', "1", "null", '"[{"'])
    closing = ""
    for bracket in reversed(opening):
        if bracket == "[":
            closing += "]"
        else:
            closing += "}"
    # An object needs a key: turn each "{" into '{"k":'.
    return opening.replace("{", '{"k":') + inner + closing


def _value(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.72:
        return _string(rng)
    if kind < 0.84:
        return rng.choice(_NUMBERS)
    if kind < 0.88:
        return rng.choice(["true", "false", "null", "[]", "{}", '["a"]', '{"a":"b"}', "[1]", "nul", "tru"])
    return _nested(rng, rng.choice([1, 2, 3, 4, 5, 6, 63, 64, 65, 66, 1023, 1024, 1025, 1100]))


def _key(rng: random.Random, names: list[str]) -> str:
    kind = rng.random()
    if kind < 0.9:
        return json.dumps(rng.choice(names))
    if kind < 0.95:
        return json.dumps(
            rng.choice(["Prompt", "prompt ", "extra", "messages", "labels", "tëxt", "te\u0301xt", "", "\x00"])
        )
    return rng.choice(['"\\u0070rompt"', '"te\\u0078t"', '"\\ud800"', "prompt", "'text'", '"la\\"bel"'])


def _object(rng: random.Random, names: list[str]) -> str:
    pairs = []
    for _ in range(rng.choice([0, 1, 1, 2, 2, 2, 3, 3, 3, 4, 5])):
        key = _key(rng, names)
        value = _value(rng) if rng.random() < 0.3 else _string(rng)
        pairs.append(key + rng.choice([":", ": ", " : "]) + value)
    if pairs and rng.random() < 0.15:  # a repeated key, hiding or hidden by another value
        pairs.insert(rng.randint(0, len(pairs)), _key(rng, names) + ":" + _value(rng))
    return "{" + rng.choice([",", ", "]).join(pairs) + "}"


def _message(rng: random.Random, role: str) -> str:
    if rng.random() < 0.9:
        content = json.dumps(_text(rng), ensure_ascii=False) if rng.random() < 0.6 else _string(rng)
        pairs = [f'"role":{json.dumps(role)}', f'"content":{content}']
        rng.shuffle(pairs)
        if rng.random() < 0.05:
            pairs.append(
                rng.choice(['"content":' + _value(rng), '"role":"user"', '"name":"x"', '"role":' + _value(rng)])
            )
        if rng.random() < 0.03:
            pairs.pop()
        return "{" + ",".join(pairs) + "}"
    return rng.choice([_value(rng), _object(rng, ["role", "content"])])


def _chat(rng: random.Random) -> str:
    turns = []
    if rng.random() < 0.3:
        turns.append("system")
    for _ in range(rng.randint(1, 4)):
        turns += ["user", "assistant"]
    if rng.random() < 0.2:
        turns[rng.randrange(len(turns))] = rng.choice(["system", "user", "assistant", "tool", "User"])
    if rng.random() < 0.1:
        turns.pop()
    body = "[" + ",".join(_message(rng, role) for role in turns) + "]"
    if rng.random() < 0.05:
        body = _value(rng)
    extra = rng.choice(["", "", "", "", ',"extra":"x"', ',"messages":[]', ',"messages":' + _value(rng)])
    return '{"messages":' + body + extra + "}"


def _line(rng: random.Random, earlier: list[str]) -> str:
    kind = rng.random()
    if kind < 0.06 and earlier:
        line = rng.choice(earlier)  # an exact duplicate
    elif kind < 0.08 and earlier:  # the same record written differently, or not
        try:
            obj = json.loads(rng.choice(earlier))
        except (ValueError, RecursionError):
            line = rng.choice(earlier)
        else:
            line = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
            if not line.isascii() and not _encodable(line):  # it held a lone surrogate
                line = json.dumps(obj)
    elif kind < 0.4:
        line = _object(rng, ["prompt", "response", "system", "text", "label"])
    elif kind < 0.7:  # well-formed and usually good: most records in a real upload are
        names = rng.choice([["prompt", "response"], ["prompt", "response", "system"], ["text"], ["text", "label"]])
        dump = json.dumps if rng.random() < 0.5 else lambda text: json.dumps(text, ensure_ascii=False)
        write = dump if rng.random() < 0.8 else lambda text: _string(rng, text)
        line = "{" + ",".join(f"{json.dumps(name)}:{write(_text(rng))}" for name in names) + "}"
    elif kind < 0.85:
        line = _chat(rng)
    elif kind < 0.92:
        line = rng.choice([_value(rng), "[" + _object(rng, ["text"]) + "]", _object(rng, ["text"]) * 2, "", "  ", "\t"])
    else:  # broken JSON
        line = _object(rng, ["prompt", "response", "text", "label"])
        cut = rng.randint(0, len(line))
        line = rng.choice([line[:cut], line + rng.choice(["x", "}", ",", " {}", "\x0c", "\x0b", "\xa0", "\ufeff"])])
    line = rng.choice([""] * 20 + [" ", "\t", "\r", " \t", "\ufeff", "\x0c"]) + line
    line += rng.choice(["", "", "", "", "", "", " ", "\t", "\r", " \r", "\t \t", "\x0c"])
    line = line.replace("\x00", "\\u0000")  # a NUL byte refuses the whole file: broken_files() has those
    earlier.append(line)
    return line


def corpus(seed: int = SEED, lines: int = 1200) -> bytes:
    rng = random.Random(seed)
    earlier: list[str] = []
    body = "\n".join(_line(rng, earlier) for _ in range(lines))
    return b"\xef\xbb\xbf" + body.encode() + b"\n"


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def broken_files() -> dict[str, bytes]:
    """Files the whole of which is refused, or that end in a refusal, after some good and bad rows."""
    base = corpus(SEED + 1, 60).splitlines(keepends=True)
    files = {
        "invalid_utf8_in_value": b'{"text":"caf\xe9"}\n',
        "invalid_utf8_in_key": b'{"te\xffxt":"x"}\n',
        "invalid_utf8_after_value": b'{"text":"x"}\xc3\n',
        "invalid_utf8_too_deep": b"[" * 70 + b'"\xff"' + b"]" * 70 + b"\n",
        "encoded_surrogate": b'{"text":"\xed\xa0\x80"}\n',
        "overlong": b'{"text":"\xc0\xaf"}\n',
        "nul_byte": b'{"text":"a\x00b"}\n',
        "bom_only": b"\xef\xbb\xbf",
        "empty_lines": b"\n \n\t\r\n",
    }
    return {name: b"".join(base[:40]) + tail + b"".join(base[40:]) for name, tail in files.items()}


def _serialise(item: ParsedRow | RowError) -> list[object]:
    if isinstance(item, RowError):
        return ["error", item.source, item.line, item.code, item.message]
    return [
        "row",
        item.source,
        item.line,
        list(item.record.items()),
        item.canonical.decode(),
        item.record_hash,
        item.words,
        item.size,
    ]


def run(data: bytes, record_type: str, limits: ParseLimits) -> list[object]:
    parser = parse_upload(io.BytesIO(data), filename="up.jsonl", record_type=record_type, limits=limits)
    out: list[object] = []
    try:
        for item in parser:
            out.append(_serialise(item))
    except UploadRejected as exc:
        out.append(["rejected", exc.code, exc.message])
    out.append(["counts", parser.record_count, parser.error_count, parser.errors_omitted, parser.duplicate_count])
    return out


# (limits, record types) each file is parsed with; the corpus gets every record type under the default limits.
RUNS = {
    "corpus": [
        ("default", RECORD_TYPES),
        ("small", RECORD_TYPES),
        ("shallow", ("chat", "text")),
        ("flat", ("instruction", "chat")),
        ("few_errors", ("classification",)),
    ],
    "broken": [("default", ("instruction", "chat")), ("small", ("text",))],
}


def outputs() -> dict[str, list[object]]:
    results = {}
    for file_name, data in {"corpus": corpus(), **broken_files()}.items():
        for limits_name, record_types in RUNS["corpus" if file_name == "corpus" else "broken"]:
            for record_type in record_types:
                results[f"{file_name}/{limits_name}/{record_type}"] = run(data, record_type, LIMITS[limits_name])
    return results


def _compact(results: dict[str, list[object]]) -> dict[str, object]:
    """The golden form: rows only by what pins them (the canonical bytes fix the record), errors in full."""
    compact: dict[str, object] = {}
    for name, items in results.items():
        kept = []
        for item in items:
            if item[0] == "row":
                _, source, line, pairs, _canonical, digest, words, size = item  # type: ignore[misc]
                kept.append(["row", source, line, [key for key, _ in pairs], digest, words, size])
            else:
                kept.append(item)
        compact[name] = kept
    return compact


@pytest.fixture(scope="module")
def results() -> dict[str, list[object]]:
    return outputs()


def test_corpus_is_what_the_golden_file_was_made_from() -> None:
    # If this fails, the generator changed (or Python's random did): the golden file no longer describes it.
    data = corpus()
    assert hashlib.sha256(data).hexdigest() == json.loads(gzip.decompress(GOLDEN.read_bytes()))["corpus_sha256"]


def test_fast_path_gives_exactly_what_the_old_parser_gave(results: dict[str, list[object]]) -> None:
    compact = _compact(results)
    if os.environ.get("PARSER_GOLDEN_WRITE"):
        GOLDEN.parent.mkdir(exist_ok=True)
        document = {"corpus_sha256": hashlib.sha256(corpus()).hexdigest(), "results": compact}
        GOLDEN.write_bytes(gzip.compress(json.dumps(document, sort_keys=True).encode(), mtime=0))
    golden = json.loads(gzip.decompress(GOLDEN.read_bytes()))["results"]
    assert sorted(golden) == sorted(compact)
    for name in golden:
        expected, got = golden[name], compact[name]
        for index, (want, have) in enumerate(zip(expected, got, strict=False)):
            assert have == want, f"{name}, item {index}"
        assert len(got) == len(expected), name


def test_the_corpus_exercises_every_outcome(results: dict[str, list[object]]) -> None:
    codes = {item[3] for items in results.values() for item in items if item[0] == "error"}
    assert codes >= {
        "invalid_json",
        "too_deep",
        "number_too_long",
        "shape",
        "missing_field",
        "unknown_field",
        "wrong_type",
        "empty_field",
        "nul_character",
        "bad_surrogate",
        "chat_order",
        "too_large",
        "duplicate",
    }
    for record_type in RECORD_TYPES:
        rows = [item for item in results[f"corpus/default/{record_type}"] if item[0] == "row"]
        assert len(rows) > (15 if record_type == "chat" else 50), record_type
        assert any(not item[4].isascii() for item in rows)
    rejected = {item[1] for items in results.values() for item in items if item[0] == "rejected"}
    assert rejected == {"encoding", "binary"}


def test_rows_hash_their_canonical_bytes_with_keccak256(results: dict[str, list[object]]) -> None:
    for items in results.values():
        for item in items:
            if item[0] != "row":
                continue
            _, _, _, pairs, canonical, digest, words, size = item
            record = dict(pairs)  # type: ignore[arg-type]
            data = canonical.encode()  # type: ignore[union-attr]
            assert data == canonical_json(record)
            assert digest == "0x" + keccak(data).hex() == "0x" + keccak256(data).hex()
            assert size == len(data)
            texts = [m["content"] for m in record["messages"]] if "messages" in record else list(record.values())
            assert words == sum(len(text.split()) for text in texts)  # type: ignore[union-attr]


def test_the_hot_loops_keccak_agrees_with_eth_hash_and_is_independent_per_call() -> None:
    rng = random.Random(7)
    for length in (0, 1, 31, 32, 135, 136, 137, 271, 272, 1000, 70_000):
        data = rng.randbytes(length)
        assert new_keccak256(data).digest() == new_keccak256(data).digest() == keccak(data) == keccak256(data)
        assert new_keccak256(b"abc").digest() == keccak(b"abc")  # no state carried over from the previous input


# What the fast path's shortcuts rest on.


def test_orjson_refuses_raw_control_characters_in_strings() -> None:
    # A plain line (ASCII, no backslash) then holds printable text, " " its only whitespace.
    for code in range(0x20):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(b'{"text":"a' + bytes([code]) + b'b"}')


def test_no_words_means_blank_for_every_character() -> None:
    # The fast path calls a value blank when it splits into no words; the exact path asks isspace().
    for code in range(0x110000):
        char = chr(code)
        assert (not char.split()) == char.isspace(), hex(code)


def test_the_fast_path_takes_good_plain_records() -> None:
    check = fast_check_for("instruction", ParseLimits())
    assert check is not None
    for line in (
        {"prompt": "one two  three ", "response": " four"},
        {"prompt": "a", "response": "b c", "system": "d"},
        {"prompt": "caf\u00e9 e\u0301", "response": "x\u3000y"},
    ):
        raw = json.dumps(line).encode()
        taken = check(orjson.loads(raw), raw)
        assert taken is not None
        record, data, words = taken
        assert data == canonical_json(line)
        assert record == json.loads(data)
        assert words == sum(len(text.split()) for text in line.values())


def test_the_fast_path_takes_many_corpus_lines() -> None:
    # Else the comparison with the golden output would say little about it.
    lines = corpus().split(b"\n")
    for record_type in RECORD_TYPES:
        check = fast_check_for(record_type, ParseLimits())
        assert check is not None
        taken = 0
        for raw in lines:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            taken += check(obj, raw) is not None
        assert taken > 10, record_type


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ('{"text": 1' + "0" * 100 + ', "text": "x"}', "number_too_long"),
        ('{"text": 0.' + "0" * 99 + '1, "text": "x"}', "number_too_long"),
        ('{"text": ' + "[" * 65 + "]" * 65 + ', "text": "x"}', "too_deep"),
        ('{"text": {"a": ' * 64 + "1" + "}" * 64 + ', "text": "x"}', "too_deep"),
    ],
)
def test_a_value_hidden_by_a_repeated_key_is_still_refused(line: str, code: str) -> None:
    (item,) = run_items(line.encode() + b"\n", "text")
    assert isinstance(item, RowError)
    assert item.code == code


def test_a_harmless_value_hidden_by_a_repeated_key_is_dropped() -> None:
    (item,) = run_items(b'{"text": 12, "text": [["x"]], "text": "kept"}\n', "text")
    assert isinstance(item, ParsedRow)
    assert item.record == {"text": "kept"}


def run_items(data: bytes, record_type: str) -> list[ParsedRow | RowError]:
    return list(parse_upload(io.BytesIO(data), filename="x.jsonl", record_type=record_type))
