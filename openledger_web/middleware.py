"""Refuse HTML form posts whose text is not valid UTF-8, instead of storing it with U+FFFD in place of the bad bytes.

Django decodes form data with ``errors="replace"``: ``caf%E9`` arrives as ``caf\ufffd`` and a form would store it as
if it were what the person typed. The JSON API already refuses such input; this does the same for every HTML form of
the site with a 400 and a message a person understands, before any view has stored anything.

- ``application/x-www-form-urlencoded``: the raw body (which Django reads in full for ``request.POST`` anyway, under
  ``DATA_UPLOAD_MAX_MEMORY_SIZE``) is percent-decoded to bytes and decoded as strict UTF-8. A body over the limit is
  left alone here, so Django refuses it exactly as before.
- ``multipart/form-data``: the request parses its body with Django's own ``MultiPartParser`` (same upload handlers,
  same limits, files streamed as before), only with a codec that decodes the text fields strictly. Its refusal is
  answered here both when the CSRF check parses the form (this middleware parses it just before, for the views the
  CSRF check would parse it for) and when the view does (``csrf_exempt`` views that add upload handlers first).

The JSON API (``/api/``, ``/v1/``) is not touched: it has its own parsers and its own errors.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, UnreadablePostError
from django.http.multipartparser import MultiPartParser, MultiPartParserError
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from django.utils.datastructures import ImmutableList
from django.utils.html import format_html

INVALID_UTF8_MESSAGE = (
    "The form contained text that is not valid UTF-8, so nothing was saved. "
    "Please retype any unusual characters (or paste them from another source) and send the form again."
)
API_PREFIXES = ("/api/", "/v1/")
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

# A codec Django's multipart parser can be given as the form's encoding: UTF-8 that raises on bad bytes even when the
# caller asks for errors="replace" (the parser always does, for every text field).
STRICT_CODEC = "openledger_strict_utf_8"


def _strict_decode(data: Any, errors: str = "strict") -> tuple[str, int]:
    return codecs.utf_8_decode(data, "strict", True)


def _strict_codec(name: str) -> codecs.CodecInfo | None:
    if name != STRICT_CODEC:
        return None
    return codecs.CodecInfo(name=STRICT_CODEC, encode=codecs.utf_8_encode, decode=_strict_decode)


codecs.register(_strict_codec)


class InvalidFormEncoding(MultiPartParserError):
    """A multipart text field (or part header) that is not valid UTF-8. A ``MultiPartParserError``, so that Django
    marks the request's POST as unparseable (empty) and anything that swallowed it still sees no data."""


def _is_utf8(encoding: str | None) -> bool:
    try:
        return codecs.lookup(encoding or settings.DEFAULT_CHARSET).name == "utf-8"
    except LookupError:
        return False


def _strict_parse_file_upload(request: HttpRequest) -> Callable[[Any, Any], tuple[Any, Any]]:
    """``HttpRequest.parse_file_upload`` as Django has it, with the strict codec for the text fields."""

    def parse_file_upload(meta: Any, post_data: Any) -> tuple[Any, Any]:
        request.upload_handlers = ImmutableList(
            request.upload_handlers, warning="You cannot alter upload handlers after the upload has been processed."
        )
        encoding = request.encoding or settings.DEFAULT_CHARSET
        strict = STRICT_CODEC if _is_utf8(encoding) else encoding  # a view may have set another encoding since
        parser = MultiPartParser(meta, post_data, request.upload_handlers, strict)
        try:
            post, files = parser.parse()  # closes the files it opened when it raises
        except UnicodeDecodeError as e:
            raise InvalidFormEncoding(INVALID_UTF8_MESSAGE) from e
        post.encoding = encoding  # what Django's own parse would have set
        return post, files

    return parse_file_upload


def invalid_encoding_response(request: HttpRequest) -> HttpResponse:
    """The 400: a fragment for htmx (swapped into the element the form targets, which keeps its id), the site's
    400 page if it has one, plain text otherwise."""
    if request.headers.get("HX-Request") == "true":
        fragment = format_html(
            '<p class="message message-error" role="alert" data-refusal>{}</p>', INVALID_UTF8_MESSAGE
        )
        response = HttpResponseBadRequest(fragment)
        response["HX-Reswap"] = "innerHTML"
        return response
    try:
        template = get_template("400.html")
    except TemplateDoesNotExist:
        return HttpResponseBadRequest(INVALID_UTF8_MESSAGE, content_type="text/plain; charset=utf-8")
    return HttpResponseBadRequest(template.render({"message": INVALID_UTF8_MESSAGE}, request))


def _urlencoded_is_utf8(body: bytes) -> bool:
    # "&" and "=" are ASCII, never part of a multi-byte sequence: the whole body decodes if and only if every key
    # and value does. Raw (not percent-encoded) non-ASCII bytes are checked too.
    try:
        unquote_to_bytes(body.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class FormEncodingMiddleware:
    """Answers 400 to an HTML form post whose text is not valid UTF-8. Sits just before ``CsrfViewMiddleware``:
    its ``process_view`` runs first, so the form is checked before the CSRF check parses it. It only ever refuses:
    the CSRF check still runs on everything it lets through."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: Any
    ) -> HttpResponse | None:
        if request.method != "POST" or request.path_info.startswith(API_PREFIXES):
            return None
        if request.content_type == URLENCODED:
            try:
                body = request.body
            except (RequestDataTooBig, UnreadablePostError):
                return None  # left to Django: request.POST refuses it (or finds it unreadable) as it always has
            return None if _urlencoded_is_utf8(body) else invalid_encoding_response(request)
        if request.content_type == MULTIPART and _is_utf8(request.encoding):
            request.parse_file_upload = _strict_parse_file_upload(request)  # type: ignore[method-assign]
            if self._csrf_reads_post(request, view_func):
                try:
                    request.POST  # noqa: B018 -- parsed now, as the CSRF check would a moment later
                except InvalidFormEncoding:
                    return invalid_encoding_response(request)
                except UnreadablePostError:
                    return None  # the CSRF check finds an empty form and refuses it, as it would have
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, InvalidFormEncoding):
            return invalid_encoding_response(request)
        return None

    @staticmethod
    def _csrf_reads_post(request: HttpRequest, view_func: Callable[..., Any]) -> bool:
        """Whether ``CsrfViewMiddleware.process_view`` will parse the form (a ``csrf_exempt`` view parses it itself,
        possibly after adding upload handlers, so it must not be parsed before)."""
        if getattr(request, "csrf_processing_done", False) or getattr(view_func, "csrf_exempt", False):
            return False
        return not getattr(request, "_dont_enforce_csrf_checks", False)
