"""Throughput of two inference worker processes over one, side by side in one run (issue 19, item 4).

A fresh PostgreSQL database (``BENCH_WORKERS_DB``, default ``openledger_bench_workers``, on ``BENCH_PG_URL``) and a
Redis broker (``BENCH_BROKER_URL``, database 11 by default). The inference workers are started exactly as
``scripts/run.py`` starts them (``celery_argvs``: ``-P threads -c 32``, node names ``inference@bench``,
``inference-2@bench``), each with ``INFERENCE_TORCH_THREADS=1``. The load is a closed loop of ``CLIENTS`` clients,
each submitting a question to the default base model through ``inference.services.run_submit`` (so through the
routing ring, as the web does) and waiting for the run to finish before asking the next, ``RUNS`` runs a phase,
greedy, ``MAX_TOKENS`` new tokens at most. One poller thread reads the unfinished runs' rows every 0.25 s for all the
clients, and a client gives its database connection back after each submission: the load costs the machine little
CPU and few PostgreSQL connections (the workers' task threads hold none while their answers stream).

``CLIENTS`` defaults to twice ``INFERENCE_MAX_BATCH_SIZE`` (32 rows): the load a second worker is for, where one
worker's batch is full and runs wait for a row. At ``BENCH_WORKERS_CLIENTS=32`` one worker holds every client in its
one batch, and a second one only adds a core at the price of two half batches (docs/benchmarks.md has both).

Phases, one after another in this run: one worker; a second worker started (two); the second stopped (one again).
``two_workers_over_one`` is the two-worker throughput (completion tokens per second of wall time) over the mean of
the two one-worker phases, so a drift in the machine's load during the run counts against neither side. The target
is 1.6 on 2 cores; the load average is reported beside it (other work on the machine takes cores from both).

Then, for reference, a last phase: the one worker restarted with every core as its torch threads
(``INFERENCE_TORCH_THREADS`` = cores, what ``make run`` gives ``INFERENCE_WORKERS=1``), and
``two_workers_over_one_all_cores``, the two-worker throughput over it: which of the two ways to spend the cores
serves more. Each phase also reports where the CPU went (``worker_cpu_s``: each worker process's CPU seconds;
``busy_cores``: the whole machine's busy cores on average, other sessions' work included) and each worker engine's
mean rows per decode step (``rows_per_step``, from the state the workers publish).
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
DB_NAME = os.getenv("BENCH_WORKERS_DB", "openledger_bench_workers")
BROKER = os.getenv("BENCH_BROKER_URL", "redis://127.0.0.1:6379/11")
CLIENTS = int(os.getenv("BENCH_WORKERS_CLIENTS", "64"))
ALL_CORES_PHASE = os.getenv("BENCH_WORKERS_ALL_CORES", "1") == "1"
RUNS = int(os.getenv("BENCH_WORKERS_RUNS", "192"))
MAX_TOKENS = int(os.getenv("BENCH_WORKERS_MAX_TOKENS", "32"))
TARGET = 1.6
POLL_SECONDS = 0.25

QUESTIONS = [
    "What is the capital of France?", "Name three colours.", "Why is the sky blue?", "What do bees make?",
    "How many legs does a spider have?", "What is water made of?", "Name a large animal.", "What is a triangle?",
    "Where do penguins live?", "What is the largest planet?", "Name a musical instrument.", "What is ice?",
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
        "INFERENCE_HEARTBEAT_SECONDS": "1",
        "INFERENCE_TORCH_THREADS": "1",
        "INFERENCE_RATE_LIMIT": "1000000/minute",
    }
    os.environ.update(env)
    return env


def _start(name: str, env: dict[str, str], work: Path, threads: int = 1) -> subprocess.Popen[bytes]:
    """Inference worker ``name`` of scripts/run.py (``worker-inference``, ``worker-inference-2``), once it is live."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import run as runner  # scripts/run.py

    from inference import routing

    argv = [a.replace("%h", "bench") for a in runner.celery_argvs(work, inference=2)[name]]
    node = argv[argv.index("-n") + 1]
    log = work / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env, "INFERENCE_TORCH_THREADS": str(threads)},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while node not in routing.live_workers():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start; see {log}")
        time.sleep(0.3)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cpu_seconds(pid: int) -> float:
    """CPU time (user and system, every thread) of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores: not idle, not waiting for I/O) since it started."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _engine_counters() -> dict[str, tuple[int, int]]:
    """Each live worker node's engine counters as it last published them: (tokens, decode steps)."""
    from inference.selectors import engine_states

    return {state["node"]: (state["tokens"], state["steps"]) for state in engine_states() if state.get("node")}


def _ask(user: Any, base: Any, question: str) -> Any:
    from django.db import connection

    from inference import services

    # the clients submit concurrently, as the web's requests do (a first try of this bench had to serialize them:
    # the Redis client streams._client() made twice by threads that missed its cache together, and closed under a
    # pipeline when collected; fixed there)
    try:
        return services.run_submit(
            user=user, version=None, base_model=base, messages=[{"role": "user", "content": question}],
            options={"max_tokens": MAX_TOKENS, "temperature": 0},
        )  # fmt: skip
    finally:
        connection.close()


class _Poller:
    """One thread that reads the unfinished runs' rows every ``POLL_SECONDS`` and wakes each run's client when it
    ends: the clients wait on the row, not on every token's event (this one process holds all of them, and on a
    loaded machine its share of a core may limit them before the workers), and 64 clients polling alone would hold
    64 connections."""

    def __init__(self) -> None:
        self._waiting: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def wait(self, run_id: int) -> None:
        event = threading.Event()
        with self._lock:
            self._waiting[run_id] = event
        event.wait()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        from django.db import connection

        from inference.models import InferenceRun

        try:
            while not self._stop.wait(POLL_SECONDS):
                with self._lock:
                    ids = list(self._waiting)
                if not ids:
                    continue
                done = InferenceRun.objects.filter(pk__in=ids, status__in=InferenceRun.FINISHED)
                for run_id in done.values_list("pk", flat=True):
                    with self._lock:
                        self._waiting.pop(run_id).set()
        finally:
            connection.close()


def _phase(
    user: Any, base: Any, runs: int, workers: dict[str, subprocess.Popen[bytes]] | None = None
) -> dict[str, Any]:
    """``runs`` questions by CLIENTS closed-loop clients: completion tokens per second, where the runs went, and
    (with ``workers``, node -> process) the CPU each worker used and its engine's mean rows per decode step."""
    from inference.models import InferenceRun

    left = list(range(runs))
    lock = threading.Lock()
    ids: list[int] = []
    poller = _Poller()

    def client() -> None:
        while True:
            with lock:
                if not left:
                    return
                i = left.pop()
            run = _ask(user, base, QUESTIONS[i % len(QUESTIONS)])
            poller.wait(run.pk)
            with lock:
                ids.append(run.pk)

    workers = workers or {}
    counters = _engine_counters()
    worker_cpu = {node: _cpu_seconds(proc.pid) for node, proc in workers.items()}
    busy = _busy_seconds()
    started, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    poller.stop()
    client_cpu = time.process_time() - cpu
    busy = _busy_seconds() - busy
    worker_cpu = {node: round(_cpu_seconds(proc.pid) - worker_cpu[node], 1) for node, proc in workers.items()}
    time.sleep(0.5)  # each worker publishes its engine's counters right after finishing a run
    after = _engine_counters()
    rows_per_step = {
        node: round((after[node][0] - counters.get(node, (0, 0))[0]) / steps, 1)
        for node in workers
        if node in after and (steps := after[node][1] - counters.get(node, (0, 0))[1]) > 0
    }
    done = InferenceRun.objects.filter(pk__in=ids)
    failed = done.exclude(status=InferenceRun.Status.SUCCEEDED).count()
    if failed:
        raise RuntimeError(f"{failed} runs did not succeed: {done.exclude(status='succeeded').first().error}")
    tokens = sum(done.values_list("completion_tokens", flat=True))
    split: dict[str, int] = {}
    for node in done.values_list("routed_to", flat=True):
        split[node] = split.get(node, 0) + 1
    return {
        "seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 2), "split": split,
        "client_cpu_s": round(client_cpu, 1), "worker_cpu_s": worker_cpu,
        "worker_cpu_ms_per_token": round(1000 * sum(worker_cpu.values()) / tokens, 2) if worker_cpu else None,
        "busy_cores": round(busy / seconds, 2),
        "rows_per_step": rows_per_step,
    }  # fmt: skip


def measure() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    env = _environment(work)
    _admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    _admin_sql(f"CREATE DATABASE {DB_NAME}")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        from accounts.models import User
        from modelfactory import services as mf
        from openledger_web.celery import app

        call_command("migrate", verbosity=0)
        call_command("createcachetable")  # where the workers publish their engines' state
        with app.connection_for_write() as connection:
            for queue in ("inference", "inference.inference@bench", "inference.inference-2@bench"):
                connection.default_channel.queue_purge(queue)
        folder = Path(os.environ["DEFAULT_BASE_MODEL_DIR"])
        record = json.loads((folder / "openledger.json").read_text())
        record["path"] = str(folder)
        base = mf.base_model_register_default(record=record)
        user = User.objects.create_user(username="bench", email="bench@bench.invalid")

        first = _start("worker-inference", env, work)
        procs.append(first)
        _phase(user, base, 2)  # warm-up: the engine loads
        one_before = _phase(user, base, RUNS, {"inference@bench": first})
        print(f"one worker: {one_before}", flush=True)
        second = _start("worker-inference-2", env, work)
        procs.append(second)
        _phase(user, base, 4)  # warm-up: the bounded load sends the second worker one of 4 at once: its engine loads
        two = _phase(user, base, RUNS, {"inference@bench": first, "inference-2@bench": second})
        print(f"two workers: {two}", flush=True)
        _stop(second)
        one_after = _phase(user, base, RUNS, {"inference@bench": first})
        print(f"one worker again: {one_after}", flush=True)
        one = statistics.mean([one_before["tokens_per_s"], one_after["tokens_per_s"]])
        ratio = two["tokens_per_s"] / one
        all_cores: dict[str, Any] = {}
        if ALL_CORES_PHASE:
            _stop(first)
            first = _start("worker-inference", env, work, threads=os.cpu_count() or 1)
            procs.append(first)
            _phase(user, base, 2)  # warm-up: the engine loads
            one_all = _phase(user, base, RUNS, {"inference@bench": first})
            print(f"one worker, every core as its torch threads: {one_all}", flush=True)
            all_cores = {
                "one_worker_all_cores_tokens_per_s": one_all["tokens_per_s"],
                "two_workers_over_one_all_cores": round(two["tokens_per_s"] / one_all["tokens_per_s"], 3),
            }
        return {
            "one_worker_tokens_per_s": round(one, 2),
            "one_worker_phases_tokens_per_s": [one_before["tokens_per_s"], one_after["tokens_per_s"]],
            "two_workers_tokens_per_s": two["tokens_per_s"],
            "two_workers_split": two["split"],
            "two_workers_over_one": round(ratio, 3),
            "target": TARGET,
            "met": ratio >= TARGET,
            "clients": CLIENTS,
            "runs_per_phase": RUNS,
            "max_tokens": MAX_TOKENS,
            "max_batch_size": settings.INFERENCE_MAX_BATCH_SIZE,
            "worker_cpu_ms_per_token": {
                "one": [one_before["worker_cpu_ms_per_token"], one_after["worker_cpu_ms_per_token"]],
                "two": two["worker_cpu_ms_per_token"],
            },
            "torch_threads_per_worker": 1,
            "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            **all_cores,
        }
    finally:
        for proc in procs:
            _stop(proc)
        from django.db import connections

        connections.close_all()
        _admin_sql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    load_before = [round(x, 2) for x in os.getloadavg()]
    figures = measure()
    figures["load_average_before"] = load_before
    print(json.dumps(figures))
