"""Celery entry points for the outbox (queue ``chain``): ids in, a service call out.

Late acks everywhere: a worker killed mid-task leaves its message to be redelivered, and every service here is
safe to run twice.
"""

from __future__ import annotations

from celery import shared_task

from . import governance, rewards_services, services


@shared_task(acks_late=True)
def anchor_send_task(anchor_id: int) -> None:
    services.anchor_send(anchor_id=anchor_id)


@shared_task(acks_late=True)
def anchor_dispatch_task() -> dict[str, int]:
    return services.anchors_dispatch()


@shared_task(acks_late=True)
def anchor_confirm_task() -> dict[str, int]:
    return services.anchors_confirm()


@shared_task(acks_late=True)
def chain_check_task() -> None:
    services.chain_check()


@shared_task(acks_late=True)
def epoch_send_task(epoch_id: int) -> None:
    rewards_services.epoch_send(epoch_id=epoch_id)


@shared_task(acks_late=True)
def claim_send_task(claim_id: int) -> None:
    rewards_services.claim_send(claim_id=claim_id)


@shared_task(acks_late=True)
def rewards_dispatch_task() -> dict[str, int]:
    return rewards_services.rewards_dispatch()


@shared_task(acks_late=True)
def rewards_confirm_task() -> dict[str, int]:
    return rewards_services.rewards_confirm()


@shared_task(acks_late=True)
def governance_send_task(row_id: int) -> None:
    governance.send(row_id=row_id)


@shared_task(acks_late=True)
def governance_dispatch_task() -> dict[str, int]:
    return governance.governance_dispatch()


@shared_task(acks_late=True)
def governance_confirm_task() -> dict[str, int]:
    return governance.governance_confirm()
