"""Earnings and claims (mounted under /attribution/ with the app name "attribution")."""

from __future__ import annotations

from django.urls import path

from . import rewards_views

urlpatterns = [
    path("earnings/", rewards_views.earnings, name="earnings"),
    path("earnings/claim/", rewards_views.claim, name="claim"),
    path("epochs/", rewards_views.epoch_list, name="epoch_list"),
    path("epochs/<int:number>/", rewards_views.epoch_detail, name="epoch_detail"),
    path("contributions/<int:contribution_id>/impact/", rewards_views.contribution_impact, name="contribution_impact"),
]
