"""datanets.parsing: every record type and format, and the hostile uploads it must refuse in bounded time and memory."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from eth_hash.auto import keccak

from datanets.parsing import (
    ALLOWED_EXTENSIONS,
    RECORD_TYPES,
    ParsedRow,
    ParseLimits,
    RowError,
    UploadRejected,
    canonical_json,
    parse_upload,
    record_hash,
)
from ledger.hashing import keccak256

MiB = 1024 * 1024


def parse(
    data: bytes, filename: str = "data.jsonl", record_type: str = "instruction", **limits: int
) -> tuple[list[ParsedRow], list[RowError]]:
    """Parse ``data`` fully and check the promises every good row makes."""
    parser = parse_upload(io.BytesIO(data), filename=filename, record_type=record_type, limits=ParseLimits(**limits))
    items = list(parser)
    rows = [item for item in items if isinstance(item, ParsedRow)]
    errors = [item for item in items if isinstance(item, RowError)]
    assert len(rows) + len(errors) == len(items)
    for row in rows:
        assert row.canonical == canonical_json(row.record)
        assert row.record_hash == record_hash(row.canonical)
        assert row.size == len(row.canonical)
    assert parser.record_count == len(rows)
    return rows, errors


def messages(errors: list[RowError]) -> list[str]:
    return [error.message for error in errors]


def rejected(data: bytes, filename: str = "data.jsonl", record_type: str = "instruction", **limits: int) -> str:
    with pytest.raises(UploadRejected) as caught:
        parse(data, filename, record_type, **limits)
    return caught.value.message


def jsonl(*objects: object) -> bytes:
    return b"".join(json.dumps(obj).encode() + b"\n" for obj in objects)


def make_zip(entries: dict[str, bytes], *, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name) if name.endswith("/") else name, data)
    return buffer.getvalue()


def zip_with_entries(count: int, *, claimed: int | None = None) -> bytes:
    """A valid zip of ``count`` empty stored entries, built directly (zipfile takes seconds for 100,000).

    ``claimed`` makes the end record state another count, as a hostile archive would.
    """
    local = bytearray()
    central = bytearray()
    for index in range(count):
        name = f"{index}.jsonl".encode()
        offset = len(local)
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
        central += (
            struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, offset)
            + name
        )
    entries = count if claimed is None else claimed
    end = b""
    if entries > 0xFFFF:
        zip64_at = len(local) + len(central)
        end += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, len(central), len(local))
        end += struct.pack("<4sLQL", b"PK\x06\x07", 0, zip64_at, 1)
        entries = 0xFFFF
    end += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, entries, entries, len(central), len(local), 0)
    return bytes(local + central + end)


class CountingStream(io.BytesIO):
    """Records how many bytes the parser has pulled so far."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


# Record types


@pytest.mark.parametrize(
    ("record_type", "record"),
    [
        ("text", {"text": "Hello world"}),
        ("instruction", {"prompt": "Add 2 and 2", "response": "4"}),
        ("instruction", {"prompt": "Add 2 and 2", "response": "4", "system": "Be terse."}),
        (
            "chat",
            {
                "messages": [
                    {"role": "system", "content": "Be kind."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Bye"},
                    {"role": "assistant", "content": "Goodbye."},
                ]
            },
        ),
        ("chat", {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}),
        ("classification", {"text": "great film", "label": "positive"}),
    ],
)
def test_it_accepts_each_valid_record_type(record_type: str, record: dict[str, object]) -> None:
    rows, errors = parse(jsonl(record), record_type=record_type)

    assert errors == []
    [row] = rows
    assert row.record == record
    assert row.source == "data.jsonl"
    assert row.line == 1
    assert row.record_hash == "0x" + keccak(canonical_json(record)).hex()


def test_it_reports_words_and_size() -> None:
    rows, _ = parse(jsonl({"prompt": "one two\tthree", "response": "four\nfive", "system": "six"}))

    assert rows[0].words == 6
    assert rows[0].size == len(b'{"prompt":"one two\\tthree","response":"four\\nfive","system":"six"}')


def test_chat_words_count_contents_not_roles() -> None:
    record = {"messages": [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c"}]}

    rows, _ = parse(jsonl(record), record_type="chat")

    assert rows[0].words == 3


@pytest.mark.parametrize(
    ("record_type", "record", "message"),
    [
        ("instruction", {"prompt": "hi"}, 'line 1: missing field "response"'),
        ("classification", {"text": "x", "label": 3}, 'line 1: field "label" must be text, got a number'),
        ("classification", {"text": "x", "label": None}, 'line 1: field "label" must be text, got null'),
        ("text", {"text": ["a"]}, 'line 1: field "text" must be text, got a list'),
        ("text", {"text": "   "}, 'line 1: field "text" is empty'),
        ("text", {"text": "a\u0000b"}, 'line 1: field "text" contains a NUL character (\\u0000)'),
        (
            "instruction",
            {"prompt": "p", "response": "r", "temperature": "hot"},
            'line 1: unknown field "temperature" (instruction records have "prompt" and "response" and optionally '
            '"system")',
        ),
        ("text", ["text"], "line 1: expected a JSON object, got a list"),
        ("text", "just a string", "line 1: expected a JSON object, got text"),
        ("chat", {"messages": "hi"}, 'line 1: field "messages" must be a list, got text'),
        ("chat", {"messages": []}, "line 1: a chat needs at least one user and one assistant message"),
        (
            "chat",
            {"messages": [{"role": "system", "content": "s"}]},
            "line 1: a chat needs at least one user and one assistant message",
        ),
        (
            "chat",
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "id": "7"},
            'line 1: unknown field "id" (chat records have only "messages")',
        ),
        (
            "chat",
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
            'line 1: message 1: expected a "user" message first, got "assistant"',
        ),
        (
            "chat",
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            'line 1: message 2: expected an "assistant" message after a "user" message, got "user"',
        ),
        (
            "chat",
            {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
            "line 1: message 2: a system message may only come first",
        ),
        (
            "chat",
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                ]
            },
            "line 1: the last message must be from the assistant",
        ),
        (
            "chat",
            {"messages": [{"role": "robot", "content": "a"}]},
            'line 1: message 1: role must be "system", "user" or "assistant", not "robot"',
        ),
        (
            "chat",
            {"messages": [{"role": "user", "content": "a", "name": "bob"}]},
            'line 1: message 1 has unknown field "name" (a message has "role" and "content")',
        ),
        ("chat", {"messages": [{"role": "user"}]}, 'line 1: message 1 is missing "content"'),
        ("chat", {"messages": [["user", "hi"]]}, "line 1: message 1 must be an object, got a list"),
        (
            "chat",
            {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "b"}]},
            'line 1: field "messages[1].content" is empty',
        ),
    ],
)
def test_it_explains_each_invalid_record(record_type: str, record: object, message: str) -> None:
    rows, errors = parse(jsonl(record), record_type=record_type)

    assert rows == []
    assert messages(errors) == [message]


def test_bad_rows_are_reported_and_good_rows_still_parse() -> None:
    data = jsonl({"prompt": "a", "response": "b"}, {"prompt": "c"}, {"prompt": "d", "response": "e"})

    rows, errors = parse(data)

    assert [row.line for row in rows] == [1, 3]
    assert [(error.line, error.code) for error in errors] == [(2, "missing_field")]


def test_it_refuses_an_unknown_record_type() -> None:
    with pytest.raises(ValueError, match="unknown record type"):
        parse_upload(io.BytesIO(b""), filename="a.jsonl", record_type="image")


def test_record_types_and_extensions_are_published() -> None:
    assert RECORD_TYPES == ("text", "instruction", "chat", "classification")
    assert set(ALLOWED_EXTENSIONS) == {".jsonl", ".csv", ".txt", ".md", ".zip"}


# JSON Lines


def test_jsonl_skips_blank_lines_and_accepts_crlf_and_bom() -> None:
    data = b'\xef\xbb\xbf{"text": "a"}\r\n\r\n   \n{"text": "b"}'

    rows, errors = parse(data, record_type="text")

    assert errors == []
    assert [(row.line, row.record) for row in rows] == [(1, {"text": "a"}), (4, {"text": "b"})]


def test_jsonl_reports_invalid_json_with_its_line() -> None:
    rows, errors = parse(b'{"text": "a"}\n{"text": \'b\'}\n', record_type="text")

    assert len(rows) == 1
    assert messages(errors) == ["line 2: not valid JSON: Expecting value (column 10)"]


def test_jsonl_refuses_two_values_on_one_line() -> None:
    _, errors = parse(b'{"text": "a"} {"text": "b"}\n', record_type="text")

    assert messages(errors) == ["line 1: not valid JSON: Extra data (column 15)"]


def test_jsonl_accepts_leading_whitespace() -> None:
    rows, _ = parse(b'   {"text": "a"}\n', record_type="text")

    assert rows[0].record == {"text": "a"}


def test_lone_surrogate_escapes_are_refused() -> None:
    _, errors = parse(b'{"text": "bad \\ud800 half"}\n', record_type="text")

    assert [error.code for error in errors] == ["bad_surrogate"]


# CSV


def test_csv_parses_rows_with_quotes_newlines_and_optional_columns() -> None:
    data = b'Prompt, response ,system\r\n"hi, there","two\r\nlines",\r\nq,a,be brief\r\n'

    rows, errors = parse(data, "data.csv")

    assert errors == []
    assert [(row.line, row.record) for row in rows] == [
        (2, {"prompt": "hi, there", "response": "two\nlines"}),
        (3, {"prompt": "q", "response": "a", "system": "be brief"}),
    ]


def test_csv_numbers_rows_as_a_spreadsheet_does() -> None:
    data = b'text,label\n"a\nb",x\n\nc,\nd,y,extra\n,\n'

    rows, errors = parse(data, "data.csv", "classification")

    assert [row.line for row in rows] == [2]
    assert messages(errors) == ['row 4: field "label" is empty', "row 5: has 3 values; the header has 2 columns"]


def test_csv_header_must_name_the_fields() -> None:
    message = rejected(b"question,answer\nq,a\n", "data.csv")

    assert message == (
        'row 1: the header row must name the columns "prompt" and "response" and optionally "system"; it has '
        '"question" and "answer"'
    )


def test_csv_header_may_not_repeat_a_column() -> None:
    assert rejected(b"text,text\na,b\n", "data.csv", "text") == 'row 1: the header names "text" more than once'


def test_csv_is_refused_for_chat_records() -> None:
    with pytest.raises(UploadRejected, match="chat records can't be uploaded as CSV"):
        parse_upload(io.BytesIO(b"messages\n"), filename="chats.csv", record_type="chat")


def test_csv_with_only_a_header_is_empty() -> None:
    assert rejected(b"prompt,response\n", "data.csv") == "the CSV file has a header row but no records"


def test_csv_unmatched_quote_is_reported_where_the_row_starts() -> None:
    data = b'prompt,response\nq,a\nq2,"never closed\nmore\nlines\n'

    message = rejected(data, "data.csv")

    assert message == 'row 3, starting on line 3: a quoted field is never closed (a closing " is missing)'


def test_csv_unmatched_quote_in_a_large_file_is_refused_in_bounded_memory() -> None:
    data = b'prompt,response\nq,"open\n' + b"x,y\n" * 1_000_000

    message = rejected(data, "data.csv", max_line_bytes=64 * 1024)

    assert message.startswith("line 2: the row starting here runs past 64 KB")


# Plain text and Markdown


def test_txt_gives_one_record_per_paragraph() -> None:
    data = b"First line\r\nsame paragraph\r\n\r\n\r\n  \nSecond paragraph\n"

    rows, errors = parse(data, "notes.txt", "text")

    assert errors == []
    assert [(row.line, row.record["text"]) for row in rows] == [
        (1, "First line\nsame paragraph"),
        (6, "Second paragraph"),
    ]


def test_md_gives_one_record_per_top_level_section() -> None:
    data = (
        b"Intro text\n\n# Title\npara\n\n```python\n# not a heading\n```\n## Sub\nbody\n### deeper stays in Sub\n\n\n"
    )

    rows, errors = parse(data, "doc.md", "text")

    assert errors == []
    assert [(row.line, row.record["text"]) for row in rows] == [
        (1, "Intro text"),
        (3, "# Title\npara\n\n```python\n# not a heading\n```"),
        (9, "## Sub\nbody\n### deeper stays in Sub"),
    ]


@pytest.mark.parametrize("filename", ["notes.txt", "doc.md"])
def test_text_files_hold_only_text_records(filename: str) -> None:
    with pytest.raises(UploadRejected, match="files can't hold instruction records"):
        parse_upload(io.BytesIO(b"hello"), filename=filename, record_type="instruction")


def test_a_paragraph_over_the_record_limit_is_refused_without_holding_it() -> None:
    data = b"small\n\n" + (b"x" * 1000 + b"\n") * 100 + b"\nafter\n"

    rows, errors = parse(data, "notes.txt", "text", max_record_bytes=10_000, max_line_bytes=20_000)

    assert [row.record["text"] for row in rows] == ["small", "after"]
    assert messages(errors) == ["line 3: paragraph is 97.8 KB; a record may be at most 9.8 KB"]


# Archives


def test_zip_entries_are_parsed_by_extension_and_named_in_errors() -> None:
    data = make_zip(
        {
            "inner/": b"",
            "inner/file.jsonl": jsonl({"text": "a"}, {"text": "b"}, {"text": 1}),
            "more.csv": b"text\nc\n",
            "notes.txt": b"d\n\ne\n",
            "__MACOSX/._file.jsonl": b"\x00\x05\x16\x07 resource fork",
        }
    )

    rows, errors = parse(data, "archive.zip", "text")

    assert [(row.source, row.line, row.record["text"]) for row in rows] == [
        ("inner/file.jsonl", 1, "a"),
        ("inner/file.jsonl", 2, "b"),
        ("more.csv", 2, "c"),
        ("notes.txt", 1, "d"),
        ("notes.txt", 3, "e"),
    ]
    assert messages(errors) == ['archive.zip:inner/file.jsonl line 3: field "text" must be text, got a number']


def test_zip_refuses_files_it_does_not_accept() -> None:
    data = make_zip({"a.jsonl": jsonl({"text": "a"}), "photo.png": b"\x89PNG"})

    message = rejected(data, "archive.zip", "text")

    assert message == "archive.zip:photo.png: .png files are not accepted; use .jsonl, .csv, .txt, .md or .zip"


def test_zip_without_records_is_empty() -> None:
    assert (
        rejected(make_zip({"a.jsonl": b"\n\n"}), "archive.zip", "text") == "archive.zip: the archive holds no records"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../evil.jsonl", 'archive.zip:../evil.jsonl: entry names may not point outside the archive ("..")'),
        ("a/../../evil.jsonl", 'archive.zip:a/../../evil.jsonl: entry names may not point outside the archive ("..")'),
        ("..\\evil.jsonl", 'archive.zip:..\\evil.jsonl: entry names may not point outside the archive ("..")'),
        ("/etc/evil.jsonl", "archive.zip:/etc/evil.jsonl: absolute paths are not allowed in an archive"),
        ("C:/evil.jsonl", "archive.zip:C:/evil.jsonl: absolute paths are not allowed in an archive"),
        ("inner.zip", "archive.zip:inner.zip: archives inside an archive are not accepted"),
    ],
)
def test_zip_refuses_unsafe_entry_names(name: str, message: str) -> None:
    data = make_zip({"ok.jsonl": jsonl({"text": "a"}), name: jsonl({"text": "b"})})

    with pytest.raises(UploadRejected) as caught:
        parse_upload(io.BytesIO(data), filename="archive.zip", record_type="text")

    assert caught.value.message == message


def test_zip_refuses_symlinks() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("link.jsonl")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")

    message = rejected(buffer.getvalue(), "archive.zip", "text")

    assert message == "archive.zip:link.jsonl: symbolic links are not allowed in an archive"


def test_zip_refuses_encrypted_entries() -> None:
    data = bytearray(make_zip({"secret.jsonl": b"ciphertext"}))
    struct.pack_into("<H", data, 6, 0x1)  # zipfile can't write encrypted entries: set the flag by hand
    struct.pack_into("<H", data, data.find(b"PK\x01\x02") + 8, 0x1)

    message = rejected(bytes(data), "archive.zip", "text")

    assert message == "archive.zip:secret.jsonl: encrypted entries are not accepted"


def test_zip_refuses_two_entries_with_one_name() -> None:
    buffer = io.BytesIO()
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.jsonl", jsonl({"text": "a"}))
        archive.writestr("a.jsonl", jsonl({"text": "b"}))

    message = rejected(buffer.getvalue(), "archive.zip", "text")

    assert message == "archive.zip:a.jsonl: the archive holds two entries with this name"


def test_zip_refuses_entries_that_share_compressed_data() -> None:
    data = bytearray(make_zip({"a.jsonl": jsonl({"text": "x" * 4000})}, method=zipfile.ZIP_STORED))
    start = data.find(b"PK\x01\x02")
    end = data.find(b"PK\x05\x06")
    second = bytearray(data[start:end])
    second[46:53] = b"b.jsonl"  # same offset, another name: both entries read the same bytes
    count, size, offset = 2, 2 * (end - start), start
    data[end:end] = second
    struct.pack_into("<2H2L", data, end + len(second) + 8, count, count, size, offset)

    message = rejected(bytes(data), "archive.zip", "text")

    assert message == "archive.zip: the archive's entries overlap"


def test_zip_bomb_is_refused_from_declared_sizes() -> None:
    data = make_zip({"bomb.jsonl": b"\n" * (20 * MiB)})
    assert len(data) < 100_000

    message = rejected(data, "archive.zip", "text")

    assert message.startswith("archive.zip:bomb.jsonl: expands ")
    assert message.endswith("times (19.9 KB to 20 MB); at most 100 times is allowed")


def test_zip_whose_headers_understate_its_size_is_refused() -> None:
    real_size = 2 * MiB
    data = bytearray(make_zip({"a.jsonl": jsonl({"text": "a"}) + b"\n" * real_size}))
    stated = 10_000  # well inside every limit
    struct.pack_into("<L", data, 22, stated)  # local header
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<L", data, central + 24, stated)

    message = rejected(bytes(data), "archive.zip", "text")

    assert message.startswith("archive.zip:a.jsonl: the archive is damaged (Bad CRC-32")


def test_zip_total_size_is_capped() -> None:
    data = make_zip({"a.jsonl": jsonl({"text": "a"}), "b.jsonl": jsonl({"text": "b"})})

    message = rejected(data, "archive.zip", "text", max_zip_uncompressed_bytes=20)

    assert message == "archive.zip: the archive expands to 28 bytes; at most 20 bytes is allowed"


def test_zip_with_100000_entries_is_refused_before_its_directory_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    data = zip_with_entries(100_000)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("zipfile must not read the directory")

    monkeypatch.setattr(zipfile, "ZipFile", fail)

    with pytest.raises(UploadRejected) as caught:
        parse_upload(io.BytesIO(data), filename="archive.zip", record_type="text")

    assert caught.value.message == "archive.zip: the archive has 100,000 entries; at most 10,000 are allowed"


def test_crafted_zip_is_a_real_zip() -> None:
    assert len(zipfile.ZipFile(io.BytesIO(zip_with_entries(3))).infolist()) == 3


def test_zip_whose_end_record_understates_its_entries_is_refused() -> None:
    data = zip_with_entries(20_000, claimed=3)

    message = rejected(data, "archive.zip", "text")

    assert message == "archive.zip: the archive has 20,000 entries; at most 10,000 are allowed"


def test_not_a_zip_named_zip_is_refused() -> None:
    assert rejected(b"hello", "archive.zip", "text") == "archive.zip: not a valid zip archive"


def test_zip_from_an_unseekable_stream_is_spooled(tmp_path: Path) -> None:
    class Unseekable(io.BytesIO):
        def seekable(self) -> bool:
            return False

    stream = Unseekable(make_zip({"a.jsonl": jsonl({"text": "a"})}))

    items = list(parse_upload(stream, filename="a.zip", record_type="text"))

    assert [item.record for item in items] == [{"text": "a"}]  # type: ignore[union-attr]


# Whole-file problems


@pytest.mark.parametrize("data", [b"", b"\n\n  \r\n", b"\xef\xbb\xbf"])
def test_empty_file_is_refused(data: bytes) -> None:
    assert rejected(data) == "the file is empty"


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        ("data.json", ".json files are not accepted; use .jsonl, .csv or .zip"),
        ("data.exe", ".exe files are not accepted; use .jsonl, .csv or .zip"),
        ("data", "the file name has no extension; use .jsonl, .csv or .zip"),
        ("data.jsonl.gz", ".gz files are not accepted; use .jsonl, .csv or .zip"),
    ],
)
def test_wrong_extension_is_refused_before_reading(filename: str, message: str) -> None:
    stream = CountingStream(b'{"prompt": "a", "response": "b"}')

    with pytest.raises(UploadRejected) as caught:
        parse_upload(stream, filename=filename, record_type="instruction")

    assert caught.value.message == message
    assert caught.value.code == "extension"
    assert stream.bytes_read == 0


def test_extension_case_does_not_matter() -> None:
    rows, _ = parse(jsonl({"text": "a"}), "DATA.JSONL", "text")

    assert len(rows) == 1


def test_png_named_jsonl_is_refused() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01" + bytes(range(256))

    assert rejected(png) == "this looks like a PNG image, not a JSON Lines file"


def test_utf16_is_refused_with_advice() -> None:
    data = '{"text": "a"}\n'.encode("utf-16")

    assert rejected(data, record_type="text") == "this looks like UTF-16 text (save it as UTF-8), not a JSON Lines file"


def test_nul_bytes_are_refused_with_their_position() -> None:
    data = b'{"text": "a"}\n{"text": "b\x00"}\n'

    message = rejected(data, record_type="text")

    assert message == f"line 2, byte {data.index(0)}: the file contains a NUL byte; a JSON Lines file holds text only"


def test_invalid_utf8_is_refused_with_line_and_byte_offset() -> None:
    data = b'\xef\xbb\xbf{"text": "ok"}\n{"text": "caf\xe9"}\n'

    message = rejected(data, record_type="text")

    assert message == f"line 2, byte {data.index(0xE9)}: not valid UTF-8 (byte 0xe9); save the file as UTF-8"


@pytest.mark.parametrize(
    ("filename", "header", "line"), [("data.csv", b"text\n", 4), ("notes.txt", b"", 3), ("doc.md", b"", 3)]
)
def test_invalid_utf8_is_refused_in_every_text_format(filename: str, header: bytes, line: int) -> None:
    data = header + b"fine\n\nbad \xff here\n"

    message = rejected(data, filename, "text")

    assert message.startswith(f"line {line}, byte {data.index(0xFF)}: not valid UTF-8")


# Hostile rows


def test_record_over_the_size_limit_is_refused() -> None:
    big = {"text": "x" * int(1.5 * MiB)}

    rows, errors = parse(jsonl({"text": "small"}, big), record_type="text")

    assert len(rows) == 1
    assert messages(errors) == ["line 2: record is 1.5 MB; the limit is 1 MB"]


def test_record_just_over_the_limit_shows_exact_bytes() -> None:
    _, errors = parse(jsonl({"text": "x" * 90}), record_type="text", max_record_bytes=100)

    assert messages(errors) == ["line 1: record is 101 bytes; the limit is 100 bytes"]


def test_50_mb_line_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as file:
        file.write(b'{"text": "before"}\n{"text": "')
        chunk = b"a" * MiB
        for _ in range(50):
            file.write(chunk)
        file.write(b'"}\n{"text": "after"}\n')

    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            items = list(parse_upload(stream, filename="huge.jsonl", record_type="text"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 10 * MiB
    assert [item.record for item in items if isinstance(item, ParsedRow)] == [{"text": "before"}, {"text": "after"}]
    assert [item.message for item in items if isinstance(item, RowError)] == [
        "line 2: line is 50 MB long; a record may be at most 1 MB"
    ]


def test_json_nested_100000_deep_is_refused_without_recursion() -> None:
    deep = b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    unclosed = b"[" * 100_000 + b"\n"

    rows, errors = parse(deep + unclosed + jsonl({"text": "fine"}), record_type="text")

    assert len(rows) == 1
    assert messages(errors) == [
        "line 1: JSON is nested more than 64 levels deep",
        "line 2: JSON is nested more than 64 levels deep",
    ]


def test_unterminated_string_of_escaped_quotes_is_scanned_in_linear_time() -> None:
    line = b"[" * 100 + b'"' + b'\\"' * 1_000_000 + b"\n"

    _, errors = parse(line, record_type="text")

    assert messages(errors) == ["line 1: JSON is nested more than 64 levels deep"]


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    rows, errors = parse(jsonl({"text": "[" * 500 + '{"\\' * 100}), record_type="text")

    assert errors == []
    assert rows[0].record["text"].startswith("[[[")


def test_million_digit_number_is_refused_before_conversion() -> None:
    data = b'{"text": ' + b"7" * 1_000_000 + b"}\n" + b'{"text": 1.' + b"5" * 1_000_000 + b"}\n"

    _, errors = parse(data, record_type="text")

    assert messages(errors) == [
        "line 1: a number has 1,000,000 characters; at most 100 are allowed",
        "line 2: a number has 1,000,002 characters; at most 100 are allowed",
    ]


def test_duplicates_are_reported_against_the_first_occurrence() -> None:
    record = {"prompt": "a", "response": "b"}
    same_but_reordered = {"response": "b", "prompt": "a"}

    rows, errors = parse(jsonl(record, {"prompt": "c", "response": "d"}, same_but_reordered, record))

    assert [row.line for row in rows] == [1, 2]
    assert messages(errors) == ["line 3: duplicate of line 1", "line 4: duplicate of line 1"]
    assert {error.code for error in errors} == {"duplicate"}


def test_duplicates_across_zip_entries_name_the_entry() -> None:
    data = make_zip({"a.jsonl": jsonl({"text": "x"}), "b.csv": b"text\ny\nx\n"})

    _, errors = parse(data, "archive.zip", "text")

    assert messages(errors) == ["archive.zip:b.csv row 3: duplicate of a.jsonl line 1"]


def test_only_the_first_errors_are_reported_and_the_rest_counted() -> None:
    data = jsonl(*[{"prompt": f"p{i}"} for i in range(10)], {"prompt": "p", "response": "r"})
    parser = parse_upload(
        io.BytesIO(data), filename="a.jsonl", record_type="instruction", limits=ParseLimits(max_errors_reported=3)
    )

    items = list(parser)

    assert [item.line for item in items] == [1, 2, 3, 11]
    assert (parser.error_count, parser.errors_omitted, parser.record_count) == (10, 7, 1)


def test_too_many_records_is_refused() -> None:
    data = jsonl({"text": "a"}, {"text": "b"}, {"text": "c"})

    message = rejected(data, record_type="text", max_records=2)

    assert message == "the upload has more than 2 records, the most one upload may hold"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_records must be positive"):
        ParseLimits(max_records=0)


# Streaming


def test_parsing_is_lazy() -> None:
    data = jsonl(*[{"text": f"record {i} " + "x" * 40} for i in range(60_000)])
    stream = CountingStream(data)

    parser = parse_upload(stream, filename="a.jsonl", record_type="text")
    assert stream.bytes_read == 0
    first = next(iter(parser))

    assert first.record == {"text": "record 0 " + "x" * 40}  # type: ignore[union-attr]
    assert 0 < stream.bytes_read <= MiB < len(data) / 2


def test_a_parser_runs_once() -> None:
    parser = parse_upload(io.BytesIO(jsonl({"text": "a"})), filename="a.jsonl", record_type="text")
    list(parser)

    with pytest.raises(RuntimeError):
        list(parser)


# Canonical form


def test_canonical_json_sorts_keys_and_drops_whitespace() -> None:
    assert (
        canonical_json({"b": [1, {"d": None, "c": True}], "a": "é\n"})
        == '{"a":"é\\n","b":[1,{"c":true,"d":null}]}'.encode()
    )


def test_canonical_json_normalises_unicode() -> None:
    composed = {"caf\u00e9": "\u00e9t\u00e9"}
    decomposed = {"cafe\u0301": "e\u0301te\u0301"}

    assert canonical_json(composed) == canonical_json(decomposed)
    assert record_hash(canonical_json(composed)) == record_hash(canonical_json(decomposed))


def test_parsed_records_are_normalised_before_hashing() -> None:
    rows, errors = parse(jsonl({"text": "caf\u00e9"}, {"text": "cafe\u0301"}), record_type="text")

    assert rows[0].record == {"text": "caf\u00e9"}
    assert messages(errors) == ["line 2: duplicate of line 1"]


def test_canonical_json_refuses_what_has_no_single_form() -> None:
    with pytest.raises(ValueError, match="equal once NFC-normalised"):
        canonical_json({"caf\u00e9": 1, "cafe\u0301": 2})
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(TypeError):
        canonical_json({1: "x"})
    with pytest.raises(TypeError):
        canonical_json({"x": {1, 2}})


def test_record_hash_is_keccak256() -> None:
    assert record_hash(b"") == "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


def test_the_fast_keccak_agrees_with_eth_hash() -> None:
    for size in (0, 1, 135, 136, 137, 10_000):
        data = bytes(i % 251 for i in range(size))
        assert keccak256(data) == keccak(data)
