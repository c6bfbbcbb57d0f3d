"""API tokens for programs: ``Authorization: Token <key>`` (and ``Bearer <key>``, as OpenAI's clients send it).

Replaces rest_framework.authtoken, which kept keys in plain text and forever: here only the key's SHA-256 is
stored (``ApiToken``), and a revoked or expired token is refused.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from .models import ApiToken, User

LAST_USED_RESOLUTION = timedelta(minutes=1)  # one write a minute per token, not one per request


def api_key_hash(key: str) -> str:
    """What is stored of a key: its SHA-256, hex. Keys are random and long, so no salt or stretching is needed."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiTokenAuthentication(BaseAuthentication):
    """``Authorization: Token <key>``; answers 401 for an unknown, revoked or expired key."""

    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None  # not ours: another scheme (or none) may answer
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header: send the key after the keyword, no spaces.")
        try:
            key = parts[1].decode("ascii")
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid token header: the key is ASCII.") from None
        return self._authenticate_key(key)

    def _authenticate_key(self, key: str) -> tuple[User, ApiToken]:
        token = ApiToken.objects.select_related("user").filter(key_hash=api_key_hash(key)).first()
        now = timezone.now()
        if token is None or token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.is_usable(now):
            raise exceptions.AuthenticationFailed("This token expired; create a new one on your profile page.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class BearerApiTokenAuthentication(ApiTokenAuthentication):
    """The same tokens sent as ``Authorization: Bearer <key>``, the way OpenAI's clients send their API key."""

    keyword = "Bearer"


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'An API token from the profile page, sent as "Token <key>".',
        }


class BearerApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BearerApiTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "An API token from the profile page."}
