"""Wallet linking through the API: POST /api/wallets/challenge/, POST /api/wallets/, GET, DELETE.

Every refusal is a 400 with a message and a code, and changes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from pytest_django.fixtures import Settings
from rest_framework.response import Response
from rest_framework.test import APIClient

from accounts import siwe
from accounts.models import User, Wallet, WalletChallenge
from accounts.services import api_token_create

KEY = Account.from_key("0x" + "44" * 32)
OTHER_KEY = Account.from_key("0x" + "55" * 32)


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", "alice@example.org")


@pytest.fixture
def bob(db: None) -> User:
    return User.objects.create_user("bob", "bob@example.org")


def _api(user: User | None) -> APIClient:
    api = APIClient()
    if user:
        api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user).key}")
    return api


def _sign(message: str, account: LocalAccount = KEY) -> str:
    return "0x" + account.sign_message(encode_defunct(text=message)).signature.hex()


def _challenge(api: APIClient, address: str = KEY.address) -> dict[str, Any]:
    response = api.post(reverse("api_wallet_challenge"), {"address": address}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _link(api: APIClient, challenge: dict[str, Any], **overrides: str) -> Response:
    data = {"nonce": challenge["nonce"], "message": challenge["message"], "signature": _sign(challenge["message"])}
    data.update(overrides)
    return api.post(reverse("api_wallets"), data, format="json")


def _challenge_row(challenge: dict[str, Any]) -> dict[str, Any]:
    return WalletChallenge.objects.filter(nonce=challenge["nonce"]).values().get()


def _refused(response: Response, code: str) -> str:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == code
    assert body["detail"]
    return body["detail"]


def test_challenge_is_an_eip_4361_message_for_this_site_address_and_chain(alice: User, settings: Settings) -> None:
    settings.WALLET_NONCE_TTL_SECONDS = 300
    challenge = _challenge(_api(alice), KEY.address.lower())
    message = siwe.SiweMessage.parse(challenge["message"])
    assert message.domain == "testserver"
    assert message.uri == "http://testserver/"
    assert message.address == KEY.address == challenge["address"]
    assert message.chain_id == settings.EVM_CHAIN_ID == challenge["chain_id"]
    assert message.nonce == challenge["nonce"]
    assert message.version == "1"
    assert "alice" in (message.statement or "")
    assert message.expiration_time is not None
    assert (message.expiration_time - message.issued_at).total_seconds() == 300
    row = WalletChallenge.objects.get(nonce=challenge["nonce"])
    assert (row.user, row.message, row.used_at) == (alice, challenge["message"], None)


def test_signed_challenge_links_the_wallet_and_spends_the_challenge(alice: User) -> None:
    api = _api(alice)
    challenge = _challenge(api)
    response = _link(api, challenge)
    assert response.status_code == 201
    wallet = Wallet.objects.get()
    assert response.json() == {
        "id": wallet.id,
        "address": KEY.address,
        "chain_id": 31337,
        "linked_at": response.json()["linked_at"],
    }
    assert (wallet.user, wallet.message) == (alice, challenge["message"])
    assert wallet.signature == _sign(challenge["message"])
    assert _challenge_row(challenge)["used_at"] == wallet.linked_at
    assert alice.primary_wallet == wallet


def test_listing_shows_only_my_wallets_newest_first(alice: User, bob: User) -> None:
    api = _api(alice)
    _link(api, _challenge(api, KEY.address))
    second = _challenge(api, OTHER_KEY.address)
    _link(api, second, signature=_sign(second["message"], OTHER_KEY))
    bobs = Account.from_key("0x" + "66" * 32)
    bob_challenge = _challenge(_api(bob), bobs.address)
    _link(_api(bob), bob_challenge, signature=_sign(bob_challenge["message"], bobs))
    addresses = [w["address"] for w in api.get(reverse("api_wallets")).json()]
    assert addresses == [OTHER_KEY.address, KEY.address]


def test_replayed_signature_is_refused_and_links_nothing_more(alice: User) -> None:
    api = _api(alice)
    challenge = _challenge(api)
    assert _link(api, challenge).status_code == 201
    spent = _challenge_row(challenge)
    detail = _refused(_link(api, challenge), "challenge_used")
    assert "already used" in detail
    assert Wallet.objects.count() == 1
    assert _challenge_row(challenge) == spent


def test_replayed_signature_cannot_relink_an_unlinked_wallet(alice: User) -> None:
    api = _api(alice)
    challenge = _challenge(api)
    wallet_id = _link(api, challenge).json()["id"]
    assert api.delete(reverse("api_wallet_unlink", args=[wallet_id])).status_code == 204
    _refused(_link(api, challenge), "challenge_used")
    assert not Wallet.objects.exists()


def test_expired_challenge_is_refused_and_stays_unused(alice: User, settings: Settings) -> None:
    settings.WALLET_NONCE_TTL_SECONDS = 0
    api = _api(alice)
    challenge = _challenge(api)
    before = _challenge_row(challenge)
    assert "expired" in _refused(_link(api, challenge), "challenge_expired")
    assert not Wallet.objects.exists()
    assert _challenge_row(challenge) == before


def test_signature_by_another_key_is_refused_as_forged_and_the_challenge_stays_usable(alice: User) -> None:
    api = _api(alice)
    challenge = _challenge(api)
    before = _challenge_row(challenge)
    forged = _sign(challenge["message"], OTHER_KEY)
    detail = _refused(_link(api, challenge, signature=forged), "wrong_signer")
    assert OTHER_KEY.address in detail and KEY.address in detail
    assert not Wallet.objects.exists()
    assert _challenge_row(challenge) == before
    assert _link(api, challenge).status_code == 201


def test_signature_over_a_different_message_is_refused(alice: User) -> None:
    api = _api(alice)
    challenge = _challenge(api)
    other_text = challenge["message"].replace("Version: 1", "Version: 1 ")
    _refused(_link(api, challenge, signature=_sign(other_text)), "wrong_signer")
    assert not Wallet.objects.exists()


def test_edited_message_is_refused_even_when_signed_by_the_right_key(alice: User) -> None:
    api = _api(alice)
    challenge = _challenge(api)
    edited = challenge["message"].replace("Chain ID: 31337", "Chain ID: 1")
    _refused(_link(api, challenge, message=edited, signature=_sign(edited)), "message_mismatch")
    assert not Wallet.objects.exists()
    assert _challenge_row(challenge)["used_at"] is None


def test_message_with_crlf_line_ends_from_a_form_is_the_same_message(alice: User) -> None:
    api = _api(alice)
    challenge = _challenge(api)
    assert _link(api, challenge, message=challenge["message"].replace("\n", "\r\n")).status_code == 201


@pytest.mark.parametrize(
    ("address", "code"),
    [
        ("0x1234", "malformed_address"),
        ("not an address", "malformed_address"),
        ("0x" + "g" * 40, "malformed_address"),
        (KEY.address[2:], "malformed_address"),
        (KEY.address + "0", "malformed_address"),
        (KEY.address[:2] + KEY.address[2:].swapcase(), "bad_checksum"),
    ],
)
def test_malformed_address_gets_no_challenge(alice: User, address: str, code: str) -> None:
    response = _api(alice).post(reverse("api_wallet_challenge"), {"address": address}, format="json")
    _refused(response, code)
    assert not WalletChallenge.objects.exists()


def test_missing_address_is_a_field_error(alice: User) -> None:
    response = _api(alice).post(reverse("api_wallet_challenge"), {}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "required"
    assert "address" in response.json()["fields"]
    assert not WalletChallenge.objects.exists()


def test_unknown_nonce_is_refused(alice: User) -> None:
    api = _api(alice)
    challenge = _challenge(api)
    before = _challenge_row(challenge)
    _refused(_link(api, challenge, nonce="NotARealNonce123"), "unknown_nonce")
    assert not Wallet.objects.exists()
    assert _challenge_row(challenge) == before


def test_another_users_nonce_is_refused_like_an_unknown_one(alice: User, bob: User) -> None:
    challenge = _challenge(_api(alice))
    before = _challenge_row(challenge)
    detail = _refused(_link(_api(bob), challenge), "unknown_nonce")
    assert detail == "No challenge with this nonce was issued to you"
    assert not Wallet.objects.exists()
    assert _challenge_row(challenge) == before


@pytest.mark.parametrize(
    ("signature", "code"),
    [
        ("0xnothex" + "0" * 124, "malformed_signature"),
        ("0x1234", "malformed_signature"),
        ("", "malformed_signature"),
        ("0x" + "00" * 65, "bad_signature"),
        ("0x" + "ff" * 65, "bad_signature"),
    ],
)
def test_garbage_signature_is_refused(alice: User, signature: str, code: str) -> None:
    api = _api(alice)
    challenge = _challenge(api)
    before = _challenge_row(challenge)
    response = _link(api, challenge, signature=signature)
    if signature == "":
        assert response.status_code == 400 and "signature" in response.json()["fields"]
    else:
        _refused(response, code)
    assert not Wallet.objects.exists()
    assert _challenge_row(challenge) == before


def test_address_linked_to_another_user_gets_no_challenge(alice: User, bob: User) -> None:
    api = _api(alice)
    _link(api, _challenge(api))
    response = _api(bob).post(reverse("api_wallet_challenge"), {"address": KEY.address}, format="json")
    assert "another account" in _refused(response, "linked_to_another_user")
    assert not WalletChallenge.objects.filter(user=bob).exists()


def test_address_linked_to_another_user_meanwhile_is_refused_at_link_time(alice: User, bob: User) -> None:
    bobs_challenge = _challenge(_api(bob))
    api = _api(alice)
    _link(api, _challenge(api))
    before = _challenge_row(bobs_challenge)
    _refused(_link(_api(bob), bobs_challenge), "linked_to_another_user")
    assert Wallet.objects.get().user == alice
    assert _challenge_row(bobs_challenge) == before


def test_address_already_linked_to_me_is_said_so(alice: User) -> None:
    api = _api(alice)
    _link(api, _challenge(api))
    response = api.post(reverse("api_wallet_challenge"), {"address": KEY.address}, format="json")
    assert "your account" in _refused(response, "already_linked")


def test_unlinking_another_users_wallet_is_a_404_and_changes_nothing(alice: User, bob: User) -> None:
    api = _api(alice)
    wallet_id = _link(api, _challenge(api)).json()["id"]
    assert _api(bob).delete(reverse("api_wallet_unlink", args=[wallet_id])).status_code == 404
    assert Wallet.objects.filter(id=wallet_id).exists()


def test_unlinked_address_can_be_linked_by_someone_else(alice: User, bob: User) -> None:
    api = _api(alice)
    wallet_id = _link(api, _challenge(api)).json()["id"]
    api.delete(reverse("api_wallet_unlink", args=[wallet_id]))
    assert _link(_api(bob), _challenge(_api(bob))).status_code == 201
    assert Wallet.objects.get().user == bob


@pytest.mark.parametrize(
    ("method", "name", "args"),
    [
        ("get", "api_wallets", []),
        ("post", "api_wallets", []),
        ("post", "api_wallet_challenge", []),
        ("delete", "api_wallet_unlink", [1]),
        ("get", "api_me", []),
    ],
)
def test_anonymous_requests_get_401_and_change_nothing(db: None, method: str, name: str, args: list[int]) -> None:
    response = getattr(APIClient(), method)(reverse(name, args=args), {}, format="json")
    assert response.status_code == 401
    assert not WalletChallenge.objects.exists() and not Wallet.objects.exists()


def test_session_authenticated_api_writes_need_a_csrf_token(alice: User) -> None:
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(alice)
    response = api.post(reverse("api_wallet_challenge"), {"address": KEY.address}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not WalletChallenge.objects.exists()


def test_challenge_times_are_whole_seconds_matching_the_message(alice: User) -> None:
    challenge = _challenge(_api(alice))
    row = WalletChallenge.objects.get(nonce=challenge["nonce"])
    assert row.issued_at.microsecond == 0
    assert f"Issued At: {siwe.rfc3339(row.issued_at)}" in row.message
    assert f"Expiration Time: {siwe.rfc3339(row.expires_at)}" in row.message
    assert row.expires_at > timezone.now()


def test_open_challenges_per_user_are_capped(alice: User, bob: User) -> None:
    from accounts.services import MAX_OPEN_WALLET_CHALLENGES

    api = _api(alice)
    for _ in range(MAX_OPEN_WALLET_CHALLENGES):
        _challenge(api)
    response = api.post(reverse("api_wallet_challenge"), {"address": KEY.address}, format="json")
    _refused(response, "too_many_challenges")
    assert WalletChallenge.objects.filter(user=alice).count() == MAX_OPEN_WALLET_CHALLENGES
    _challenge(_api(bob))
    WalletChallenge.objects.filter(user=alice).update(expires_at=timezone.now())
    _challenge(api)
