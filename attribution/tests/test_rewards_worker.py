"""The whole settlement path through real Celery worker processes: the beat's close task on the default queue, the
epoch's publication on the chain queue, then a claim, against the test database, broker and the session's anvil."""

from __future__ import annotations

import time

import pytest

from attribution.rewards_services import reward_claim, user_label
from attribution.rewards_tasks import rewards_epoch_close_task
from ledger import chain
from ledger.models import RewardEpoch
from ledger.tasks import rewards_confirm_task
from openledger_web.testing import celery_worker_process

from .rewards_support import build_world, owed, paid_run

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


@pytest.mark.django_db(transaction=True)
def test_workers_close_publish_and_a_claim_pays(deployed_chain, anvil) -> None:
    world = build_world()
    paid_run(world)

    with celery_worker_process(name="rewards", queues="default,chain", EVM_RPC_URL=anvil.rpc_url):
        rewards_epoch_close_task.delay()
        epoch = wait_for_epoch(1, RewardEpoch.Status.CONFIRMED)

    assert chain.epoch_info(1).root == epoch.root
    entry = epoch.entries.get(beneficiary=user_label(world.alice.pk))
    claim = reward_claim(user=world.alice, epoch_number=1, index=entry.index)
    assert claim.status == claim.Status.CONFIRMED
    assert chain.token_balance(world.alice_wallet) == owed(world.alice)
