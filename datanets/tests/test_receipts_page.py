"""The contribution page lists its receipts with their state, and each sealed one downloads with its proof."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from datanets import receipts, services
from ledger import merkle
from ledger import services as ledger_services
from ledger.models import Anchor

from .factories import DatanetFactory, submit

pytestmark = pytest.mark.django_db


@pytest.mark.chain
def test_the_contribution_page_shows_each_receipt_waiting_then_anchored_with_its_proof(deployed_chain: object) -> None:
    datanet = DatanetFactory()
    contributor = UserFactory()
    contribution = submit(datanet, contributor)
    services.contribution_accept(curator=datanet.owner, contribution=contribution)
    client = Client()
    client.force_login(contributor)
    url = reverse("datanets:contribution", args=[contribution.pk])

    page = client.get(url).content.decode()
    assert page.count("data-receipt-kind=") == 2 and page.count("waiting for a batch") == 2
    assert "data-receipt-proof" not in page

    (batch,) = receipts.receipts_seal_batches(force=True)
    page = client.get(url).content.decode()
    assert "waiting for a batch" not in page and page.count('data-anchor-status="pending"') == 2

    ledger_services.anchor_send(anchor_id=batch.anchor_id)
    ledger_services.anchors_confirm()
    anchor = Anchor.objects.get(pk=batch.anchor_id)
    page = client.get(url).content.decode()
    assert anchor.status == "confirmed" and page.count('data-anchor-status="confirmed"') == 2
    assert f'title="{anchor.tx_hash}" data-tx' in page and f"block {anchor.block_number}" in page
    assert page.count("data-receipt-proof") == 2
    receipt = contribution.receipts.get(kind="curation")
    download = Client().get(reverse("datanets:receipt_proof", args=[contribution.pk, receipt.pk]))  # anonymous
    assert download.status_code == 200 and "attachment" in download["Content-Disposition"]
    body = json.loads(download.content)
    proof = body["proof"]
    assert body["document_hash"] == receipt.document_hash and proof["value"] == [receipt.document_hash]
    assert merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
    assert proof["anchor"]["tx_hash"] == anchor.tx_hash
    api_item = APIClient().get(f"/api/datanets/contributions/{contribution.pk}/receipts/").json()["results"][1]
    assert api_item["document"] == body["document"] and api_item["proof"]["proof"] == proof["proof"]


def test_a_withdrawn_contribution_page_says_its_receipts_stay() -> None:
    datanet = DatanetFactory()
    contributor = UserFactory()
    contribution = submit(datanet, contributor)
    services.contribution_withdraw(contribution=contribution, user=contributor)
    client = Client()
    client.force_login(contributor)

    page = client.get(reverse("datanets:contribution", args=[contribution.pk])).content.decode()

    assert "its receipts stay" in page and page.count("data-receipt-kind=") == 1


def test_a_private_datanets_receipt_download_is_a_404_to_outsiders_and_hostile_ids_too() -> None:
    datanet = DatanetFactory(visibility="private")
    member = UserFactory()
    datanet.members.add(member)
    contribution = submit(datanet, member)
    receipt = contribution.receipts.get()
    other = submit(DatanetFactory(), content=b'{"text": "a public upload"}\n')
    outsider = Client()
    outsider.force_login(UserFactory())
    as_member = Client()
    as_member.force_login(member)

    url = reverse("datanets:receipt_proof", args=[contribution.pk, receipt.pk])
    assert outsider.get(url).status_code == 404 and Client().get(url).status_code == 404
    assert as_member.get(url).status_code == 200
    # a public contribution's id with another contribution's receipt
    mixed = reverse("datanets:receipt_proof", args=[other.pk, receipt.pk])
    assert as_member.get(mixed).status_code == 404
    for path in (
        f"/datanets/contributions/{contribution.pk}/receipts/99999999999999999999.json",
        f"/datanets/contributions/-1/receipts/{receipt.pk}.json",
    ):
        assert as_member.get(path).status_code == 404
