"""The whole settlement path through real Celery worker processes: the beat's close task on the default queue, the
epoch's publication on the chain queue, then a claim, against the test database, broker and the session's anvil."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from ledger import chain
from ledger.models import Anchor, RewardEpoch
from ledger.tasks import anchor_confirm_task, rewards_confirm_task
from openledger_web.testing import celery_worker_process
from rewards.services import reward_claim, user_label
from rewards.tasks import rewards_epoch_close_task

from .support import build_world, owed, paid_run

pytestmark = [pytest.mark.chain, pytest.mark.slow]


def wait_for_epoch(number: int, status: str, timeout: float = 30) -> RewardEpoch:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        epoch = RewardEpoch.objects.filter(number=number).first()
        if epoch is not None and epoch.status == status:
            return epoch
        if epoch is not None and epoch.status == RewardEpoch.Status.SUBMITTED:
            rewards_confirm_task.delay()
        time.sleep(0.3)
    raise AssertionError(f"epoch {number} is {epoch and epoch.status} ({epoch and epoch.last_error}), not {status}")


def wait_for_anchor(anchor_id: int, timeout: float = 30) -> Anchor:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        anchor = Anchor.objects.get(id=anchor_id)
        if anchor.status == Anchor.Status.CONFIRMED:
            return anchor
        anchor_confirm_task.delay()
        time.sleep(0.3)
    raise AssertionError(f"anchor {anchor_id} is {anchor.status} ({anchor.last_error}), not confirmed")


@pytest.mark.django_db(transaction=True)
def test_workers_close_publish_and_a_claim_pays(deployed_chain, anvil) -> None:
    world = build_world()
    paid_run(world)

    with celery_worker_process(name="rewards", queues="default,chain", EVM_RPC_URL=anvil.rpc_url):
        rewards_epoch_close_task.delay()
        epoch = wait_for_epoch(1, RewardEpoch.Status.CONFIRMED)
        anchor = wait_for_anchor(epoch.document_anchor_id)

    assert chain.epoch_info(1).root == epoch.root
    # the epoch document's hash went on chain from the same close, under its subject
    info = chain.root_info(epoch.document_hash)
    assert anchor.root == epoch.document_hash and info is not None and info.subject_id == anchor.subject_id
    entry = epoch.entries.get(beneficiary=user_label(world.alice.pk))
    claim = reward_claim(user=world.alice, epoch_number=1, index=entry.index)
    assert claim.status == claim.Status.CONFIRMED
    assert chain.token_balance(world.alice_wallet) == owed(world.alice)
    proof = APIClient().get(reverse("rewards_api:leaf_proof", args=[1, entry.index])).json()
    assert proof["claim"] == {"status": "claimed", "tx_hash": claim.tx_hash, "block_number": claim.block_number}
