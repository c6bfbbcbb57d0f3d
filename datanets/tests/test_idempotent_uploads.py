"""A retried upload stores nothing twice: an Idempotency-Key, or the same bytes within the replay window, answers
200 with the contribution stored the first time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from datanets import services
from datanets.models import Contribution

from .factories import DatanetFactory, texts

pytestmark = pytest.mark.django_db


def _as(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _upload(client: APIClient, slug: str, content: bytes, **headers: str) -> Any:
    return client.post(
        reverse("datanets_api:contribution_upload", args=[slug]),
        {"file": SimpleUploadedFile("a.jsonl", content), "licence": "CC0-1.0"},
        format="multipart",
        headers=headers,
    )


def test_a_retry_with_the_same_idempotency_key_answers_200_with_the_first_contribution() -> None:
    datanet = DatanetFactory()
    client = _as(UserFactory())
    first = _upload(client, datanet.slug, texts("first record of some words"), **{"Idempotency-Key": "k-1"})
    assert first.status_code == 201 and first.json()["replayed"] is False
    # the same key answers with the first contribution even if the retry's bytes differ (a client bug, not an upload)
    again = _upload(client, datanet.slug, texts("other record of some words"), **{"Idempotency-Key": "k-1"})
    assert again.status_code == 200, again.content
    assert again.json()["id"] == first.json()["id"] and again.json()["replayed"] is True
    assert again["Idempotent-Replayed"] == "true"
    assert Contribution.objects.count() == 1


def test_the_same_bytes_from_the_same_user_within_the_window_are_not_stored_twice(settings: Any) -> None:
    settings.CONTRIBUTION_REPLAY_WINDOW_SECONDS = 3600
    datanet, user = DatanetFactory(), UserFactory()
    content = texts("a record that a flaky client sends twice")
    first = _upload(_as(user), datanet.slug, content)
    again = _upload(_as(user), datanet.slug, content)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["replayed"] is True
    # another user's, or another Datanet's, is a contribution of its own
    assert _upload(_as(UserFactory()), datanet.slug, content).status_code == 201
    assert _upload(_as(user), DatanetFactory().slug, content).status_code == 201
    assert Contribution.objects.count() == 3


def test_outside_the_window_or_after_a_withdrawal_the_same_bytes_make_a_new_contribution(settings: Any) -> None:
    settings.CONTRIBUTION_REPLAY_WINDOW_SECONDS = 3600
    datanet, user = DatanetFactory(), UserFactory()
    content = texts("a record sent again on another day")
    first = _upload(_as(user), datanet.slug, content).json()
    Contribution.objects.filter(pk=first["id"]).update(submitted_at=timezone.now() - timedelta(hours=2))
    second = _upload(_as(user), datanet.slug, content)
    assert second.status_code == 201
    services.contribution_withdraw(contribution=Contribution.objects.get(pk=second.json()["id"]), user=user)
    assert _upload(_as(user), datanet.slug, content).status_code == 201


def test_an_unusable_idempotency_key_is_a_400() -> None:
    datanet = DatanetFactory()
    response = _upload(_as(UserFactory()), datanet.slug, texts("a record"), **{"Idempotency-Key": "k" * 256})
    assert response.status_code == 400 and Contribution.objects.count() == 0


def test_the_paste_api_honours_the_idempotency_key() -> None:
    datanet, client = DatanetFactory(), _as(UserFactory())
    url = reverse("datanets_api:contribution_paste", args=[datanet.slug])
    body = {"text": "A pasted paragraph of words."}
    first = client.post(url, body, format="json", headers={"Idempotency-Key": "paste-1"})
    again = client.post(url, {"text": "Another paragraph."}, format="json", headers={"Idempotency-Key": "paste-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]


def test_the_contribute_page_says_a_resent_file_was_already_received() -> None:
    from django.test import Client

    datanet, user = DatanetFactory(), UserFactory()
    client = Client()
    client.force_login(user)
    url = reverse("datanets:contribute", args=[datanet.slug])
    content = texts("a record the browser sends twice")
    for _ in range(2):
        upload = SimpleUploadedFile("a.jsonl", content)
        response = client.post(url, {"licence": datanet.licence, "bad_rows": "reject_whole", "files": [upload]})
        assert response.status_code == 200
    assert "already received" in response.content.decode()
    assert Contribution.objects.count() == 1
