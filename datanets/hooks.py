"""Datanets' extension points for the apps above it, which register in their ``AppConfig.ready()``.

- ``records revoked`` receivers: called once a revocation (or a later erasure) has committed, with the revocations'
  ids and whether their bytes were erased. ModelFactory flags the versions trained on the records and tells their
  owners; attribution takes erased records out of its indexes and its stored spans. A receiver does its own work in
  the background when it is long (a Celery task), so the person who revoked is answered at once. What a receiver
  raises is logged, never the revocation's failure: the revocation has committed, and the receivers' work can be
  done again (``manage.py revocations_replay`` calls them again for every revocation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from common.registry import Registry

logger = logging.getLogger(__name__)

RecordsRevoked = Callable[..., None]  # receiver(*, revocation_ids: Sequence[int], erased: bool)

_revoked: Registry[RecordsRevoked] = Registry()


def records_revoked_connect(receiver: RecordsRevoked) -> None:
    """Call ``receiver(revocation_ids=, erased=)`` after each revocation or erasure commits (once per receiver)."""
    _revoked.add(receiver)


def records_revoked_receivers() -> tuple[RecordsRevoked, ...]:
    return _revoked.all()


def records_revoked_send(*, revocation_ids: Sequence[int], erased: bool) -> None:
    """Call every receiver; each one's failure is logged and the others still run."""
    for receiver in records_revoked_receivers():
        try:
            receiver(revocation_ids=list(revocation_ids), erased=erased)
        except Exception:
            logger.exception("a records-revoked receiver failed: %r (revocations %s)", receiver, revocation_ids)
