"""API tokens (created on the profile page, shown once) and GET /api/me/."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from eth_account import Account
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from openledger_web.models import User, Wallet


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", "alice@example.org")


def test_creating_a_token_shows_its_key_once(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.post(reverse("api_token_rotate"))
    token = Token.objects.get(user=alice)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert token.key in response.content.decode()
    assert token.key not in client.get(reverse("profile")).content.decode()


def test_token_fragment_answers_htmx(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.post(reverse("api_token_rotate"), HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert page.lstrip().startswith('<article id="token">')
    assert Token.objects.get(user=alice).key in page


def test_rotating_a_token_makes_the_old_key_useless(client: Client, alice: User) -> None:
    client.force_login(alice)
    client.post(reverse("api_token_rotate"))
    old = Token.objects.get(user=alice).key
    client.post(reverse("api_token_rotate"))
    new = Token.objects.get(user=alice).key
    assert new != old
    api = APIClient()
    assert api.get(reverse("api_me"), HTTP_AUTHORIZATION=f"Token {old}").status_code == 401
    assert api.get(reverse("api_me"), HTTP_AUTHORIZATION=f"Token {new}").status_code == 200


def test_revoking_a_token_removes_it(client: Client, alice: User) -> None:
    client.force_login(alice)
    client.post(reverse("api_token_rotate"))
    response = client.post(reverse("api_token_revoke"))
    assert response.url == reverse("profile")
    assert not Token.objects.filter(user=alice).exists()


def test_anonymous_token_requests_are_sent_to_login_and_create_nothing(client: Client, db: None) -> None:
    for name in ("api_token_rotate", "api_token_revoke"):
        response = client.post(reverse(name))
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))
    assert not Token.objects.exists()


def test_token_views_refuse_get(client: Client, alice: User) -> None:
    client.force_login(alice)
    assert client.get(reverse("api_token_rotate")).status_code == 405
    assert not Token.objects.exists()


def test_token_rotation_needs_a_csrf_token(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(reverse("api_token_rotate")).status_code == 403
    assert not Token.objects.exists()


def test_me_needs_authentication(db: None) -> None:
    response = APIClient().get(reverse("api_me"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_me_describes_the_token_holder_with_roles_and_wallets(alice: User) -> None:
    alice.is_global_curator = True
    alice.save()
    address = Account.from_key("0x" + "33" * 32).address
    Wallet.objects.create(user=alice, address=address, chain_id=31337, message="m", signature="0x" + "00" * 65)
    token = Token.objects.create(user=alice)
    response = APIClient().get(reverse("api_me"), HTTP_AUTHORIZATION=f"Token {token.key}")
    body = response.json()
    assert response.status_code == 200
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.org"
    assert body["roles"] == ["contributor", "global curator"]
    assert body["is_global_curator"] is True and body["is_staff"] is False
    assert [(w["address"], w["chain_id"]) for w in body["wallets"]] == [(address, 31337)]


def test_me_answers_a_browser_session_too(alice: User) -> None:
    api = APIClient()
    api.force_login(alice)
    assert api.get(reverse("api_me")).json()["username"] == "alice"


def test_schema_documents_the_account_and_wallet_endpoints(client: Client, db: None) -> None:
    response = client.get(reverse("api_schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json")
    schema = response.json()
    paths = schema["paths"]
    assert set(paths["/api/wallets/"]) >= {"get", "post"}
    assert "post" in paths["/api/wallets/challenge/"]
    assert "delete" in paths["/api/wallets/{wallet_id}/"]
    assert "get" in paths["/api/me/"]
    assert {"Wallet", "WalletChallenge", "WalletChallengeRequest", "WalletLinkRequest", "Me", "ApiError"} <= set(
        schema["components"]["schemas"]
    )
    assert "tokenAuth" in schema["components"]["securitySchemes"]
