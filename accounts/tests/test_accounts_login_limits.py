"""Login rate limits: per account from one address, per address, and a slower per-account ceiling that addresses
which signed in before pass; each counted over a sliding window of failures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import SESSION_KEY
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django.fixtures import Settings

from accounts.models import LoginFailure, User

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def _limits(settings: Settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.LOGIN_RATE_LIMIT_PER_ACCOUNT = 3
    settings.LOGIN_RATE_LIMIT_PER_IP = 5
    settings.LOGIN_RATE_LIMIT_WINDOW_SECONDS = 900
    settings.LOGIN_RATE_LIMIT_ACCOUNT_CEILING = 8
    settings.LOGIN_RATE_LIMIT_CEILING_WINDOW_SECONDS = 3600


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", "alice@example.org", PASSWORD)


def _login(client: Client, username: str, password: str, ip: str = "198.51.100.7", **extra: str) -> HttpResponse:
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip, **extra)


def test_failures_below_the_account_limit_get_the_ordinary_error(client: Client, alice: User) -> None:
    for _ in range(3):
        response = _login(client, "alice", "wrong")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
    assert LoginFailure.objects.filter(account="alice").count() == 3


def test_account_over_its_limit_is_refused_with_429_even_with_the_right_password(client: Client, alice: User) -> None:
    for _ in range(3):
        _login(client, "alice", "wrong")
    response = _login(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert "Too many failed attempts for this account; try again in 15 minutes." in response.content.decode()
    assert SESSION_KEY not in client.session


def test_refused_attempts_change_nothing(client: Client, alice: User) -> None:
    for _ in range(3):
        _login(client, "alice", "wrong")
    before = list(LoginFailure.objects.values_list("id", "at"))
    last_login = User.objects.get(pk=alice.pk).last_login
    for password in ("wrong", PASSWORD):
        assert _login(client, "alice", password).status_code == 429
    assert list(LoginFailure.objects.values_list("id", "at")) == before
    assert User.objects.get(pk=alice.pk).last_login == last_login


def test_a_stranger_guessing_from_elsewhere_does_not_lock_the_owner_out(client: Client, alice: User) -> None:
    for _ in range(5):
        _login(client, "alice", "wrong", ip="203.0.113.66")
    assert _login(client, "alice", PASSWORD, ip="203.0.113.66").status_code == 429
    assert _login(client, "alice", PASSWORD, ip="192.0.2.99").status_code == 302


def test_an_admin_is_not_locked_out_by_guesses_from_another_address(client: Client, alice: User) -> None:
    User.objects.filter(pk=alice.pk).update(is_staff=True, is_superuser=True)
    for _ in range(5):
        client.post(reverse("admin:login"), {"username": "alice", "password": "wrong"}, REMOTE_ADDR="203.0.113.66")
    response = client.post(
        reverse("admin:login"), {"username": "alice", "password": PASSWORD, "next": "/admin/"}, REMOTE_ADDR="192.0.2.1"
    )
    assert response.status_code == 302 and client.session[SESSION_KEY] == str(alice.pk)


def test_the_account_ceiling_stops_guesses_spread_over_many_addresses_but_not_known_ones(
    client: Client, alice: User
) -> None:
    assert _login(client, "alice", PASSWORD, ip="192.0.2.1").status_code == 302  # the owner's usual address
    client.logout()
    for i in range(8):  # two guesses each from four addresses: under every per-address limit
        _login(client, "alice", "wrong", ip=f"203.0.113.{i // 2}")
    response = _login(client, "alice", PASSWORD, ip="203.0.113.99")
    assert response.status_code == 429 and "from many addresses" in response.content.decode()
    assert _login(client, "alice", PASSWORD, ip="192.0.2.1").status_code == 302


def test_account_limit_ignores_the_case_of_the_typed_username(client: Client, alice: User) -> None:
    for name in ("alice", "ALICE", "Alice"):
        _login(client, name, "wrong")
    assert _login(client, "alice", PASSWORD).status_code == 429


def test_the_wait_is_until_the_oldest_counted_failure_leaves_the_window(client: Client, alice: User) -> None:
    for _ in range(3):
        _login(client, "alice", "wrong")
    LoginFailure.objects.filter(account="alice").update(at=timezone.now() - timedelta(minutes=13))
    response = _login(client, "alice", PASSWORD)
    assert "try again in 2 minutes." in response.content.decode()


def test_account_may_log_in_again_once_its_failures_leave_the_window(client: Client, alice: User) -> None:
    for _ in range(3):
        _login(client, "alice", "wrong")
    LoginFailure.objects.update(at=timezone.now() - timedelta(seconds=901))
    response = _login(client, "alice", PASSWORD)
    assert response.status_code == 302
    assert client.session[SESSION_KEY] == str(alice.pk)


def test_successful_login_clears_the_accounts_failures_from_that_address(client: Client, alice: User) -> None:
    _login(client, "alice", "wrong", ip="203.0.113.66")
    for _ in range(2):
        _login(client, "alice", "wrong")
    assert _login(client, "alice", PASSWORD).status_code == 302
    assert list(LoginFailure.objects.filter(account="alice").values_list("ip", flat=True)) == ["203.0.113.66"]
    client.logout()
    for _ in range(2):
        _login(client, "alice", "wrong")
    assert _login(client, "alice", PASSWORD).status_code == 302


def test_missing_password_neither_counts_nor_clears(client: Client, alice: User) -> None:
    _login(client, "alice", "wrong")
    assert _login(client, "alice", "").status_code == 200
    assert LoginFailure.objects.filter(account="alice").count() == 1


def test_address_over_its_limit_is_refused_for_every_account(client: Client, alice: User) -> None:
    User.objects.create_user("bob", "bob@example.org", PASSWORD)
    for i in range(5):
        _login(client, f"nobody{i}", "guess", ip="198.51.100.7")
    response = _login(client, "bob", PASSWORD, ip="198.51.100.7")
    assert response.status_code == 429
    assert "Too many failed attempts from your network address; try again in 15 minutes." in response.content.decode()
    assert SESSION_KEY not in client.session
    assert _login(client, "bob", PASSWORD, ip="198.51.100.8").status_code == 302


def test_successful_login_does_not_clear_the_addresss_failures(client: Client, alice: User) -> None:
    for i in range(4):
        _login(client, f"nobody{i}", "guess")
    assert _login(client, "alice", PASSWORD).status_code == 302
    client.logout()
    _login(client, "nobody9", "guess")
    assert _login(client, "alice", PASSWORD).status_code == 429


def test_x_forwarded_for_is_not_trusted_by_default(client: Client, alice: User) -> None:
    for i in range(5):
        _login(client, f"nobody{i}", "guess", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}")
    assert _login(client, "alice", PASSWORD, HTTP_X_FORWARDED_FOR="10.0.0.99").status_code == 429


def test_x_forwarded_for_counts_when_a_setting_says_a_proxy_appends_it(
    client: Client, alice: User, settings: Settings
) -> None:
    settings.TRUST_X_FORWARDED_FOR = True
    for i in range(5):
        _login(client, f"nobody{i}", "guess", ip="10.0.0.1", HTTP_X_FORWARDED_FOR=f"1.2.3.4, 203.0.113.{i}")
    assert set(LoginFailure.objects.values_list("ip", flat=True)) == {f"203.0.113.{i}" for i in range(5)}
    assert _login(client, "alice", PASSWORD, ip="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.50").status_code == 302


def test_failures_older_than_the_window_are_pruned(client: Client, alice: User) -> None:
    LoginFailure.objects.create(account="old", ip="192.0.2.1", at=timezone.now() - timedelta(days=1))
    _login(client, "alice", "wrong")
    assert list(LoginFailure.objects.values_list("account", flat=True)) == ["alice"]


def test_admin_login_page_obeys_the_same_account_limit(client: Client, alice: User) -> None:
    alice.is_staff = True
    alice.is_superuser = True
    alice.save()
    for _ in range(3):
        _login(client, "alice", "wrong")
    response = client.post(
        reverse("admin:login"),
        {"username": "alice", "password": PASSWORD, "next": "/admin/"},
        REMOTE_ADDR="198.51.100.7",
    )
    assert response.status_code == 200
    assert "Too many failed attempts for this account" in response.content.decode()
    assert SESSION_KEY not in client.session


def test_admin_login_failures_count_toward_the_account_limit(client: Client, alice: User) -> None:
    for _ in range(3):
        client.post(reverse("admin:login"), {"username": "alice", "password": "wrong"}, REMOTE_ADDR="1.1.1.1")
    assert _login(client, "alice", PASSWORD, ip="1.1.1.1").status_code == 429
