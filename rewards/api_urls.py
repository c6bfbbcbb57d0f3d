"""/api/rewards/: reward epochs in the open, and the signed-in user's claims (see rewards/api.py)."""

from __future__ import annotations

from django.urls import path

from . import api

app_name = "rewards_api"

# numbers are matched as any segment and read by the views, so that a malformed one is a JSON 404 like a missing one
urlpatterns = [
    path("epochs/", api.RewardEpochListApi.as_view(), name="epoch_list"),
    path("epochs/<str:number>/", api.RewardEpochDetailApi.as_view(), name="epoch_detail"),
    path("epochs/<str:number>/leaves/<str:index>/proof/", api.RewardLeafProofApi.as_view(), name="leaf_proof"),
    path("claims/", api.RewardClaimListApi.as_view(), name="claims"),
    path("lineage/records/<str:record_id>/", api.RecordLineageApi.as_view(), name="lineage_record"),
    path(
        "lineage/contributions/<str:contribution_id>/",
        api.ContributionLineageApi.as_view(),
        name="lineage_contribution",
    ),
    path("lineage/contributors/<str:username>/", api.ContributorLineageApi.as_view(), name="lineage_contributor"),
]
