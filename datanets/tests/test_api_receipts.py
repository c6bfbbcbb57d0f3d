"""GET /api/datanets/<slug>/receipts/ and /api/datanets/contributions/<id>/receipts/: anonymous for a public Datanet,
a 404 for a private one, each item's document rebuilt to its hash and its proof checked."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from datanets import receipts, services
from datanets.models import Datanet
from ledger import merkle
from ledger.hashing import keccak256

from .factories import DatanetFactory, submit, texts

pytestmark = pytest.mark.django_db


def _list(slug: str) -> str:
    return reverse("datanets_api:receipt_list", args=[slug])


def _of(contribution_id: Any) -> str:
    return f"/api/datanets/contributions/{contribution_id}/receipts/"


@pytest.fixture
def decided() -> tuple[Datanet, Any, Any]:
    datanet = DatanetFactory()
    first = submit(datanet, content=texts("a first upload with a few words", "and its second record"))
    second = submit(datanet, content=texts("a second upload of words"))
    services.record_exclude(curator=datanet.owner, record=first.records.first(), reason="personal data")
    services.contribution_accept(curator=datanet.owner, contribution=first)
    services.contribution_reject(curator=datanet.owner, contribution=second, reason="off topic")
    return datanet, first, second


def test_anonymous_reads_every_receipt_of_a_public_datanet_with_proofs_once_sealed(decided) -> None:  # type: ignore[no-untyped-def]
    datanet, first, second = decided
    receipts.receipts_complete()

    before = APIClient().get(_list(datanet.slug))
    assert before.status_code == 200 and before.json()["count"] == 5
    assert all(item["proof"] is None for item in before.json()["results"])

    receipts.receipts_seal_batches(force=True)
    page = APIClient().get(_list(datanet.slug)).json()

    items = page["results"]
    assert [(i["kind"], i["document"]["contribution"]) for i in items] == [
        ("contribution", first.pk),
        ("contribution", second.pk),
        ("curation", first.pk),
        ("curation", first.pk),
        ("curation", second.pk),
    ]
    assert [i["document"].get("decision") for i in items[2:]] == ["exclude", "accept", "reject"]
    for item in items:
        assert set(item) == {"id", "kind", "document", "document_hash", "proof"}
        # the verifier's way: canonical bytes rebuilt from the parsed object, never a server-supplied string
        assert item["document_hash"] == "0x" + keccak256(rfc8785.dumps(item["document"])).hex()
        proof = item["proof"]
        assert proof["schema"] == "openledger.proof.v1" and proof["format"] == "standard-v1"
        assert proof["artifact"] == f"{item['kind']}_receipt"
        assert proof["leafEncoding"] == ["bytes32"] and proof["value"] == [item["document_hash"]]
        assert merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
        assert set(proof["batch"]) == {"id", "size", "sealed_at"} and proof["batch"]["size"] == 5
        assert proof["batch"]["sealed_at"].endswith("Z")
        assert (
            proof["anchor"]["kind"] == "receipt_batch"
            and proof["anchor"]["subject"] == f"receipt_batch:{proof['root']}"
        )


def test_a_contributions_receipts_are_its_own_oldest_first(decided) -> None:  # type: ignore[no-untyped-def]
    _, first, second = decided

    items = APIClient().get(_of(first.pk)).json()["results"]

    assert [i["kind"] for i in items] == ["contribution", "curation", "curation"]
    assert {i["document"]["contribution"] for i in items if i["document"]} == {first.pk}
    assert items[0]["document"] is None and items[0]["document_hash"] is None  # its records root is not computed yet
    assert APIClient().get(_of(second.pk)).json()["count"] == 2


def test_a_withdrawn_contributions_receipt_is_still_served() -> None:
    datanet = DatanetFactory()
    contributor = UserFactory()
    contribution = submit(datanet, contributor)
    services.contribution_withdraw(contribution=contribution, user=contributor)
    receipts.receipts_seal_batches(force=True)

    items = APIClient().get(_of(contribution.pk)).json()["results"]

    assert len(items) == 1 and items[0]["document"]["records_root"].startswith("0x")
    assert items[0]["proof"]["value"] == [items[0]["document_hash"]]


def test_a_private_datanets_receipts_are_a_404_to_anyone_who_may_not_see_it() -> None:
    datanet = DatanetFactory(visibility="private")
    member = UserFactory()
    datanet.members.add(member)
    contribution = submit(datanet, member)
    stranger, member_client = APIClient(), APIClient()
    stranger.force_authenticate(UserFactory())
    member_client.force_authenticate(member)

    for client in (APIClient(), stranger):
        for url in (_list(datanet.slug), _of(contribution.pk)):
            response = client.get(url)
            assert response.status_code == 404 and set(response.json()) == {"detail", "code"}
    assert member_client.get(_list(datanet.slug)).json()["count"] == 1
    assert member_client.get(_of(contribution.pk)).json()["count"] == 1


@pytest.mark.parametrize("contribution_id", ["0", "-1", "abc", "1.5", "99999999999999999999", "%00", "1%20OR%201=1"])
def test_hostile_contribution_ids_are_a_404(contribution_id: str) -> None:
    submit(DatanetFactory())

    response = APIClient().get(_of(contribution_id))

    assert response.status_code == 404


def test_an_unknown_datanet_and_hostile_pages_are_refused_cleanly(decided) -> None:  # type: ignore[no-untyped-def]
    datanet, _, _ = decided

    assert APIClient().get(_list("no-such-datanet")).status_code == 404
    assert APIClient().get(_list(datanet.slug), {"page": "999"}).status_code == 404
    assert APIClient().get(_list(datanet.slug), {"page": "-1; DROP TABLE"}).status_code == 404


def test_receipts_are_read_in_a_fixed_number_of_queries(decided, django_assert_max_num_queries) -> None:  # type: ignore[no-untyped-def]
    datanet, _, _ = decided
    receipts.receipts_seal_batches(force=True)
    for i in range(6):
        services.contribution_accept(curator=datanet.owner, contribution=submit(datanet, content=texts(f"more {i}")))
    receipts.receipts_seal_batches(force=True)

    with django_assert_max_num_queries(8):  # a page of 17 receipts in two batches: each batch's tree read once
        response = APIClient().get(_list(datanet.slug))
    assert response.json()["count"] == 17
