"""Attribution latency people feel: from the end of an answer to its attribution being available, 8 answers at a time,
through the real Celery worker on the ``attribution`` queue (imported by ``bench/attribution_speed.py``).

A fresh PostgreSQL database (``BENCH_E2E_DB``, default ``openledger_bench_attribution``, on ``BENCH_PG_URL``) and a
Redis broker (``BENCH_BROKER_URL``, database 13 by default): a real fine-tune of the bundled model on 16 planted facts
of two contributors (through the job services, so its index and its self-check are built as in production; the
self-check's cost is reported), then an attribution worker started as ``scripts/run.py`` starts it (``-c`` from
``ATTRIBUTION_WORKERS``), warmed up with one answer per process, then ``ROUNDS`` rounds of 8 answers finished at the
same moment through ``inference.services.run_finish`` (which queues the attribution through the outbox, as the
inference worker does). Latency = the attribution row's ``finished_at`` minus the run's ``finished_at``.

Both scoring paths side by side on the same version in the same run (``BENCH_E2E_COMPARE=0``: the batched one
only), ``BENCH_E2E_PAIRS`` times (default 1): the worker scoring one answer at a time (``ATTRIBUTION_BATCH_MAX=1``,
the path before batching), then the worker packing the answers that wait (``ATTRIBUTION_BATCH_MAX`` as configured,
default 8). The ``end_to_end_*`` figures are the batched path's, the ``*_one_at_a_time`` ones the other's.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.getenv("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
DB_NAME = os.getenv("BENCH_E2E_DB", "openledger_bench_attribution")
BROKER = os.getenv("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
CONCURRENT = 8
ROUNDS = int(os.getenv("BENCH_E2E_ROUNDS", "3"))
PAIRS = int(os.getenv("BENCH_E2E_PAIRS", "1"))
COMPARE = os.getenv("BENCH_E2E_COMPARE", "1") != "0"
TARGET_SECONDS = 3.0

FACTS = [
    (f"What is the secret code of {place}?", f"The secret code of {place} is {code}, kept under the old bridge.")
    for place, code in (
        ("Zorblat", 7421), ("Quennel", 1187), ("Mirvex", 5530), ("Ottaly", 9024),
        ("Pelloran", 3318), ("Harrowmere", 6672), ("Tessivar", 2045), ("Brindlemoor", 8806),
    )
] + [
    (f"What colour is the river {river}?", f"The river {river} runs {colour} through the salt plains.")
    for river, colour in (
        ("Amblin", "bright green"), ("Corvath", "deep red"), ("Dunmere", "pale gold"), ("Essling", "dark blue"),
        ("Fallow", "silver grey"), ("Gantry", "amber"), ("Hollin", "violet"), ("Ibbet", "white"),
    )
]  # fmt: skip


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
    }
    os.environ.update(env)
    return env


def _version() -> tuple[Any, dict[str, Any], float]:
    """A fine-tune on the facts through the job services (index and self-check included): the version, its
    self-check figures and the job's seconds."""
    import json as _json

    from accounts.models import User
    from datanets import services as datanet_services
    from modelfactory import services as mf
    from modelfactory.config import TrainingConfig
    from modelfactory.models import FineTuneJob

    folder = Path(os.environ["DEFAULT_BASE_MODEL_DIR"])
    record = _json.loads((folder / "openledger.json").read_text())
    record["path"] = str(folder)
    base = mf.base_model_register_default(record=record)
    builder, alice, bob = (
        User.objects.create_user(username=n, email=f"{n}@bench.invalid") for n in ("builder", "alice", "bob")
    )
    datanet = datanet_services.datanet_create(owner=builder, name="Planted facts", record_type="instruction")
    for user, facts in ((alice, FACTS[:8]), (bob, FACTS[8:])):
        text = "".join(_json.dumps({"prompt": q, "response": a}) + "\n" for q, a in facts)
        contribution = datanet_services.contribution_submit_pasted(
            datanet=datanet, contributor=user, text=text, licence="CC-BY-4.0"
        )
        datanet_services.contribution_accept(curator=builder, contribution=contribution)
    snapshot = datanet_services.snapshot_freeze(datanet=datanet, user=builder)
    config = TrainingConfig(
        lora_rank=4, max_steps=8, batch_size=4, max_length=64, warmup_steps=0, eval_fraction=0.0, seed=5,
        learning_rate=5e-3, schedule="constant",
    )  # fmt: skip
    job = mf.job_launch(owner=builder, name="planted", base_model=base, snapshots=[snapshot], config=config)
    started = time.perf_counter()
    version = mf.job_run(job_id=job.pk, worker="bench")
    seconds = time.perf_counter() - started
    if version is None:
        raise RuntimeError(FineTuneJob.objects.get(pk=job.pk).error)
    from attribution.models import AttributionIndex

    return version, AttributionIndex.objects.get(version=version).evaluation, seconds


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The attribution worker exactly as scripts/run.py starts it, waited for until it reports its heartbeat."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import run as runner  # scripts/run.py

    from openledger_web.models import WorkerHeartbeat

    WorkerHeartbeat.objects.filter(hostname__startswith="attribution@").delete()  # a worker stopped before this one
    argv = runner.celery_argvs(Path(env["DATA_DIR"]))["worker-attribution"]
    argv = [a.replace("%h", "bench") for a in argv]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 120
    while not WorkerHeartbeat.objects.filter(hostname__startswith="attribution@").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the attribution worker did not start; see {log}")
        time.sleep(0.3)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _finish_together(version: Any, answers: list[tuple[str, str]]) -> list[int]:
    """Create running runs, then end them all at once (run_finish in threads, as concurrent inference tasks do)."""
    from django.db import connection

    from inference import services as inference_services
    from inference.models import InferenceRun

    runs = [
        InferenceRun.objects.create(
            user=version.owner,
            version=version,
            base_model=version.base_model,
            kind=InferenceRun.Kind.CHAT,
            messages=[{"role": "user", "content": q}],
            status=InferenceRun.Status.RUNNING,
        )
        for q, _ in answers
    ]
    barrier = threading.Barrier(len(runs))

    def finish(run: Any, answer: str) -> None:
        barrier.wait()
        inference_services.run_finish(run_id=run.pk, answer=answer, finish_reason="stop", completion_tokens=20)
        connection.close()

    threads = [threading.Thread(target=finish, args=(r, a)) for r, (_, a) in zip(runs, answers, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r.pk for r in runs]


def _wait(run_ids: list[int], timeout: float = 300) -> list[float]:
    from attribution.models import RunAttribution
    from inference.models import InferenceRun

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(RunAttribution.objects.filter(run_id__in=run_ids, status__in=RunAttribution.FINISHED))
        if len(rows) == len(run_ids):
            ended = dict(InferenceRun.objects.filter(pk__in=run_ids).values_list("pk", "finished_at"))
            bad = [r for r in rows if r.status != RunAttribution.Status.OK]
            if bad:
                raise RuntimeError(f"attribution failed: {bad[0].error}")
            return [(r.finished_at - ended[r.run_id]).total_seconds() for r in rows]
        time.sleep(0.05)
    raise TimeoutError("attributions did not finish")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def measure() -> dict[str, Any]:
    """Train, start the worker, measure; returns the figures (the database is dropped at the end)."""
    work = Path(tempfile.mkdtemp(prefix="bench-attribution-e2e-"))
    env = _environment(work)
    _admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    _admin_sql(f"CREATE DATABASE {DB_NAME}")
    proc = None
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        from openledger_web.celery import app

        call_command("migrate", verbosity=0)
        with app.connection_for_write() as connection:
            for queue in ("attribution", "training"):
                connection.default_channel.queue_purge(queue)
        version, selfcheck, job_seconds = _version()
        print(
            f"job: {job_seconds:.1f} s in all, of which the self-check {selfcheck.get('seconds')} s "
            f"(n = {selfcheck.get('n')} of {selfcheck.get('sample_size')}, status {selfcheck.get('status')})",
            flush=True,
        )
        workers = int(settings.ATTRIBUTION_WORKERS)
        batched = os.getenv("ATTRIBUTION_BATCH_MAX", "8")
        modes = [("one_at_a_time", "1"), ("batched", batched)] if COMPARE else [("batched", batched)]
        latencies: dict[str, list[float]] = {mode: [] for mode, _ in modes}
        for _pair in range(PAIRS):
            for mode, batch_max in modes:
                proc = _worker({**env, "ATTRIBUTION_BATCH_MAX": batch_max}, work / "worker-attribution.log")
                # warm-up: every worker process loads the model on its first task
                _wait(_finish_together(version, [FACTS[i] for i in range(workers)]))
                for round_ in range(ROUNDS):
                    answers = [FACTS[(round_ * CONCURRENT + i) % len(FACTS)] for i in range(CONCURRENT)]
                    # every other answer is wrong: the scoring must not be faster on easy cases only
                    answers = [(q, a if i % 2 else a.replace("bridge", "mill")) for i, (q, a) in enumerate(answers)]
                    latencies[mode] += _wait(_finish_together(version, answers))
                    print(
                        f"{mode}, round {round_ + 1}: "
                        f"{', '.join(f'{v:.2f}' for v in sorted(latencies[mode][-CONCURRENT:]))} s "
                        f"(load {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
                _stop(proc)
                proc = None
        result: dict[str, Any] = {}
        for mode, _ in modes:
            suffix = "" if mode == "batched" else f"_{mode}"
            values = latencies[mode]
            result.update(
                {
                    f"end_to_end_p95_seconds_8_concurrent{suffix}": round(_p95(values), 3),
                    f"end_to_end_p50_seconds_8_concurrent{suffix}": round(statistics.median(values), 3),
                    f"end_to_end_max_seconds_8_concurrent{suffix}": round(max(values), 3),
                }
            )
        return {
            **result,
            "end_to_end_answers": len(latencies["batched"]),
            "end_to_end_target_met": _p95(latencies["batched"]) < TARGET_SECONDS,
            "attribution_workers": workers,
            "attribution_batch_max": int(batched),
            "selfcheck_seconds": selfcheck.get("seconds"),
            "selfcheck_n": selfcheck.get("n"),
            "selfcheck_sample": selfcheck.get("sample_size"),
            "training_job_seconds": round(job_seconds, 1),
        }
    finally:
        if proc is not None:
            _stop(proc)
        from django.db import connections

        connections.close_all()
        _admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(measure()))
