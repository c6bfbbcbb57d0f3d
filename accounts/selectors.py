from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet
from django.utils import timezone

from .models import ApiToken, LoginAddress, LoginFailure, User, Wallet

ROLE_CONTRIBUTOR = "contributor"
ROLE_GLOBAL_CURATOR = "global curator"
ROLE_STAFF = "staff"


def user_is_global_curator(user: AbstractBaseUser | AnonymousUser) -> bool:
    """May curate every Datanet. Per-Datanet curators are answered by the datanets app."""
    return bool(user.is_authenticated and getattr(user, "is_global_curator", False) and user.is_active)


def user_roles(*, user: User) -> list[str]:
    """Everyone signed up contributes; the other roles come from flags on the user."""
    roles = [ROLE_CONTRIBUTOR]
    if user_is_global_curator(user):
        roles.append(ROLE_GLOBAL_CURATOR)
    if user.is_staff:
        roles.append(ROLE_STAFF)
    return roles


def wallets_of(*, user: User) -> QuerySet[Wallet]:
    return Wallet.objects.filter(user=user).order_by("-linked_at")


def api_token_of(*, user: User) -> ApiToken | None:
    """The user's newest token that still works (neither revoked nor expired), or None."""
    now = timezone.now()
    return (
        ApiToken.objects.filter(user=user, revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("-created_at")
        .first()
    )


def login_account_key(username: str) -> str:
    """Failures count against the name as typed, case-folded, so that ``Alice`` and ``alice`` share one budget."""
    return username.strip().casefold()[:150]


@dataclass(frozen=True)
class LoginLimit:
    """Why a login attempt is refused before the password is even checked, and until when."""

    scope: str  # "account" (this account from this address), "ip" (this address) or "ceiling" (this account)
    retry_at: datetime

    @property
    def minutes(self) -> int:
        return max(1, math.ceil((self.retry_at - timezone.now()).total_seconds() / 60))

    @property
    def message(self) -> str:
        unit = "minute" if self.minutes == 1 else "minutes"
        if self.scope == "account":
            return f"Too many failed attempts for this account; try again in {self.minutes} {unit}."
        if self.scope == "ceiling":
            return (
                f"Too many failed attempts for this account from many addresses; try again in {self.minutes} {unit}, "
                "or from an address you signed in from before."
            )
        return f"Too many failed attempts from your network address; try again in {self.minutes} {unit}."


def _retry_at(failures: QuerySet[LoginFailure], limit: int, window_seconds: int) -> datetime | None:
    # Refused while `limit` or more failures lie in the window; allowed again once the limit-th most recent one
    # leaves it, since the count then drops below the limit.
    window = timedelta(seconds=window_seconds)
    recent = failures.filter(at__gt=timezone.now() - window).order_by("-at").values_list("at", flat=True)
    boundary = list(recent[limit - 1 : limit])
    return boundary[0] + window if boundary else None


def login_address_known(*, username: str, ip: str | None) -> bool:
    """Whether someone signed in to this account from this address within LOGIN_KNOWN_ADDRESS_DAYS."""
    if not ip:
        return False
    since = timezone.now() - timedelta(days=settings.LOGIN_KNOWN_ADDRESS_DAYS)
    return LoginAddress.objects.filter(account=login_account_key(username), ip=ip, last_success_at__gt=since).exists()


def login_limit_for(*, username: str, ip: str | None) -> LoginLimit | None:
    """The limit this attempt hits, or None. Three, so that nobody can lock an owner out by guessing:

    - this account from this address: LOGIN_RATE_LIMIT_PER_ACCOUNT failures per window (a stranger's guesses from
      elsewhere never count against the owner's address);
    - this address, whatever the account: LOGIN_RATE_LIMIT_PER_IP per window;
    - this account from everywhere: LOGIN_RATE_LIMIT_ACCOUNT_CEILING per LOGIN_RATE_LIMIT_CEILING_WINDOW_SECONDS, a
      slower ceiling on guessing from many addresses, which addresses that signed in to the account before pass.
    """
    account = LoginFailure.objects.filter(account=login_account_key(username))
    window = settings.LOGIN_RATE_LIMIT_WINDOW_SECONDS
    retry_at = _retry_at(account.filter(ip=ip) if ip else account, settings.LOGIN_RATE_LIMIT_PER_ACCOUNT, window)
    if retry_at:
        return LoginLimit(scope="account", retry_at=retry_at)
    if ip:
        retry_at = _retry_at(LoginFailure.objects.filter(ip=ip), settings.LOGIN_RATE_LIMIT_PER_IP, window)
        if retry_at:
            return LoginLimit(scope="ip", retry_at=retry_at)
    retry_at = _retry_at(
        account, settings.LOGIN_RATE_LIMIT_ACCOUNT_CEILING, settings.LOGIN_RATE_LIMIT_CEILING_WINDOW_SECONDS
    )
    if retry_at and not login_address_known(username=username, ip=ip):
        return LoginLimit(scope="ceiling", retry_at=retry_at)
    return None
