"""API tokens (created on the profile page, shown once) and GET /api/me/."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from eth_account import Account
from rest_framework.test import APIClient

from accounts.authentication import api_key_hash
from accounts.models import ApiToken, User, Wallet
from accounts.services import api_token_create


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", "alice@example.org")


def _shown_key(response: HttpResponse) -> str:
    match = re.search(r"<code class=\"token-key\" data-token>([^<]+)</code>", response.content.decode())
    assert match, "no key on the page"
    return match.group(1)


def test_creating_a_token_shows_its_key_once_and_stores_only_its_hash(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.post(reverse("api_token_rotate"))
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    key = _shown_key(response)
    token = ApiToken.objects.get(user=alice)
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest() and key.startswith(token.prefix)
    # nothing in the database holds the key itself
    assert key not in json.dumps(list(ApiToken.objects.values()), default=str)
    page = client.get(reverse("profile")).content.decode()
    assert key not in page and f"{token.prefix}…" in page


def test_token_fragment_answers_htmx(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.post(reverse("api_token_rotate"), HTTP_HX_REQUEST="true")
    assert response.content.decode().lstrip().startswith('<article id="token">')
    assert APIClient().get(reverse("api_me"), HTTP_AUTHORIZATION=f"Token {_shown_key(response)}").status_code == 200


def test_rotating_a_token_makes_the_old_key_useless(client: Client, alice: User) -> None:
    client.force_login(alice)
    old = _shown_key(client.post(reverse("api_token_rotate")))
    new = _shown_key(client.post(reverse("api_token_rotate")))
    assert new != old
    api = APIClient()
    assert api.get(reverse("api_me"), HTTP_AUTHORIZATION=f"Token {old}").status_code == 401
    assert api.get(reverse("api_me"), HTTP_AUTHORIZATION=f"Token {new}").status_code == 200


def test_revoking_a_token_stops_it_at_once(client: Client, alice: User) -> None:
    client.force_login(alice)
    key = _shown_key(client.post(reverse("api_token_rotate")))
    response = client.post(reverse("api_token_revoke"))
    assert response.url == reverse("profile")
    assert ApiToken.objects.get(user=alice).revoked_at is not None
    assert APIClient().get(reverse("api_me"), HTTP_AUTHORIZATION=f"Token {key}").status_code == 401


def test_a_token_may_expire_and_then_is_refused(client: Client, alice: User) -> None:
    client.force_login(alice)
    key = _shown_key(client.post(reverse("api_token_rotate"), {"expires_in_days": "7"}))
    token = ApiToken.objects.get(user=alice)
    assert timedelta(days=6) < token.expires_at - timezone.now() <= timedelta(days=7)
    api = APIClient()
    assert api.get(reverse("api_me"), HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    refused = api.get(reverse("api_me"), HTTP_AUTHORIZATION=f"Token {key}")
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]
    assert client.post(reverse("api_token_rotate"), {"expires_in_days": "-3"}).status_code == 400


def test_a_tokens_last_use_is_recorded_and_shown(client: Client, alice: User) -> None:
    created = api_token_create(user=alice)
    assert created.token.last_used_at is None
    APIClient().get(reverse("api_me"), HTTP_AUTHORIZATION=f"Token {created.key}")
    used = ApiToken.objects.get(pk=created.token.pk).last_used_at
    assert used is not None
    client.force_login(alice)
    assert "last used" in client.get(reverse("profile")).content.decode()


def test_the_migration_hashes_the_plain_keys_rest_framework_authtoken_kept(alice: User) -> None:
    from django.apps import apps
    from django.db import connection

    migration = importlib.import_module("accounts.migrations.0005_api_tokens_hashed")
    legacy_key = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    with connection.cursor() as cursor:  # the table as rest_framework.authtoken left it
        columns = "key varchar(40) PRIMARY KEY, user_id bigint, created timestamp with time zone"
        cursor.execute(f"CREATE TABLE authtoken_token ({columns})")
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", [legacy_key, alice.pk, timezone.now()])
    migration.hash_legacy_tokens(apps, SimpleNamespace(connection=connection))  # it only asks for the connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0
        cursor.execute("DROP TABLE authtoken_token")
    assert ApiToken.objects.get(user=alice).key_hash == api_key_hash(legacy_key)
    assert APIClient().get(reverse("api_me"), HTTP_AUTHORIZATION=f"Token {legacy_key}").status_code == 200


def test_anonymous_token_requests_are_sent_to_login_and_create_nothing(client: Client, db: None) -> None:
    for name in ("api_token_rotate", "api_token_revoke"):
        response = client.post(reverse(name))
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))
    assert not ApiToken.objects.exists()


def test_token_views_refuse_get(client: Client, alice: User) -> None:
    client.force_login(alice)
    assert client.get(reverse("api_token_rotate")).status_code == 405
    assert not ApiToken.objects.exists()


def test_token_rotation_needs_a_csrf_token(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(reverse("api_token_rotate")).status_code == 403
    assert not ApiToken.objects.exists()


def test_me_needs_authentication(db: None) -> None:
    response = APIClient().get(reverse("api_me"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_me_describes_the_token_holder_with_roles_and_wallets(alice: User) -> None:
    alice.is_global_curator = True
    alice.save()
    address = Account.from_key("0x" + "33" * 32).address
    Wallet.objects.create(user=alice, address=address, chain_id=31337, message="m", signature="0x" + "00" * 65)
    token = api_token_create(user=alice)
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
