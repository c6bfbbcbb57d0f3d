"""A small rewards world for the earnings and epoch tests, built through the real services and models: a Datanet
with two accepted contributions (Alice, with a wallet; Bob, without), a frozen snapshot, a model version built on
it by a builder (with a wallet), and runs whose fees are split by ``split_fee`` into accruals, as attribution
leaves them. No training: the accrual rows are what these tests are about."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from eth_account import Account

from accounts.tests.factories import UserFactory
from datanets import services as datanet_services
from datanets.tests.factories import wallet
from inference.models import InferenceRun
from modelfactory.tests.factories import default_base, stand_in_version
from rewards.models import RewardAccrual
from rewards.split import REWARD_POLICY_V1, split_fee

FEE = 10**15


@dataclass
class World:
    owner: Any
    curator: Any
    alice: Any
    bob: Any
    builder: Any
    asker: Any
    stranger: Any
    staff: Any
    datanet: Any
    alice_contribution: Any
    bob_contribution: Any
    snapshot: Any
    version: Any
    alice_wallet: str
    builder_wallet: str


def _pasted(datanet: Any, user: Any, lines: list[str], *, accept_by: Any | None) -> Any:
    text = "".join(json.dumps({"prompt": f"q {line}", "response": line}) + "\n" for line in lines)
    contribution = datanet_services.contribution_submit_pasted(
        datanet=datanet, contributor=user, text=text, licence="CC-BY-4.0"
    )
    if accept_by is None:
        return contribution
    return datanet_services.contribution_accept(curator=accept_by, contribution=contribution)


def build_world(*, visibility: str = "public") -> World:
    owner, curator = UserFactory(), UserFactory()
    alice, bob, builder, asker, stranger = UserFactory(), UserFactory(), UserFactory(), UserFactory(), UserFactory()
    staff = UserFactory(is_staff=True)
    alice_wallet, builder_wallet = Account.create().address, Account.create().address
    wallet(alice, alice_wallet)
    wallet(builder, builder_wallet)
    datanet = datanet_services.datanet_create(
        owner=owner, name="Lantern facts", record_type="instruction", licence="CC-BY-4.0", visibility=visibility
    )
    datanet.curators.add(curator)
    datanet.members.add(alice, bob)
    alice_contribution = _pasted(datanet, alice, ["the lantern burns oil", "the lantern is tall"], accept_by=owner)
    bob_contribution = _pasted(datanet, bob, ["the cliff is north"], accept_by=owner)
    snapshot = datanet_services.snapshot_freeze(datanet=datanet, user=owner)
    version = stand_in_version(owner=builder, base_model=default_base(), name="lantern-v1")
    version.snapshots.add(snapshot)
    version.published = True
    version.save(update_fields=["published"])
    return World(
        owner=owner,
        curator=curator,
        alice=alice,
        bob=bob,
        builder=builder,
        asker=asker,
        stranger=stranger,
        staff=staff,
        datanet=datanet,
        alice_contribution=alice_contribution,
        bob_contribution=bob_contribution,
        snapshot=snapshot,
        version=version,
        alice_wallet=alice_wallet,
        builder_wallet=builder_wallet,
    )


def paid_run(world: World, *, alice: Fraction = Fraction(3, 4), bob: Fraction = Fraction(1, 4), fee: int = FEE) -> Any:
    """A finished run of the world's version whose fee is split into accruals exactly as attribution does."""
    run = InferenceRun.objects.create(
        user=world.asker,
        version=world.version,
        base_model=world.version.base_model,
        kind=InferenceRun.Kind.CHAT,
        messages=[{"role": "user", "content": "What does the lantern burn?"}],
        answer="The lantern burns oil.",
        finish_reason="stop",
        status=InferenceRun.Status.SUCCEEDED,
    )
    contributions = {c.id: c for c in (world.alice_contribution, world.bob_contribution)}
    shares = {world.alice_contribution.id: alice, world.bob_contribution.id: bob}
    split = split_fee(fee, {c: s for c, s in shares.items() if s}, REWARD_POLICY_V1)
    rows = [
        RewardAccrual(
            run=run,
            recipient_kind=RewardAccrual.Kind.CONTRIBUTOR,
            user=contributions[c].contributor,
            contribution=contributions[c],
            datanet=world.datanet,
            amount=amount,
            share=f"{shares[c].numerator}/{shares[c].denominator}",
            policy_version=split.policy_version,
        )
        for c, amount in split.contributors
        if amount
    ]
    rows.append(
        RewardAccrual(run=run, recipient_kind=RewardAccrual.Kind.BUILDER, user=world.builder, amount=split.builder,
                      share="1/5", policy_version=split.policy_version)
    )  # fmt: skip
    rows.append(
        RewardAccrual(run=run, recipient_kind=RewardAccrual.Kind.POOL, amount=split.protocol, share="1/10",
                      policy_version=split.policy_version)
    )  # fmt: skip
    RewardAccrual.objects.bulk_create(rows)
    return run


def owed(user: Any, *, open_only: bool = False) -> int:
    accruals = RewardAccrual.objects.filter(user=user)
    if open_only:
        accruals = accruals.filter(epoch__isnull=True)
    return sum(int(a.amount) for a in accruals)


def publish(epoch: Any, timeout: float = 10) -> Any:
    """Send the epoch and run the confirmation pass until it is confirmed (the beat would, every 5 s)."""
    import time

    from ledger.models import RewardEpoch
    from ledger.rewards_services import epoch_send, rewards_confirm

    epoch_send(epoch_id=epoch.id)
    deadline = time.monotonic() + timeout
    while True:
        rewards_confirm()
        epoch.refresh_from_db()
        if epoch.status != RewardEpoch.Status.SUBMITTED or time.monotonic() > deadline:
            assert epoch.status == RewardEpoch.Status.CONFIRMED, epoch.last_error
            return epoch
        time.sleep(0.05)
