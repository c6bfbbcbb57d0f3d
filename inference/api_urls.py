"""Inference REST API: runs, mounted at /api/runs/."""

from django.urls import path

from . import api

app_name = "inference-api"

urlpatterns = [
    path("<uuid:public_id>/", api.RunDetailApi.as_view(), name="run_detail"),
]
