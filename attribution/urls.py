"""Attribution pages: the ancestry panel fragment of a run (included by the inference page and the run page)."""

from __future__ import annotations

from django.urls import path

from . import panel_views

app_name = "attribution"

urlpatterns = [
    path("runs/<uuid:public_id>/panel/", panel_views.run_panel, name="run_panel"),
]
