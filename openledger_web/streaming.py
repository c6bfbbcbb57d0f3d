"""Sync streaming responses sent piece by piece by the ASGI server, instead of collected whole first.

Under ASGI, Django collects a ``StreamingHttpResponse`` over a sync iterator (a ``FileResponse``, WhiteNoise's static
files, the snapshot JSONL export) into one list before it sends a byte (``sync_to_async(list)``, with a warning): a
million-record export would sit in the web process's memory whole. This middleware gives such a response an async
iterator that pulls the sync one about BATCH_BYTES at a time in the request's own thread (thread-sensitive, so a
database cursor the iterator holds stays on its connection). Under WSGI it changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

BATCH_BYTES = 256 * 1024


def _next_batch(parts: Iterator[bytes]) -> bytes:
    """The next parts of ``parts`` joined, about BATCH_BYTES of them; empty only once ``parts`` is exhausted."""
    batch, size = [], 0
    for part in parts:
        batch.append(part)
        size += len(part)
        if size >= BATCH_BYTES:
            break
    return b"".join(batch)


async def _pulled(parts: Iterator[bytes]) -> AsyncIterator[bytes]:
    pull = sync_to_async(_next_batch, thread_sensitive=True)
    while batch := await pull(parts):
        yield batch


class AsgiStreamingMiddleware:
    """First in MIDDLEWARE, so that it also sees the static files WhiteNoise answers before the other middleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if isinstance(request, ASGIRequest) and isinstance(response, StreamingHttpResponse) and not response.is_async:
            response.streaming_content = _pulled(iter(response.streaming_content))
        return response
