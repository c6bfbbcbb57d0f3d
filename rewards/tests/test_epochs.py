"""Closing accruals into reward epochs and claiming them, on the real database and (for claims) a real anvil."""

from __future__ import annotations

import pytest
from eth_account import Account

from datanets.tests.factories import wallet
from ledger import chain, deployments
from ledger.models import RewardClaim, RewardEpoch, RewardEpochEntry
from ledger.rewards_services import ClaimRefused
from rewards.models import RewardAccrual
from rewards.services import ClaimNotAllowed, pool_address, reward_claim, rewards_epoch_close, user_label

from .support import build_world, owed, paid_run, publish

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return build_world()


def entry_of(epoch: RewardEpoch, user) -> RewardEpochEntry:
    return epoch.entries.get(beneficiary=user_label(user.pk))


def test_closing_pays_wallet_holders_and_the_pool_and_leaves_the_rest_waiting(world) -> None:
    paid_run(world)
    paid_run(world)
    everything = sum(int(a.amount) for a in RewardAccrual.objects.all())

    result = rewards_epoch_close()

    epoch = result.epoch
    assert epoch.number == 1 and result.waiting_users == 1
    labels = {e.beneficiary for e in epoch.entries.all()}
    assert labels == {user_label(world.alice.pk), user_label(world.builder.pk), "pool"}
    assert entry_of(epoch, world.alice).account == world.alice_wallet
    assert int(entry_of(epoch, world.alice).amount) == owed(world.alice)
    assert int(entry_of(epoch, world.builder).amount) == owed(world.builder)
    assert epoch.entries.get(beneficiary="pool").account == pool_address() == chain.signer().address
    # Bob has no wallet: his accruals stay open, and every unit is either in the epoch or still open
    assert owed(world.bob, open_only=True) == owed(world.bob) > 0
    open_total = sum(int(a.amount) for a in RewardAccrual.objects.filter(epoch__isnull=True))
    assert int(epoch.total) + open_total == everything
    assert not RewardAccrual.objects.filter(epoch=1, user=world.bob).exists()


def test_closing_twice_never_counts_an_accrual_twice(world) -> None:
    paid_run(world)
    first = rewards_epoch_close().epoch

    again = rewards_epoch_close()

    assert again.epoch is None and again.accruals == 0
    assert RewardEpoch.objects.count() == 1
    paid_run(world)
    second = rewards_epoch_close().epoch
    assert second.number == 2
    assert int(first.total) + int(second.total) == sum(
        int(a.amount) for a in RewardAccrual.objects.filter(epoch__isnull=False)
    )
    assert int(entry_of(second, world.alice).amount) == owed(world.alice) - int(entry_of(first, world.alice).amount)


def test_a_contributor_without_a_wallet_is_paid_everything_after_linking_one(world) -> None:
    paid_run(world)
    rewards_epoch_close()
    paid_run(world)
    rewards_epoch_close()
    assert not RewardEpochEntry.objects.filter(beneficiary=user_label(world.bob.pk)).exists()

    bob_wallet = Account.create().address
    wallet(world.bob, bob_wallet)
    epoch = rewards_epoch_close().epoch

    entry = entry_of(epoch, world.bob)
    assert entry.account == bob_wallet
    assert int(entry.amount) == owed(world.bob) > 0
    assert owed(world.bob, open_only=True) == 0


@pytest.mark.parametrize("address", ["alice's wallet", "not-an-address"])
def test_the_pool_waits_when_its_address_is_a_users_wallet_or_invalid(world, settings, address) -> None:
    settings.REWARDS_POOL_ADDRESS = world.alice_wallet if address == "alice's wallet" else address
    paid_run(world)

    epoch = rewards_epoch_close().epoch

    assert not epoch.entries.filter(beneficiary="pool").exists()
    assert RewardAccrual.objects.filter(recipient_kind="pool", epoch__isnull=True).count() == 1
    assert int(entry_of(epoch, world.alice).amount) == owed(world.alice)


def test_the_beat_task_closes_an_epoch(world) -> None:
    from rewards.tasks import rewards_epoch_close_task

    paid_run(world)

    assert rewards_epoch_close_task.apply().get() == {"epoch": 1, "accruals": 3, "waiting_users": 1}
    assert rewards_epoch_close_task.apply().get() == {"epoch": None, "accruals": 0, "waiting_users": 1}


def test_the_beat_schedules_the_close_every_configured_period(settings) -> None:
    from openledger_web.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["rewards-epoch-close"]
    assert entry["task"] == "rewards.tasks.rewards_epoch_close_task"
    assert entry["schedule"] == float(settings.REWARDS_EPOCH_SECONDS)
    app.loader.import_default_modules()  # what a worker and the beat load at start, autodiscovered tasks included
    assert entry["task"] in app.tasks


@pytest.mark.chain
def test_a_claim_pays_the_exact_balance_once_to_the_linked_wallet(world, deployed_chain) -> None:
    paid_run(world)
    epoch = rewards_epoch_close().epoch
    publish(epoch)
    entry = entry_of(epoch, world.alice)
    contracts = deployments.active_reward_contracts()
    assert chain.token_balance(world.alice_wallet, contracts=contracts) == 0

    claim = reward_claim(user=world.alice, epoch_number=epoch.number, index=entry.index)

    assert claim.status == RewardClaim.Status.CONFIRMED
    assert chain.token_balance(world.alice_wallet, contracts=contracts) == owed(world.alice)
    with pytest.raises(ClaimRefused) as refused:
        reward_claim(user=world.alice, epoch_number=epoch.number, index=entry.index)
    assert refused.value.code == "already_claimed"
    assert chain.token_balance(world.alice_wallet, contracts=contracts) == owed(world.alice)


@pytest.mark.chain
def test_someone_elses_balance_and_forged_proofs_are_refused(world, deployed_chain) -> None:
    paid_run(world)
    epoch = rewards_epoch_close().epoch
    publish(epoch)
    alice_entry, builder_entry = entry_of(epoch, world.alice), entry_of(epoch, world.builder)

    with pytest.raises(ClaimNotAllowed):
        reward_claim(user=world.bob, epoch_number=epoch.number, index=alice_entry.index)
    with pytest.raises(ClaimNotAllowed):
        reward_claim(user=world.builder, epoch_number=epoch.number, index=alice_entry.index)
    with pytest.raises(ClaimRefused) as forged:
        reward_claim(user=world.alice, epoch_number=epoch.number, index=alice_entry.index, proof=builder_entry.proof)
    assert forged.value.code == "bad_proof"
    with pytest.raises(ClaimRefused) as inflated:
        reward_claim(
            user=world.alice, epoch_number=epoch.number, index=alice_entry.index, amount=int(alice_entry.amount) * 2
        )
    assert inflated.value.code == "bad_proof"
    with pytest.raises(RewardEpochEntry.DoesNotExist):
        reward_claim(user=world.alice, epoch_number=epoch.number + 1, index=0)
    assert not RewardClaim.objects.exists()
    assert chain.token_balance(world.alice_wallet) == 0


@pytest.mark.django_db(transaction=True)
def test_two_closes_at_once_close_each_accrual_once() -> None:
    import threading

    from django.db import connection

    world = build_world()
    for _ in range(3):
        paid_run(world)
    barrier = threading.Barrier(2)
    results, errors = [], []

    def close() -> None:
        try:
            barrier.wait()
            results.append(rewards_epoch_close())
        except Exception as e:  # reported below: a thread's exception would otherwise vanish
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=close) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors
    assert sorted(r.epoch is None for r in results) == [False, True]
    epoch = RewardEpoch.objects.get()
    closed = RewardAccrual.objects.filter(epoch=epoch.number)
    assert int(epoch.total) == sum(int(a.amount) for a in closed)
    assert sum(int(e.amount) for e in RewardEpochEntry.objects.all()) == int(epoch.total)
