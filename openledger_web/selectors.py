from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework.authtoken.models import Token

from .models import LoginFailure, User, Wallet

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


def api_token_of(*, user: User) -> Token | None:
    return Token.objects.filter(user=user).first()


def login_account_key(username: str) -> str:
    """Failures count against the name as typed, case-folded, so that ``Alice`` and ``alice`` share one budget."""
    return username.strip().casefold()[:150]


@dataclass(frozen=True)
class LoginLimit:
    """Why a login attempt is refused before the password is even checked, and until when."""

    scope: str  # "account" or "ip"
    retry_at: datetime

    @property
    def minutes(self) -> int:
        return max(1, math.ceil((self.retry_at - timezone.now()).total_seconds() / 60))

    @property
    def message(self) -> str:
        unit = "minute" if self.minutes == 1 else "minutes"
        if self.scope == "account":
            return f"Too many failed attempts for this account; try again in {self.minutes} {unit}."
        return f"Too many failed attempts from your network address; try again in {self.minutes} {unit}."


def _retry_at(failures: QuerySet[LoginFailure], limit: int) -> datetime | None:
    # Refused while `limit` or more failures lie in the window; allowed again once the limit-th most recent one
    # leaves it, since the count then drops below the limit.
    window = timedelta(seconds=settings.LOGIN_RATE_LIMIT_WINDOW_SECONDS)
    recent = failures.filter(at__gt=timezone.now() - window).order_by("-at").values_list("at", flat=True)
    boundary = list(recent[limit - 1 : limit])
    return boundary[0] + window if boundary else None


def login_limit_for(*, username: str, ip: str | None) -> LoginLimit | None:
    """The limit this attempt hits, account first (its message is the more useful one), or None."""
    retry_at = _retry_at(
        LoginFailure.objects.filter(account=login_account_key(username)), settings.LOGIN_RATE_LIMIT_PER_ACCOUNT
    )
    if retry_at:
        return LoginLimit(scope="account", retry_at=retry_at)
    if ip:
        retry_at = _retry_at(LoginFailure.objects.filter(ip=ip), settings.LOGIN_RATE_LIMIT_PER_IP)
        if retry_at:
            return LoginLimit(scope="ip", retry_at=retry_at)
    return None
