"""Receipts end to end on a real anvil: a submission and each decision kind, sealed, anchored (one transaction per
batch), then proved from the anonymous API both locally and by the contract."""

from __future__ import annotations

import pytest
import rfc8785
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from datanets import receipts, services
from datanets.models import Receipt, ReceiptBatch
from ledger import chain, hashing, merkle
from ledger import services as ledger_services
from ledger.hashing import keccak256
from ledger.models import Anchor

from .factories import DatanetFactory, submit, texts, wallet

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

BOB_ADDRESS = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def _anchor_all() -> None:
    for anchor in Anchor.objects.filter(status="pending"):
        ledger_services.anchor_send(anchor_id=anchor.pk)
    ledger_services.anchors_confirm()


def test_receipts_of_every_action_verify_locally_and_on_chain_one_transaction_per_batch(
    deployed_chain: object, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.RECEIPT_BATCH_SIZE = 4
    datanet = DatanetFactory()
    bob = UserFactory()
    wallet(bob, BOB_ADDRESS)
    kept = submit(datanet, bob, texts("an anchored record", "and a second one", "and a third one"))
    dropped = submit(datanet, bob, texts("a rejected upload of a few words"))
    services.record_exclude(curator=datanet.owner, record=kept.records.first(), reason="personal data")
    services.contribution_accept(curator=datanet.owner, contribution=kept)
    services.contribution_reject(curator=datanet.owner, contribution=dropped, reason="off topic")

    batches = receipts.receipts_seal_batches(force=True)
    _anchor_all()

    assert [b.size for b in batches] == [4, 1]
    anchors = Anchor.objects.filter(kind="receipt_batch")
    assert anchors.count() == 2 and len({a.tx_hash for a in anchors}) == 2
    assert all(a.status == "confirmed" for a in anchors)
    items = [
        item
        for contribution in (kept, dropped)
        for item in APIClient().get(f"/api/datanets/contributions/{contribution.pk}/receipts/").json()["results"]
    ]
    assert sorted((i["kind"], i["document"].get("decision")) for i in items) == [
        ("contribution", None),
        ("contribution", None),
        ("curation", "accept"),
        ("curation", "exclude"),
        ("curation", "reject"),
    ]
    for item in items:
        document, proof = item["document"], item["proof"]
        assert item["document_hash"] == "0x" + keccak256(rfc8785.dumps(document)).hex()
        assert merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
        assert chain.verify_on_chain(proof["root"], proof["leaf"], proof["proof"])
        anchor = proof["anchor"]
        assert anchor["status"] == "confirmed" and anchor["tx_hash"].startswith("0x") and anchor["block_number"]
        assert anchor["chain_id"] == 31337 and anchor["kind_code"] == 4
        assert anchor["contract_address"] == deployed_chain.contract_address  # type: ignore[attr-defined]
        on_chain = chain.root_info(proof["root"])
        assert on_chain is not None and on_chain.kind == 4
        assert on_chain.subject_id == anchor["subject_id"] == hashing.subject_id(f"receipt_batch:{proof['root']}")
        assert on_chain.block_number == anchor["block_number"]
    contribution_receipt = next(
        i for i in items if i["kind"] == "contribution" and i["document"]["contribution"] == kept.pk
    )
    assert contribution_receipt["document"]["contributor"] == BOB_ADDRESS
    assert contribution_receipt["document"]["account_hash"] is None
    # a changed document no longer hashes to the anchored leaf
    forged = {**contribution_receipt["document"], "licence": "CC0-1.0"}
    forged_hash = "0x" + keccak256(rfc8785.dumps(forged)).hex()
    proof = contribution_receipt["proof"]
    assert not merkle.verify(proof["root"], ["bytes32"], [forged_hash], proof["proof"])
    assert not chain.verify_on_chain(proof["root"], merkle.leaf_hash(["bytes32"], [forged_hash]), proof["proof"])
    assert Receipt.objects.filter(batch__isnull=True).count() == 0 and ReceiptBatch.objects.count() == 2
