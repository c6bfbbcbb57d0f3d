"""ledger.hashing: keccak256, the RFC 8785 bytes a JavaScript verifier rebuilds (and what it refuses), the v1 form."""

from __future__ import annotations

import json
import math

import pytest
from Crypto.Hash import keccak as pycryptodome_keccak
from eth_hash.auto import keccak as eth_keccak

from ledger import hashing


def test_jcs_matches_the_rfc_8785_number_and_key_rules() -> None:
    document = {"b": 1.0, "a": [0.7, 1e21, -0.0, "\u2028"], "\u00e9": None, "\U0001f600": 1, "\ufb01": 2}

    # keys sorted by UTF-16 code units: the astral character (a surrogate pair, 0xd83d) before U+FB01
    expected = '{"a":[0.7,1e+21,0,"\u2028"],"b":1,"\u00e9":null,"\U0001f600":1,"\ufb01":2}'
    assert hashing.jcs(document) == expected.encode()


@pytest.mark.parametrize("value", [2**53, -(2**53), math.nan, math.inf, {1: "not a string key"}])
def test_jcs_refuses_what_another_reader_could_not_rebuild(value) -> None:
    with pytest.raises(hashing.CanonicalError):
        hashing.jcs({"v": value})


def test_large_integers_travel_as_decimal_strings() -> None:
    assert hashing.jcs({"seed": hashing.uint_text(2**63 - 1)}) == b'{"seed":"9223372036854775807"}'
    assert hashing.uint_text(None) is None
    with pytest.raises(hashing.CanonicalError):
        hashing.uint_text(-1)


def test_document_hash_is_keccak_of_the_jcs_bytes() -> None:
    assert hashing.document_hash({}) == hashing.keccak_hex(b"{}")
    assert hashing.keccak_hex(b"") == "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


def test_keccak256_is_ethereums_keccak_as_pycryptodome_and_eth_hash_compute_it() -> None:
    for data in (b"", b"abc", bytes(range(96)), bytes(200), bytes(range(256)) * 3, "é数据".encode() * 1000):
        reference = pycryptodome_keccak.new(data=data, digest_bits=256).digest()
        assert hashing.keccak256(data) == hashing.new_keccak256(data).digest() == eth_keccak(data) == reference
        assert hashing.keccak_hex(data) == "0x" + reference.hex()


def test_the_v1_form_is_pythons_sorted_compact_json_and_refuses_nan() -> None:
    value = {"b": [1, 1.0, {"d": None, "c": True}], "a": "é\n\u2028", "seed": 2**60 + 7}

    assert (
        hashing.canonical_json_v1(value)
        == '{"a":"é\\n\u2028","b":[1,1.0,{"c":true,"d":null}],"seed":1152921504606846983}'.encode()
    )
    assert (
        hashing.canonical_json_v1(value)
        == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    )
    with pytest.raises(ValueError):
        hashing.canonical_json_v1({"loss": math.nan})
