"""/api/datanets/: one path per operation (see datanets/api.py)."""

from __future__ import annotations

from django.urls import path

from . import api

app_name = "datanets_api"

urlpatterns = [
    path("", api.DatanetListApi.as_view(), name="datanet_list"),
    path("create/", api.DatanetCreateApi.as_view(), name="datanet_create"),
    path("leaderboard/", api.LeaderboardApi.as_view(), name="leaderboard"),
    path("contributions/", api.ContributionListApi.as_view(), name="contribution_list"),
    path("contributions/queue/", api.ContributionQueueApi.as_view(), name="contribution_queue"),
    path("contributions/decide/", api.ContributionDecideApi.as_view(), name="contribution_decide"),
    path("contributions/<int:contribution_id>/", api.ContributionDetailApi.as_view(), name="contribution_detail"),
    path(
        "contributions/<int:contribution_id>/records/",
        api.ContributionRecordListApi.as_view(),
        name="contribution_records",
    ),
    path(
        "contributions/<int:contribution_id>/receipts/",
        api.ContributionReceiptListApi.as_view(),
        name="contribution_receipts",
    ),
    path(
        "contributions/<int:contribution_id>/withdraw/",
        api.ContributionWithdrawApi.as_view(),
        name="contribution_withdraw",
    ),
    path(
        "contributions/<int:contribution_id>/revoke/", api.ContributionRevokeApi.as_view(), name="contribution_revoke"
    ),
    path(
        "contributions/<int:contribution_id>/revocations/",
        api.ContributionRevocationListApi.as_view(),
        name="contribution_revocations",
    ),
    path("records/<int:record_id>/exclude/", api.RecordExcludeApi.as_view(), name="record_exclude"),
    path("records/takedown/", api.RecordTakedownApi.as_view(), name="record_takedown"),
    path("revocations/mine/", api.MyRevocationListApi.as_view(), name="revocations_mine"),
    path("revocations/<int:revocation_id>/erase/", api.RevocationEraseApi.as_view(), name="revocation_erase"),
    path("<slug:slug>/", api.DatanetDetailApi.as_view(), name="datanet_detail"),
    path("<slug:slug>/update/", api.DatanetUpdateApi.as_view(), name="datanet_update"),
    path("<slug:slug>/curators/add/", api.DatanetCuratorAddApi.as_view(), name="curator_add"),
    path("<slug:slug>/curators/remove/", api.DatanetCuratorRemoveApi.as_view(), name="curator_remove"),
    path("<slug:slug>/members/add/", api.DatanetMemberAddApi.as_view(), name="member_add"),
    path("<slug:slug>/members/remove/", api.DatanetMemberRemoveApi.as_view(), name="member_remove"),
    path("<slug:slug>/leaderboard/", api.DatanetLeaderboardApi.as_view(), name="datanet_leaderboard"),
    path("<slug:slug>/contribute/", api.ContributionUploadApi.as_view(), name="contribution_upload"),
    path("<slug:slug>/contribute/records/", api.ContributionPasteApi.as_view(), name="contribution_paste"),
    path("<slug:slug>/statistics/", api.DatanetStatisticsApi.as_view(), name="datanet_statistics"),
    path("<slug:slug>/receipts/", api.DatanetReceiptListApi.as_view(), name="receipt_list"),
    path("<slug:slug>/revocations/", api.DatanetRevocationListApi.as_view(), name="datanet_revocations"),
    path("<slug:slug>/snapshots/", api.SnapshotListApi.as_view(), name="snapshot_list"),
    path("<slug:slug>/snapshots/freeze/", api.SnapshotFreezeApi.as_view(), name="snapshot_freeze"),
    path("<slug:slug>/snapshots/<int:number>/", api.SnapshotDetailApi.as_view(), name="snapshot_detail"),
    path("<slug:slug>/snapshots/<int:number>/download/", api.SnapshotDownloadApi.as_view(), name="snapshot_download"),
    path(
        "<slug:slug>/snapshots/<int:number>/download.parquet",
        api.SnapshotParquetApi.as_view(),
        name="snapshot_download_parquet",
    ),
    path("<slug:slug>/snapshots/<int:number>/manifest/", api.SnapshotManifestApi.as_view(), name="snapshot_manifest"),
    path(
        "<slug:slug>/snapshots/<int:number>/records/<int:record_id>/proof/",
        api.RecordProofApi.as_view(),
        name="record_proof",
    ),
    path(
        "<slug:slug>/snapshots/<int:number>/records/<int:record_id>/verify/",
        api.RecordProofVerifyApi.as_view(),
        name="record_proof_verify",
    ),
]
