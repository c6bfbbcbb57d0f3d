from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


class User(AbstractUser):
    """A person. Everyone is a contributor; curators are global (this flag) or per Datanet; staff administer."""

    is_global_curator = models.BooleanField(
        default=False, help_text="May curate every Datanet, not only those that name this user a curator."
    )

    @property
    def primary_wallet(self) -> Wallet | None:
        return self.wallets.order_by("-linked_at").first()


class WorkerHeartbeat(models.Model):
    """One row per Celery worker, touched every WORKER_HEARTBEAT_SECONDS: how /healthz knows who is alive.

    A row rather than a broker broadcast, so that the answer is the same on Redis and on the filesystem broker.
    """

    hostname = models.CharField(max_length=255, unique=True)
    queues = models.JSONField(default=list)
    pid = models.IntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.hostname


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
        ordering = ("-at",)
        indexes = [models.Index(fields=("account", "at")), models.Index(fields=("ip", "at"))]

    def __str__(self) -> str:
        return f"{self.account} from {self.ip} at {self.at:%Y-%m-%d %H:%M:%S}"
