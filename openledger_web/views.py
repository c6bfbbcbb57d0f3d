from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .health import system_health


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    template = "home.html#status" if getattr(request, "htmx", False) else "home.html"
    return render(request, template, {"health": system_health()})


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    health = system_health()
    return JsonResponse(health, status=200 if health["ok"] else 503)


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """``/favicon.ico``, which browsers ask for whatever the page links: a permanent redirect to the SVG icon that
    base.html links (resolved per request, so the manifest's hashed name is used once static files are collected)."""
    return HttpResponsePermanentRedirect(static("img/favicon.svg"))
