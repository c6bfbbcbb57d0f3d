from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.functional import SimpleLazyObject

from datanets.selectors import curation_waiting
from modelfactory.selectors import notices_unread_count

# The three audiences' entry points. An entry appears once its app serves the page, so navigation never links to a
# page that does not exist yet.
AUDIENCES = (
    ("Contribute", "datanets:list"),
    ("Build", "modelfactory:version_list"),
    ("Ask", "inference:ask"),
)


def _url_or_none(name: str) -> str | None:
    try:
        return reverse(name)
    except NoReverseMatch:
        return None


def navigation(request: HttpRequest) -> dict[str, object]:
    """The header's entries; ``curation_queue`` (``{"datanets", "pending"}``) is one query, run only when a page
    prints it (the full layout, never an htmx fragment) and never for someone signed out."""
    urls = {label: _url_or_none(name) for label, name in AUDIENCES}
    entries = [(label, url) for label, url in urls.items() if url]
    queue = SimpleLazyObject(lambda: curation_waiting(user=getattr(request, "user", None)))
    # unread notices of the user's versions reached by a revocation (issue 17): one query, only when printed
    notices = SimpleLazyObject(lambda: notices_unread_count(user=getattr(request, "user", None)))
    return {
        "nav_entries": entries,
        "audience_urls": urls,
        "broker_kind": settings.BROKER_KIND,
        "curation_queue": queue,
        "version_notices": notices,
    }
