"""End to end on a real anvil: freeze through the API, anchor, and prove a record with the chain's own answer."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from datanets import services
from datanets.models import Snapshot
from ledger import chain, hashing, merkle
from ledger import services as ledger_services
from ledger.models import Anchor

from .factories import DatanetFactory, accepted, texts, wallet

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

BOB_ADDRESS = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def _anchor_all() -> None:
    for anchor in Anchor.objects.filter(status="pending"):
        ledger_services.anchor_send(anchor_id=anchor.pk)
    ledger_services.anchors_confirm()


def test_a_proof_from_the_api_verifies_locally_and_on_chain(deployed_chain: object) -> None:
    datanet = DatanetFactory()
    bob = UserFactory()
    wallet(bob, BOB_ADDRESS)
    contribution = accepted(datanet, bob, texts(*(f"anchored record number {i}" for i in range(9))))
    owner, bob_client = APIClient(), APIClient()
    owner.force_authenticate(datanet.owner)
    bob_client.force_authenticate(bob)

    frozen = owner.post(reverse("datanets_api:snapshot_freeze", args=[datanet.slug]))
    assert frozen.status_code == 201 and Anchor.objects.count() == 1
    record = contribution.records.get(position=4)
    verify_url = reverse("datanets_api:record_proof_verify", args=[datanet.slug, 1, record.pk])
    assert bob_client.post(verify_url).json()["valid"] is False  # not anchored yet

    _anchor_all()

    snapshot = APIClient().get(reverse("datanets_api:snapshot_detail", args=[datanet.slug, 1])).json()
    assert snapshot["anchor"]["status"] == "confirmed" and snapshot["anchor"]["tx_hash"].startswith("0x")
    assert snapshot["anchor"]["contract_address"] == deployed_chain.contract_address  # type: ignore[attr-defined]
    proof = APIClient().get(reverse("datanets_api:record_proof", args=[datanet.slug, 1, record.pk])).json()
    assert proof["value"] == [record.record_hash, BOB_ADDRESS, str(contribution.pk)]
    assert merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
    answer = bob_client.post(verify_url).json()
    assert answer == {"valid": True, "root": proof["root"], "leaf": proof["leaf"]}
    manifest = APIClient().get(reverse("datanets_api:snapshot_manifest", args=[datanet.slug, 1])).json()
    assert manifest["anchor"]["tx_hash"] == snapshot["anchor"]["tx_hash"]
    assert manifest["anchor"]["chain_id"] == 31337 and manifest["anchor"]["block_number"] > 0


def test_every_snapshot_root_rebuilt_from_its_records_is_the_root_on_chain(deployed_chain: object) -> None:
    first, second = DatanetFactory(), DatanetFactory(record_type="instruction")
    accepted(first, content=texts("first datanet record", "and its second record"))
    services.snapshot_freeze(datanet=first, user=first.owner)
    accepted(first, content=texts("a record for the next snapshot"))
    services.snapshot_freeze(datanet=first, user=first.owner)
    accepted(second, content=b'{"prompt": "Capital of France?", "response": "Paris."}\n')
    services.snapshot_freeze(datanet=second, user=second.owner)
    _anchor_all()

    snapshots = list(Snapshot.objects.select_related("anchor"))
    assert len(snapshots) == 3
    for snapshot in snapshots:
        rebuilt = services.snapshot_rebuild_root(snapshot=snapshot)
        on_chain = chain.root_info(rebuilt)
        assert rebuilt == snapshot.merkle_root
        assert on_chain is not None and on_chain.subject_id == snapshot.anchor.subject_id
        assert on_chain.block_number == snapshot.anchor.block_number


def _check_anchor_block(anchor: dict, *, deployment: object, subject: str, kind_code: int) -> None:
    """What a verifier needs to find the root on chain, with nothing else: the chain, the contract, the transaction,
    the block, and the subject whose keccak256 was anchored."""
    assert anchor["chain_id"] == 31337 and anchor["contract"] == "LineageRegistry"
    assert anchor["contract_address"] == deployment.contract_address  # type: ignore[attr-defined]
    assert anchor["tx_hash"].startswith("0x") and anchor["block_number"] > 0 and anchor["status"] == "confirmed"
    assert anchor["subject"] == subject and anchor["subject_id"] == hashing.subject_id(subject)
    assert anchor["kind_code"] == kind_code
    info = chain.root_info(anchor["root"])
    assert info is not None and (info.kind, info.subject_id, info.block_number) == (
        kind_code,
        anchor["subject_id"],
        anchor["block_number"],
    )


def test_a_record_proof_describes_itself_and_verifies_off_and_on_chain(deployed_chain: object) -> None:
    # given an anchored snapshot
    datanet = DatanetFactory()
    bob = UserFactory()
    wallet(bob, BOB_ADDRESS)
    contribution = accepted(datanet, bob, texts(*(f"self-described record {i}" for i in range(5))))
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    _anchor_all()
    record = contribution.records.get(position=2)

    # when an anonymous client asks for a record's proof, through the API and as the page's download
    url = reverse("datanets_api:record_proof", args=[datanet.slug, 1, record.pk])
    proof = APIClient().get(url).json()
    download = Client().get(reverse("datanets:record_proof", args=[datanet.slug, 1, record.pk])).json()

    # then it is the proof envelope, with everything needed to check it
    assert proof["schema"] == "openledger.proof.v1" and proof["artifact"] == "record"
    assert proof["format"] == "standard-v1" and proof["leafEncoding"] == ["bytes32", "address", "uint256"]
    assert proof["snapshot"] == {"id": snapshot.pk, "datanet": datanet.slug, "datanet_id": datanet.pk, "number": 1}
    assert proof["value"] == [record.record_hash, BOB_ADDRESS, str(contribution.pk)]
    assert merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
    assert proof["leaf"] == merkle.leaf_hash(proof["leafEncoding"], proof["value"])
    _check_anchor_block(proof["anchor"], deployment=deployed_chain, subject=f"snapshot:{datanet.pk}:1", kind_code=1)
    assert proof["anchor"]["root"] == proof["root"]
    assert chain.verify_on_chain(proof["root"], proof["leaf"], proof["proof"])
    assert {k: v for k, v in download.items() if k != "anchor"} == {k: v for k, v in proof.items() if k != "anchor"}
    assert download["anchor"]["tx_hash"] == proof["anchor"]["tx_hash"]
    assert download["anchor"]["subject"] == proof["anchor"]["subject"]
    detail = APIClient().get(reverse("datanets_api:snapshot_detail", args=[datanet.slug, 1])).json()
    assert {k: detail["anchor"][k] for k in proof["anchor"]} == proof["anchor"]


def test_an_anchor_from_before_stored_subjects_is_named_by_its_snapshot(deployed_chain: object) -> None:
    datanet = DatanetFactory()
    contribution = accepted(datanet, UserFactory(), texts("an old record", "another old record"))
    services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    _anchor_all()
    Anchor.objects.update(subject="")  # as anchors requested before the subject was stored

    record = contribution.records.first()
    proof = APIClient().get(reverse("datanets_api:record_proof", args=[datanet.slug, 1, record.pk])).json()
    detail = APIClient().get(reverse("datanets_api:snapshot_detail", args=[datanet.slug, 1])).json()

    _check_anchor_block(proof["anchor"], deployment=deployed_chain, subject=f"snapshot:{datanet.pk}:1", kind_code=1)
    assert detail["anchor"]["subject"] == f"snapshot:{datanet.pk}:1"
