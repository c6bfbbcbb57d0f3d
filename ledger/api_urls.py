"""/api/chain/ (see ledger/api.py)."""

from __future__ import annotations

from django.urls import path

from . import api

app_name = "ledger-api"

urlpatterns = [
    path("", api.ChainApi.as_view(), name="chain"),
]
