"""Under the ASGI server, sync streaming responses (exports, static files) go out piece by piece, not collected whole
in memory first; under WSGI nothing changes."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.templatetags.static import static
from django.test import AsyncClient, Client
from django.urls import reverse

from accounts.tests.factories import UserFactory
from datanets import services
from datanets.tests.factories import DatanetFactory, accepted, texts
from openledger_web import streaming

pytestmark = pytest.mark.django_db


def _get_async(url: str, **extra: Any) -> tuple[Any, list[bytes]]:
    async def get() -> tuple[Any, list[bytes]]:
        response = await AsyncClient(**extra).get(url)
        return response, [part async for part in response.streaming_content]

    return async_to_sync(get)()


def test_the_snapshot_export_streams_in_batches_under_asgi(monkeypatch: pytest.MonkeyPatch) -> None:
    # given: a public snapshot of two records, and batches of one line at most
    owner = UserFactory()
    datanet = DatanetFactory(owner=owner)
    accepted(datanet, UserFactory(), texts("an accepted record of words", "a second accepted record"))
    services.snapshot_freeze(datanet=datanet, user=owner)
    monkeypatch.setattr(streaming, "BATCH_BYTES", 1)
    url = reverse("datanets:snapshot_jsonl", args=[datanet.slug, 1])

    # when: asked through Django's ASGI handler (the export reads the database with a cursor as it goes)
    response, parts = _get_async(url)

    # then: an async stream of one line per part, the same bytes as under WSGI
    assert response.status_code == 200 and response.is_async
    assert len(parts) == 2 and all(part.endswith(b"\n") for part in parts)
    wsgi = Client().get(url)
    assert not wsgi.is_async and b"".join(parts) == b"".join(wsgi.streaming_content)


def test_a_static_file_is_sent_whole_and_unchanged_under_asgi(settings: Any) -> None:
    path = settings.BASE_DIR / "static" / "vendor" / "htmx.min.js"

    response, parts = _get_async(static("vendor/htmx.min.js"))

    assert response.status_code == 200 and response.is_async
    assert b"".join(parts) == path.read_bytes() and int(response["Content-Length"]) == path.stat().st_size
