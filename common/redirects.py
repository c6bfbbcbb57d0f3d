"""Where to send the browser after a form: the one place that reads a ``next`` parameter."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme


def safe_next(request: HttpRequest, default: str) -> str:
    """The ``next`` of the POST (else the query string) when it points into this site, else ``default``.

    ``next`` is anyone's to write (a crafted link, a form on another site), so a redirect to another host, another
    scheme, ``//host`` or a ``javascript:`` URL is ignored rather than followed.
    """
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default
