"""Training estimates against the clock: three job sizes through the real Celery worker of the ``training`` queue.

A fresh PostgreSQL database (``openledger_bench_estimate`` on ``BENCH_PG_URL``) and a Redis broker
(``BENCH_BROKER_URL``, database 9 by default); a training worker started as ``scripts/run.py`` starts it (the bundled
SmolLM2-135M, with whatever ``OMP_NUM_THREADS`` this process has: the app's workers set none). For each size, small
to larger: the estimate the fine-tune form shows (its live panel, posted as the browser posts it), the launch through
the form, and the wall time from the launch to the version being stored (the job succeeded: its version, manifest,
anchor request and attribution index exist). The first job meets a worker that has measured nothing: its estimate is
the fallback (``modelfactory.estimates.FALLBACK``), reported as the calibrating run; the next two use what the worker
published after the jobs before them. The version self-check, which runs after the version is stored, is off
(``ATTRIBUTION_SELFCHECK_SAMPLE=0``) so that it does not hold the worker while the next job waits.

Error = |estimate - actual| / actual. The last line is JSON with ``estimate_error_max`` over the measured runs (target
at most 0.35) and ``estimate_error_calibrating`` for the first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.getenv("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
DB_NAME = "openledger_bench_estimate"
BROKER = os.getenv("BENCH_BROKER_URL", "redis://127.0.0.1:6379/9")
TARGET = 0.35
# (name, records, epochs): one epoch over 90% of the records in batches of 4, the rest held out for evaluation
SIZES = [("small", 12, 1), ("medium", 24, 1), ("larger", 48, 1)]
PLACES = ["Zorblat", "Quennel", "Mirvex", "Ottaly", "Pelloran", "Harrowmere", "Tessivar", "Brindlemoor"]


def _admin_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def _environment(work: Path) -> dict[str, str]:
    env = {
        "DJANGO_SETTINGS_MODULE": "openledger_web.settings",
        "DATA_DIR": str(work),
        "DATABASE_URL": f"{PG_URL}/{DB_NAME}",
        "CELERY_BROKER_URL": BROKER,
        "DEFAULT_BASE_MODEL_DIR": os.getenv("DEFAULT_BASE_MODEL_DIR", str(ROOT / "var/models/smollm2-135m-instruct")),
        "PYTHONUNBUFFERED": "1",
        "WORKER_HEARTBEAT_SECONDS": "1",
        "ATTRIBUTION_SELFCHECK_SAMPLE": "0",
    }
    os.environ.update(env)
    return env


def _records(count: int, offset: int) -> list[dict[str, str]]:
    """Instruction records of a few lengths (a sentence to a short paragraph), none repeated."""
    rows = []
    for i in range(offset, offset + count):
        place = f"{PLACES[i % len(PLACES)]}-{i}"
        extra = " It was hidden there by the river keepers, who guard it through the long winter." * (i % 3)
        rows.append(
            {
                "prompt": f"What is the secret code of {place}?",
                "response": f"The secret code of {place} is {1000 + 7 * i}, kept under the old bridge.{extra}",
            }
        )
    return rows


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The training worker exactly as scripts/run.py starts it, waited for until its heartbeat names its device."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import run as runner  # scripts/run.py

    from modelfactory.models import TrainingWorker

    argv = [a.replace("%h", "bench") for a in runner.celery_argvs(Path(env["DATA_DIR"]))["worker-training"]]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 180
    while not TrainingWorker.objects.filter(hostname__startswith="training@").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the training worker did not start; see {log}")
        time.sleep(0.3)
    return proc


def _form(base: Any, snapshot: Any, name: str, epochs: int) -> dict[str, Any]:
    from modelfactory.forms import preset_initial

    data = {key: "" if value is None else value for key, value in preset_initial("quick-test").items()}
    data.update(
        name=name, start=f"base-{base.pk}", snapshots=[str(snapshot.pk)], formatting="auto", length_mode="epochs",
        epochs=epochs, eval_fraction=0.1, schedule="linear", warmup_steps=0,
    )  # fmt: skip
    return data


def _shown_estimate(client: Any, data: dict[str, Any]) -> tuple[float, str, str]:
    """The seconds, the worker line and the source the form's live panel shows for ``data``."""
    from django.urls import reverse

    body = client.post(reverse("modelfactory:job_estimate"), data, headers={"HX-Request": "true"}).content.decode()
    found = re.search(r'data-estimate-seconds="([0-9.]+)"', body)
    if found is None:
        raise RuntimeError(f"the form showed no estimate: {body[:2000]}")
    worker = re.search(r"data-estimate-worker>(.*?)<span", body, re.S)
    source = re.search(r"data-estimate-source>(.*?)</span>", body, re.S)
    text = re.sub(r"<[^>]+>", "", worker.group(1)).strip() if worker else ""
    return float(found.group(1)), text, source.group(1).strip() if source else ""


def _run_one(client: Any, base: Any, owner: Any, name: str, records: int, epochs: int, offset: int) -> dict[str, Any]:
    from django.urls import reverse

    from datanets import services as datanet_services
    from modelfactory.models import FineTuneJob

    datanet = datanet_services.datanet_create(owner=owner, name=f"Bench {name}", record_type="instruction")
    text = "".join(json.dumps(r) + "\n" for r in _records(records, offset))
    contribution = datanet_services.contribution_submit_pasted(
        datanet=datanet, contributor=owner, text=text, licence="CC-BY-4.0"
    )
    datanet_services.contribution_accept(curator=owner, contribution=contribution)
    snapshot = datanet_services.snapshot_freeze(datanet=datanet, user=owner)
    data = _form(base, snapshot, f"bench {name}", epochs)
    shown, worker_line, source = _shown_estimate(client, data)
    response = client.post(reverse("modelfactory:job_new"), data)
    if response.status_code != 302:
        raise RuntimeError(f"the launch was refused: {response.content.decode()[:2000]}")
    job = FineTuneJob.objects.order_by("-pk").first()
    assert job is not None
    while True:
        job.refresh_from_db()
        if job.is_finished:
            break
        time.sleep(0.5)
    if job.status != FineTuneJob.Status.SUCCEEDED:
        raise RuntimeError(f"job {name} {job.status}: {job.error}")
    actual = (job.finished_at - job.created_at).total_seconds()
    measured = {p["phase"]: round(p["seconds"], 1) for p in job.phases}
    return {
        "size": name,
        "records": records,
        "steps": job.total_steps,
        "estimate_s": shown,
        "estimate_at_launch_s": job.estimate.get("seconds"),
        "actual_s": round(actual, 1),
        "error": round(abs(shown - actual) / actual, 3),
        "calibrating": not job.estimate.get("measured"),
        "worker": worker_line,
        "source": source,
        "phases_estimated": job.estimate.get("phases"),
        "phases_measured": measured,
        "queue_wait_s": round((job.started_at - job.created_at).total_seconds(), 1),
    }


def measure() -> dict[str, Any]:
    """Start the worker, run the three sizes, return the figures (the database is dropped at the end)."""
    work = Path(tempfile.mkdtemp(prefix="bench-estimate-"))
    env = _environment(work)
    _admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    _admin_sql(f"CREATE DATABASE {DB_NAME}")
    proc = None
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.test import Client

        from accounts.models import User
        from modelfactory import services as mf
        from openledger_web.celery import app

        call_command("migrate", verbosity=0)
        with app.connection_for_write() as connection:
            connection.default_channel.queue_purge("training")
        folder = Path(os.environ["DEFAULT_BASE_MODEL_DIR"])
        record = json.loads((folder / "openledger.json").read_text())
        record["path"] = str(folder)
        base = mf.base_model_register_default(record=record)
        owner = User.objects.create_user(username="bench", email="bench@bench.invalid")
        client = Client(HTTP_HOST="localhost")  # the form as a browser on this machine posts it
        client.force_login(owner)
        proc = _worker(env, work / "worker-training.log")
        load = os.getloadavg()
        runs, offset = [], 0
        for name, records, epochs in SIZES:
            run = _run_one(client, base, owner, name, records, epochs, offset)
            offset += records
            runs.append(run)
            print(
                f"{name}: {records} records, {run['steps']} steps: estimated {run['estimate_s']:.0f} s, "
                f"took {run['actual_s']:.0f} s (error {run['error']:.2f}"
                f"{', calibrating run' if run['calibrating'] else ''})"
                f"\n  {run['worker']} {run['source']}\n  queue wait {run['queue_wait_s']} s"
                f"\n  estimated {run['phases_estimated']}\n"
                f"  measured  {run['phases_measured']}",
                flush=True,
            )
        measured = [r["error"] for r in runs if not r["calibrating"]]
        calibrating = [r["error"] for r in runs if r["calibrating"]]
        return {
            "estimate_error_max": max(measured) if measured else None,
            "estimate_error_calibrating": max(calibrating) if calibrating else None,
            "target": TARGET,
            "target_met": bool(measured) and max(measured) <= TARGET,
            "runs": [
                {k: r[k] for k in ("size", "records", "steps", "estimate_s", "actual_s", "error", "calibrating")}
                for r in runs
            ],
            "load_average_at_start": [round(x, 1) for x in load],
            "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        }
    finally:
        if proc is not None and proc.poll() is None:
            # the worker and its pool child share the session started for them: stop them together
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        from django.db import connections

        connections.close_all()
        _admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(measure()))
