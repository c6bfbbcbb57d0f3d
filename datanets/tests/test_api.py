"""The Datanets API doing its job: browse, create, contribute, curate, freeze, download and prove."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.pagination import PageNumberPagination
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from datanets import exports, services
from datanets.models import Contribution, Datanet
from ledger import merkle

from .factories import DatanetFactory, accepted, submit, texts

pytestmark = pytest.mark.django_db


def _as(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_list_searches_filters_sorts_and_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    # DRF reads PAGE_SIZE once, into the class, when it is first imported
    monkeypatch.setattr(PageNumberPagination, "page_size", 2)
    weather = DatanetFactory(name="Weather reports", tags=["climate"], domain="science", record_type="text")
    DatanetFactory(name="Recipes", summary="Cooking weather-proof stews", domain="food", record_type="instruction")
    DatanetFactory(name="Hidden weather", visibility=Datanet.Visibility.PRIVATE)
    accepted(weather, content=texts("sunny with a light breeze", "rain later in the day"))
    client = APIClient()
    url = reverse("datanets_api:datanet_list")

    found = client.get(url, {"search": "weather"}).json()
    assert [d["name"] for d in found["results"]] == ["Recipes", "Weather reports"]
    assert client.get(url, {"search": "climate"}).json()["count"] == 1
    assert [d["name"] for d in client.get(url, {"domain": "food"}).json()["results"]] == ["Recipes"]
    assert client.get(url, {"record_type": "text", "search": "weather"}).json()["count"] == 1
    by_records = client.get(url, {"sort": "records", "search": "weather"}).json()["results"]
    assert by_records[0]["name"] == "Weather reports" and by_records[0]["record_count"] == 2
    assert by_records[0]["contributor_count"] == 1
    everything = client.get(url).json()
    assert everything["count"] == 2 and everything["next"] is None
    DatanetFactory.create_batch(2)
    paged = client.get(url).json()
    assert paged["count"] == 4 and len(paged["results"]) == 2 and paged["next"].endswith("page=2")
    assert client.get(url, {"sort": "sideways"}).status_code == 400
    assert client.get(url, {"page": 99}).status_code == 404


def test_an_owner_creates_and_updates_a_datanet() -> None:
    owner = _as(owner_user := UserFactory())
    created = owner.post(
        reverse("datanets_api:datanet_create"),
        {"name": "Kitchen Q&A", "record_type": "instruction", "licence": "CC-BY-SA-4.0", "tags": ["Food", "food"]},
        format="json",
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["slug"], body["owner"], body["tags"]) == ("kitchen-qa", owner_user.username, ["food"])
    assert body["permissions"] == {"manage": True, "curate": True, "contribute": True}
    assert body["stats"]["records"] == 0
    url = reverse("datanets_api:datanet_update", args=["kitchen-qa"])
    updated = owner.patch(url, {"summary": "  Questions from a kitchen  ", "daily_quota_files": 3}, format="json")
    assert updated.status_code == 200
    assert (updated.json()["summary"], updated.json()["daily_quota_files"]) == ("Questions from a kitchen", 3)
    datanet = Datanet.objects.get(slug="kitchen-qa")
    accepted(datanet, content=b'{"prompt": "Boil an egg?", "response": "Nine minutes."}\n')
    fixed = owner.patch(url, {"record_type": "text"}, format="json")
    assert fixed.status_code == 400 and "fixed" in fixed.json()["detail"]


def test_a_contributor_uploads_with_bad_rows_left_out_and_sees_them_listed() -> None:
    datanet = DatanetFactory()
    client = _as(UserFactory())
    content = texts("a good record of several words") + b'{"text": 5}\n' + texts("another good record")
    response = client.post(
        reverse("datanets_api:contribution_upload", args=[datanet.slug]),
        {"file": SimpleUploadedFile("mixed.jsonl", content), "bad_rows": "exclude_bad", "licence": "CC0-1.0"},
        format="multipart",
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["record_count"], body["error_count"], body["licence"]) == ("pending", 2, 1, "CC0-1.0")
    assert body["parse_errors"][0]["line"] == 2 and body["parse_errors"][0]["message"].startswith("line 2")
    assert body["check_status"] == "queued"


def test_pasted_text_becomes_records() -> None:
    datanet = DatanetFactory()
    response = _as(UserFactory()).post(
        reverse("datanets_api:contribution_paste", args=[datanet.slug]),
        {"text": "First pasted paragraph here.\n\nSecond pasted paragraph here."},
        format="json",
    )
    assert response.status_code == 201 and response.json()["record_count"] == 2


def test_a_curator_decides_many_at_once_and_the_contributor_reads_why() -> None:
    datanet = DatanetFactory()
    author = UserFactory()
    first, second = submit(datanet, author), submit(datanet, author, texts("a different record entirely"))
    curator = UserFactory()
    datanet.curators.add(curator)
    response = _as(curator).post(
        reverse("datanets_api:contribution_decide"),
        {"contribution_ids": [first.pk, second.pk], "action": "reject", "reason": "Off topic for this Datanet"},
        format="json",
    )
    assert response.status_code == 200
    assert [(c["status"], c["reviewer"]) for c in response.json()] == [("rejected", curator.username)] * 2
    detail = _as(author).get(reverse("datanets_api:contribution_detail", args=[first.pk])).json()
    assert detail["review_reason"] == "Off topic for this Datanet"
    assert [(d["action"], d["actor"]) for d in detail["decisions"]] == [
        ("submit", author.username),
        ("reject", curator.username),
    ]
    mine = _as(author).get(reverse("datanets_api:contribution_list"), {"status": "rejected"}).json()
    assert mine["count"] == 2
    missing = _as(curator).post(
        reverse("datanets_api:contribution_decide"),
        {"contribution_ids": [first.pk, 999_999], "action": "accept"},
        format="json",
    )
    assert missing.status_code == 404 and "#999999" in missing.json()["detail"]


def test_a_curator_excludes_a_record_and_freezes_a_snapshot_without_it() -> None:
    datanet = DatanetFactory()
    pending = submit(datanet, content=texts("keep this record please", "leave this one out"))
    owner = _as(datanet.owner)
    record = pending.records.get(position=1)
    excluded = owner.post(
        reverse("datanets_api:record_exclude", args=[record.pk]), {"reason": "personal data"}, format="json"
    )
    assert excluded.status_code == 200 and excluded.json()["excluded"] is True
    records = owner.get(reverse("datanets_api:contribution_records", args=[pending.pk])).json()
    assert [r["excluded"] for r in records["results"]] == [False, True]
    owner.post(
        reverse("datanets_api:contribution_decide"),
        {"contribution_ids": [pending.pk], "action": "accept"},
        format="json",
    )
    frozen = owner.post(reverse("datanets_api:snapshot_freeze", args=[datanet.slug]))
    assert frozen.status_code == 201
    assert (frozen.json()["number"], frozen.json()["record_count"], frozen.json()["anchor"]["status"]) == (
        1,
        1,
        "pending",
    )
    empty = DatanetFactory(owner=datanet.owner)
    refused = owner.post(reverse("datanets_api:snapshot_freeze", args=[empty.slug]))
    assert refused.status_code == 400 and refused.json()["code"] == "empty"
    listed = APIClient().get(reverse("datanets_api:snapshot_list", args=[datanet.slug])).json()
    assert [s["number"] for s in listed["results"]] == [1]


def test_a_snapshot_downloads_as_jsonl_with_its_manifest_and_proofs() -> None:
    datanet = DatanetFactory()
    contribution = accepted(datanet, content=texts(*(f"downloadable record {i}" for i in range(5))))
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    client = APIClient()
    args = [datanet.slug, snapshot.number]

    download = client.get(reverse("datanets_api:snapshot_download", args=args))
    assert download.status_code == 200 and download["Content-Type"].startswith("application/jsonl")
    assert download["Content-Disposition"] == f'attachment; filename="{datanet.slug}-snapshot-1.jsonl"'
    data = b"".join(download.streaming_content)
    assert data == b"".join(exports.snapshot_jsonl_lines(snapshot=snapshot))
    manifest = client.get(reverse("datanets_api:snapshot_manifest", args=args)).json()
    assert manifest == json.loads(json.dumps(exports.snapshot_manifest(snapshot=snapshot)))

    row = json.loads(data.splitlines()[2])
    record = contribution.records.get(record_hash=row["record_hash"])
    proof = client.get(reverse("datanets_api:record_proof", args=[*args, record.pk])).json()
    assert proof["value"] == [row["record_hash"], row["contributor"], str(row["contribution_id"])]
    assert merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
    assert proof["anchor"]["status"] == "pending"
    assert row["record_id"] == record.pk and row["datanet_id"] == datanet.pk

    # the ids a verifier needs to rebuild the anchor's subject, snapshot:<datanet id>:<number>, without an account
    listed = client.get(reverse("datanets_api:datanet_list")).json()["results"]
    detail = client.get(reverse("datanets_api:datanet_detail", args=[datanet.slug])).json()
    snapshots = client.get(reverse("datanets_api:snapshot_list", args=[datanet.slug])).json()["results"]
    one = client.get(reverse("datanets_api:snapshot_detail", args=args)).json()
    assert [d["id"] for d in listed] == [datanet.pk] and detail["id"] == datanet.pk
    for shown in (snapshots[0], one):
        assert {k: shown[k] for k in ("id", "datanet_id", "number", "merkle_root")} == {
            "id": snapshot.pk, "datanet_id": datanet.pk, "number": 1, "merkle_root": snapshot.merkle_root
        }  # fmt: skip
    assert snapshot.anchor.subject == f"snapshot:{one['datanet_id']}:{one['number']}"

    outsider = submit(datanet).records.first()
    missing = client.get(reverse("datanets_api:record_proof", args=[*args, outsider.pk]))
    assert missing.status_code == 404 and "not in snapshot 1" in missing.json()["detail"]


def test_the_verify_endpoint_says_503_when_the_chain_is_away(settings: Any) -> None:
    settings.EVM_RPC_URL = "http://127.0.0.1:9"  # nothing listens there
    datanet = DatanetFactory()
    record = accepted(datanet).records.first()
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    response = _as(datanet.owner).post(
        reverse("datanets_api:record_proof_verify", args=[datanet.slug, snapshot.number, record.pk])
    )
    assert response.status_code == 503 and response.json()["code"] == "chain_unavailable"


def test_leaderboards_rank_by_accepted_records() -> None:
    datanet = DatanetFactory()
    big, small = UserFactory(username="big"), UserFactory(username="small")
    accepted(datanet, big, texts("one record here", "two records here", "three records here"))
    accepted(datanet, small, texts("a single record"))
    services.contribution_reject(curator=datanet.owner, contribution=submit(datanet, small), reason="dupe")
    rows = APIClient().get(reverse("datanets_api:datanet_leaderboard", args=[datanet.slug])).json()
    assert [(r["username"], r["accepted_records"], r["acceptance_rate"]) for r in rows] == [
        ("big", 3, 1.0),
        ("small", 1, 0.5),
    ]
    assert APIClient().get(reverse("datanets_api:leaderboard")).json()[0]["username"] == "big"


def test_withdrawing_frees_nothing_but_the_contributors_own_pending_work() -> None:
    datanet = DatanetFactory()
    pending = submit(datanet)
    response = _as(pending.contributor).post(reverse("datanets_api:contribution_withdraw", args=[pending.pk]))
    assert response.status_code == 200 and response.json()["status"] == "withdrawn"
    assert Contribution.objects.get(pk=pending.pk).withdrawn_at is not None


def test_a_removed_member_still_withdraws_their_own_pending_contribution() -> None:
    # given a member's pending contribution to a private Datanet, and then the member removed
    datanet = DatanetFactory(visibility=Datanet.Visibility.PRIVATE)
    member = UserFactory()
    services.datanet_add_member(datanet=datanet, user=datanet.owner, member=member)
    pending = submit(datanet, member)
    services.datanet_remove_member(datanet=datanet, user=datanet.owner, member=member)
    # when they withdraw it through the API
    response = _as(member).post(reverse("datanets_api:contribution_withdraw", args=[pending.pk]))
    # then it is withdrawn; a stranger still finds nothing there
    assert response.status_code == 200 and response.json()["status"] == "withdrawn"
    stranger = _as(UserFactory()).post(reverse("datanets_api:contribution_withdraw", args=[pending.pk]))
    assert stranger.status_code == 404


def test_the_schema_lists_every_datanets_endpoint() -> None:
    from datanets import api_urls

    response = APIClient().get(reverse("api_schema"), {"format": "json"})
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for pattern in api_urls.urlpatterns:
        route = "/api/datanets/" + str(pattern.pattern)
        for converter in ("slug:", "int:"):
            route = route.replace("<" + converter, "{")
        route = route.replace(">", "}")
        assert route in paths, route
    upload = paths["/api/datanets/{slug}/contribute/"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"] and "413" in upload["responses"]
