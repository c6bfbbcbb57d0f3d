"""/api/attribution/: a run's full credit list (see attribution/api.py)."""

from __future__ import annotations

from django.urls import path

from . import api

app_name = "attribution_api"

urlpatterns = [
    path("runs/<uuid:public_id>/credits/", api.RunCreditListApi.as_view(), name="run_credits"),
]
