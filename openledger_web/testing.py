"""Helpers for tests that need the real services: a Celery worker in its own process on the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import requests
from django.conf import settings
from django.db import connection

from ledger.testing import free_port, stop_process
from openledger_web.models import WorkerHeartbeat

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """The URL of the database the test session created (test_<name>), for processes started by tests."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def service_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=test_database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        DATA_DIR=str(settings.DATA_DIR),
        EVM_RPC_URL=settings.EVM_RPC_URL,
        EVM_CHAIN_ID=str(settings.EVM_CHAIN_ID),
        WORKER_HEARTBEAT_SECONDS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


@contextmanager
def celery_worker_process(
    *,
    queues: str = "default,chain,training,inference,attribution",
    name: str = "test",
    timeout: float = 60,
    pool: str = "prefork",
    concurrency: int = 1,
    **env: str,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a real ``celery worker`` against the test database and broker until the block ends.

    Waits until the worker's heartbeat row appears, so the caller may enqueue at once. Tests using it must commit
    their data (``transactional_db``), since the worker reads through its own connection.
    """
    hostname = f"{name}-{os.getpid()}-{time.monotonic_ns()}@localhost"
    log = Path(settings.DATA_DIR) / f"worker-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "openledger_web", "worker", "-Q", queues, "-c", str(concurrency),
             "-P", pool, "-n", hostname, "-l", "INFO", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=service_env(**env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not WorkerHeartbeat.objects.filter(hostname=hostname).exists():
            if proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"celery worker did not report ready within {timeout} s; see {log}")
            time.sleep(0.2)
        yield proc
    finally:
        stop_process(proc, timeout=20)


ASGI_SERVER = ["openledger_web.asgi", "-k", "uvicorn_worker.UvicornWorker", "--workers", "1"]  # as `make run` serves
WSGI_GTHREAD_SERVER = ["openledger_web.wsgi", "--worker-class", "gthread", "--workers", "1", "--threads", "4"]


@contextmanager
def gunicorn_process(
    *, log: Path, env: dict[str, str] | None = None, server: list[str] = ASGI_SERVER, ready_path: str = "/healthz"
) -> Iterator[str]:
    """A real gunicorn serving the app (``server``: the app module and worker options) on a free port, with ``env``
    (default: ``service_env()``, the test database), logging to ``log``; yields its base URL once ``ready_path``
    answers, and stops it when the block ends."""
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *server, "-b", f"127.0.0.1:{port}", "--timeout", "60",
             "--no-control-socket"],  # the default socket path in $HOME is shared by every gunicorn here
            cwd=ROOT, env=env if env is not None else service_env(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{url}{ready_path}", timeout=5)
                break
            except (requests.ConnectionError, requests.Timeout):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start; see {log}") from None
                time.sleep(0.2)
        yield url
    finally:
        stop_process(proc, timeout=10)
