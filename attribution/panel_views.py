"""The ancestry panel: one fragment per run, polled by htmx until the run's attribution is finished."""

from __future__ import annotations

import uuid

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from inference.selectors import run_for_viewer

from .selectors import run_panel as panel_of


@require_GET
def run_panel(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    """Anyone with the run's link sees its panel (the run page's rule); records of Datanets the viewer may not see
    are counted in the shares but not shown."""
    run = run_for_viewer(public_id=public_id, user=request.user)
    if run is None:
        raise Http404("no such run")
    panel = panel_of(run=run, user=request.user)
    response = render(request, "attribution/_panel.html", {"panel": panel, "run": run})
    if panel.finished:
        response.status_code = 286  # htmx stops polling
    return response
