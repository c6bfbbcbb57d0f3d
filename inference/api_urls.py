"""Inference REST API: runs, mounted at /api/runs/."""


app_name = "inference-api"

urlpatterns: list = []
