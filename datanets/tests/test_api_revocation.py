"""The revocation API (issue 17): withdraw, take down, erase, and the three lists; and the hostile requests, each
refused with a clear message in the one shape and nothing written: someone else's contribution (403), twice (409
with the date), never accepted (409), unknown ids (404), a malformed body, wrong types, an oversized explanation,
a NUL, bad encoding (400), nobody signed in (401), and session authentication without its CSRF token (403)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from datanets import services
from datanets.models import Receipt, Record, Revocation, RevokedRecord

from .factories import DatanetFactory, accepted, submit, texts

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path)
    datanet = DatanetFactory()
    mine = accepted(datanet, content=texts("my first record of words", "my second record of words"))
    other = accepted(datanet, content=texts("somebody else wrote this record"))
    services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    return datanet, mine, other


def api(user: Any = None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def revoke_url(contribution_id: int) -> str:
    return reverse("datanets_api:contribution_revoke", args=[contribution_id])


TAKEDOWN = "/api/datanets/records/takedown/"


def test_withdraw_erase_and_the_lists(world) -> None:
    datanet, mine, other = world
    me = api(mine.contributor)
    response = me.post(revoke_url(mine.pk), {"reason": "consent", "explanation": "changed my mind"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["kind"] == "withdrawal" and body["record_count"] == 2 and body["erased"] is False
    assert (
        body["contribution"] == mine.pk
        and body["datanet"] == datanet.slug
        and body["actor"] == mine.contributor.username
    )
    assert body["policy"] == "openledger.revocation.v1"

    erased = me.post(reverse("datanets_api:revocation_erase", args=[body["id"]]))
    assert (
        erased.status_code == 200
        and erased.json()["erased"]
        and erased.json()["erased_by"] == mine.contributor.username
    )
    assert set(Record.objects.filter(contribution=mine).values_list("canonical", flat=True)) == {""}

    taken = api(datanet.owner).post(
        TAKEDOWN,
        {"record_ids": [other.records.get().pk], "reason": "personal_data", "explanation": "a name", "erase": True},
        format="json",
    )
    assert taken.status_code == 201 and [r["kind"] for r in taken.json()] == ["takedown"]
    assert taken.json()[0]["erased"] is True

    listed = me.get(reverse("datanets_api:contribution_revocations", args=[mine.pk])).json()
    assert [r["id"] for r in listed["results"]] == [body["id"]]
    assert me.get(reverse("datanets_api:revocations_mine")).json()["count"] == 1
    assert (
        api(other.contributor).get(reverse("datanets_api:revocations_mine")).json()["results"][0]["kind"] == "takedown"
    )
    everything = api(datanet.owner).get(reverse("datanets_api:datanet_revocations", args=[datanet.slug])).json()
    assert everything["count"] == 2
    receipts = me.get(reverse("datanets_api:contribution_receipts", args=[mine.pk])).json()["results"]
    revocation_receipts = [r["document"] for r in receipts if r["kind"] == "revocation"]
    assert [d["action"] for d in revocation_receipts] == ["revoke", "erase"]
    assert all(d["schema"] == "openledger.receipt.revocation.v1" for d in revocation_receipts)
    assert "changed my mind" not in str(revocation_receipts)  # only the explanation's hash


def _refused(response: Any, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert set(body) >= {"detail", "code"} and body["detail"]
    for word in words:
        assert word in body["detail"], body
    return body


def test_hostile_requests_are_refused_and_write_nothing(world) -> None:
    datanet, mine, other = world
    me = api(mine.contributor)
    _refused(me.post(revoke_url(other.pk), {"reason": "consent"}, format="json"), 403, "only the contributor")
    _refused(me.post(revoke_url(999_999), {"reason": "consent"}, format="json"), 404)
    _refused(api().post(revoke_url(mine.pk), {"reason": "consent"}, format="json"), 401)
    pending = submit(datanet, mine.contributor, texts("a record still waiting for review"))
    _refused(me.post(revoke_url(pending.pk), {}, format="json"), 409, "still pending")
    rejected = submit(datanet, mine.contributor, texts("a record the curator refused"))
    services.contribution_reject(curator=datanet.owner, contribution=rejected, reason="off topic")
    _refused(me.post(revoke_url(rejected.pk), {}, format="json"), 409, "never accepted")

    # malformed bodies, wrong types, sizes and characters: a 400 naming the problem
    url = revoke_url(mine.pk)
    _refused(me.post(url, "{not json", content_type="application/json"), 400)
    _refused(me.post(url, b'{"reason": "consent", "explanation": "\xff\xfe"}', content_type="application/json"), 400)
    _refused(me.post(url, [1, 2], format="json"), 400)
    _refused(me.post(url, {"reason": "because"}, format="json"), 400, "reason")
    _refused(me.post(url, {"reason": ["consent"]}, format="json"), 400, "reason")
    _refused(me.post(url, {"reason": "consent", "erase": "yes"}, format="json"), 400, "erase")
    _refused(me.post(url, {"reason": "consent", "explanation": 12}, format="json"), 400, "explanation")
    _refused(me.post(url, {"reason": "consent", "explanation": "x" * 2001}, format="json"), 400, "2000")
    _refused(me.post(url, {"reason": "consent", "explanation": "a\x00b"}, format="json"), 400, "explanation")
    _refused(me.post(url, {"reason": "other"}, format="json"), 400, "say why")
    curator = api(datanet.owner)
    _refused(curator.post(TAKEDOWN, {"record_ids": "1", "reason": "licence", "explanation": "x"}, format="json"), 400)
    _refused(curator.post(TAKEDOWN, {"record_ids": [], "reason": "licence", "explanation": "x"}, format="json"), 400)
    _refused(curator.post(TAKEDOWN, {"record_ids": [0], "reason": "licence", "explanation": "x"}, format="json"), 400)
    ids = [r.pk for r in mine.records.all()]
    _refused(curator.post(TAKEDOWN, {"record_ids": ids, "reason": "licence"}, format="json"), 400, "explanation")
    _refused(
        curator.post(TAKEDOWN, {"record_ids": [*ids, 999_999], "reason": "licence", "explanation": "x"}, format="json"),
        404,
        "#999999",
    )
    _refused(me.post(TAKEDOWN, {"record_ids": ids, "reason": "licence", "explanation": "x"}, format="json"), 403)
    _refused(curator.post(TAKEDOWN, {"record_ids": [pending.records.first().pk], "reason": "licence",
                                     "explanation": "x"}, format="json"), 409, "still pending")  # fmt: skip
    _refused(me.post(reverse("datanets_api:revocation_erase", args=[999_999])), 404)
    _refused(me.get(reverse("datanets_api:datanet_revocations", args=[datanet.slug])), 403, "curator")
    assert not Revocation.objects.exists() and not Receipt.objects.filter(kind="revocation").exists()

    # twice: a 409 that says when
    assert me.post(url, {"reason": "consent"}, format="json").status_code == 201
    _refused(me.post(url, {"reason": "consent"}, format="json"), 409, "already revoked on")
    twice = _refused(
        curator.post(TAKEDOWN, {"record_ids": ids, "reason": "licence", "explanation": "x"}, format="json"), 409
    )
    assert "already revoked on" in twice["detail"] and twice["code"] == "conflict"
    withdrawn = Revocation.objects.get()
    assert withdrawn.created_at.strftime("%Y") in twice["detail"]
    erase = reverse("datanets_api:revocation_erase", args=[withdrawn.pk])
    _refused(api(UserFactory()).post(erase), 403)
    assert me.post(erase).status_code == 200
    _refused(me.post(erase), 409, "already erased on")
    assert Revocation.objects.count() == 1 and RevokedRecord.objects.count() == 2


def test_session_authentication_needs_the_csrf_token(world) -> None:
    _, mine, _ = world
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(mine.contributor)
    response = client.post(revoke_url(mine.pk), {"reason": "consent"}, format="json")
    _refused(response, 403, "CSRF")
    assert not Revocation.objects.exists()
