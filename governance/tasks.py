"""Celery entry points of the governance mirror (queue ``chain``)."""

from __future__ import annotations

from celery import shared_task

from ledger import chain

from . import indexer


@shared_task(acks_late=True)
def index_task() -> dict[str, int]:
    """The beat's pass over the governance contracts' new confirmed blocks; a chain that is away skips a beat."""
    try:
        return indexer.index()
    except chain.ChainUnavailable:
        return {"events": 0, "blocks": 0, "rebuilt": 0}
