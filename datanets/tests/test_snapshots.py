from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from accounts.tests.factories import UserFactory
from datanets import selectors, services
from datanets.models import ZERO_ADDRESS, Snapshot
from ledger import chain, merkle
from ledger import services as ledger_services
from ledger.models import Anchor

from .factories import DatanetFactory, accepted, submit, texts, wallet

pytestmark = pytest.mark.django_db

ALICE_ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_a_snapshot_holds_only_accepted_non_excluded_records_once_each() -> None:
    datanet = DatanetFactory()
    alice = UserFactory()
    wallet(alice, ALICE_ADDRESS)
    kept = accepted(datanet, alice, texts("kept record one", "shared record"))
    later = accepted(datanet, content=texts("shared record", "kept record two"))  # the shared one is skipped here
    rejected = submit(datanet, content=texts("rejected record"))
    services.contribution_reject(curator=datanet.owner, contribution=rejected, reason="no")
    withdrawn = submit(datanet, content=texts("withdrawn record"))
    services.contribution_withdraw(contribution=withdrawn, user=withdrawn.contributor)
    submit(datanet, content=texts("pending record"))
    partly = submit(datanet, content=texts("excluded record", "kept record three"))
    services.record_exclude(curator=datanet.owner, record=partly.records.get(position=0), reason="pii")
    services.contribution_accept(curator=datanet.owner, contribution=partly)

    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)

    leaves = list(snapshot.leaves.select_related("record").order_by("leaf_index"))
    assert [leaf.record.canonical for leaf in leaves] == [
        '{"text":"kept record one"}',
        '{"text":"shared record"}',
        '{"text":"kept record two"}',
        '{"text":"kept record three"}',
    ]
    assert leaves[1].contribution_id == kept.id  # the first accepted contribution wins the shared record
    assert (snapshot.record_count, snapshot.duplicates_skipped, snapshot.contribution_count) == (4, 1, 3)
    assert leaves[0].address == ALICE_ADDRESS and leaves[2].address == ZERO_ADDRESS
    assert leaves[2].contribution_id == later.id
    assert snapshot.merkle_root == services.snapshot_rebuild_root(snapshot=snapshot)
    anchor = snapshot.anchor
    assert (anchor.kind, anchor.root, anchor.status) == ("snapshot", snapshot.merkle_root, "pending")


def test_proofs_are_in_openzeppelin_format_and_a_tampered_proof_fails() -> None:
    datanet = DatanetFactory()
    contribution = accepted(datanet, content=texts(*(f"record number {i}" for i in range(7))))
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    for record in contribution.records.all():
        proof = services.record_proof(snapshot=snapshot, record=record)
        assert proof["format"] == "standard-v1" and proof["leafEncoding"] == ["bytes32", "address", "uint256"]
        assert proof["value"] == [record.record_hash, ZERO_ADDRESS, str(contribution.id)]
        assert merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
    tampered = [proof["proof"][0][:-1] + ("0" if proof["proof"][0][-1] != "0" else "1"), *proof["proof"][1:]]
    assert not merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], tampered)
    outsider = submit(datanet).records.first()
    with pytest.raises(outsider.DoesNotExist):
        services.record_proof(snapshot=snapshot, record=outsider)


def test_snapshots_are_numbered_and_diffed_against_the_previous_one() -> None:
    datanet = DatanetFactory()
    accepted(datanet, content=texts("first batch record"))
    first = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    accepted(datanet, content=texts("second batch record", "another second batch record"))
    second = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    assert (first.number, second.number, second.previous) == (1, 2, first)
    assert (second.added_count, second.removed_count) == (2, 0)
    diff = selectors.snapshot_diff(snapshot=second)
    assert (diff["previous"], diff["added"], diff["removed"]) == (1, 2, 0)
    assert {r.canonical for r in diff["added_records"]} == {
        '{"text":"second batch record"}',
        '{"text":"another second batch record"}',
    }
    with pytest.raises(ValidationError, match="can't be changed"):
        second.save()


def test_an_empty_snapshot_is_refused_and_only_curators_freeze() -> None:
    datanet = DatanetFactory()
    submit(datanet)
    with pytest.raises(ValidationError, match="no accepted records"):
        services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    accepted(datanet, content=texts("a b c d"))
    with pytest.raises(PermissionDenied):
        services.snapshot_freeze(datanet=datanet, user=UserFactory())
    assert not Snapshot.objects.exists() and not Anchor.objects.exists()


@pytest.mark.chain
def test_a_frozen_snapshot_is_anchored_and_its_proofs_verify_on_chain(deployed_chain) -> None:
    datanet = DatanetFactory()
    alice = UserFactory()
    wallet(alice, ALICE_ADDRESS)
    contribution = accepted(datanet, alice, texts(*(f"on chain record {i}" for i in range(25))))
    accepted(datanet, content=texts("someone else's record"))
    snapshot = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    assert Anchor.objects.count() == 1

    ledger_services.anchor_send(anchor_id=snapshot.anchor_id)
    assert ledger_services.anchors_confirm()["confirmed"] == 1
    snapshot.anchor.refresh_from_db()
    assert snapshot.anchor.status == "confirmed"

    on_chain = chain.root_info(snapshot.merkle_root)
    assert on_chain is not None and on_chain.subject_id == snapshot.anchor.subject_id
    assert services.snapshot_rebuild_root(snapshot=snapshot) == snapshot.anchor.root == snapshot.merkle_root
    record = contribution.records.get(position=3)
    assert services.proof_verify_on_chain(snapshot=snapshot, record=record)
    proof = services.record_proof(snapshot=snapshot, record=record)
    assert proof["value"][1] == ALICE_ADDRESS
    tampered = list(reversed(proof["proof"]))
    assert not chain.verify_on_chain(proof["root"], proof["leaf"], tampered)
    assert not chain.verify_on_chain(proof["root"], proof["proof"][0], proof["proof"][1:])
