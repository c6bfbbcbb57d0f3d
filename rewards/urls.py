"""Earnings, claims, reward epochs and a contribution's impact (mounted under /attribution/, where these pages were
before they had an app of their own, so their addresses did not change)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "rewards"

urlpatterns = [
    path("earnings/", views.earnings, name="earnings"),
    path("earnings/claim/", views.claim, name="claim"),
    path("epochs/", views.epoch_list, name="epoch_list"),
    path("epochs/<int:number>/", views.epoch_detail, name="epoch_detail"),
    path("contributions/<int:contribution_id>/impact/", views.contribution_impact, name="contribution_impact"),
    path("lineage/records/<int:record_id>/", views.record_lineage, name="record_lineage"),
    path("lineage/contributions/<int:contribution_id>/", views.contribution_lineage, name="contribution_lineage"),
    path("lineage/contributors/<str:username>/", views.contributor_lineage, name="contributor_lineage"),
]
