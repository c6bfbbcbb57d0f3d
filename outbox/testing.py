"""Test helpers for broker outages: a real Redis of the test's own, and the web side's Celery app pointed at it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from celery import current_app


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Point this process's Celery app (the one ``send_task`` publishes through) at broker ``url`` in the block."""
    app = current_app
    # Celery reads CELERY_BROKER_URL from the environment before its configuration
    saved = os.environ.get("CELERY_BROKER_URL")

    def forget_connections() -> None:
        app._pool = None
        if "amqp" in app.__dict__:
            app.amqp._producer_pool = None

    os.environ["CELERY_BROKER_URL"] = url
    forget_connections()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = saved
        forget_connections()


class RedisServer:
    """A ``redis-server`` on ``port`` with an append-only file fsynced on every write (a broker that keeps what it
    took, as a production broker must), that a test may kill with SIGKILL and start again on the same data."""

    def __init__(self, *, port: int, folder: Path) -> None:
        self.port = port
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder), "--save", "",
                "--appendonly", "yes", "--appendfsync", "always"]  # fmt: skip
        with (self.folder / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start; see {self.folder / 'redis.log'}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
