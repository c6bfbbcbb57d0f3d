"""The outbox against a real anvil: send, confirm, retry through outages, never two nonces for one anchor."""

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
from ledger.models import Anchor, AnchorEvent
from ledger.testing import free_port

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
def test_a_redelivered_send_does_not_send_twice(deployed_chain, anvil) -> None:
    from ledger.tasks import anchor_send_task

    anchor = request_anchor(3)
    before = signer_count(anvil, block="pending")

    anchor_send_task.apply(args=[anchor.id])
    anchor_send_task.apply(args=[anchor.id])
    services.anchors_dispatch()

    anchor.refresh_from_db()
    assert anchor.nonce == before
    assert signer_count(anvil, block="pending") == before + 1
    assert anchor.events.filter(type=AnchorEvent.Type.SIGNED).count() == 1


@pytest.mark.django_db
def test_a_send_that_died_before_broadcasting_rebroadcasts_the_same_transaction(deployed_chain, anvil) -> None:
    anchor = request_anchor(4)
    before = signer_count(anvil, block="pending")

    # given: the nonce and signed transaction were committed, then the worker died before the node saw them
    with patch.object(chain, "broadcast", autospec=True, side_effect=chain.ChainUnavailable("worker killed")):
        services.anchor_send(anchor_id=anchor.id)
    anchor.refresh_from_db()
    signed = (anchor.nonce, anchor.tx_hash, anchor.raw_tx)
    assert anchor.status == Anchor.Status.SUBMITTED and anchor.broadcast_at is None
    assert signer_count(anvil, block="pending") == before

    # when: the message is redelivered, and the dispatcher runs too
    services.anchor_send(anchor_id=anchor.id)
    services.anchors_dispatch(now=later())
    services.anchors_confirm()

    # then: the very same transaction was mined, once
    anchor.refresh_from_db()
    assert (anchor.nonce, anchor.tx_hash, anchor.raw_tx) == signed
    assert anchor.status == Anchor.Status.CONFIRMED
    assert signer_count(anvil) == before + 1


@pytest.mark.django_db
def test_an_anchor_survives_anvil_stopping_and_is_sent_with_one_nonce(deployed_chain, anvil) -> None:
    before = signer_count(anvil)
    anvil.stop()
    try:
        anchor = request_anchor(5)

        failed = services.anchor_send(anchor_id=anchor.id)
        assert failed.status == Anchor.Status.PENDING
        assert failed.attempts == 1
        assert failed.next_attempt_at > timezone.now()
        assert "Connection" in failed.last_error
        assert services.anchors_dispatch() == {"sent": 0, "checked": 0}
        assert chain.chain_status()["ok"] is False
    finally:
        anvil.start(state=True)

    # not due yet: the backoff holds it
    assert services.anchors_dispatch()["sent"] == 0
    services.anchors_dispatch(now=later())
    services.anchors_confirm()

    anchor.refresh_from_db()
    assert anchor.status == Anchor.Status.CONFIRMED
    assert anchor.deployment == deployed_chain
    assert anchor.nonce == before
    assert signer_count(anvil) == before + 1


@pytest.mark.django_db
def test_it_backs_off_exponentially_and_fails_after_the_maximum_attempts(deployed_chain, settings) -> None:
    settings.ANCHOR_MAX_ATTEMPTS = 3
    settings.EVM_RPC_URL = f"http://127.0.0.1:{free_port()}"
    anchor = request_anchor(6)

    delays = []
    for _ in range(3):
        started = timezone.now()
        services.anchor_send(anchor_id=anchor.id)
        anchor.refresh_from_db()
        delays.append((anchor.next_attempt_at - started).total_seconds())
        Anchor.objects.filter(id=anchor.id).update(next_attempt_at=timezone.now())

    assert delays[1] > delays[0] * 1.5 and delays[2] > delays[1] * 1.5
    anchor.refresh_from_db()
    assert anchor.status == Anchor.Status.FAILED
    assert anchor.attempts == 3
    assert anchor.last_error
    assert anchor.events.filter(type=AnchorEvent.Type.ERROR).count() == 3


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
def test_a_nonce_taken_by_another_transaction_is_given_up_for_a_new_one(deployed_chain, anvil) -> None:
    anchor = request_anchor(8)
    with patch.object(chain, "broadcast", autospec=True, side_effect=chain.ChainUnavailable("node away")):
        services.anchor_send(anchor_id=anchor.id)
    anchor.refresh_from_db()
    taken = anchor.nonce
    # another process with the same key uses that nonce first
    me = chain.signer().address
    anvil.rpc("eth_sendTransaction", {"from": me, "to": me, "value": "0x1", "nonce": hex(taken)})

    services.anchors_dispatch(now=later())
    anchor.refresh_from_db()
    assert anchor.status in (Anchor.Status.PENDING, Anchor.Status.SUBMITTED)
    requeued = anchor.events.get(type=AnchorEvent.Type.REQUEUED)
    assert requeued.nonce == taken and "used by another transaction" in requeued.detail

    services.anchors_dispatch(now=later())
    services.anchors_confirm()
    anchor.refresh_from_db()
    assert anchor.status == Anchor.Status.CONFIRMED
    assert anchor.nonce == taken + 1


@pytest.mark.django_db
def test_a_receipt_without_our_event_for_this_root_is_not_confirmed(deployed_chain) -> None:
    other = services.anchor_send(anchor_id=request_anchor(9).id)
    services.anchors_confirm()
    # given: two anchors whose transactions were mined without their event (the deploy, another root's anchor)
    no_event = request_anchor(10)
    wrong_root = request_anchor(11)
    for anchor, tx_hash, nonce in (
        (no_event, deployed_chain.deploy_tx_hash, 10**6),
        (wrong_root, other.tx_hash, 10**6 + 1),
    ):
        Anchor.objects.filter(id=anchor.id).update(
            status=Anchor.Status.SUBMITTED,
            deployment=deployed_chain,
            signer=other.signer,
            nonce=nonce,
            raw_tx="0x00",
            tx_hash=tx_hash,
            broadcast_at=timezone.now(),
        )

    counts = services.anchors_confirm()

    assert counts["requeued"] == 2
    for anchor in (no_event, wrong_root):
        anchor.refresh_from_db()
        assert anchor.status == Anchor.Status.PENDING
        assert anchor.nonce is None and anchor.attempts == 1
        assert "without our Anchored event" in anchor.events.get(type=AnchorEvent.Type.REQUEUED).detail


@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_take_distinct_consecutive_nonces(deployed_chain, anvil) -> None:
    anchors = [request_anchor(20 + i) for i in range(6)]
    before = signer_count(anvil, block="pending")
    barrier = threading.Barrier(len(anchors))
    errors: list[BaseException] = []

    def send(anchor_id: int) -> None:
        try:
            barrier.wait()
            services.anchor_send(anchor_id=anchor_id)
        except BaseException as e:
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(a.id,)) for a in anchors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    services.anchors_confirm()
    sent = Anchor.objects.filter(id__in=[a.id for a in anchors])
    assert sorted(sent.values_list("nonce", flat=True)) == list(range(before, before + 6))
    assert set(sent.values_list("status", flat=True)) == {Anchor.Status.CONFIRMED}


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
