"""`make run`: prepare the database and the chain, then run anvil, the Celery workers, beat and the web server.

Every process runs under a small supervisor: a child that exits is restarted after a backoff that doubles up to a
cap, and a child that keeps crashing is given up on (loudly) while the others keep running. The supervisor writes each
child's state to DATA_DIR/run/status.json, which /healthz reports. Ctrl-C (or SIGTERM) stops every process.
Running it again reuses what is there: the database, the converted model, anvil's persisted state and the contract.

    scripts/run.py [--seed-demo] [--only NAME,NAME] [--no-prepare]

With DEBUG off (production mode) it collects the static files and seeds the demo users only on request
(`--seed-demo` or SEED_DEMO=1): their password is public. `--only` (or RUN_ONLY) starts a subset of the processes;
`--no-prepare` skips migrations, the model, the chain deployment and the static files (a process manager's `release`
step does them; tests use it too). docs/deploy.md shows the same process layout for systemd and a Procfile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST, PORT = os.getenv("HOST", "127.0.0.1"), int(os.getenv("PORT", "8000"))
DEFAULT_RPC = "http://127.0.0.1:8545"
# The local chain seals a block every 2 s, transactions or not: governance counts its voting delay and period in
# blocks (150 blocks, the default period, are 5 minutes), and an idle automining chain would never end a vote.
# docs/decisions.md, "The dev chain mines a block every 2 s".
ANVIL_MINING = ("--block-time", "2")
STATUS_FILE = Path("run") / "status.json"  # under DATA_DIR; openledger_web.health reads it

# Restart policy: the first restart waits BACKOFF_FIRST s, each quick failure doubles the wait up to BACKOFF_CAP;
# CRASH_LOOP_LIMIT exits within CRASH_LOOP_WINDOW s give up on that child. A child that ran STABLE_AFTER s starts
# its backoff over.
BACKOFF_FIRST = float(os.getenv("RUN_BACKOFF_FIRST_SECONDS", "1"))
BACKOFF_CAP = float(os.getenv("RUN_BACKOFF_CAP_SECONDS", "60"))
CRASH_LOOP_LIMIT = int(os.getenv("RUN_CRASH_LOOP_LIMIT", "5"))
CRASH_LOOP_WINDOW = 300.0
STABLE_AFTER = 60.0
HEARTBEAT_SECONDS = 5.0


def say(message: str) -> None:
    print(f"\033[1m[run]\033[0m {message}", flush=True)


def envbool(name: str, default: str) -> bool:
    return os.getenv(name, default).strip().lower() in ("1", "true", "yes", "on")


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def anvil_binary() -> Path:
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine().lower()]
    return ROOT / "node_modules" / "@foundry-rs" / f"anvil-linux-{arch}" / "bin" / "anvil"


def manage(*args: str) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, check=True)


def web_argv() -> list[str]:
    """The web server: the one place it is chosen (the Procfile and docs/deploy.md show the same line)."""
    # ASGI: an answer stream waits on the event loop, not in a thread, so open streams leave the pages fast
    return [
        PY, "-m", "gunicorn", "openledger_web.asgi", "-k", "uvicorn_worker.UvicornWorker", "-b", f"{HOST}:{PORT}",
        "--workers", "2", "--timeout", "120", "--access-logfile", "-",
    ]  # fmt: skip


def inference_workers_default() -> int:
    """What fits here: a process per core up to 4 (each gets the cores divided among them as torch threads), and
    no more than one per 2 GiB of memory (a process holds the base model, its adapters and a batch's activations)."""
    cores = os.cpu_count() or 1
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(4, cores, memory // (2 << 30)))


def inference_workers() -> int:
    """INFERENCE_WORKERS, else what fits here (``inference_workers_default``)."""
    value = os.getenv("INFERENCE_WORKERS", "").strip()
    if not value:
        return inference_workers_default()
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise SystemExit(f"INFERENCE_WORKERS must be a whole number from 1 to 64, got {value!r}")
    return int(value)


def inference_torch_threads(workers: int) -> int:
    """INFERENCE_TORCH_THREADS, else the cores divided among the inference workers (at least 1)."""
    value = os.getenv("INFERENCE_TORCH_THREADS", "").strip()
    if value:
        if not value.isdigit():
            raise SystemExit(f"INFERENCE_TORCH_THREADS must be a whole number (0: torch's default), got {value!r}")
        return int(value)
    return max(1, (os.cpu_count() or 1) // workers)


def celery_argvs(data_dir: Path, *, inference: int | None = None) -> dict[str, list[str]]:
    """The Celery workers, one per queue kind (``inference`` inference workers: default INFERENCE_WORKERS), and
    beat, by process name."""
    celery = [PY, "-m", "celery", "-A", "openledger_web"]

    def worker(queues: str, node: str, *options: str) -> list[str]:
        return [*celery, "worker", "-Q", queues, *options, "-n", f"{node}@%h", "-l", "INFO"]

    count = inference_workers() if inference is None else inference
    # threads, not processes: the pool's tasks share one engine (the base model loaded once) whose scheduler gathers
    # their concurrent requests into one batch. Several of them: each also consumes a queue of its own, and runs are
    # routed to the one their adapter hashes to (inference.routing), so an adapter stays loaded on one of them.
    inference_argvs = {
        "worker-inference" + (f"-{i}" if i > 1 else ""): worker(
            "inference", "inference" + (f"-{i}" if i > 1 else ""), "-P", "threads", "-c", "32"
        )
        for i in range(1, count + 1)
    }
    return {
        "worker-default": worker("default", "default", "-c", "2"),
        # anchoring has a worker of its own, so a transaction never waits behind data checks on `default`
        "worker-chain": worker("chain", "chain", "-c", "1"),
        "worker-training": worker("training", "training", "-c", "1"),
        **inference_argvs,
        # attribution scoring loads the same base model with gradients, one run at a time per process: answers that
        # end together are scored ATTRIBUTION_WORKERS at a time (each process holds its own model, ~0.6 GB for the
        # bundled one); more `-Q attribution` workers on other machines scale it further
        "worker-attribution": worker("attribution", "attribution", "-c", os.getenv("ATTRIBUTION_WORKERS", "2")),
        "beat": [*celery, "beat", "-l", "INFO", "-s", str(data_dir / "celerybeat-schedule")],
    }


@dataclass
class Child:
    """One supervised process and what the supervisor knows of its history."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    state: str = "starting"  # running | restarting | gave_up | stopped
    restarts: int = 0
    last_exit: int | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    backoff: float = 0.0
    exits: deque[float] = field(default_factory=deque)


class Supervisor:
    """Starts children, restarts those that exit (with backoff and a crash-loop limit), stops them all at the end.

    ``status_file``, when given, holds every child's state as JSON, rewritten on each change and every few seconds
    so a reader can tell a live supervisor from a stale file.
    """

    def __init__(self, status_file: Path | None = None) -> None:
        self.children: list[Child] = []
        self.status_file = status_file
        self._written_at = 0.0

    def start(self, name: str, argv: list[str]) -> Child:
        child = Child(name=name, argv=argv)
        self.children.append(child)
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        child.started_at = time.time()
        try:
            # each child leads its own process group, so a stop reaches its own children (Celery's pool) too
            child.proc = subprocess.Popen(child.argv, cwd=ROOT, start_new_session=True)
        except OSError as e:  # a missing or unrunnable program counts as an exit, toward the crash-loop limit
            say(f"could not start {child.name}: {e}")
            child.proc = None
            self._exited(child, 127)
            return
        child.state = "running"
        say(f"started {child.name} (pid {child.proc.pid})")
        self.write_status()

    def _exited(self, child: Child, status: int) -> None:
        if child.proc is not None:
            # the leader is gone; whatever it left in its group (a pool process) goes with it
            _killpg(child.proc.pid, signal.SIGKILL)
        now = time.time()
        child.last_exit = status
        child.exits.append(now)
        while child.exits and child.exits[0] < now - CRASH_LOOP_WINDOW:
            child.exits.popleft()
        if len(child.exits) >= CRASH_LOOP_LIMIT:
            child.state = "gave_up"
            say(
                f"\033[31m{child.name} exited {len(child.exits)} times within {CRASH_LOOP_WINDOW:.0f} s (last status "
                f"{status}): GIVING UP on it; the other processes keep running\033[0m"
            )
        else:
            ran = now - child.started_at
            child.backoff = (
                BACKOFF_FIRST if ran >= STABLE_AFTER or not child.backoff else min(BACKOFF_CAP, child.backoff * 2)
            )
            child.state, child.restart_at = "restarting", now + child.backoff
            say(f"{child.name} exited with status {status} after {ran:.0f} s; restarting in {child.backoff:g} s")
        self.write_status()

    def tick(self) -> None:
        """Notice exits and start what is due; call it every second or so."""
        for child in self.children:
            if child.state == "running" and child.proc is not None and (status := child.proc.poll()) is not None:
                self._exited(child, status)
            elif child.state == "restarting" and time.time() >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
        if time.time() - self._written_at >= HEARTBEAT_SECONDS:
            self.write_status()

    def watch(self) -> None:
        while True:
            self.tick()
            time.sleep(0.5)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                say(f"stopping {child.name}")
                _killpg(child.proc.pid, signal.SIGTERM)
            child.state = "stopped"
        deadline = time.monotonic() + 20
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _killpg(child.proc.pid, signal.SIGKILL)
        self.write_status()

    def status(self) -> dict[str, object]:
        return {
            "supervisor_pid": os.getpid(),
            "updated_at": time.time(),
            "processes": {
                child.name: {
                    "pid": child.proc.pid if child.proc is not None else None,
                    "state": child.state,
                    "restarts": child.restarts,
                    "last_exit": child.last_exit,
                    "since": datetime.fromtimestamp(child.started_at, tz=UTC).isoformat() if child.started_at else None,
                }
                for child in self.children
            },
        }

    def write_status(self) -> None:
        self._written_at = time.time()
        if self.status_file is None:
            return
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.status_file.with_suffix(".tmp")
        partial.write_text(json.dumps(self.status(), indent=1))
        partial.replace(self.status_file)  # readers never see half a file


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
        os.killpg(pgid, sig)


def start_anvil(supervisor: Supervisor, data_dir: Path) -> None:
    rpc = os.getenv("EVM_RPC_URL", DEFAULT_RPC)
    parsed = urlparse(rpc)
    if rpc != DEFAULT_RPC or listening(parsed.hostname or "127.0.0.1", parsed.port or 8545):
        say(f"using the chain at {rpc}")
        return
    state = data_dir / "chain" / "anvil-state.json"
    supervisor.start(
        "anvil",
        [
            str(anvil_binary()), "--host", "127.0.0.1", "--port", str(parsed.port or 8545),
            "--chain-id", os.getenv("EVM_CHAIN_ID", "31337"), "--state", str(state), "--state-interval", "5",
            *ANVIL_MINING, "--silent",
        ],
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not listening("127.0.0.1", parsed.port or 8545):
        if time.monotonic() > deadline:
            raise SystemExit("anvil did not start listening within 30 s")
        time.sleep(0.2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the whole application under a supervisor.")
    parser.add_argument("--seed-demo", action="store_true", help="create the demo users even with DEBUG off")
    parser.add_argument("--only", default=os.getenv("RUN_ONLY", ""), help="comma-separated process names to run")
    parser.add_argument("--no-prepare", action="store_true", help="skip migrations, model, chain and static files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    debug = envbool("DEBUG", "True")
    seed = args.seed_demo or envbool("SEED_DEMO", "True" if debug else "False")
    data_dir = Path(os.getenv("DATA_DIR", ROOT / "var")).resolve()
    os.environ["DATA_DIR"] = str(data_dir)
    (data_dir / "chain").mkdir(parents=True, exist_ok=True)
    # one broker decision for every process started below
    if not os.getenv("CELERY_BROKER_URL"):
        os.environ["CELERY_BROKER_URL"] = (
            "redis://127.0.0.1:6379/0" if listening("127.0.0.1", 6379) else "filesystem://"
        )
    # the inference workers share the cores: each gets its part as torch threads (read by openledger_web.settings)
    os.environ["INFERENCE_TORCH_THREADS"] = str(inference_torch_threads(inference_workers()))
    broker = os.environ["CELERY_BROKER_URL"]
    if broker.startswith("filesystem"):
        for sub in ("queue", "control"):
            (data_dir / "broker" / sub).mkdir(parents=True, exist_ok=True)
    say(f"broker: {'embedded filesystem broker (no Redis reachable)' if broker.startswith('filesystem') else broker}")

    processes = {**celery_argvs(data_dir), "web": web_argv()}
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if unknown := only - processes.keys() - {"anvil"}:
        raise SystemExit(f"unknown process names {sorted(unknown)}; known: anvil, {', '.join(processes)}")

    supervisor = Supervisor(status_file=data_dir / STATUS_FILE)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if not args.no_prepare:
            manage("migrate", "--noinput", "-v", "0")
            manage("createcachetable")
            if not debug:
                # production serves hashed, compressed copies from STATIC_ROOT (whitenoise's manifest storage)
                manage("collectstatic", "--noinput", "-v", "0")
            manage("prepare_default_model")
            if seed:
                manage("seed_demo", *([] if debug else ["--allow-without-debug"]))
        if not only or "anvil" in only:
            start_anvil(supervisor, data_dir)
        if not args.no_prepare:
            manage("chain_deploy")
        for name, process_argv in processes.items():
            if not only or name in only:
                supervisor.start(name, process_argv)
        if not only or "web" in only:
            say(f"OpenLedger is running at http://{HOST}:{PORT}/  (status: http://{HOST}:{PORT}/healthz)")
        if seed:
            say("demo logins (password: demo-password-123): alice (contributor), carol (curator), admin (staff)")
        say("Ctrl-C stops everything")
        supervisor.watch()
    except KeyboardInterrupt:
        say("stopping")
    finally:
        supervisor.stop()


if __name__ == "__main__":
    main()
