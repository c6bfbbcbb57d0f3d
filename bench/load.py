"""Pages and /healthz while 64 answers stream: do open streams starve the rest of the site?

Starts the application on its own: a fresh SQLite database in a temporary folder (migrated, the bundled model
registered), a real Celery inference worker (threads pool, one shared engine, as `make run` starts it) and the real
web server (gunicorn with the uvicorn worker serving `openledger_web.asgi`, two processes, as `make run` starts it)
on a free port. No chain: nothing here anchors, and `/healthz` answers 503 because the chain and the other queues'
workers are absent, which costs it nothing (its latency is what is measured; a 503 with a readable report is not an
error, a timeout or a 500 is). Then, with one HTTP client in this process:

1. idle: IDLE_ROUNDS rounds of `/healthz` and each page of PAGES, one request at a time, before the streams and
   IDLE_ROUNDS more after them (so that idle and busy see the same stretch of whatever else loads the machine);
2. streams: STREAMS concurrent `POST /v1/chat/completions` with `"stream": true` (eight users, eight streams each, so
   that no one meets the per-user rate limit), answered by the bundled model through the worker; each stream is read
   by a slow consumer that waits SLOW_READ_SECONDS between reads. While all of them are open (each has its response
   headers and none has ended), the same probes run again, round after round.

It prints the latency p50/p95 of each kind idle and during the streams side by side with their ratio, the streams
completed (a `[DONE]` after at least one token, no error chunk) and the errors, and ends with one JSON line.

Broker: CELERY_BROKER_URL when set (`filesystem://` for the embedded broker, whose streams poll the database), else
Redis database 13 on 127.0.0.1:6379 when it answers (flushed at the end: it is the bench's own), else the embedded
broker. The bundled model comes from DEFAULT_BASE_MODEL_DIR, else var/models/ (prepared by `make setup`).

Run from the repository root: .venv/bin/python bench/load.py
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable
STREAMS = 64
USERS = 8
MAX_TOKENS = int(os.getenv("BENCH_MAX_TOKENS", "96"))
IDLE_ROUNDS = 25
SLOW_READ_SECONDS = 0.05
PAGES = ("/", "/datanets/", "/ask/", "/ask/history/")
PROBE_TIMEOUT_S = 60
BENCH_REDIS = "redis://127.0.0.1:6379/13"
TOPICS = ("the history of bread", "how rivers shape valleys", "why bees dance", "the life of a lighthouse keeper",
          "how glass is made", "the first trains", "a day on a sailing ship", "how volcanoes form")  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def pick_broker(data_dir: Path) -> str:
    url = os.getenv("CELERY_BROKER_URL") or (BENCH_REDIS if listening(6379) else "filesystem://")
    if url.startswith("filesystem"):
        for sub in ("queue", "control"):
            (data_dir / "broker" / sub).mkdir(parents=True, exist_ok=True)
    return url


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Streams:
    """What the stream consumers saw: how many are open now, and how each ended."""

    opened: int = 0
    open_now: int = 0
    completed: int = 0
    errors: list[str] = field(default_factory=list)
    first_token_s: list[float] = field(default_factory=list)
    durations_s: list[float] = field(default_factory=list)
    all_open: asyncio.Event = field(default_factory=asyncio.Event)
    first_done: asyncio.Event = field(default_factory=asyncio.Event)


async def consume(session: aiohttp.ClientSession, url: str, token: str, model: str, i: int, state: Streams) -> None:
    """Stream answer ``i`` to its end, reading slowly; its outcome goes to ``state``."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Write a long, detailed essay about {TOPICS[i % len(TOPICS)]}."}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.7,
        "seed": i,
        "stream": True,
    }
    started = time.perf_counter()
    counted_open = False
    tokens = 0
    try:
        async with session.post(
            f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            if response.status != 200:
                state.errors.append(f"stream {i}: HTTP {response.status} {(await response.text())[:200]}")
                return
            state.opened += 1
            state.open_now += 1
            counted_open = True
            if state.opened == STREAMS:
                state.all_open.set()
            done = False
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    state.errors.append(f"stream {i}: {chunk['error']['message']}")
                    return
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    if tokens == 0:
                        state.first_token_s.append(time.perf_counter() - started)
                    tokens += 1
                await asyncio.sleep(SLOW_READ_SECONDS)  # a slow reader: the server must not care
            if done and tokens:
                state.completed += 1
                state.durations_s.append(time.perf_counter() - started)
            else:
                state.errors.append(f"stream {i}: ended without [DONE] or without a token ({tokens} tokens)")
    except (TimeoutError, aiohttp.ClientError, ValueError) as e:
        state.errors.append(f"stream {i}: {type(e).__name__}: {e}")
    finally:
        if counted_open:
            state.open_now -= 1
            state.first_done.set()


async def probe(session: aiohttp.ClientSession, url: str, path: str, cookies: dict[str, str]) -> tuple[float, str]:
    """One request's latency and its outcome: "ok", or what went wrong."""
    started = time.perf_counter()
    try:
        async with session.get(url + path, cookies=cookies, allow_redirects=False) as response:
            text = await response.text()
            elapsed = time.perf_counter() - started
            if path == "/healthz":
                report = json.loads(text)
                ok = response.status in (200, 503) and report["components"]["database"]["ok"]
            else:
                ok = response.status == 200
            return elapsed, "ok" if ok else f"{path}: HTTP {response.status}"
    except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as e:
        return time.perf_counter() - started, f"{path}: {type(e).__name__}: {e}"


async def probe_round(
    session: aiohttp.ClientSession,
    url: str,
    cookies: dict[str, str],
    samples: dict[str, list[float]],
    errors: list[str],
) -> None:
    for path in ("/healthz", *PAGES):
        elapsed, outcome = await probe(session, url, path, cookies)
        if outcome == "ok":
            samples.setdefault(path, []).append(elapsed)
        else:
            errors.append(outcome)


async def measure(url: str, cookies: dict[str, str], tokens: list[str], model: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=PROBE_TIMEOUT_S * 5, sock_connect=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        errors: list[str] = []
        for _ in range(2):  # warm-up: first hits compile templates and open connections
            await probe_round(session, url, cookies, {}, [])
        idle: dict[str, list[float]] = {}
        for _ in range(IDLE_ROUNDS):
            await probe_round(session, url, cookies, idle, errors)

        state = Streams()
        started = time.perf_counter()
        consumers = [
            asyncio.create_task(consume(session, url, tokens[i % len(tokens)], model, i, state)) for i in range(STREAMS)
        ]
        during: dict[str, list[float]] = {}
        opened = asyncio.create_task(state.all_open.wait())
        await asyncio.wait([opened, asyncio.gather(*consumers)], return_when=asyncio.FIRST_COMPLETED)
        all_open_after = time.perf_counter() - started
        rounds = 0
        while state.all_open.is_set() and not state.first_done.is_set():
            round_samples: dict[str, list[float]] = {}
            round_errors: list[str] = []
            await probe_round(session, url, cookies, round_samples, round_errors)
            errors.extend(round_errors)
            if state.first_done.is_set():
                break  # a round that ended after a stream did is not "with every stream open"
            rounds += 1
            for path, values in round_samples.items():
                during.setdefault(path, []).extend(values)
        await asyncio.gather(*consumers)
        stream_phase = time.perf_counter() - started
        # idle again after the streams, so that "idle" spans the same stretch of whatever else loads the machine
        for _ in range(IDLE_ROUNDS):
            await probe_round(session, url, cookies, idle, errors)
        return {
            "idle": idle,
            "during": during,
            "during_rounds": rounds,
            "all_open_after_s": all_open_after,
            "streams": state,
            "stream_phase_s": stream_phase,
            "probe_errors": errors,
        }


def start(stack: ExitStack, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> subprocess.Popen:
    log = (log_dir / f"{name}.log").open("wb")
    stack.callback(log.close)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    stack.callback(stop)
    return proc


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="openledger-load-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    broker = pick_broker(data_dir)
    model_dir = os.getenv("DEFAULT_BASE_MODEL_DIR", str(ROOT / "var" / "models" / "smollm2-135m-instruct"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        DATA_DIR=str(data_dir),
        CELERY_BROKER_URL=broker,
        DEFAULT_BASE_MODEL_DIR=model_dir,
        EVM_RPC_URL=f"http://127.0.0.1:{free_port()}",  # nothing listens: the chain check fails fast
        WORKER_HEARTBEAT_SECONDS="2",
        PYTHONUNBUFFERED="1",
    )
    os.environ.clear()
    os.environ.update(env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"[load] data in {tmp}; broker {broker}; model {model_dir}", flush=True)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, True)
        for args in (("migrate", "--noinput", "-v", "0"), ("createcachetable",), ("prepare_default_model",)):
            subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)

        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openledger_web.settings")
        django.setup()
        from django.test import Client

        from accounts.models import User
        from accounts.services import api_token_rotate
        from modelfactory.models import BaseModel
        from openledger_web.models import WorkerHeartbeat

        users = [User.objects.create_user(f"load{i}", password="load-password-123") for i in range(USERS)]
        tokens = [api_token_rotate(user=user).key for user in users]
        client = Client()
        client.force_login(users[0])
        cookies = {name: morsel.value for name, morsel in client.cookies.items()}
        model = f"base-{BaseModel.objects.get(is_default=True).pk}"

        celery = [PY, "-m", "celery", "-A", "openledger_web"]
        # as scripts/run.py starts them: the inference worker's threads share one engine; the ASGI web server
        start(stack, "worker", [*celery, "worker", "-Q", "inference", "-P", "threads", "-c", "32", "-n",
              "load-inference@%h", "-l", "INFO", "--without-mingle", "--without-gossip"], env, tmp)  # fmt: skip
        web = start(stack, "web", [PY, "-m", "gunicorn", "openledger_web.asgi", "-k", "uvicorn_worker.UvicornWorker",
                    "-b", f"127.0.0.1:{port}", "--workers", "2", "--timeout", "120", "--no-control-socket"],
                    env, tmp)  # fmt: skip
        deadline = time.monotonic() + 180

        def worker_up() -> bool:
            return any("inference" in queues for queues in WorkerHeartbeat.objects.values_list("queues", flat=True))

        while not (listening(port) and worker_up()):
            if web.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the web server or the worker did not start; see the logs in {tmp}")
            time.sleep(0.5)
        print("[load] web server and inference worker up; measuring", flush=True)

        result = asyncio.run(measure(url, cookies, tokens, model))
        if broker == BENCH_REDIS:
            import redis

            redis.Redis.from_url(BENCH_REDIS).flushdb()
    report(result, broker)


def report(result: dict[str, Any], broker: str) -> None:
    state: Streams = result["streams"]
    idle, during = result["idle"], result["during"]
    print(f"\n{'request':<16}{'idle p50':>10}{'idle p95':>10}{'64 p50':>10}{'64 p95':>10}{'p95 ratio':>11}{'n':>6}")
    ratios: dict[str, float] = {}
    for path in ("/healthz", *PAGES):
        a, b = idle.get(path, []), during.get(path, [])
        if not a or not b:
            print(f"{path:<16}  (no samples: idle {len(a)}, during {len(b)})")
            continue
        ratios[path] = percentile(b, 95) / percentile(a, 95)
        print(
            f"{path:<16}{percentile(a, 50) * 1000:>8.1f}ms{percentile(a, 95) * 1000:>8.1f}ms"
            f"{percentile(b, 50) * 1000:>8.1f}ms{percentile(b, 95) * 1000:>8.1f}ms{ratios[path]:>10.2f}x{len(b):>6}"
        )
    pages_idle = [v for p in PAGES for v in idle.get(p, [])]
    pages_during = [v for p in PAGES for v in during.get(p, [])]
    errors = state.errors + result["probe_errors"]
    print(
        f"\nstreams: {state.completed}/{STREAMS} completed, all {STREAMS} open {result['all_open_after_s']:.1f} s "
        f"after the first request, {result['during_rounds']} probe rounds while all were open; first token "
        f"p50 {statistics.median(state.first_token_s or [0]):.1f} s, stream p50 "
        f"{statistics.median(state.durations_s or [0]):.1f} s; stream phase {result['stream_phase_s']:.1f} s"
    )
    for error in errors[:10]:
        print(f"error: {error}")
    summary = {
        "bench": "load",
        "broker": "redis" if broker.startswith("redis") else "embedded",
        "streams": STREAMS,
        "max_tokens": MAX_TOKENS,
        "healthz_p50_idle_ms": round(percentile(idle["/healthz"], 50) * 1000, 1) if idle.get("/healthz") else None,
        "healthz_p95_idle_ms": round(percentile(idle["/healthz"], 95) * 1000, 1) if idle.get("/healthz") else None,
        "healthz_p95_during_streams_ms": round(percentile(during["/healthz"], 95) * 1000, 1)
        if during.get("/healthz")
        else None,
        "healthz_p95_during_streams_over_idle": round(ratios["/healthz"], 2) if "/healthz" in ratios else None,
        "pages_p95_during_streams_over_idle": round(percentile(pages_during, 95) / percentile(pages_idle, 95), 2)
        if pages_idle and pages_during
        else None,
        "probe_rounds_during_streams": result["during_rounds"],
        "streams_completed": state.completed,
        "errors": len(errors),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
