from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from . import account_views

urlpatterns = [
    path("signup/", account_views.signup, name="signup"),
    path("login/", account_views.login_view, name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("profile/", account_views.profile, name="profile"),
    path(
        "password/change/",
        auth_views.PasswordChangeView.as_view(template_name="registration/password_change_form.html"),
        name="password_change",
    ),
    path(
        "password/change/done/",
        auth_views.PasswordChangeDoneView.as_view(template_name="registration/password_change_done.html"),
        name="password_change_done",
    ),
    path("wallets/challenge/", account_views.wallet_challenge, name="wallet_challenge"),
    path("wallets/link/", account_views.wallet_link_view, name="wallet_link"),
    path("wallets/<int:wallet_id>/unlink/", account_views.wallet_unlink_view, name="wallet_unlink"),
    path("token/rotate/", account_views.api_token_rotate_view, name="api_token_rotate"),
    path("token/revoke/", account_views.api_token_revoke_view, name="api_token_revoke"),
]
