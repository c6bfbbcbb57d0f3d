"""The outbox's kinds as one fixture, so that the nonce tests run against each: ``kind`` is an anchor, a reward epoch
or a relayed claim, each reached through its public services and its registered ``transactions.Spec``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account

from ledger import deployments, rewards_services, services, tasks, transactions
from ledger.models import RewardClaim, RewardEpoch, SignedTransaction


@dataclass
class Kind:
    """One kind of outbox row: ``make(n)`` writes a pending one, ``send``/``dispatch``/``confirm`` are the public
    services that move it, ``target`` is what it is sent to (the deployment, the reward contracts)."""

    name: str
    spec: transactions.Spec
    make: Callable[[int], SignedTransaction]
    send: Callable[[int], SignedTransaction | None]
    dispatch: Callable[..., dict[str, int]]
    confirm: Callable[[], dict[str, int]]
    send_task: Any
    target: Any

    @property
    def model(self) -> type[SignedTransaction]:
        return self.spec.model

    def target_of(self, row: SignedTransaction) -> Any:
        return getattr(row, self.spec.target_field)

    def confirmed(self, row: SignedTransaction, timeout: float = 10) -> SignedTransaction:
        """Run the confirmation pass until ``row`` is no longer submitted (the beat would, every 5 s)."""
        deadline = time.monotonic() + timeout
        while True:
            self.confirm()
            row.refresh_from_db()
            if row.status != SignedTransaction.Status.SUBMITTED or time.monotonic() > deadline:
                return row
            time.sleep(0.05)


def _anchor(n: int) -> SignedTransaction:
    return services.anchor_request(
        kind="snapshot", subject_id=services.anchor_subject_id("test", n), root=f"0x{n:064x}", uri=f"test://{n}"
    )


def _epoch(n: int) -> SignedTransaction:
    return rewards_services.epoch_publish(entries=[(Account.create().address, n + 1)])


def _published_epoch(entries: int) -> RewardEpoch:
    epoch = rewards_services.epoch_publish(entries=[(Account.create().address, 10 + i) for i in range(entries)])
    rewards_services.epoch_send(epoch_id=epoch.id)
    deadline = time.monotonic() + 10
    while epoch.status != RewardEpoch.Status.CONFIRMED and time.monotonic() < deadline:
        rewards_services.rewards_confirm()
        epoch.refresh_from_db()
    assert epoch.status == RewardEpoch.Status.CONFIRMED, epoch.last_error
    return epoch


def _claims_of(epoch: RewardEpoch) -> Callable[[int], SignedTransaction]:
    """Pending claims of the epoch's entries, one entry each (claim_relay would also send at once)."""
    entries = itertools.cycle(list(epoch.entries.order_by("index")))

    def make(n: int) -> SignedTransaction:
        claim = RewardClaim.objects.create(entry=next(entries), requested_by=f"test:{n}")
        transactions.created(rewards_services.CLAIM, claim)
        return claim

    return make


KINDS = ["anchor", "epoch", "claim"]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, deployed_chain: Any) -> Kind:
    if request.param == "anchor":
        return Kind(
            name="anchor",
            spec=services.ANCHOR,
            make=_anchor,
            send=lambda row_id, **kw: services.anchor_send(anchor_id=row_id, **kw),
            dispatch=services.anchors_dispatch,
            confirm=services.anchors_confirm,
            send_task=tasks.anchor_send_task,
            target=deployed_chain,
        )
    rewards = deployments.ensure_rewards_deployed()
    common = {"dispatch": rewards_services.rewards_dispatch, "confirm": rewards_services.rewards_confirm}
    if request.param == "epoch":
        return Kind(
            name="epoch",
            spec=rewards_services.EPOCH,
            make=_epoch,
            send=lambda row_id, **kw: rewards_services.epoch_send(epoch_id=row_id, **kw),
            send_task=tasks.epoch_send_task,
            target=rewards,
            **common,
        )
    return Kind(
        name="claim",
        spec=rewards_services.CLAIM,
        make=_claims_of(_published_epoch(8)),
        send=lambda row_id, **kw: rewards_services.claim_send(claim_id=row_id, **kw),
        send_task=tasks.claim_send_task,
        target=rewards,
        **common,
    )
