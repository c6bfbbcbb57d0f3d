"""Fixtures shared by every app's tests: real services, no mocks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

pytest_plugins: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _broker_is_clean() -> None:
    """Drop messages a crashed earlier run left in the test broker, so no stale task reaches a new worker."""
    if settings.BROKER_KIND == "redis":
        import redis

        redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


@pytest.fixture
def celery_worker(transactional_db: None) -> Iterator[object]:
    """A real Celery worker process consuming every queue, on the test database and broker."""
    from openledger_web.testing import celery_worker_process

    with celery_worker_process() as proc:
        yield proc
