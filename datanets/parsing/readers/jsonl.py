"""JSON Lines: one JSON object per line, blank lines skipped; the upload path's hot loop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

import orjson

from common.jsonguard import json_depth
from ledger.hashing import new_keccak256

from ..base import ParsedRow, RowError, UploadRejected
from ..fast import fast_check_for
from ..messages import size_text
from ..records import Invalid
from .lines import LineReader, Source, not_utf8

if TYPE_CHECKING:
    from ..parser import UploadParser


def read_jsonl(parser: UploadParser, source: Source, lines: LineReader) -> Iterator[ParsedRow | RowError]:
    # The hot loop of the module: names are bound locally and the common path has no extra calls.
    limits = parser.limits
    check = parser.check
    finish = parser.finish
    error = parser.error
    decoder = _json_decoder(limits.max_number_digits)
    scan = decoder.scan_once
    decode = decoder.decode
    max_depth = limits.max_json_depth
    # The fast path: orjson parses the line and a fast check takes the record only if it is good and the exact
    # path below would have taken it, with the same result; anything else (invalid JSON, a bad record, a number
    # anywhere) goes on to the exact path, so every error is the one it always was.
    fast = fast_check_for(parser.record_type, limits)
    loads = orjson.loads
    finish_bytes = parser.finish_bytes
    # what finish_bytes() uses, bound here for its inlined common case below
    max_bytes = limits.max_record_bytes
    max_records = limits.max_records
    new_keccak = new_keccak256
    seen_setdefault = parser.seen.setdefault
    packed_source = source.index << 40
    source_name = source.name
    new_row = partial(tuple.__new__, ParsedRow)
    number = 0
    offset = 0
    for batch in lines:
        for raw in batch:
            number += 1
            if raw.__class__ is int:
                offset += raw + 1
                problem = f"line is {size_text(raw)} long; a record may be at most {size_text(limits.max_record_bytes)}"
                if item := error(source, number, "too_large", problem):
                    yield item
                continue
            start = offset
            offset += len(raw) + 1
            if not raw or raw.isspace():
                continue
            if fast is not None:
                try:
                    obj = loads(raw)
                except ValueError:  # orjson.JSONDecodeError is one
                    pass
                else:
                    if (good := fast(obj, raw)) is not None:
                        record, data, words = good
                        # finish_bytes() inlined for a new record of allowed size, the common case; anything
                        # else (too large, a duplicate) goes through it, which says why.
                        size = len(data)
                        if size <= max_bytes:
                            digest = new_keccak(data).digest()
                            packed = packed_source | number
                            if seen_setdefault(digest[:16], packed) == packed:
                                parser.record_count += 1
                                if parser.record_count > max_records:
                                    raise UploadRejected(
                                        f"the upload has more than {max_records:,} records, the most one upload "
                                        "may hold",
                                        code="too_many_records",
                                    )
                                yield new_row((source_name, number, record, data, "0x" + digest.hex(), words, size))
                                continue
                        if item := finish_bytes(source, number, record, data, words):
                            yield item
                        continue
            try:
                text = raw.decode()
            except UnicodeDecodeError as exc:
                raise not_utf8(source, number, lines.skipped_bom + start, raw, exc) from None
            try:
                # Counting brackets is cheap (and cheaper on bytes than on wide strings); the exact scan runs
                # only when there could be too many. Done before parsing, so depth never reaches C recursion.
                if raw.count(b"{") + raw.count(b"[") > max_depth and json_depth(raw) > max_depth:
                    raise Invalid("too_deep", f"JSON is nested more than {max_depth} levels deep")
                try:
                    obj, end = scan(text, 0)
                    if end != len(text) and text[end:].strip(" \t\r"):  # JSON's whitespace, no more
                        raise StopIteration
                except StopIteration:
                    obj = decode(text)  # the slow path raises a JSONDecodeError that says where
                record, canonical, words = check(obj)
            except Invalid as exc:
                if item := error(source, number, exc.code, exc.problem):
                    yield item
                continue
            except json.JSONDecodeError as exc:
                if item := error(source, number, "invalid_json", f"not valid JSON: {exc.msg} (column {exc.colno})"):
                    yield item
                continue
            except RecursionError:  # not reached with a sane max_json_depth; kept so no input can crash us
                if item := error(source, number, "too_deep", "JSON is nested too deeply"):
                    yield item
                continue
            if item := finish(source, number, record, canonical, words):
                yield item


def _json_decoder(max_digits: int) -> json.JSONDecoder:
    def parse_number(text: str) -> float:
        # Checked before conversion: Python refuses ints over 4300 digits anyway, but only after the work.
        digits = len(text)
        if digits > max_digits:
            raise Invalid("number_too_long", f"a number has {digits:,} characters; at most {max_digits} are allowed")
        return float(text)

    def parse_int(text: str) -> int:
        if len(text) > max_digits:
            parse_number(text)
        return int(text)

    return json.JSONDecoder(parse_int=parse_int, parse_float=parse_number)
