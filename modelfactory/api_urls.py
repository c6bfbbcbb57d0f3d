"""/api/modelfactory/: one path per operation (see modelfactory/api.py)."""

from __future__ import annotations

from django.urls import path

from . import api

app_name = "modelfactory-api"

urlpatterns = [
    path("base-models/", api.BaseModelListApi.as_view(), name="base_model_list"),
    path("base-models/register/", api.BaseModelRegisterApi.as_view(), name="base_model_register"),
    path("jobs/", api.JobListApi.as_view(), name="job_list"),
    path("jobs/launch/", api.JobLaunchApi.as_view(), name="job_launch"),
    path("jobs/merge/", api.MergeLaunchApi.as_view(), name="merge_launch"),
    path("jobs/<int:job_id>/", api.JobDetailApi.as_view(), name="job_detail"),
    path("jobs/<int:job_id>/cancel/", api.JobCancelApi.as_view(), name="job_cancel"),
    path("jobs/<int:job_id>/retry/", api.JobRetryApi.as_view(), name="job_retry"),
    path("versions/", api.VersionListApi.as_view(), name="version_list"),
    path("versions/<int:version_id>/", api.VersionDetailApi.as_view(), name="version_detail"),
    path("versions/<int:version_id>/publish/", api.VersionPublishApi.as_view(), name="version_publish"),
    path("versions/<int:version_id>/retrain/", api.VersionRetrainApi.as_view(), name="version_retrain"),
    path("versions/<int:version_id>/manifest/", api.VersionManifestApi.as_view(), name="version_manifest"),
    path(
        "versions/<int:version_id>/adapter/<str:filename>",
        api.VersionAdapterFileApi.as_view(),
        name="version_adapter_file",
    ),
]
