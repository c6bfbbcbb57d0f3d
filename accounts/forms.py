from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone

from common.ratelimit import client_ip

from .models import User
from .selectors import LoginLimit, login_limit_for
from .services import login_failure_record, login_success_record
from .usernames import username_problem


class SignupForm(UserCreationForm):
    email = forms.EmailField(
        required=True, help_text="For account notices; never shown to other users.", widget=forms.EmailInput()
    )

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")

    def clean_username(self) -> str:
        username = super().clean_username()  # None when it is taken (that error is already added)
        try:
            UnicodeUsernameValidator()(username or "")
        except ValidationError:
            return username  # the model's own validator says what is wrong, in its words
        if problem := username_problem(username):
            raise problem
        # User.clean() also refuses a name that looks like another user's (the form calls it after this)
        return username


class RateLimitedLoginMixin:
    """Refuses an attempt while the account or the address is over its limit, before the password is checked,
    so that a guess made during a lockout can neither succeed nor count. ``limited`` says which limit hit."""

    limited: LoginLimit | None = None
    request: HttpRequest | None
    cleaned_data: dict[str, Any]

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        ip = client_ip(self.request)
        self.limited = login_limit_for(username=username, ip=ip) if username else None
        if self.limited:
            raise ValidationError(self.limited.message, code="rate_limited")
        try:
            cleaned = super().clean()  # type: ignore[misc]
        except ValidationError:
            login_failure_record(username=username, ip=ip)
            raise
        # clean() also runs when a field is missing; only a user that authenticated proves the password.
        if getattr(self, "user_cache", None) is not None:
            login_success_record(username=username, ip=ip)
        return cleaned


class LoginForm(RateLimitedLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(RateLimitedLoginMixin, AdminAuthenticationForm):
    """The admin's own login page counts against the same limits; otherwise it would be the way around them."""


class WalletChallengeForm(forms.Form):
    address = forms.CharField(
        max_length=64,
        label="Wallet address",
        widget=forms.TextInput(attrs={"placeholder": "0x…", "autocomplete": "off", "spellcheck": "false"}),
    )


class WalletLinkForm(forms.Form):
    nonce = forms.CharField(max_length=64, widget=forms.HiddenInput())
    message = forms.CharField(strip=False, widget=forms.Textarea(attrs={"readonly": True, "rows": 10}))
    signature = forms.CharField(
        max_length=200,
        label="Signature",
        widget=forms.TextInput(attrs={"placeholder": "0x… (132 characters)", "autocomplete": "off"}),
    )


class ApiTokenForm(forms.Form):
    expires_in_days = forms.TypedChoiceField(
        label="Expires",
        choices=[("", "never"), ("7", "in 7 days"), ("30", "in 30 days"), ("90", "in 90 days"), ("365", "in a year")],
        coerce=int,
        empty_value=None,
        required=False,
    )

    def expires_at(self) -> datetime | None:
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + timedelta(days=days) if days else None
