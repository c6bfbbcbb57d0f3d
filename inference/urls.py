"""Inference pages: ask, run history, shared run pages, the answer stream and the on-chain checks."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "inference"

urlpatterns = [
    path("", views.ask, name="ask"),
    path("submit/", views.submit, name="submit"),
    path("history/", views.history, name="history"),
    path("engines/", views.engines, name="engines"),
    path("runs/<uuid:public_id>/", views.run_detail, name="run_detail"),
    path("runs/<uuid:public_id>/stream/", views.stream, name="stream"),
    path("runs/<uuid:public_id>/proof.json", views.run_proof, name="run_proof"),
    path("runs/<uuid:public_id>/verify/", views.verify_run, name="verify_run"),
    path("versions/<int:version_id>/verify/", views.verify_version, name="verify_version"),
    path("snapshots/<int:snapshot_id>/verify/", views.verify_snapshot, name="verify_snapshot"),
]
