"""Receipts: one for each submission and curation decision, written in the action's transaction, completed off the
upload's path and sealed into batches that each make one anchor."""

from __future__ import annotations

from datetime import UTC, timedelta
from unittest.mock import patch

import pytest
import rfc8785
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.tests.factories import UserFactory
from datanets import receipts, selectors, services
from datanets.models import Contribution, ContributionDecision, Receipt, ReceiptBatch, Record
from ledger import hashing, merkle
from ledger.hashing import keccak256
from ledger.merkle import StandardMerkleTree
from ledger.models import Anchor

from .factories import DatanetFactory, jsonl, submit, texts, wallet

pytestmark = pytest.mark.django_db

ALICE_ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
ROWS = texts("the first record of several words", "another record here", "and a third one to make three")


def _root_of(contribution: Contribution) -> str:
    hashes = Record.objects.filter(contribution=contribution).values_list("record_hash", flat=True)
    return StandardMerkleTree.of([(h,) for h in hashes], ("bytes32",)).root


def test_a_submission_writes_its_receipt_with_the_cheap_facts_and_no_tree() -> None:
    datanet = DatanetFactory()
    contributor = UserFactory()

    contribution = submit(datanet, contributor, ROWS)

    receipt = Receipt.objects.get(contribution=contribution)
    assert receipt.kind == "contribution" and receipt.batch is None and receipt.document_hash == ""
    assert receipt.created_at == contribution.submitted_at
    assert receipt.document == {
        "schema": "openledger.receipt.contribution.v1",
        "contribution": contribution.pk,
        "datanet": {"id": datanet.pk, "slug": datanet.slug},
        "records_root": None,  # computed off the upload's path
        "record_count": 3,
        "content_sha256": contribution.content_sha256,
        "contributor": None,
        "account_hash": hashing.keccak_hex(f"openledger:account:{contributor.pk}".encode()),
        "licence": contribution.licence,
        "submitted_at": contribution.submitted_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


def test_completing_a_contribution_receipt_adds_its_records_root_and_hashes_the_jcs_document() -> None:
    datanet = DatanetFactory()
    contributor = UserFactory()
    wallet(contributor, ALICE_ADDRESS)
    contribution = submit(datanet, contributor, ROWS)

    assert receipts.receipts_complete() == 1
    assert receipts.receipts_complete() == 0  # nothing left

    receipt = Receipt.objects.get(contribution=contribution)
    assert receipt.document["records_root"] == _root_of(contribution)
    assert receipt.document["contributor"] == ALICE_ADDRESS and receipt.document["account_hash"] is None
    assert receipt.document["submitted_at"].endswith("Z")
    assert receipt.document_hash == "0x" + keccak256(rfc8785.dumps(receipt.document)).hex()


def test_a_large_uploads_receipt_takes_its_root_from_the_staged_records(settings) -> None:  # type: ignore[no-untyped-def]
    settings.UPLOAD_STAGE_ABOVE_BYTES = 0  # every upload is "large": its records wait in StagedRecord
    datanet = DatanetFactory()
    contribution = submit(datanet, content=ROWS)
    assert contribution.records_staged and not Record.objects.filter(contribution=contribution).exists()

    receipts.receipts_complete()

    staged_root = Receipt.objects.get(contribution=contribution).document["records_root"]
    with transaction.atomic():
        services.contribution_records_settle(Contribution.objects.select_for_update().get(pk=contribution.pk))
    assert staged_root == _root_of(contribution)


def test_each_curation_decision_writes_a_complete_receipt_in_its_transaction() -> None:
    datanet = DatanetFactory()
    curator = UserFactory()
    datanet.curators.add(curator)
    wallet(curator, ALICE_ADDRESS)
    first, second, third = (submit(datanet, content=texts(f"record {i} of a contribution")) for i in range(3))
    excluded = Record.objects.get(contribution=third)

    services.record_exclude(curator=curator, record=excluded, reason="personal data")
    services.contributions_decide(curator=curator, contributions=[first, second], action="accept")
    services.contribution_reject(curator=curator, contribution=third, reason="mostly copied, sorry")

    curation = list(Receipt.objects.filter(kind="curation").order_by("id"))
    assert [(r.document["decision"], r.contribution_id) for r in curation] == [
        ("exclude", third.pk),
        ("accept", first.pk),
        ("accept", second.pk),
        ("reject", third.pk),
    ]
    exclude, accept, _, reject = curation
    assert exclude.document["record"] == excluded.pk and accept.document["record"] is None
    assert exclude.document["reason_hash"] == hashing.keccak_hex(b"personal data")
    assert accept.document["reason_hash"] == hashing.keccak_hex(b"")  # no reason: the empty string's hash
    assert reject.document["reason_hash"] == hashing.keccak_hex(b"mostly copied, sorry")
    for receipt in curation:
        assert receipt.document["schema"] == "openledger.receipt.curation.v1"
        assert receipt.document["curator"] == ALICE_ADDRESS and receipt.document["curator_account_hash"] is None
        assert receipt.document["datanet"] == {"id": datanet.pk, "slug": datanet.slug}
        assert receipt.document_hash == hashing.document_hash(receipt.document)
    decided = Contribution.objects.get(pk=first.pk).reviewed_at
    assert accept.created_at == decided
    assert accept.document["decided_at"] == decided.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_curator_without_a_wallet_is_named_by_the_hash_of_their_account() -> None:
    datanet = DatanetFactory()
    contribution = submit(datanet)

    services.contribution_accept(curator=datanet.owner, contribution=contribution)

    document = Receipt.objects.get(kind="curation").document
    assert document["curator"] is None
    assert document["curator_account_hash"] == hashing.keccak_hex(f"openledger:account:{datanet.owner.pk}".encode())


def test_refused_actions_leave_no_receipt() -> None:
    datanet = DatanetFactory()
    pending, decided = submit(datanet), submit(datanet, content=texts("another upload altogether"))
    services.contribution_accept(curator=datanet.owner, contribution=decided)
    before = Receipt.objects.count()

    with pytest.raises(ValidationError):
        submit(datanet, content=jsonl({"text": "fine"}, {"no_text": 1}))  # a bad row: the whole file refused
    with pytest.raises(ValidationError):  # one of the two is already decided: neither is
        services.contributions_decide(
            curator=datanet.owner, contributions=[pending, decided], action="reject", reason="x"
        )
    with pytest.raises(ValidationError):
        services.record_exclude(curator=datanet.owner, record=pending.records.first(), reason="  ")
    with pytest.raises(ValidationError):
        services.contribution_reject(curator=datanet.owner, contribution=pending, reason="")

    assert Receipt.objects.count() == before
    assert Contribution.objects.get(pk=pending.pk).status == "pending"


def test_an_action_whose_receipt_fails_is_not_done() -> None:
    datanet = DatanetFactory()
    contribution = submit(datanet)
    record = contribution.records.first()
    decisions = ContributionDecision.objects.count()

    with patch("datanets.receipts.hashing.document_hash", side_effect=hashing.CanonicalError("boom")):
        with pytest.raises(hashing.CanonicalError):
            services.contribution_accept(curator=datanet.owner, contribution=contribution)
        with pytest.raises(hashing.CanonicalError):
            services.record_exclude(curator=datanet.owner, record=record, reason="personal data")
    with (
        patch("datanets.receipts.Receipt.objects.create", side_effect=RuntimeError("boom")),
        pytest.raises(RuntimeError),
    ):
        submit(datanet, content=texts("an upload whose receipt can't be written"))

    assert Contribution.objects.get(pk=contribution.pk).status == "pending"
    assert not Record.objects.get(pk=record.pk).excluded
    assert Contribution.objects.count() == 1 and ContributionDecision.objects.count() == decisions
    assert Receipt.objects.count() == 1  # the first submission's


def test_a_receipt_written_in_a_transaction_that_rolls_back_is_gone_with_the_action() -> None:
    datanet = DatanetFactory()
    contribution = submit(datanet)

    with pytest.raises(RuntimeError), transaction.atomic():
        services.contribution_accept(curator=datanet.owner, contribution=contribution)
        assert Receipt.objects.filter(kind="curation").count() == 1
        raise RuntimeError("the caller's transaction fails after the decision")

    assert not Receipt.objects.filter(kind="curation").exists()
    assert Contribution.objects.get(pk=contribution.pk).status == "pending"


def test_a_withdrawn_contribution_keeps_its_receipts_with_the_root_of_the_records_it_had() -> None:
    datanet = DatanetFactory()
    contributor = UserFactory()
    contribution = submit(datanet, contributor, ROWS)
    services.record_exclude(curator=datanet.owner, record=contribution.records.first(), reason="personal data")
    root = _root_of(contribution)

    services.contribution_withdraw(contribution=contribution, user=contributor)

    assert not Record.objects.filter(contribution=contribution).exists()
    kept = {r.kind: r for r in Receipt.objects.filter(contribution=contribution)}
    assert set(kept) == {"contribution", "curation"}
    assert kept["contribution"].document["records_root"] == root
    assert kept["contribution"].document_hash == hashing.document_hash(kept["contribution"].document)
    assert len(receipts.receipts_seal_batches(force=True)) == 1
    assert Receipt.objects.filter(contribution=contribution, batch__isnull=False).count() == 2


def test_sealing_makes_one_anchor_per_batch_whatever_its_size(settings) -> None:  # type: ignore[no-untyped-def]
    settings.RECEIPT_BATCH_SIZE = 256
    datanet = DatanetFactory()
    for i in range(7):
        contribution = submit(datanet, content=texts(f"upload number {i} with a few words"))
        services.contribution_accept(curator=datanet.owner, contribution=contribution)

    batches = receipts.receipts_seal_batches(force=True)

    assert len(batches) == 1 and batches[0].size == 14
    assert Anchor.objects.filter(kind="receipt_batch").count() == 1
    anchor = batches[0].anchor
    assert anchor.subject == f"receipt_batch:{batches[0].root}" and anchor.root == batches[0].root
    assert anchor.subject_id == hashing.subject_id(anchor.subject)
    assert not Receipt.objects.filter(batch__isnull=True).exists()
    assert receipts.receipts_seal_batches(force=True) == []  # nothing left, no empty batch


def test_full_batches_seal_at_once_and_a_partial_one_waits_for_its_age(settings) -> None:  # type: ignore[no-untyped-def]
    settings.RECEIPT_BATCH_SIZE = 2
    settings.RECEIPT_BATCH_SECONDS = 60
    datanet = DatanetFactory()
    for i in range(5):
        submit(datanet, content=texts(f"upload number {i} with a few words"))

    batches = receipts.receipts_seal_batches()
    assert [b.size for b in batches] == [2, 2]
    assert Receipt.objects.filter(batch__isnull=True).count() == 1

    later = timezone.now() + timedelta(seconds=61)
    assert [b.size for b in receipts.receipts_seal_batches(now=later)] == [1]
    assert Anchor.objects.filter(kind="receipt_batch").count() == ReceiptBatch.objects.count() == 3


def test_every_sealed_receipt_is_proved_by_its_batch_tree() -> None:
    datanet = DatanetFactory()
    first, second = submit(datanet), submit(datanet, content=texts("a second upload of words"))
    services.contribution_reject(curator=datanet.owner, contribution=second, reason="off topic")
    receipts.receipts_seal_batches(force=True)

    for receipt in selectors.receipts_of_datanet(datanet=datanet):
        proof = selectors.receipt_proof(receipt)
        assert proof is not None
        assert proof["artifact"] == f"{receipt.kind}_receipt" and proof["leafEncoding"] == ["bytes32"]
        assert proof["value"] == [receipt.document_hash]
        assert proof["batch"]["id"] == receipt.batch_id and proof["batch"]["size"] == 3
        assert proof["anchor"]["kind"] == "receipt_batch"
        assert merkle.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
    assert selectors.receipts_of_contribution(contribution=first).count() == 1


def test_a_receipt_that_cannot_be_completed_does_not_hold_back_the_others(caplog) -> None:  # type: ignore[no-untyped-def]
    datanet = DatanetFactory()
    stuck, fine = submit(datanet), submit(datanet, content=texts("a second upload of words"))
    real = receipts.records_root

    def failing_for_stuck(contribution_id: int) -> str | None:
        if contribution_id == stuck.pk:
            raise RuntimeError("the database went away")
        return real(contribution_id)

    with patch("datanets.receipts.records_root", side_effect=failing_for_stuck):
        (batch,) = receipts.receipts_seal_batches(force=True)

    assert batch.size == 1 and Receipt.objects.get(contribution=fine).batch == batch
    assert Receipt.objects.get(contribution=stuck).batch is None and "could not complete receipt" in caplog.text
    assert len(receipts.receipts_seal_batches(force=True)) == 1  # completed and sealed on the next tick


def test_the_sealing_beat_task_is_scheduled_on_the_default_queue_and_seals(settings) -> None:  # type: ignore[no-untyped-def]
    from datanets import tasks
    from openledger_web.celery import app

    task = settings.CELERY_BEAT_SCHEDULE["datanets-seal-receipts"]["task"]
    assert task == tasks.receipts_seal_batches_task.name and task in app.tasks
    assert app.amqp.router.route({}, task)["queue"].name == "default"
    settings.RECEIPT_BATCH_SIZE = 1
    submit(DatanetFactory())
    assert tasks.receipts_seal_batches_task() == 1
