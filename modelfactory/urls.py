"""ModelFactory pages: base models, the fine-tune form, jobs, versions, compare, merge."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "modelfactory"

urlpatterns = [
    path("", views.version_list, name="version_list"),
    path("compare/", views.version_compare, name="version_compare"),
    path("versions/<int:version_id>/", views.version_detail, name="version_detail"),
    path("versions/<int:version_id>/publish/", views.version_publish, name="version_publish"),
    path("versions/<int:version_id>/retrain/", views.version_retrain, name="version_retrain"),
    path("versions/<int:version_id>/manifest.json", views.version_manifest, name="version_manifest"),
    path("versions/<int:version_id>/adapter/<str:filename>", views.version_adapter_file, name="version_adapter_file"),
    path("bases/", views.base_list, name="base_list"),
    path("bases/register/", views.base_register, name="base_register"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/new/", views.job_new, name="job_new"),
    path("jobs/new/estimate/", views.job_estimate, name="job_estimate"),
    path("jobs/<int:job_id>/", views.job_detail, name="job_detail"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<int:job_id>/retry/", views.job_retry, name="job_retry"),
    path("merge/", views.merge_new, name="merge_new"),
]
