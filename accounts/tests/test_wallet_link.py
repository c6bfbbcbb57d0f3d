"""Wallet linking on the profile page: htmx fragments, plain form posts, CSRF, login, and the admin's view."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from accounts.models import User, Wallet, WalletChallenge

KEY = Account.from_key("0x" + "77" * 32)
OTHER_KEY = Account.from_key("0x" + "88" * 32)
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", "alice@example.org")


@pytest.fixture
def alice_client(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


def _sign(message: str, key: LocalAccount = KEY) -> str:
    return "0x" + key.sign_message(encode_defunct(text=message)).signature.hex()


def _issue(client: Client, address: str = KEY.address, **headers: str) -> WalletChallenge:
    response = client.post(reverse("wallet_challenge"), {"address": address}, **headers)
    assert response.status_code == 200, response.content
    return WalletChallenge.objects.latest("issued_at")


def test_challenge_fragment_shows_the_message_to_copy_and_the_signature_field(alice_client: Client) -> None:
    response = alice_client.post(reverse("wallet_challenge"), {"address": KEY.address.lower()}, **HTMX)
    page = response.content.decode()
    challenge = WalletChallenge.objects.get()
    assert page.lstrip().startswith('<article id="wallets">')
    assert "<html" not in page
    assert f">{challenge.message}</textarea>" in page
    assert f'name="nonce" value="{challenge.nonce}"' in page
    assert 'name="signature"' in page
    assert f'data-address="{KEY.address}"' in page


def test_signature_posted_by_htmx_links_the_wallet_and_returns_the_updated_list(alice_client: Client) -> None:
    challenge = _issue(alice_client, **HTMX)
    # Browsers send textarea content with CRLF line ends.
    data = {
        "nonce": challenge.nonce,
        "message": challenge.message.replace("\n", "\r\n"),
        "signature": _sign(challenge.message),
    }
    response = alice_client.post(reverse("wallet_link"), data, **HTMX)
    page = response.content.decode()
    assert response.status_code == 200
    assert Wallet.objects.get().address == KEY.address
    assert f"<code data-wallet-address>{KEY.address}</code>" in page
    assert "Linked" in page
    assert 'name="address"' in page


def test_plain_form_post_links_and_redirects_to_the_profile(alice_client: Client) -> None:
    challenge = _issue(alice_client)
    data = {"nonce": challenge.nonce, "message": challenge.message, "signature": _sign(challenge.message)}
    response = alice_client.post(reverse("wallet_link"), data)
    assert response.url == reverse("profile")
    assert KEY.address in alice_client.get(reverse("profile")).content.decode()


def test_plain_form_challenge_renders_the_whole_profile_page(alice_client: Client) -> None:
    response = alice_client.post(reverse("wallet_challenge"), {"address": KEY.address})
    page = response.content.decode()
    assert "<html" in page
    assert WalletChallenge.objects.get().message in page


def test_forged_signature_is_a_400_fragment_that_keeps_the_challenge_open(alice_client: Client) -> None:
    challenge = _issue(alice_client, **HTMX)
    data = {"nonce": challenge.nonce, "message": challenge.message, "signature": _sign(challenge.message, OTHER_KEY)}
    response = alice_client.post(reverse("wallet_link"), data, **HTMX)
    page = response.content.decode()
    assert response.status_code == 400
    assert f"The signature was made by {OTHER_KEY.address}, not by {KEY.address}" in page
    assert challenge.message in page
    assert not Wallet.objects.exists()
    challenge.refresh_from_db()
    assert challenge.used_at is None


def test_malformed_address_is_a_400_with_the_reason(alice_client: Client) -> None:
    response = alice_client.post(reverse("wallet_challenge"), {"address": "0xnope"}, **HTMX)
    assert response.status_code == 400
    assert "An address is 0x followed by 40 hexadecimal digits" in response.content.decode()
    assert 'aria-invalid="true"' in response.content.decode()
    assert not WalletChallenge.objects.exists()


def test_garbage_signature_is_a_400_with_the_reason(alice_client: Client) -> None:
    challenge = _issue(alice_client)
    data = {"nonce": challenge.nonce, "message": challenge.message, "signature": "0x1234"}
    response = alice_client.post(reverse("wallet_link"), data, **HTMX)
    assert response.status_code == 400
    assert "A signature is 65 bytes of hex" in response.content.decode()
    assert not Wallet.objects.exists()


def test_replayed_link_is_a_400_and_shows_no_stale_challenge(alice_client: Client) -> None:
    challenge = _issue(alice_client)
    data = {"nonce": challenge.nonce, "message": challenge.message, "signature": _sign(challenge.message)}
    alice_client.post(reverse("wallet_link"), data, **HTMX)
    response = alice_client.post(reverse("wallet_link"), data, **HTMX)
    assert response.status_code == 400
    assert "already used" in response.content.decode()
    assert challenge.message not in response.content.decode()
    assert Wallet.objects.count() == 1


def test_unlink_removes_my_wallet(alice_client: Client, alice: User) -> None:
    wallet = Wallet.objects.create(user=alice, address=KEY.address, chain_id=31337, message="m", signature="0x")
    response = alice_client.post(reverse("wallet_unlink", args=[wallet.id]), **HTMX)
    assert response.status_code == 200
    assert KEY.address not in response.content.decode()
    assert not Wallet.objects.exists()


def test_unlinking_another_users_wallet_is_a_404(alice_client: Client) -> None:
    bob = User.objects.create_user("bob")
    wallet = Wallet.objects.create(user=bob, address=KEY.address, chain_id=31337, message="m", signature="0x")
    assert alice_client.post(reverse("wallet_unlink", args=[wallet.id])).status_code == 404
    assert Wallet.objects.filter(id=wallet.id).exists()


@pytest.mark.parametrize("name", ["wallet_challenge", "wallet_link"])
def test_wallet_posts_need_a_csrf_token(alice: User, name: str) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(reverse(name), {"address": KEY.address}).status_code == 403
    assert not WalletChallenge.objects.exists()


@pytest.mark.parametrize(("name", "args"), [("wallet_challenge", []), ("wallet_link", []), ("wallet_unlink", [1])])
def test_anonymous_wallet_posts_are_sent_to_login_and_change_nothing(
    client: Client, db: None, name: str, args: list[int]
) -> None:
    response = client.post(reverse(name, args=args), {"address": KEY.address})
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))
    assert not WalletChallenge.objects.exists() and not Wallet.objects.exists()


def test_wallet_views_refuse_get(alice_client: Client) -> None:
    assert alice_client.get(reverse("wallet_challenge")).status_code == 405
    assert alice_client.get(reverse("wallet_link")).status_code == 405


def test_admin_lists_and_searches_wallets_and_challenges_read_only(client: Client, alice: User) -> None:
    admin = User.objects.create_superuser("root", "root@example.org", None)
    challenge = _issue_for(alice)
    wallet = Wallet.objects.create(
        user=alice, address=KEY.address, chain_id=31337, message=challenge.message, signature="0xabc"
    )
    client.force_login(admin)
    wallets = client.get(reverse("admin:accounts_wallet_changelist"), {"q": "alice"})
    assert KEY.address in wallets.content.decode()
    challenges = client.get(reverse("admin:accounts_walletchallenge_changelist"), {"state": "open"})
    assert challenge.nonce in challenges.content.decode()
    detail = client.get(reverse("admin:accounts_wallet_change", args=[wallet.id])).content.decode()
    assert 'name="signature"' not in detail and "0xabc" in detail
    assert client.get(reverse("admin:accounts_wallet_add")).status_code == 403
    assert client.get(reverse("admin:accounts_loginfailure_changelist")).status_code == 200


def _issue_for(user: User) -> WalletChallenge:
    from accounts.services import wallet_challenge_issue

    return wallet_challenge_issue(user=user, address=KEY.address, domain="testserver", uri="http://testserver/")
