"""The outbox through a real Celery worker process, on the test database, the test broker and the session's anvil."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from ledger import chain, services
from ledger.models import Anchor
from ledger.tasks import anchor_confirm_task
from openledger_web.testing import celery_worker_process

pytestmark = [pytest.mark.chain, pytest.mark.slow]


def wait_for(anchor: Anchor, status: str, timeout: float = 30) -> Anchor:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        anchor.refresh_from_db()
        if anchor.status == status:
            return anchor
        time.sleep(0.1)
    raise AssertionError(f"anchor stayed {anchor.status} ({anchor.last_error or 'no error'}), expected {status}")


@pytest.mark.django_db(transaction=True)
def test_a_worker_sends_and_confirms_an_anchor(deployed_chain, anvil) -> None:
    with celery_worker_process(name="ledger", queues="chain", EVM_RPC_URL=anvil.rpc_url):
        with transaction.atomic():
            anchor = services.anchor_request(
                kind="model_version", subject_id=services.anchor_subject_id("model", 1), root="0x" + "5e" * 32
            )

        wait_for(anchor, Anchor.Status.SUBMITTED)
        anchor_confirm_task.delay()
        wait_for(anchor, Anchor.Status.CONFIRMED)

    [event] = chain.decode_anchored(chain.get_receipt(anchor.tx_hash), contract_address=deployed_chain.contract_address)
    assert event.root == anchor.root and event.kind == 2
    assert anchor.deployment == deployed_chain
