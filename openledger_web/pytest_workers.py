"""pytest plugin (``-p``, in pyproject's addopts): under pytest-xdist, each worker process gets services of its own.

pytest-django gives each xdist worker a test database of its own (``test_<name>_gw0``, ``_gw1``...); the rest is
here, set in the environment before Django reads its settings, so that everything derived from them, and every
process a test starts (Celery workers, gunicorn, ``manage.py``), follows: worker ``gwK`` has ``DATA_DIR/gwK`` (media,
models, the filesystem broker, the warm cache) and, on Redis, the broker's database number plus K (scripts/test.sh
gives 14, so 14 and 15 with ``-n 2``). The session's anvil already runs on a free port per process.

When the workers are at least as many as the cores, each runs torch on one thread (``OMP_NUM_THREADS=1``, inherited
by the processes it starts) unless the variable is set: two processes of two threads each on two cores spend their
time waiting for each other's threads. Without xdist (or with ``-n 0``) nothing changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

REDIS_DATABASES = 16  # redis-server's default `databases`


def worker_index() -> int:
    """This process's xdist worker number (``gw3`` is 3), 0 outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker.removeprefix("gw")) if worker.startswith("gw") else 0


def _broker_url_for(url: str, index: int) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return url  # the filesystem broker lives under DATA_DIR, which is the worker's own already
    db = int(parts.path.strip("/") or 0) + index
    if db >= REDIS_DATABASES:
        raise pytest.UsageError(f"xdist worker {index} would need Redis database {db}; give fewer workers (-n)")
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Runs in each process before pytest-django loads the settings (its own hook of the same name is not tryfirst)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    index = worker_index()
    data_dir = Path(os.environ.get("DATA_DIR") or Path(__file__).resolve().parent.parent / "var") / worker
    os.environ["DATA_DIR"] = str(data_dir)
    if os.environ.get("CELERY_BROKER_URL"):
        os.environ["CELERY_BROKER_URL"] = _broker_url_for(os.environ["CELERY_BROKER_URL"], index)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers >= (os.cpu_count() or 1):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
