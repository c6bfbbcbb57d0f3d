"""/chain/: the chain page (see ledger/views.py)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "ledger"

urlpatterns = [
    path("", views.chain, name="chain"),
]
