"""The EIP-4361 message text, address checksums and signature recovery, without a database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from accounts import siwe

KEY = "0x" + "11" * 32
ACCOUNT = Account.from_key(KEY)
ISSUED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _message(**overrides: Any) -> siwe.SiweMessage:
    fields: dict[str, Any] = {
        "domain": "ledger.example.org",
        "address": ACCOUNT.address,
        "statement": "Link this Ethereum account to the OpenLedger account alice.",
        "uri": "https://ledger.example.org/",
        "chain_id": 31337,
        "nonce": "abcDEF123456",
        "issued_at": ISSUED,
        "expiration_time": ISSUED + timedelta(minutes=10),
    }
    fields.update(overrides)
    return siwe.SiweMessage(**fields)


def test_message_text_follows_eip_4361_line_by_line() -> None:
    assert _message().text() == (
        "ledger.example.org wants you to sign in with your Ethereum account:\n"
        f"{ACCOUNT.address}\n"
        "\n"
        "Link this Ethereum account to the OpenLedger account alice.\n"
        "\n"
        "URI: https://ledger.example.org/\n"
        "Version: 1\n"
        "Chain ID: 31337\n"
        "Nonce: abcDEF123456\n"
        "Issued At: 2026-01-02T03:04:05Z\n"
        "Expiration Time: 2026-01-02T03:14:05Z"
    )


def test_message_without_statement_keeps_the_blank_lines_the_grammar_requires() -> None:
    text = _message(statement=None, expiration_time=None).text()
    assert text.startswith(
        f"ledger.example.org wants you to sign in with your Ethereum account:\n{ACCOUNT.address}\n\n\nURI: "
    )


def test_parse_reads_back_every_field_it_wrote() -> None:
    message = _message(not_before=ISSUED, request_id="r-1", resources=("ipfs://a", "https://b.example/x"))
    assert siwe.SiweMessage.parse(message.text()) == message


def test_parse_accepts_a_scheme_and_fractional_seconds_from_other_libraries() -> None:
    text = _message(scheme="http", domain="127.0.0.1:8000").text().replace("03:04:05Z", "03:04:05.000Z")
    parsed = siwe.SiweMessage.parse(text)
    assert (parsed.scheme, parsed.domain, parsed.issued_at) == ("http", "127.0.0.1:8000", ISSUED)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace("Version: 1", "Version: 2"),
        lambda t: t.replace("Nonce: abcDEF123456", "Nonce: short"),
        lambda t: t.replace("Nonce: abcDEF123456", "Nonce: has-dash-123"),
        lambda t: t.replace("wants you to sign in", "would like you to sign in"),
        lambda t: t + "\n",
        lambda t: t.replace("\n", "\r\n"),
    ],
)
def test_parse_rejects_text_outside_the_grammar(mangle: Callable[[str], str]) -> None:
    with pytest.raises(siwe.SiweError) as e:
        siwe.SiweMessage.parse(mangle(_message().text()))
    assert e.value.code == "malformed_message"


def test_nonces_are_long_alphanumeric_and_fresh() -> None:
    nonces = {siwe.new_nonce() for _ in range(200)}
    assert len(nonces) == 200
    assert all(len(n) >= 8 and n.isalnum() and n.isascii() for n in nonces)


def test_lowercase_and_uppercase_addresses_carry_no_checksum_and_are_checksummed() -> None:
    digits = ACCOUNT.address[2:]
    assert siwe.checksum_address("0x" + digits.lower()) == ACCOUNT.address
    assert siwe.checksum_address("0x" + digits.upper()) == ACCOUNT.address
    assert siwe.checksum_address(f"  {ACCOUNT.address} ") == ACCOUNT.address


def test_mixed_case_address_with_a_wrong_checksum_is_refused() -> None:
    address = ACCOUNT.address
    flipped = next(i for i, c in enumerate(address) if i > 1 and c.isalpha())
    typo = address[:flipped] + address[flipped].swapcase() + address[flipped + 1 :]
    with pytest.raises(siwe.SiweError) as e:
        siwe.checksum_address(typo)
    assert e.value.code == "bad_checksum"


@pytest.mark.parametrize("value", ["", "0x", "0x1234", "1" * 40, "0x" + "g" * 40, "0x" + "a" * 41, ACCOUNT.address[2:]])
def test_address_that_is_not_0x_and_40_hex_digits_is_malformed(value: str) -> None:
    with pytest.raises(siwe.SiweError) as e:
        siwe.checksum_address(value)
    assert e.value.code == "malformed_address"


def test_recover_signer_names_the_key_that_signed() -> None:
    text = _message().text()
    signature = Account.sign_message(encode_defunct(text=text), KEY).signature.hex()
    assert siwe.recover_signer(text, "0x" + signature) == ACCOUNT.address
    assert siwe.recover_signer(text, signature) == ACCOUNT.address


def test_recover_signer_accepts_v_as_0_or_1_as_some_hardware_wallets_send() -> None:
    text = _message().text()
    raw = bytearray(Account.sign_message(encode_defunct(text=text), KEY).signature)
    raw[64] -= 27
    assert siwe.recover_signer(text, "0x" + raw.hex()) == ACCOUNT.address


@pytest.mark.parametrize("signature", ["", "0x", "0xzz" + "00" * 64, "0x" + "00" * 64, "0x" + "00" * 66, "hello"])
def test_signature_that_is_not_65_bytes_of_hex_is_malformed(signature: str) -> None:
    with pytest.raises(siwe.SiweError) as e:
        siwe.recover_signer(_message().text(), signature)
    assert e.value.code == "malformed_signature"


@pytest.mark.parametrize("signature", ["0x" + "00" * 65, "0x" + "ff" * 65])
def test_hex_that_no_key_could_have_signed_is_a_bad_signature(signature: str) -> None:
    with pytest.raises(siwe.SiweError) as e:
        siwe.recover_signer(_message().text(), signature)
    assert e.value.code == "bad_signature"
