"""A withdrawal that meets the beat completing the contribution's receipt waits for it, then deletes the records:
the receipt's records root is always taken from the records the contribution had, never from none."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from accounts.tests.factories import UserFactory
from datanets import receipts, services
from datanets.models import Contribution, Receipt, Record
from ledger.merkle import StandardMerkleTree

from .factories import DatanetFactory, submit, texts

pytestmark = pytest.mark.django_db(transaction=True)


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except Exception as e:  # reported by the test
            outcome["error"] = e
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="row locks: SQLite has one database-wide lock")
def test_a_withdrawal_waits_for_the_receipt_being_completed_then_deletes_the_records(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    contributor = UserFactory()
    contribution = submit(DatanetFactory(), contributor, texts("a record to withdraw", "and a second one"))
    hashes = Record.objects.filter(contribution=contribution).values_list("record_hash", flat=True)
    expected = StandardMerkleTree.of([(h,) for h in hashes], ("bytes32",)).root
    computing, go, calls = threading.Event(), threading.Event(), []
    real = receipts.records_root

    def paused(contribution_id: int) -> str | None:
        calls.append(contribution_id)
        computing.set()
        go.wait(timeout=60)
        return real(contribution_id)

    monkeypatch.setattr(receipts, "records_root", paused)
    sealer, sealed = _in_thread(lambda: receipts.receipts_seal_batches(force=True))
    assert computing.wait(timeout=60), sealed
    withdrawer, withdrawn = _in_thread(
        lambda: services.contribution_withdraw(contribution=contribution, user=contributor)
    )
    withdrawer.join(timeout=2.0)
    assert withdrawer.is_alive(), withdrawn  # waiting on the receipt's row lock, its records untouched
    assert Record.objects.filter(contribution=contribution).count() == 2

    go.set()
    sealer.join(timeout=60)
    withdrawer.join(timeout=60)

    assert "error" not in sealed and "error" not in withdrawn, (sealed, withdrawn)
    receipt = Receipt.objects.get(contribution=contribution)
    assert receipt.document["records_root"] == expected
    if receipt.batch is None:  # the withdrawal held the row as the seal went by (skip_locked): the next tick seals it
        assert len(receipts.receipts_seal_batches(force=True)) == 1
    assert calls == [contribution.pk]  # the withdrawal found the receipt complete and did not compute it again
    assert Contribution.objects.get(pk=contribution.pk).status == "withdrawn"
    assert not Record.objects.filter(contribution=contribution).exists()
