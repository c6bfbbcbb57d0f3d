"""Sign-up, log-in, the profile page, API tokens and wallet linking (Sign-In with Ethereum) for people in a browser.

The wallet and token views answer htmx requests with the profile page's fragment and plain form posts with the
whole page, so the page works without JavaScript too.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from common.redirects import safe_next

from . import hooks
from .forms import ApiTokenForm, LoginForm, SignupForm, WalletChallengeForm, WalletLinkForm
from .models import User, Wallet, WalletChallenge
from .selectors import api_token_of, user_roles, wallets_of
from .services import (
    WalletError,
    api_token_revoke,
    api_token_rotate,
    signing_site,
    user_create,
    wallet_challenge_issue,
    wallet_link,
    wallet_unlink,
)


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails
    user: User


def _safe_next(request: HttpRequest) -> str:
    return safe_next(request, resolve_url(settings.LOGIN_REDIRECT_URL))


@require_http_methods(["GET", "POST"])
@sensitive_post_parameters("password")
@csrf_protect
@never_cache
def login_view(request: HttpRequest) -> HttpResponse:
    form = LoginForm(request, data=request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        auth_login(request, form.get_user())
        return HttpResponseRedirect(_safe_next(request))
    # only a safe target goes back into the form, so the page never carries a foreign one onward
    context = {"form": form, "next": safe_next(request, "")}
    # 429 tells scripts and proxies what happened; the page says it to people.
    return render(request, "registration/login.html", context, status=429 if form.limited else 200)


@require_http_methods(["GET", "POST"])
@sensitive_post_parameters("password1", "password2")
@csrf_protect
@never_cache
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("profile")
    form = SignupForm(data=request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        user = user_create(
            username=form.cleaned_data["username"],
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password1"],
        )
        auth_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.get_username()}. Link a wallet below to receive rewards.")
        return redirect("profile")
    return render(request, "registration/signup.html", {"form": form})


def _profile_context(request: HtmxHttpRequest, **extra: Any) -> dict[str, Any]:
    user = request.user
    context: dict[str, Any] = {
        "profile_user": user,
        "roles": user_roles(user=user),
        "wallets": list(wallets_of(user=user)),
        "api_token": api_token_of(user=user),
        "challenge_form": WalletChallengeForm(),
        "challenge": None,
        "wallet_error": None,
        "linked_wallet": None,
        "new_token": None,
        "token_form": ApiTokenForm(),
    }
    context.update(extra)
    return context


def _render_profile(request: HtmxHttpRequest, fragment: str, *, status: int = 200, **extra: Any) -> HttpResponse:
    template = "accounts/profile.html" + (f"#{fragment}" if request.htmx else "")
    return render(request, template, _profile_context(request, **extra), status=status)


@require_GET
@login_required
def profile(request: HtmxHttpRequest) -> HttpResponse:
    sections = [section(request, request.user) for section in hooks.profile_sections()]
    return render(request, "accounts/profile.html", _profile_context(request, sections=sections))


@require_POST
@login_required
def wallet_challenge(request: HtmxHttpRequest) -> HttpResponse:
    form = WalletChallengeForm(request.POST)
    if not form.is_valid():
        return _render_profile(request, "wallets", status=400, challenge_form=form, wallet_error="Enter an address.")
    try:
        address = form.cleaned_data["address"]
        challenge = wallet_challenge_issue(user=request.user, address=address, **signing_site(request))
    except WalletError as e:
        return _render_profile(request, "wallets", status=400, challenge_form=form, wallet_error=e.message)
    return _render_profile(request, "wallets", challenge=challenge)


def _open_challenge(user: User, nonce: str) -> WalletChallenge | None:
    """The challenge to show again after a failed attempt, if it can still be signed."""
    challenge = WalletChallenge.objects.filter(user=user, nonce=nonce, used_at__isnull=True).first()
    return challenge if challenge and not challenge.is_expired() else None


@require_POST
@login_required
def wallet_link_view(request: HtmxHttpRequest) -> HttpResponse:
    form = WalletLinkForm(request.POST)
    if not form.is_valid():
        nonce = request.POST.get("nonce", "")
        return _render_profile(
            request,
            "wallets",
            status=400,
            challenge=_open_challenge(request.user, nonce),
            wallet_error="Paste the signature your wallet made over the message.",
        )
    try:
        wallet = wallet_link(user=request.user, **form.cleaned_data)
    except WalletError as e:
        challenge = _open_challenge(request.user, form.cleaned_data["nonce"])
        return _render_profile(request, "wallets", status=400, challenge=challenge, wallet_error=e.message)
    if request.htmx:
        return _render_profile(request, "wallets", linked_wallet=wallet)
    messages.success(request, f"Linked {wallet.address}.")
    return redirect("profile")


def _get_wallet_for_user(request: HtmxHttpRequest, wallet_id: int) -> Wallet:
    return get_object_or_404(wallets_of(user=request.user), id=wallet_id)


@require_POST
@login_required
def wallet_unlink_view(request: HtmxHttpRequest, wallet_id: int) -> HttpResponse:
    wallet = _get_wallet_for_user(request, wallet_id)
    address = wallet.address
    wallet_unlink(wallet=wallet)
    if request.htmx:
        return _render_profile(request, "wallets")
    messages.success(request, f"Unlinked {address}.")
    return redirect("profile")


@require_POST
@login_required
def api_token_rotate_view(request: HtmxHttpRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST)
    if not form.is_valid():
        return _render_profile(request, "token", status=400, token_form=form)
    created = api_token_rotate(user=request.user, expires_at=form.expires_at())
    # Rendered in this response rather than after a redirect: the key is shown once and never stored in a session.
    response = _render_profile(request, "token", new_token=created.key, api_token=created.token)
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@login_required
def api_token_revoke_view(request: HtmxHttpRequest) -> HttpResponse:
    api_token_revoke(user=request.user)
    if request.htmx:
        return _render_profile(request, "token")
    messages.success(request, "API token revoked.")
    return redirect("profile")
