"""Sign-up, log-in, log-out, password change and the profile page."""

from __future__ import annotations

import pytest
from django.contrib.auth import SESSION_KEY
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse
from eth_account import Account
from pytest_django.fixtures import Settings

from accounts.models import User, Wallet
from accounts.selectors import user_is_global_curator

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", "alice@example.org", PASSWORD)


def _signup(client: Client, **overrides: str) -> HttpResponse:
    data = {"username": "bob", "email": "bob@example.org", "password1": PASSWORD, "password2": PASSWORD}
    data.update(overrides)
    return client.post(reverse("signup"), data)


def test_signup_page_asks_for_username_email_and_password_twice(client: Client, db: None) -> None:
    response = client.get(reverse("signup"))
    assert response.status_code == 200
    for name in ("username", "email", "password1", "password2"):
        assert f'name="{name}"' in response.content.decode()


def test_signup_creates_the_user_logs_them_in_and_shows_their_profile(client: Client, db: None) -> None:
    response = _signup(client)
    assert response.status_code == 302
    assert response.url == reverse("profile")
    user = User.objects.get(username="bob")
    assert user.email == "bob@example.org"
    assert user.check_password(PASSWORD)
    assert not user.is_staff and not user.is_global_curator
    assert client.session[SESSION_KEY] == str(user.pk)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"password2": "something-else-entirely"}, "The two password fields didn\u2019t match."),
        ({"password1": "password", "password2": "password"}, "This password is too common."),
        ({"password1": "12345678901", "password2": "12345678901"}, "This password is entirely numeric."),
        ({"password1": "short", "password2": "short"}, "This password is too short."),
        ({"email": ""}, "This field is required."),
        ({"email": "not-an-email"}, "Enter a valid email address."),
        ({"username": "bad name!"}, "Enter a valid username."),
    ],
)
def test_signup_refuses_what_django_validators_refuse(
    client: Client, db: None, overrides: dict[str, str], error: str
) -> None:
    response = _signup(client, **overrides)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not User.objects.filter(username=overrides.get("username", "bob")).exists()


def test_signup_refuses_a_taken_username(client: Client, alice: User) -> None:
    response = _signup(client, username="alice")
    assert "A user with that username already exists." in response.content.decode()
    assert User.objects.count() == 1


@pytest.mark.parametrize(
    ("username", "code"),
    [
        ("\u0430lice", "mixed_script"),  # Cyrillic a, then Latin
        ("p\u0430yp\u0430l", "mixed_script"),
        ("bob\u3164", "invisible"),  # Hangul filler
        ("\u115fbob", "invisible"),
        ("bo\u1160b", "invisible"),
        ("bo\u200bb", "invalid"),  # zero-width space: Django's own validator refuses format characters
        ("bo\u200db", "invalid"),  # zero-width joiner
    ],
)
def test_signup_refuses_mixed_script_and_invisible_names(client: Client, db: None, username: str, code: str) -> None:
    response = _signup(client, username=username)
    assert response.status_code == 200
    assert response.context["form"].has_error("username", code), response.context["form"].errors
    assert not User.objects.filter(username=username).exists()


@pytest.mark.parametrize(
    "lookalike",
    [
        "\u0430\u0406\u0456\u0441\u0435",  # all Cyrillic: one script, but it reads "alice"
        "ALICE",
        "\uff41lice",  # fullwidth a
        "aIice",  # capital I for l
        "a1ice",
    ],
)
def test_signup_refuses_a_name_that_looks_like_an_existing_users(client: Client, alice: User, lookalike: str) -> None:
    response = _signup(client, username=lookalike)
    assert response.status_code == 200
    errors = response.context["form"].errors.as_data()["username"]
    # Django itself refuses the same name in another case (which NFKC makes of fullwidth letters): "unique"
    assert {e.code for e in errors} & {"lookalike", "unique"}, errors
    assert User.objects.count() == 1


def test_every_user_has_a_unique_skeleton_that_follows_the_name(alice: User) -> None:
    from django.db import IntegrityError, transaction

    assert alice.username_skeleton == "alice"
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create_user("\u0430lice", "x@example.org", PASSWORD)
    alice.username = "alicia"
    alice.save(update_fields=["username"])
    alice.refresh_from_db()
    assert alice.username_skeleton == "alicia"


def test_names_in_one_script_or_an_allowed_mix_are_welcome(client: Client, db: None) -> None:
    for name in ("\u0438\u0432\u0430\u043d", "\u5c71\u7530\u592a\u90ce", "yamada\u5c71\u7530", "jos\u00e9"):
        response = _signup(client, username=name, email=f"{len(name)}@example.org")
        assert response.status_code == 302, response.context["form"].errors
        client.logout()


def test_signed_in_user_visiting_signup_is_sent_to_their_profile(client: Client, alice: User) -> None:
    client.force_login(alice)
    assert client.get(reverse("signup")).url == reverse("profile")


def test_login_with_the_right_password_starts_a_session_and_opens_the_profile(client: Client, alice: User) -> None:
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response.url == reverse("profile")
    assert client.session[SESSION_KEY] == str(alice.pk)


def test_login_with_a_wrong_password_says_so_and_starts_no_session(client: Client, alice: User) -> None:
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert SESSION_KEY not in client.session


def test_login_follows_a_local_next_url_and_ignores_a_foreign_one(client: Client, alice: User) -> None:
    local = client.post(reverse("login") + "?next=/api/docs/", {"username": "alice", "password": PASSWORD})
    assert local.url == "/api/docs/"
    client.logout()
    foreign = client.post(
        reverse("login"), {"username": "alice", "password": PASSWORD, "next": "https://evil.example/"}
    )
    assert foreign.url == reverse("profile")


def test_login_form_post_without_csrf_token_is_forbidden(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert SESSION_KEY not in client.session


def test_logout_by_post_ends_the_session(client: Client, alice: User) -> None:
    client.force_login(alice)
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert SESSION_KEY not in client.session


def test_logout_by_get_is_refused_so_a_link_cannot_log_anyone_out(client: Client, alice: User) -> None:
    client.force_login(alice)
    assert client.get(reverse("logout")).status_code == 405
    assert client.session[SESSION_KEY] == str(alice.pk)


def test_password_change_needs_login(client: Client, alice: User) -> None:
    for response in (
        client.get(reverse("password_change")),
        client.post(reverse("password_change"), {"old_password": PASSWORD, "new_password1": "x", "new_password2": "x"}),
    ):
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


def test_password_change_sets_the_new_password_and_keeps_this_session(client: Client, alice: User) -> None:
    client.force_login(alice)
    new = "a-different-long-passphrase"
    response = client.post(
        reverse("password_change"), {"old_password": PASSWORD, "new_password1": new, "new_password2": new}
    )
    assert response.url == reverse("password_change_done")
    alice.refresh_from_db()
    assert alice.check_password(new)
    assert client.get(reverse("profile")).status_code == 200
    assert "Password changed" in client.get(reverse("password_change_done")).content.decode()


def test_password_change_with_a_wrong_old_password_changes_nothing(client: Client, alice: User) -> None:
    client.force_login(alice)
    new = "a-different-long-passphrase"
    response = client.post(
        reverse("password_change"), {"old_password": "wrong", "new_password1": new, "new_password2": new}
    )
    assert response.status_code == 200
    assert "Your old password was entered incorrectly" in response.content.decode()
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


def test_profile_needs_login(client: Client, db: None) -> None:
    response = client.get(reverse("profile"))
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={reverse('profile')}"


def test_profile_shows_username_email_join_date_and_the_contributor_role(client: Client, alice: User) -> None:
    client.force_login(alice)
    page = client.get(reverse("profile")).content.decode()
    assert "alice" in page
    assert "alice@example.org" in page
    assert alice.date_joined.strftime("%Y") in page
    assert "role-contributor" in page
    assert "role-global-curator" not in page
    assert "role-staff" not in page


def test_profile_shows_global_curator_and_staff_roles_when_the_user_has_them(client: Client, alice: User) -> None:
    alice.is_global_curator = True
    alice.is_staff = True
    alice.save()
    client.force_login(alice)
    page = client.get(reverse("profile")).content.decode()
    assert "role-contributor" in page and "role-global-curator" in page and "role-staff" in page


def test_profile_lists_linked_wallets_with_address_chain_and_date(client: Client, alice: User) -> None:
    address = Account.from_key("0x" + "22" * 32).address
    Wallet.objects.create(user=alice, address=address, chain_id=31337, message="m", signature="0x" + "00" * 65)
    client.force_login(alice)
    page = client.get(reverse("profile")).content.decode()
    assert address in page
    assert "31337" in page
    assert reverse("wallet_unlink", args=[alice.wallets.get().id]) in page


def test_only_active_users_with_the_flag_are_global_curators(alice: User) -> None:
    from django.contrib.auth.models import AnonymousUser

    assert not user_is_global_curator(alice)
    alice.is_global_curator = True
    assert user_is_global_curator(alice)
    alice.is_active = False
    assert not user_is_global_curator(alice)
    assert not user_is_global_curator(AnonymousUser())


def test_the_login_page_does_not_carry_a_foreign_next_into_its_form(client: Client, db: None) -> None:
    body = client.get(reverse("login"), {"next": "https://evil.example/"}).content.decode()
    assert "evil.example" not in body
    assert 'name="next" value="/datanets/"' in client.get(reverse("login"), {"next": "/datanets/"}).content.decode()


def test_the_migration_gives_existing_accounts_skeletons_oldest_first(db: None) -> None:
    import importlib
    from datetime import timedelta

    from django.apps import apps
    from django.utils import timezone

    migration = importlib.import_module("accounts.migrations.0003_username_skeleton")
    older = User.objects.create_user("alice", "a@example.org")
    # an account from before the rule, whose name reads like the older one's
    newer = User.objects.create_user("bob", "b@example.org")
    User.objects.filter(pk=newer.pk).update(username="\u0430lice", date_joined=timezone.now() + timedelta(days=1))
    User.objects.update(username_skeleton=None)
    migration.fill_skeletons(apps, None)
    skeletons = dict(User.objects.values_list("pk", "username_skeleton"))
    assert skeletons == {older.pk: "alice", newer.pk: None}
    # the account left without one can still be saved, and gets one once renamed
    newer.refresh_from_db()
    newer.save()
    newer.username = "alicia"
    newer.save()
    assert User.objects.get(pk=newer.pk).username_skeleton == "alicia"
