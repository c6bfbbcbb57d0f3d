"""Fixtures shared by every app's tests: real services, no mocks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

pytest_plugins: list[str] = ["openledger_web.browser", "ledger.testing"]


TEST_REDIS_DB = 14


@pytest.fixture(scope="session", autouse=True)
def _broker_is_clean() -> None:
    """Drop messages a crashed earlier run left in the test broker, so no stale task reaches a new worker.

    Only the test database (scripts/test.sh points the broker at it) is flushed, never the one `make run` uses.
    """
    if settings.BROKER_KIND == "redis":
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        if client.connection_pool.connection_kwargs.get("db") == TEST_REDIS_DB:
            client.flushdb()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:  # type: ignore[no-untyped-def]
    # the production hasher costs ~0.7 s a password on this machine; tests create hundreds of users
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def celery_worker(transactional_db: None) -> Iterator[object]:
    """A real Celery worker process consuming every queue, on the test database and broker."""
    from openledger_web.testing import celery_worker_process

    with celery_worker_process() as proc:
        yield proc
