"""The state of every real part, as /healthz and the home page report it."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.db import connection
from django.utils import timezone
from kombu import Connection

from inference.selectors import engine_states
from ledger import chain
from modelfactory import weights
from outbox.selectors import outbox_backlog

from .models import WorkerHeartbeat

QUEUES = ("default", "chain", "training", "inference", "attribution")
# written by scripts/run.py's supervisor under DATA_DIR, rewritten at least every 5 s while it runs
SUPERVISOR_STATUS_FILE = "run/status.json"
SUPERVISOR_STALE_SECONDS = 30


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = check()
    except Exception as e:  # a health check reports failures; it never raises them
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _redacted(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def database_health() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True, "vendor": connection.vendor, "name": str(connection.settings_dict["NAME"])}


def broker_health() -> dict[str, Any]:
    url = settings.CELERY_BROKER_URL
    with Connection(url, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS, connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        if settings.BROKER_KIND == "filesystem":
            # the filesystem transport "connects" to anything: prove the folder is there and writable
            folder = settings.BROKER_DIR / "queue"
            if not folder.is_dir():
                raise RuntimeError(f"broker folder {folder} does not exist")
    return {"ok": True, "kind": settings.BROKER_KIND, "url": _redacted(url)}


def live_workers() -> dict[str, list[str]]:
    """The Celery workers whose heartbeat is fresh (within 3 heartbeats), by node name, with the queues each
    consumes: the liveness /healthz reports and inference routes runs by (``inference.hooks.live_workers``)."""
    fresh_after = timezone.now() - timedelta(seconds=3 * settings.WORKER_HEARTBEAT_SECONDS)
    rows = WorkerHeartbeat.objects.filter(last_seen__gte=fresh_after).values_list("hostname", "queues")
    return {hostname: list(queues or []) for hostname, queues in rows}


def workers_health() -> dict[str, Any]:
    fresh_after = timezone.now() - timedelta(seconds=3 * settings.WORKER_HEARTBEAT_SECONDS)
    workers = list(WorkerHeartbeat.objects.filter(last_seen__gte=fresh_after).order_by("hostname"))
    served = {queue for worker in workers for queue in worker.queues}
    missing = [queue for queue in QUEUES if queue not in served]
    result: dict[str, Any] = {
        "ok": not missing,
        "workers": [
            {
                "hostname": w.hostname,
                "queues": w.queues,
                "pid": w.pid,
                "last_seen": w.last_seen.isoformat(),
                "devices": w.devices,
            }
            for w in workers
        ],
    }
    if missing:
        result["error"] = "no live worker consumes " + ", ".join(missing)
    return result


def engines_health() -> dict[str, Any]:
    """Every inference engine of every live inference worker: its worker and node, base model, device, the
    adapters it holds and its queue. Informational (an engine loads on its worker's first run): never a failure."""
    engines = [
        {
            "node": state.get("node", ""),
            "worker": state.get("worker", ""),
            "base_model": state.get("base_model"),
            "device": state.get("device"),
            "adapters": [adapter.get("adapter_id") for adapter in state.get("adapters", [])],
            "adapter_count": state.get("adapter_count", 0),
            "queue_length": state.get("queue_length", 0),
            "running": state.get("running", 0),
            "rss_bytes": state.get("memory", {}).get("rss_bytes"),
            "published_at": state.get("published_at"),
        }
        for state in engine_states()
    ]
    return {"ok": True, "count": len(engines), "engines": engines}


def chain_health() -> dict[str, Any]:
    return chain.chain_status()


def model_health() -> dict[str, Any]:
    return weights.default_model_status()


def supervisor_status() -> dict[str, Any] | None:
    """What `make run`'s supervisor last wrote about its processes, or None when no supervisor runs here."""
    path = settings.DATA_DIR / SUPERVISOR_STATUS_FILE
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if time.time() - float(status.get("updated_at", 0)) > SUPERVISOR_STALE_SECONDS:
        return None  # left behind by a supervisor that stopped (or a process manager runs the show now)
    return status


def processes_health(status: dict[str, Any]) -> dict[str, Any]:
    processes = status.get("processes", {})
    result: dict[str, Any] = {"ok": True, "supervisor_pid": status.get("supervisor_pid"), "processes": processes}
    if gave_up := sorted(name for name, p in processes.items() if p.get("state") == "gave_up"):
        result["ok"] = False
        result["error"] = "crash loop, not restarted: " + ", ".join(gave_up)
    return result


def outbox_health() -> dict[str, Any]:
    backlog = outbox_backlog()
    result = {"ok": backlog["stale"] == 0, **backlog}
    if backlog["stale"]:
        result["error"] = (
            f"{backlog['stale']} Celery messages unsent for over {backlog['stale_after_seconds']} s: "
            "is the broker reachable, and beat running?"
        )
    return result


CHECKS = {
    "database": database_health,
    "broker": broker_health,
    "workers": workers_health,
    "engines": engines_health,
    "chain": chain_health,
    "model": model_health,
    "outbox": outbox_health,
}


def system_health() -> dict[str, Any]:
    """Every component's state; ``ok`` is true only when all of them are up.

    Under `make run` a ``processes`` component lists each supervised process (pid, state, restarts, last exit
    status, running since); a process the supervisor gave up on makes it fail.
    """
    components = {name: _timed(check) for name, check in CHECKS.items()}
    if (status := supervisor_status()) is not None:
        components["processes"] = _timed(lambda: processes_health(status))
    return {
        "ok": all(c["ok"] for c in components.values()),
        "checked_at": timezone.now().isoformat(),
        "components": components,
    }
