"""Fixtures shared by every app's tests: real services, no mocks."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import connection

from openledger_web.pytest_workers import worker_index

pytest_plugins: list[str] = ["openledger_web.browser", "ledger.testing"]


TEST_REDIS_DB = 14  # scripts/test.sh's; an xdist worker gwK has 14 + K (openledger_web.pytest_workers)


def pytest_configure(config: pytest.Config) -> None:
    # xdist would hand out the test files by how many tests they hold, most first: the files of one or two long
    # tests (a worker, a browser, a broker outage) then come last and one process ends minutes after the other
    if getattr(config.option, "dist", "no") in ("loadfile", "loadscope"):
        config.option.loadscopereorder = False


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist, the test files with a slow or browser test go first and the many quick files fill in
    behind them, so the two processes end close together (about a minute less of the suite on two cores). Each
    file keeps its tests' order, and so does each group of files; a run in one process is left as collected."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    heavy = {item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("browser")}
    items.sort(key=lambda item: item.path not in heavy)


@pytest.fixture(scope="session", autouse=True)
def _broker_is_clean() -> None:
    """Drop messages a crashed earlier run left in the test broker, so no stale task reaches a new worker.

    Only the test database (scripts/test.sh points the broker at it; an xdist worker's own, see
    openledger_web.pytest_workers) is flushed, never the one `make run` uses.
    """
    if settings.BROKER_KIND == "redis":
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        if client.connection_pool.connection_kwargs.get("db") == TEST_REDIS_DB + worker_index():
            client.flushdb()


@pytest.fixture(scope="session", autouse=True)
def _flush_by_delete() -> Iterator[None]:
    """Empty the tables after a transactional test (a Celery worker's, a browser's) with DELETE, not TRUNCATE.

    Django's ``flush`` truncates all ~60 tables in one statement: 3.7-4.6 s on this machine under load, paid by every
    one of the suite's transactional tests, while deleting the few rows such a test leaves takes 0.2-0.3 s. The
    tables end just as empty, sequences are not reset by either, and the foreign keys Django makes on PostgreSQL are
    deferrable, so the order of the deletes does not matter within the flush's one transaction. A flush that resets
    sequences or cascades (neither is used here) keeps Django's TRUNCATE.
    """
    if connection.vendor != "postgresql":
        yield
        return
    operations = type(connection.ops)
    truncate = operations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):  # type: ignore[no-untyped-def]
        if reset_sequences or allow_cascade or not tables:
            return truncate(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        deletes = [f"{style.SQL_KEYWORD('DELETE FROM')} {style.SQL_FIELD(self.quote_name(t))};" for t in tables]
        return [f"{style.SQL_KEYWORD('SET CONSTRAINTS ALL DEFERRED')};", *deletes]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(operations, "sql_flush", sql_flush)
        yield


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
