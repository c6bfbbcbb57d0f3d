"""The outbox against a real anvil: send, confirm, retry through outages, never two nonces for one row.

The nonce tests take the ``kind`` fixture (ledger/tests/conftest.py): each runs for an anchor, a reward epoch and a
relayed claim; what only anchors keep (their AnchorEvent history) is checked for anchors.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from unittest.mock import patch

import pytest
from django.db import connection, transaction
from django.utils import timezone
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak

from ledger import chain, services
from ledger.models import Anchor, AnchorEvent, RewardClaim, SignedTransaction
from ledger.testing import free_port

Status = SignedTransaction.Status

pytestmark = pytest.mark.chain


def request_anchor(n: int, *, kind: str = "snapshot") -> Anchor:
    return services.anchor_request(
        kind=kind, subject_id=services.anchor_subject_id("test", n), root=f"0x{n:064x}", uri=f"test://{n}"
    )


def signer_count(anvil, *, block: str = "latest") -> int:
    return int(anvil.rpc("eth_getTransactionCount", chain.signer().address, block), 16)


def later() -> datetime:
    return timezone.now() + timedelta(hours=2)


@pytest.mark.django_db
def test_an_anchor_goes_pending_submitted_confirmed_and_its_event_reads_back(deployed_chain) -> None:
    anchor = request_anchor(1)

    sent = services.anchor_send(anchor_id=anchor.id)
    assert sent.status == Anchor.Status.SUBMITTED
    assert sent.deployment == deployed_chain
    assert sent.broadcast_at is not None

    assert services.anchors_confirm()["confirmed"] == 1
    anchor.refresh_from_db()
    assert anchor.status == Anchor.Status.CONFIRMED
    assert anchor.confirmations >= 1
    assert anchor.block_hash == chain.block_hash(anchor.block_number)
    [event] = chain.decode_anchored(chain.get_receipt(anchor.tx_hash), contract_address=deployed_chain.contract_address)
    assert (event.kind, event.subject_id, event.root, event.uri) == (1, anchor.subject_id, anchor.root, "test://1")
    info = chain.root_info(anchor.root)
    assert info.block_number == anchor.block_number and info.subject_id == anchor.subject_id
    assert list(anchor.events.values_list("type", flat=True)) == ["requested", "signed", "broadcast", "confirmed"]


@pytest.mark.django_db
def test_it_waits_for_the_configured_confirmations(deployed_chain, anvil, settings) -> None:
    settings.CHAIN_CONFIRMATIONS = 3
    anchor = services.anchor_send(anchor_id=request_anchor(2).id)

    services.anchors_confirm()
    anchor.refresh_from_db()
    assert anchor.status == Anchor.Status.SUBMITTED
    assert anchor.confirmations == 1

    anvil.rpc("anvil_mine", "0x2")
    services.anchors_confirm()
    anchor.refresh_from_db()
    assert anchor.status == Anchor.Status.CONFIRMED
    assert anchor.confirmations == 3


@pytest.mark.django_db
def test_a_redelivered_send_does_not_send_twice(kind, anvil) -> None:
    row = kind.make(3)
    before = signer_count(anvil, block="pending")

    kind.send_task.apply(args=[row.id])
    kind.send_task.apply(args=[row.id])
    kind.dispatch()

    row.refresh_from_db()
    assert row.nonce == before
    assert signer_count(anvil, block="pending") == before + 1
    if kind.name == "anchor":
        assert row.events.filter(type=AnchorEvent.Type.SIGNED).count() == 1


@pytest.mark.django_db
def test_a_send_that_died_before_broadcasting_rebroadcasts_the_same_transaction(kind, anvil) -> None:
    row = kind.make(4)
    before = signer_count(anvil, block="pending")

    # given: the nonce and signed transaction were committed, then the worker died before the node saw them
    with patch.object(chain, "broadcast", autospec=True, side_effect=chain.ChainUnavailable("worker killed")):
        kind.send(row.id)
    row.refresh_from_db()
    signed = (row.nonce, row.tx_hash, row.raw_tx)
    assert row.status == Status.SUBMITTED and row.broadcast_at is None
    assert signer_count(anvil, block="pending") == before

    # when: the message is redelivered, and the dispatcher runs too
    kind.send(row.id)
    kind.dispatch(now=later())
    kind.confirmed(row)

    # then: the very same transaction was mined, once
    assert (row.nonce, row.tx_hash, row.raw_tx) == signed
    assert row.status == Status.CONFIRMED
    assert signer_count(anvil) == before + 1


@pytest.mark.django_db
def test_a_row_survives_anvil_stopping_and_is_sent_with_one_nonce(kind, anvil) -> None:
    before = signer_count(anvil)
    anvil.stop()
    try:
        row = kind.make(5)

        failed = kind.send(row.id)
        assert failed.status == Status.PENDING
        assert failed.attempts == 1
        assert failed.next_attempt_at > timezone.now()
        assert "Connection" in failed.last_error
        assert kind.dispatch() == {"sent": 0, "checked": 0}
        assert chain.chain_status()["ok"] is False
    finally:
        anvil.start(state=True)

    # not due yet: the backoff holds it
    assert kind.dispatch()["sent"] == 0
    kind.dispatch(now=later())
    kind.confirmed(row)

    assert row.status == Status.CONFIRMED
    assert kind.target_of(row) == kind.target
    assert row.nonce == before
    assert signer_count(anvil) == before + 1


@pytest.mark.django_db
def test_it_backs_off_exponentially_and_fails_after_the_maximum_attempts(kind, settings) -> None:
    row = kind.make(6)
    settings.ANCHOR_MAX_ATTEMPTS = 3
    settings.EVM_RPC_URL = f"http://127.0.0.1:{free_port()}"

    delays = []
    for _ in range(3):
        started = timezone.now()
        kind.send(row.id)
        row.refresh_from_db()
        delays.append((row.next_attempt_at - started).total_seconds())
        kind.model.objects.filter(id=row.id).update(next_attempt_at=timezone.now())

    assert delays[1] > delays[0] * 1.5 and delays[2] > delays[1] * 1.5
    row.refresh_from_db()
    assert row.status == Status.FAILED
    assert row.attempts == 3
    assert row.last_error
    if kind.name == "anchor":
        assert row.events.filter(type=AnchorEvent.Type.ERROR).count() == 3


@pytest.mark.django_db
def test_a_contract_refusal_fails_at_once_and_retry_now_sends_it(deployed_chain, settings) -> None:
    settings.EVM_SIGNER_KEY = "0x" + "42" * 32  # not the owner, not an anchorer
    anchor = request_anchor(7)

    services.anchor_send(anchor_id=anchor.id)
    anchor.refresh_from_db()
    assert anchor.status == Anchor.Status.FAILED
    assert "NotAnchorer" in anchor.last_error

    settings.EVM_SIGNER_KEY = ""
    services.anchor_retry(anchor=anchor)
    services.anchor_send(anchor_id=anchor.id)
    services.anchors_confirm()
    anchor.refresh_from_db()
    assert anchor.status == Anchor.Status.CONFIRMED
    assert list(anchor.events.values_list("type", flat=True))[-3:] == ["signed", "broadcast", "confirmed"]


@pytest.mark.django_db
def test_a_nonce_taken_by_another_transaction_is_given_up_for_a_new_one(kind, anvil) -> None:
    row = kind.make(8)
    with patch.object(chain, "broadcast", autospec=True, side_effect=chain.ChainUnavailable("node away")):
        kind.send(row.id)
    row.refresh_from_db()
    taken = row.nonce
    # another process with the same key uses that nonce first
    me = chain.signer().address
    anvil.rpc("eth_sendTransaction", {"from": me, "to": me, "value": "0x1", "nonce": hex(taken)})

    kind.dispatch(now=later())
    row.refresh_from_db()
    assert row.status in (Status.PENDING, Status.SUBMITTED)
    if kind.name == "anchor":
        requeued = row.events.get(type=AnchorEvent.Type.REQUEUED)
        assert requeued.nonce == taken and "used by another transaction" in requeued.detail
    else:
        assert row.status == Status.PENDING and "used by another transaction" in row.last_error

    kind.dispatch(now=later())
    kind.confirmed(row)
    assert row.status == Status.CONFIRMED
    assert row.nonce == taken + 1


@pytest.mark.django_db
def test_a_receipt_without_our_event_for_this_row_is_not_confirmed(kind, deployed_chain) -> None:
    other = kind.send(kind.make(9).id)
    kind.confirmed(other)
    # given: two rows whose transactions were mined without their event (the deploy, another row's transaction)
    no_event = kind.make(10)
    wrong_row = kind.make(11)
    for row, tx_hash, nonce in (
        (no_event, deployed_chain.deploy_tx_hash, 10**6),
        (wrong_row, other.tx_hash, 10**6 + 1),
    ):
        kind.model.objects.filter(id=row.id).update(
            status=Status.SUBMITTED,
            signer=other.signer,
            nonce=nonce,
            raw_tx="0x00",
            tx_hash=tx_hash,
            broadcast_at=timezone.now(),
            **{kind.spec.target_field: kind.target},
        )

    counts = kind.confirm()

    assert counts["requeued"] == 2
    for row in (no_event, wrong_row):
        row.refresh_from_db()
        assert row.status == Status.PENDING
        assert row.nonce is None and row.attempts == 1
        assert f"without our {kind.spec.event} event" in row.last_error
        if kind.name == "anchor":
            assert "without our Anchored event" in row.events.get(type=AnchorEvent.Type.REQUEUED).detail


@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_take_distinct_consecutive_nonces(kind, anvil) -> None:
    rows = [kind.make(20 + i) for i in range(6)]
    before = signer_count(anvil, block="pending")
    barrier = threading.Barrier(len(rows))
    errors: list[BaseException] = []

    def send(row_id: int) -> None:
        try:
            barrier.wait()
            kind.send(row_id)
        except BaseException as e:
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(row.id,)) for row in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    for row in rows:
        kind.confirmed(row)
    sent = kind.model.objects.filter(id__in=[row.id for row in rows])
    assert sorted(sent.values_list("nonce", flat=True)) == list(range(before, before + 6))
    assert set(sent.values_list("status", flat=True)) == {Status.CONFIRMED}


@pytest.mark.django_db
def test_a_chain_reset_sends_again_on_the_new_contracts_with_the_new_chains_nonces(kind, anvil) -> None:
    row = kind.confirmed(kind.send(kind.make(50).id))
    assert row.status == Status.CONFIRMED, row.last_error
    old_target, old_tx = kind.target_of(row), row.tx_hash

    anvil.stop()
    anvil.start(state=False)
    kind.spec.ensure_target()  # the beat's check sees the reset: new contracts, and the kind's reset rule applied

    row.refresh_from_db()
    new_target = kind.spec.target_model.objects.current()
    assert new_target != old_target and new_target.active
    if kind.name == "claim":
        # the new chain never paid it: voided, and the entry may be claimed again once its epoch is republished
        assert row.status == RewardClaim.VOIDED and row.tx_hash == old_tx
        epoch = row.entry.epoch
        kind.dispatch()
        kind.confirmed(epoch)
        assert epoch.status == Status.CONFIRMED and epoch.contracts == new_target
        row = RewardClaim.objects.create(entry=row.entry)
    else:
        assert row.status == Status.PENDING and row.nonce is None
        assert "chain reset" in row.last_error and old_tx in row.last_error
    kind.dispatch()
    kind.confirmed(row)
    assert row.status == Status.CONFIRMED, row.last_error
    assert kind.target_of(row) == new_target
    # sent on the new chain with its next nonce: nothing skipped, nothing left waiting behind it
    assert signer_count(anvil) == row.nonce + 1 == signer_count(anvil, block="pending")


@pytest.mark.django_db
def test_anchor_request_rolls_back_with_the_callers_transaction(deployed_chain) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        request_anchor(30)
        raise RuntimeError("the snapshot could not be frozen")

    assert not Anchor.objects.exists()


def owner_calls(anvil, deployment, signature: str, types: list[str], args: list[object]) -> None:
    """A transaction from the contract's owner, sent by anvil itself (its dev accounts are unlocked)."""
    data = keccak(text=signature)[:4] + abi_encode(types, args)
    anvil.rpc(
        "eth_sendTransaction",
        {"from": deployment.deployer, "to": deployment.contract_address, "data": "0x" + data.hex()},
    )


@pytest.mark.django_db
def test_an_authorised_anchorer_anchors_and_a_reverted_transaction_fails_the_anchor(
    deployed_chain, anvil, settings
) -> None:
    anchorer_key = "0x" + "42" * 32
    anchorer = Account.from_key(anchorer_key).address
    anvil.rpc("anvil_setBalance", anchorer, hex(10**18))
    owner_calls(anvil, deployed_chain, "setAnchorer(address,bool)", ["address", "bool"], [anchorer, True])
    settings.EVM_SIGNER_KEY = anchorer_key

    allowed = services.anchor_send(anchor_id=request_anchor(40).id)
    services.anchors_confirm()
    allowed.refresh_from_db()
    assert allowed.status == Anchor.Status.CONFIRMED
    assert chain.root_info(allowed.root).submitter == anchorer

    # given: signed while allowed, revoked before it is mined
    anchor = request_anchor(41)
    with patch.object(chain, "broadcast", autospec=True, side_effect=chain.ChainUnavailable("node away")):
        services.anchor_send(anchor_id=anchor.id)
    owner_calls(anvil, deployed_chain, "setAnchorer(address,bool)", ["address", "bool"], [anchorer, False])
    services.anchors_dispatch(now=later())

    services.anchors_confirm()

    anchor.refresh_from_db()
    assert anchor.status == Anchor.Status.FAILED
    assert "reverted" in anchor.last_error
    assert chain.root_info(anchor.root) is None
