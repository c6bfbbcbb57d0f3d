"""Attribution's parts of other apps' pages: the ancestry panel (one fragment per run, polled by htmx until the run's
attribution is finished) and the attribution index section of a model version's page."""

from __future__ import annotations

import uuid

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET

from inference.models import InferenceRun
from inference.selectors import run_for_viewer
from modelfactory.models import ModelVersion

from . import hooks
from .models import AttributionIndex
from .revocation import anchored_hashes
from .selectors import run_panel as panel_of
from .selectors import version_reliability


@require_GET
def run_panel(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    """Anyone with the run's link sees its panel (the run page's rule); records of Datanets the viewer may not see
    are counted in the shares but not shown."""
    run = run_for_viewer(public_id=public_id, user=request.user)
    if run is None:
        raise Http404("no such run")
    panel = panel_of(run=run, user=request.user)
    # the apps above add their parts of a final attribution (the reward split), as HTML from their own templates
    sections = [section(request, run) for section in hooks.panel_sections()] if panel.final else []
    response = render(request, "attribution/_panel.html", {"panel": panel, "run": run, "sections": sections})
    if panel.finished:
        response.status_code = 286  # htmx stops polling
    return response


def run_panel_slot(request: HttpRequest, run: InferenceRun) -> str:
    """Where the run's page (and a fresh answer on the ask page) loads the run's panel (an ``inference.hooks`` run
    page section)."""
    return render_to_string("attribution/_panel_slot.html", {"run": run}, request=request)


def version_index_section(request: HttpRequest, version: ModelVersion) -> str:
    """The version page's attribution index: its hashes, or why it has none, and how reliable its attribution was
    measured to be (a ``modelfactory.hooks`` version page section)."""
    index = AttributionIndex.objects.filter(version=version).first()
    context = {
        "version": version,
        "attribution_index": index,
        "reliability": version_reliability(index) if index is not None and index.is_ok else None,
        "anchored": anchored_hashes(version) if index is not None and index.reissued else None,
        "reissues": list(index.reissues.order_by("pk")) if index is not None and index.reissued else [],
    }
    return render_to_string("attribution/_version_index.html", context, request=request)
