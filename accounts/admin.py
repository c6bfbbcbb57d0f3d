from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from .forms import AdminLoginForm
from .models import ApiToken, LoginAddress, LoginFailure, User, Wallet, WalletChallenge

# The admin's login page obeys the same per-account and per-address limits as ours.
admin.site.login_form = AdminLoginForm


@admin.register(User)
class OpenledgerUserAdmin(UserAdmin):
    fieldsets = (*UserAdmin.fieldsets, ("Roles", {"fields": ("is_global_curator",)}))
    list_display = ("username", "email", "is_global_curator", "is_staff", "date_joined", "last_login")
    list_filter = ("is_global_curator", "is_staff", "is_superuser", "is_active")


class _EvidenceAdmin(admin.ModelAdmin):
    """Rows made by verified signatures: readable, deletable, never hand-made or edited."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Wallet)
class WalletAdmin(_EvidenceAdmin):
    list_display = ("address", "user", "chain_id", "linked_at")
    list_filter = ("chain_id", "linked_at")
    search_fields = ("address", "user__username", "user__email")
    list_select_related = ("user",)
    readonly_fields = ("user", "address", "chain_id", "linked_at", "message", "signature")
    date_hierarchy = "linked_at"


class ChallengeStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> tuple[tuple[str, str], ...]:
        return (("used", "used"), ("open", "open"), ("expired", "expired unused"))

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "used":
            return queryset.filter(used_at__isnull=False)
        if self.value() == "open":
            return queryset.filter(used_at__isnull=True, expires_at__gt=now)
        if self.value() == "expired":
            return queryset.filter(used_at__isnull=True, expires_at__lte=now)
        return queryset


@admin.register(WalletChallenge)
class WalletChallengeAdmin(_EvidenceAdmin):
    list_display = ("nonce", "user", "address", "chain_id", "issued_at", "expires_at", "used_at")
    list_filter = (ChallengeStateFilter, "chain_id", "issued_at")
    search_fields = ("nonce", "address", "user__username", "user__email")
    list_select_related = ("user",)
    readonly_fields = ("user", "address", "chain_id", "nonce", "message", "issued_at", "expires_at", "used_at")
    date_hierarchy = "issued_at"


@admin.register(LoginFailure)
class LoginFailureAdmin(_EvidenceAdmin):
    """Deleting an account's rows lifts its lockout early."""

    list_display = readonly_fields = ("account", "ip", "at")
    list_filter = ("at",)
    search_fields = ("account", "ip")


@admin.register(LoginAddress)
class LoginAddressAdmin(_EvidenceAdmin):
    """Addresses that passed an account's failure ceiling because its owner signed in from them; deleting one
    makes it a stranger again."""

    list_display = readonly_fields = ("account", "ip", "last_success_at")
    list_filter = ("last_success_at",)
    search_fields = ("account", "ip")


@admin.register(ApiToken)
class ApiTokenAdmin(_EvidenceAdmin):
    """Staff see every token and may delete one to stop it; the keys themselves are nowhere: only their hashes."""

    list_display = ("prefix", "user", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("created_at", "revoked_at")
    search_fields = ("prefix", "user__username")
    list_select_related = ("user",)
    readonly_fields = ("user", "prefix", "key_hash", "created_at", "expires_at", "last_used_at", "revoked_at")
