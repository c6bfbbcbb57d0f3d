from django.urls import path

from . import api

urlpatterns = [
    path("me/", api.MeApi.as_view(), name="api_me"),
    path("wallets/", api.WalletListApi.as_view(), name="api_wallets"),
    path("wallets/challenge/", api.WalletChallengeApi.as_view(), name="api_wallet_challenge"),
    path("wallets/<int:wallet_id>/", api.WalletUnlinkApi.as_view(), name="api_wallet_unlink"),
]
