"""Revocation (issue 17, item 2): a contributor withdraws an accepted contribution, a curator or staff member takes
records down, either may erase; later snapshots leave the records out, earlier ones and their proofs stay."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import override_settings

from accounts.tests.factories import UserFactory
from datanets import exports, hooks, revocation, services
from datanets.models import ContributionDecision, Receipt, Record, Revocation, RevokedRecord
from datanets.storage import media_path

from .factories import DatanetFactory, accepted, submit, texts

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def datanet_with_two(tmp_path):
    with override_settings(MEDIA_ROOT=str(tmp_path)):
        datanet = DatanetFactory()
        alice = accepted(datanet, content=texts("alice wrote this first record", "alice wrote a second record"))
        bob = accepted(datanet, content=texts("bob has his own record here"))
        first = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
        yield datanet, alice, bob, first


def test_a_withdrawn_contribution_leaves_the_next_snapshot_and_the_old_proofs_still_verify(datanet_with_two) -> None:
    datanet, alice, bob, first = datanet_with_two
    told = []
    hooks.records_revoked_connect(told_receiver := lambda **kw: told.append(kw))
    try:
        withdrawn = revocation.contribution_revoke(contribution=alice, user=alice.contributor)
    finally:
        hooks._revoked._items.remove(told_receiver)
    assert withdrawn.kind == "withdrawal" and withdrawn.reason == "consent" and withdrawn.record_count == 2
    assert told == [{"revocation_ids": [withdrawn.pk], "erased": False}]
    assert RevokedRecord.objects.filter(revocation=withdrawn).count() == 2
    assert ContributionDecision.objects.filter(contribution=alice, action="revoke").count() == 1
    receipt = Receipt.objects.get(kind="revocation", contribution=alice)
    assert receipt.document["schema"] == "openledger.receipt.revocation.v1" and receipt.document["record_count"] == 2
    assert receipt.document_hash.startswith("0x")

    second = services.snapshot_freeze(datanet=datanet, user=datanet.owner)
    assert second.record_count == 1 and set(second.leaves.values_list("contribution_id", flat=True)) == {bob.pk}
    assert second.removed_count == 2
    first.refresh_from_db()
    assert first.record_count == 3  # the past stays as anchored
    record = alice.records.order_by("position").first()
    proof = services.record_proof(snapshot=first, record=record)
    assert proof["root"] == first.merkle_root
    rows = [json.loads(line) for line in exports.snapshot_jsonl_lines(snapshot=first)]
    assert [r["revoked"] for r in rows] == [True, True, False] and not any(r["erased"] for r in rows)


def test_an_erasure_blanks_the_text_deletes_the_upload_and_marks_the_export(datanet_with_two, tmp_path) -> None:
    datanet, alice, _, first = datanet_with_two
    with override_settings(MEDIA_ROOT=str(tmp_path)):
        parquet = exports.snapshot_parquet_path(snapshot=first)
        assert media_path(alice.storage_path).is_file() and parquet.is_file()
        record = alice.records.order_by("position").first()
        curator = datanet.owner
        [taken] = revocation.records_take_down(
            records=[record], user=curator, reason="personal_data", explanation="a phone number", erase=True
        )
        assert taken.kind == "takedown" and taken.erase and taken.erased_at is not None
        record.refresh_from_db()
        assert record.canonical == "" and record.minhash is None
        assert not media_path(alice.storage_path).exists()  # the upload held the erased bytes
        assert not parquet.exists()  # rebuilt on the next download, the erased row marked
        rows = [json.loads(line) for line in exports.snapshot_jsonl_lines(snapshot=first)]
        erased = [r for r in rows if r["record_id"] == record.pk]
        assert erased[0]["erased"] and erased[0]["revoked"] and erased[0]["text"] == ""
        assert erased[0]["record_hash"] == record.record_hash
        assert services.proof_verify_on_chain is not None
        proof = services.record_proof(snapshot=first, record=record)
        assert proof["root"] == first.merkle_root
        rebuilt = exports.snapshot_parquet_path(snapshot=first)
        assert rebuilt.is_file()


def test_a_later_erasure_of_a_withdrawal_and_its_refusal_the_second_time(datanet_with_two) -> None:
    _, alice, _, _ = datanet_with_two
    withdrawn = revocation.contribution_revoke(contribution=alice, user=alice.contributor)
    erased = revocation.revocation_erase(revocation=withdrawn, user=alice.contributor)
    assert erased.erase and erased.erased_by == alice.contributor
    assert set(Record.objects.filter(contribution=alice).values_list("canonical", flat=True)) == {""}
    assert Receipt.objects.filter(kind="revocation", contribution=alice).count() == 2
    with pytest.raises(ValidationError, match="already erased"):
        revocation.revocation_erase(revocation=withdrawn, user=alice.contributor)


def test_hostile_revocations_are_refused_and_write_nothing(datanet_with_two) -> None:
    datanet, alice, bob, _ = datanet_with_two
    stranger = UserFactory()
    with pytest.raises(PermissionDenied, match="only the contributor"):
        revocation.contribution_revoke(contribution=alice, user=bob.contributor)
    with pytest.raises(PermissionDenied, match="curator"):
        revocation.records_take_down(records=list(alice.records.all()), user=stranger, reason="other", explanation="x")
    with pytest.raises(ValidationError, match="reason"):
        revocation.contribution_revoke(contribution=alice, user=alice.contributor, reason="because")
    with pytest.raises(ValidationError, match="say why"):
        revocation.records_take_down(records=list(alice.records.all()), user=datanet.owner, reason="licence",
                                     explanation="  ")  # fmt: skip
    pending = submit(datanet, content=texts("a record still waiting for review"))
    with pytest.raises(ValidationError, match="still pending"):
        revocation.contribution_revoke(contribution=pending, user=pending.contributor)
    rejected = submit(datanet, content=texts("a record that the curator refused"))
    services.contribution_reject(curator=datanet.owner, contribution=rejected, reason="off topic")
    with pytest.raises(ValidationError, match="never accepted"):
        revocation.records_take_down(records=list(rejected.records.all()), user=datanet.owner, reason="other",
                                     explanation="gone")  # fmt: skip
    assert not Revocation.objects.exists() and not Receipt.objects.filter(kind="revocation").exists()

    revocation.contribution_revoke(contribution=alice, user=alice.contributor)
    with pytest.raises(ValidationError, match="already revoked"):
        revocation.contribution_revoke(contribution=alice, user=alice.contributor)
    with pytest.raises(ValidationError, match="already revoked"):  # one of two already revoked: none is taken
        revocation.records_take_down(
            records=[*alice.records.all(), *bob.records.all()],
            user=datanet.owner,
            reason="legal_request",
            explanation="court order",
        )
    assert Revocation.objects.count() == 1 and not RevokedRecord.objects.filter(record__contribution=bob).exists()


def test_staff_may_take_down_and_a_takedown_spans_contributions_one_revocation_each(datanet_with_two) -> None:
    _, alice, bob, _ = datanet_with_two
    staff = UserFactory(is_staff=True)
    taken = revocation.records_take_down(
        records=[alice.records.first(), bob.records.first()], user=staff, reason="licence", explanation="not CC"
    )
    assert sorted(r.contribution_id for r in taken) == sorted([alice.pk, bob.pk])
    assert all(r.record_count == 1 and not r.erase for r in taken)
