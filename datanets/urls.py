from __future__ import annotations

from django.urls import path

from . import views

app_name = "datanets"

# Fixed paths come before <slug:slug>/; services.RESERVED_SLUGS keeps a Datanet from taking one of their names.
urlpatterns = [
    path("", views.datanet_list, name="list"),
    path("new/", views.datanet_create, name="create"),
    path("mine/", views.my_contributions, name="mine"),
    path("curation/", views.curation, name="curation"),
    path("curation/decide/", views.curation_decide, name="curation_decide"),
    path("leaderboard/", views.leaderboard, name="leaderboard_all"),
    path("contributions/<int:contribution_id>/", views.contribution_detail, name="contribution"),
    path(
        "contributions/<int:contribution_id>/receipts/<int:receipt_id>.json", views.receipt_proof, name="receipt_proof"
    ),
    path("contributions/<int:contribution_id>/withdraw/", views.contribution_withdraw, name="contribution_withdraw"),
    path("contributions/<int:contribution_id>/revoke/", views.contribution_revoke, name="contribution_revoke"),
    path("revocations/<int:revocation_id>/erase/", views.revocation_erase, name="revocation_erase"),
    path("records/<int:record_id>/exclude/", views.record_exclude, name="record_exclude"),
    path("<slug:slug>/", views.datanet_detail, name="detail"),
    path("<slug:slug>/edit/", views.datanet_edit, name="edit"),
    path("<slug:slug>/people/", views.datanet_people, name="people"),
    path("<slug:slug>/contribute/", views.contribute, name="contribute"),
    path("<slug:slug>/leaderboard/", views.leaderboard, name="leaderboard"),
    path("<slug:slug>/records/", views.records, name="records"),
    path("<slug:slug>/records/bulk/", views.records_bulk, name="records_bulk"),
    path("<slug:slug>/records/takedown/", views.records_takedown, name="records_takedown"),
    path("<slug:slug>/records/<int:record_id>/", views.record_detail, name="record"),
    path("<slug:slug>/statistics/", views.datanet_statistics, name="statistics"),
    path("<slug:slug>/snapshots/", views.snapshot_freeze, name="snapshot_freeze"),
    path("<slug:slug>/snapshots/<int:number>/", views.snapshot_detail, name="snapshot"),
    path("<slug:slug>/snapshots/<int:number>/records.jsonl", views.snapshot_jsonl, name="snapshot_jsonl"),
    path("<slug:slug>/snapshots/<int:number>/records.parquet", views.snapshot_parquet, name="snapshot_parquet"),
    path("<slug:slug>/snapshots/<int:number>/manifest.json", views.snapshot_manifest, name="snapshot_manifest"),
    path("<slug:slug>/snapshots/<int:number>/proofs/<int:record_id>.json", views.record_proof, name="record_proof"),
    path("<slug:slug>/snapshots/<int:number>/proofs/<int:record_id>/verify/", views.proof_verify, name="proof_verify"),
]
