from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import siwe
from .authentication import api_key_hash
from .models import ApiToken, LoginAddress, LoginFailure, User, Wallet, WalletChallenge
from .selectors import login_account_key
from .usernames import username_problem


def user_create(*, username: str, email: str, password: str) -> User:
    """A new contributor. The caller has run the password validators (the sign-up form does). Refuses
    (ValidationError) a name with invisible characters or mixed scripts, or one that looks like another user's."""
    if problem := username_problem(username):
        raise ValidationError({"username": problem})
    user = User(username=username, email=email)
    user.full_clean(exclude=["password"])  # the model's validators, then its look-alike check
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as e:
        # a look-alike signed up in the moment since the check: the unique skeleton let only one in
        raise ValidationError({"username": "This username looks like an existing user's."}) from e
    return user


def login_failure_record(*, username: str, ip: str | None) -> None:
    now = timezone.now()
    LoginFailure.objects.create(account=login_account_key(username), ip=ip, at=now)
    # Rows older than both windows count for nothing; dropping them here keeps the table at its working size.
    longest = max(settings.LOGIN_RATE_LIMIT_WINDOW_SECONDS, settings.LOGIN_RATE_LIMIT_CEILING_WINDOW_SECONDS)
    LoginFailure.objects.filter(at__lte=now - timedelta(seconds=longest)).delete()


def login_success_record(*, username: str, ip: str | None) -> None:
    """After a successful login: the account's budget from this address is whole again, and the address is known
    to the account (it passes the account's ceiling). Failures from other addresses, and this address's failures
    on other accounts, still count."""
    account = login_account_key(username)
    failures = LoginFailure.objects.filter(account=account)
    (failures.filter(ip=ip) if ip else failures).delete()
    if ip:
        LoginAddress.objects.update_or_create(account=account, ip=ip, defaults={"last_success_at": timezone.now()})


API_KEY_PREFIX = "olt_"
API_TOKEN_PREFIX_SHOWN = 12  # "olt_" and 8 random characters: enough to tell a user's tokens apart


@dataclass(frozen=True)
class NewApiToken:
    """A token just made, with its key: the only moment the key exists outside the caller's hands."""

    token: ApiToken
    key: str


def api_token_create(*, user: User, expires_at: datetime | None = None) -> NewApiToken:
    """A new API token for ``user``, valid until ``expires_at`` (None: until revoked). Only its hash is stored."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "choose a time in the future"})
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, prefix=key[:API_TOKEN_PREFIX_SHOWN], key_hash=api_key_hash(key), expires_at=expires_at
    )
    return NewApiToken(token=token, key=key)


@transaction.atomic
def api_token_rotate(*, user: User, expires_at: datetime | None = None) -> NewApiToken:
    """A fresh token for ``user``; every previous one stops working at once."""
    api_token_revoke(user=user)
    return api_token_create(user=user, expires_at=expires_at)


def api_token_revoke(*, user: User) -> int:
    """Revoke every token of ``user`` that still works; how many. Revoked rows stay, with their last use."""
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())


MAX_OPEN_WALLET_CHALLENGES = 10


class WalletError(Exception):
    """A wallet request that was refused and changed nothing; ``code`` names the reason for API clients."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _linked_elsewhere_error(wallet: Wallet, user: User) -> WalletError:
    if wallet.user_id == user.id:
        return WalletError(f"{wallet.address} is already linked to your account", code="already_linked")
    return WalletError(f"{wallet.address} is already linked to another account", code="linked_to_another_user")


def signing_site(request: Any) -> dict[str, str]:
    """The ``domain`` and ``uri`` for ``wallet_challenge_issue``: this site as ``request`` (a Django or DRF request)
    reached it, so that the wallet shows the site the user is actually on."""
    return {"domain": request.get_host(), "uri": request.build_absolute_uri("/")}


def wallet_challenge_issue(*, user: User, address: str, domain: str, uri: str) -> WalletChallenge:
    """A single-use EIP-4361 message for ``user`` to sign with ``address``, valid for WALLET_NONCE_TTL_SECONDS.

    ``domain`` and ``uri`` come from the request, so that the wallet shows the site the user is actually on.
    """
    try:
        address = siwe.checksum_address(address)
    except siwe.SiweError as e:
        raise WalletError(str(e), code=e.code) from e
    existing = Wallet.objects.filter(address=address).first()
    if existing:
        raise _linked_elsewhere_error(existing, user)
    now = timezone.now()
    # Issuing costs a row; a cap on open ones keeps a scripted account from filling the table.
    if (
        WalletChallenge.objects.filter(user=user, used_at__isnull=True, expires_at__gt=now).count()
        >= MAX_OPEN_WALLET_CHALLENGES
    ):
        raise WalletError(
            "Too many unsigned challenges are open; sign one or wait for them to expire", code="too_many_challenges"
        )
    issued_at = now.replace(microsecond=0)
    expires_at = issued_at + timedelta(seconds=settings.WALLET_NONCE_TTL_SECONDS)
    nonce = siwe.new_nonce()
    message = siwe.SiweMessage(
        domain=domain,
        address=address,
        statement=(
            f"Link this Ethereum account to the OpenLedger account {user.get_username()}. "
            "Signing proves you hold the key; it sends no transaction and costs no gas."
        ),
        uri=uri,
        chain_id=settings.EVM_CHAIN_ID,
        nonce=nonce,
        issued_at=issued_at,
        expiration_time=expires_at,
    ).text()
    return WalletChallenge.objects.create(
        user=user,
        address=address,
        chain_id=settings.EVM_CHAIN_ID,
        nonce=nonce,
        message=message,
        issued_at=issued_at,
        expires_at=expires_at,
    )


def wallet_link(*, user: User, nonce: str, message: str, signature: str) -> Wallet:
    """Verify the signed challenge and link its address to ``user``; the challenge is spent in the same
    transaction. Every refusal raises WalletError and leaves the database as it was."""
    try:
        signature = siwe.normalize_signature(signature)
    except siwe.SiweError as e:
        raise WalletError(str(e), code=e.code) from e
    try:
        with transaction.atomic():
            # The row lock makes a replayed signature racing the original wait, then see used_at set.
            challenge = WalletChallenge.objects.select_for_update().filter(nonce=nonce.strip(), user=user).first()
            if challenge is None:
                # Another user's nonce gets the same answer as an unknown one: nonces are not an oracle.
                raise WalletError("No challenge with this nonce was issued to you", code="unknown_nonce")
            if challenge.used_at is not None:
                raise WalletError(
                    "This challenge was already used; request a new one to link again", code="challenge_used"
                )
            now = timezone.now()
            if challenge.is_expired(now):
                raise WalletError("This challenge expired; request a new one", code="challenge_expired")
            # Browsers submit textarea content with CRLF line ends; EIP-4361 messages use LF.
            if message.replace("\r\n", "\n") != challenge.message:
                raise WalletError(
                    "The message differs from the one issued for this nonce; sign it exactly as shown",
                    code="message_mismatch",
                )
            try:
                signer = siwe.recover_signer(challenge.message, signature)
            except siwe.SiweError as e:
                raise WalletError(str(e), code=e.code) from e
            if signer != challenge.address:
                raise WalletError(
                    f"The signature was made by {signer}, not by {challenge.address}", code="wrong_signer"
                )
            existing = Wallet.objects.filter(address=challenge.address).first()
            if existing:
                raise _linked_elsewhere_error(existing, user)
            challenge.used_at = now
            challenge.save(update_fields=["used_at"])
            return Wallet.objects.create(
                user=user,
                address=challenge.address,
                chain_id=challenge.chain_id,
                linked_at=now,
                message=challenge.message,
                signature=signature,
            )
    except IntegrityError as e:
        # Two users raced to link one address; the unique index let one win.
        raise WalletError(
            f"{challenge.address} is already linked to another account", code="linked_to_another_user"
        ) from e


def wallet_unlink(*, wallet: Wallet) -> None:
    wallet.delete()
