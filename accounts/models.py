from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .usernames import SKELETON_MAX_LENGTH, username_skeleton


class User(AbstractUser):
    """A person. Everyone is a contributor; curators are global (this flag) or per Datanet; staff administer."""

    is_global_curator = models.BooleanField(
        default=False, help_text="May curate every Datanet, not only those that name this user a curator."
    )
    # null, not "": the accounts left without one (see help_text) must not collide with each other in the index
    username_skeleton = models.CharField(  # noqa: DJ001
        max_length=SKELETON_MAX_LENGTH,
        unique=True,
        null=True,
        editable=False,
        help_text="The username's Unicode TR39 skeleton (usernames.username_skeleton): no two users look alike. "
        "Null only for an account older than the rule whose name collided with another's.",
    )

    class Meta(AbstractUser.Meta):
        db_table = "openledger_web_user"  # its table from before it moved from openledger_web (issue 14)

    def clean(self) -> None:
        super().clean()
        if not self.username:
            return  # the form already said what is wrong with it
        self.username_skeleton = username_skeleton(self.username)
        lookalike = User.objects.exclude(pk=self.pk).filter(
            Q(username_skeleton=self.username_skeleton) | Q(username__iexact=self.username)
        )
        if lookalike.exists():
            raise ValidationError(
                {"username": ValidationError("This username looks like an existing user's.", code="lookalike")}
            )

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        if update_fields is None or "username" in update_fields:
            # Kept in step with the name; for a new account the unique index is the last word on races. An account
            # older than the rule that looks like another keeps no skeleton rather than failing every save.
            skeleton: str | None = username_skeleton(self.username)
            if not self._state.adding and User.objects.exclude(pk=self.pk).filter(username_skeleton=skeleton).exists():
                skeleton = None
            self.username_skeleton = skeleton
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "username_skeleton"}
        super().save(*args, **kwargs)

    @property
    def primary_wallet(self) -> Wallet | None:
        return self.wallets.order_by("-linked_at").first()


class WalletChallenge(models.Model):
    """A Sign-In with Ethereum message issued to a user for one address: single use, expiring.

    The message text is kept verbatim because the signature covers exactly these bytes; a challenge is never
    edited after issue except to stamp ``used_at``.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="wallet_challenges")
    address = models.CharField(max_length=42, help_text="EIP-55 checksummed")
    chain_id = models.PositiveBigIntegerField()
    nonce = models.CharField(max_length=64, unique=True)
    message = models.TextField()
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "openledger_web_walletchallenge"
        ordering = ("-issued_at",)
        indexes = [models.Index(fields=("user", "-issued_at"))]

    def __str__(self) -> str:
        return f"{self.address} for {self.user} ({self.nonce})"

    def is_expired(self, at: datetime | None = None) -> bool:
        return (at or timezone.now()) >= self.expires_at


class Wallet(models.Model):
    """An EVM address proven (by an EIP-4361 signature) to belong to a user. One address, one user."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="wallets")
    address = models.CharField(max_length=42, unique=True, help_text="EIP-55 checksummed")
    chain_id = models.PositiveBigIntegerField()
    linked_at = models.DateTimeField(default=timezone.now)
    message = models.TextField(help_text="The signed EIP-4361 message, kept as evidence")
    signature = models.CharField(max_length=132, help_text="0x-prefixed 65-byte signature over the message")

    class Meta:
        db_table = "openledger_web_wallet"
        ordering = ("-linked_at",)

    def __str__(self) -> str:
        return self.address


class LoginFailure(models.Model):
    """One failed password attempt; the login limits count these over a sliding window.

    Rows rather than cache counters: a count over timestamps is exact under concurrent requests and tells the
    user precisely when the oldest counted failure leaves the window.
    """

    account = models.CharField(max_length=150, help_text="The username as typed, case-folded")
    ip = models.GenericIPAddressField(null=True, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        db_table = "openledger_web_loginfailure"
        ordering = ("-at",)
        indexes = [models.Index(fields=("account", "at")), models.Index(fields=("ip", "at"))]

    def __str__(self) -> str:
        return f"{self.account} from {self.ip} at {self.at:%Y-%m-%d %H:%M:%S}"


class LoginAddress(models.Model):
    """An address someone signed in to an account from: the account's ceiling on failures (spread over many
    addresses) does not shut out the addresses its owner uses."""

    account = models.CharField(max_length=150, help_text="The username as typed, case-folded")
    ip = models.GenericIPAddressField()
    last_success_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "openledger_web_loginaddress"
        verbose_name_plural = "login addresses"
        constraints = [models.UniqueConstraint(fields=("account", "ip"), name="openledger_login_address_unique")]

    def __str__(self) -> str:
        return f"{self.account} from {self.ip}"


class ApiToken(models.Model):
    """A key programs send as ``Authorization: Token <key>`` (or ``Bearer <key>``) to act as ``user``.

    Only the SHA-256 of the key is stored: the key is shown once, when it is made, and a copy of the database lets
    nobody in. ``prefix`` (the key's first characters) names it on the profile page. A token stops working when it
    is revoked or expires; ``last_used_at`` is written at most once a minute.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    prefix = models.CharField(max_length=12)
    key_hash = models.CharField(max_length=64, unique=True, help_text="sha256 of the key, hex")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires")
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "openledger_web_apitoken"
        verbose_name = "API token"
        ordering = ("-created_at",)
        indexes = [models.Index(fields=("user", "-created_at"))]

    def __str__(self) -> str:
        return f"{self.prefix}… of {self.user}"

    def is_usable(self, at: datetime | None = None) -> bool:
        at = at or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or at < self.expires_at)
