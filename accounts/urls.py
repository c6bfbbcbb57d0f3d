from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("login/", views.login_view, name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("profile/", views.profile, name="profile"),
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
    path("wallets/challenge/", views.wallet_challenge, name="wallet_challenge"),
    path("wallets/link/", views.wallet_link_view, name="wallet_link"),
    path("wallets/<int:wallet_id>/unlink/", views.wallet_unlink_view, name="wallet_unlink"),
    path("token/rotate/", views.api_token_rotate_view, name="api_token_rotate"),
    path("token/revoke/", views.api_token_revoke_view, name="api_token_revoke"),
]
