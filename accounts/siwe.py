"""Sign-In with Ethereum (EIP-4361): build the exact message text, parse it back, recover who signed it.

Only public data passes through here: a message and a signature made by the user's own wallet. Signing happens in
the wallet (EIP-191 ``personal_sign``); the server only recovers the signer's address from the signature.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eth_utils import to_checksum_address

NONCE_ALPHABET = string.ascii_letters + string.digits
NONCE_LENGTH = 24  # 142 bits; EIP-4361 asks for at least 8 alphanumeric characters
SIGNATURE_RE = re.compile(r"^(0x)?[0-9a-fA-F]{130}$")
ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")

_MESSAGE_RE = re.compile(
    r"^(?:(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://)?(?P<domain>[^\s/]+)"
    r" wants you to sign in with your Ethereum account:\n"
    r"(?P<address>0x[0-9a-fA-F]{40})\n"
    r"\n"
    r"(?:(?P<statement>[^\n]+)\n)?"
    r"\n"
    r"URI: (?P<uri>[^\s]+)\n"
    r"Version: (?P<version>1)\n"
    r"Chain ID: (?P<chain_id>[0-9]+)\n"
    r"Nonce: (?P<nonce>[a-zA-Z0-9]{8,})\n"
    r"Issued At: (?P<issued_at>[^\n]+)"
    r"(?:\nExpiration Time: (?P<expiration_time>[^\n]+))?"
    r"(?:\nNot Before: (?P<not_before>[^\n]+))?"
    r"(?:\nRequest ID: (?P<request_id>[^\n]*))?"
    r"(?:\nResources:(?P<resources>(?:\n- [^\n]+)*))?"
    r"\Z"
)


class SiweError(ValueError):
    """A message, address or signature that cannot be used; ``code`` names the problem for API clients."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def rfc3339(moment: datetime) -> str:
    """UTC, whole seconds, ``Z`` suffix: the form most wallets and SIWE libraries print."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise SiweError(f"{value!r} is not an RFC 3339 date-time", code="malformed_message") from e
    if moment.tzinfo is None:
        raise SiweError(f"{value!r} has no time zone", code="malformed_message")
    return moment


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: datetime
    statement: str | None = None
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = field(default_factory=tuple)
    scheme: str | None = None
    version: str = "1"

    def text(self) -> str:
        """The exact EIP-4361 text (LF line ends, no trailing newline) that the wallet signs."""
        origin = f"{self.scheme}://{self.domain}" if self.scheme else self.domain
        lines = [
            f"{origin} wants you to sign in with your Ethereum account:",
            self.address,
            "",
            *([self.statement] if self.statement else []),
            "",
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {rfc3339(self.issued_at)}",
        ]
        if self.expiration_time:
            lines.append(f"Expiration Time: {rfc3339(self.expiration_time)}")
        if self.not_before:
            lines.append(f"Not Before: {rfc3339(self.not_before)}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources:
            lines += ["Resources:", *(f"- {resource}" for resource in self.resources)]
        return "\n".join(lines)

    @classmethod
    def parse(cls, text: str) -> SiweMessage:
        match = _MESSAGE_RE.match(text)
        if not match:
            raise SiweError("The message is not an EIP-4361 Sign-In with Ethereum message", code="malformed_message")
        g = match.groupdict()
        return cls(
            scheme=g["scheme"],
            domain=g["domain"],
            address=checksum_address(g["address"]),
            statement=g["statement"],
            uri=g["uri"],
            version=g["version"],
            chain_id=int(g["chain_id"]),
            nonce=g["nonce"],
            issued_at=_parse_time(g["issued_at"]),
            expiration_time=_parse_time(g["expiration_time"]) if g["expiration_time"] else None,
            not_before=_parse_time(g["not_before"]) if g["not_before"] else None,
            request_id=g["request_id"],
            resources=tuple(line[2:] for line in (g["resources"] or "").split("\n") if line),
        )


def new_nonce() -> str:
    return "".join(secrets.choice(NONCE_ALPHABET) for _ in range(NONCE_LENGTH))


def checksum_address(value: str) -> str:
    """The EIP-55 form of ``value``. Mixed case must already be a valid checksum: a typo must not pass as another
    address. All-lower or all-upper hex carries no checksum and is accepted."""
    value = value.strip()
    if not ADDRESS_RE.match(value):
        raise SiweError("An address is 0x followed by 40 hexadecimal digits", code="malformed_address")
    checksummed = to_checksum_address(value)
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and value != checksummed:
        raise SiweError(
            f"{value} has a wrong EIP-55 checksum (mixed case must match {checksummed}); check for a typo",
            code="bad_checksum",
        )
    return checksummed


def normalize_signature(value: str) -> str:
    value = value.strip()
    if not SIGNATURE_RE.match(value):
        raise SiweError(
            "A signature is 65 bytes of hex: 0x followed by 130 hexadecimal digits", code="malformed_signature"
        )
    return "0x" + value.removeprefix("0x").lower()


def recover_signer(message: str, signature: str) -> str:
    """The checksummed address whose key made ``signature`` over ``message`` with EIP-191 ``personal_sign``."""
    from eth_account import Account  # 0.9-1.3 s and 120 modules: only a sign-in pays them
    from eth_account.messages import encode_defunct

    signature = normalize_signature(signature)
    try:
        return Account.recover_message(encode_defunct(text=message), signature=signature)
    except Exception as e:  # eth-keys raises several types for an r, s or v out of range
        raise SiweError("No address can be recovered from this signature", code="bad_signature") from e
