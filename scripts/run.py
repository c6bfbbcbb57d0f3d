"""`make run`: prepare the database and the chain, then run anvil, the Celery workers, beat and the web server.

Ctrl-C (or SIGTERM) stops every process this script started. Running it again reuses what is there: the database,
the converted model, anvil's persisted state and the deployed contract.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST, PORT = os.getenv("HOST", "127.0.0.1"), int(os.getenv("PORT", "8000"))
DEFAULT_RPC = "http://127.0.0.1:8545"


def say(message: str) -> None:
    print(f"\033[1m[run]\033[0m {message}", flush=True)


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


class Supervisor:
    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> None:
        # each child leads its own process group, so a stop reaches its own children (Celery's pool) too
        proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True)
        self.children.append((name, proc))
        say(f"started {name} (pid {proc.pid})")

    def stop(self) -> None:
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                say(f"stopping {name}")
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def watch(self) -> None:
        while True:
            for name, proc in self.children:
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited with status {proc.returncode}; stopping everything")
            time.sleep(1)


def main() -> None:
    data_dir = Path(os.getenv("DATA_DIR", ROOT / "var")).resolve()
    os.environ["DATA_DIR"] = str(data_dir)
    (data_dir / "chain").mkdir(parents=True, exist_ok=True)
    # one broker decision for every process started below
    if not os.getenv("CELERY_BROKER_URL"):
        if listening("127.0.0.1", 6379):
            os.environ["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/0"
        else:
            os.environ["CELERY_BROKER_URL"] = "filesystem://"
            for sub in ("queue", "control"):
                (data_dir / "broker" / sub).mkdir(parents=True, exist_ok=True)
    broker = os.environ["CELERY_BROKER_URL"]
    say(f"broker: {'embedded filesystem broker (no Redis reachable)' if broker.startswith('filesystem') else broker}")

    supervisor = Supervisor()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        manage("migrate", "--noinput", "-v", "0")
        manage("createcachetable")
        manage("prepare_default_model")
        manage("seed_demo")

        rpc = os.getenv("EVM_RPC_URL", DEFAULT_RPC)
        parsed = urlparse(rpc)
        if rpc == DEFAULT_RPC and not listening(parsed.hostname or "127.0.0.1", parsed.port or 8545):
            state = data_dir / "chain" / "anvil-state.json"
            supervisor.start(
                "anvil",
                [
                    str(anvil_binary()),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(parsed.port or 8545),
                    "--chain-id",
                    os.getenv("EVM_CHAIN_ID", "31337"),
                    "--state",
                    str(state),
                    "--state-interval",
                    "5",
                    "--silent",
                ],
            )
            deadline = time.monotonic() + 30
            while not listening("127.0.0.1", parsed.port or 8545):
                if time.monotonic() > deadline:
                    raise SystemExit("anvil did not start listening within 30 s")
                time.sleep(0.2)
        else:
            say(f"using the chain at {rpc}")
        manage("chain_deploy")

        celery = [PY, "-m", "celery", "-A", "openledger_web"]
        supervisor.start(
            "worker default+chain",
            [*celery, "worker", "-Q", "default,chain", "-c", "2", "-n", "default@%h", "-l", "INFO"],
        )
        supervisor.start(
            "worker training", [*celery, "worker", "-Q", "training", "-c", "1", "-n", "training@%h", "-l", "INFO"]
        )
        # threads, not processes: the pool's tasks share one engine (the base model loaded once) whose scheduler
        # gathers their concurrent requests into one batch
        supervisor.start(
            "worker inference",
            [*celery, "worker", "-Q", "inference", "-P", "threads", "-c", "32", "-n", "inference@%h", "-l", "INFO"],
        )
        supervisor.start(
            # attribution scoring loads the same base model with gradients, one run at a time; it scales out to its
            # own `-Q attribution` workers on other machines
            "worker attribution",
            [*celery, "worker", "-Q", "attribution", "-c", "1", "-n", "attribution@%h", "-l", "INFO"],
        )
        supervisor.start("beat", [*celery, "beat", "-l", "INFO", "-s", str(data_dir / "celerybeat-schedule")])
        supervisor.start(
            # ASGI: an answer stream waits on the event loop, not in a thread, so open streams leave the pages fast
            "web",
            [
                PY,
                "-m",
                "gunicorn",
                "openledger_web.asgi",
                "-k",
                "uvicorn_worker.UvicornWorker",
                "-b",
                f"{HOST}:{PORT}",
                "--workers",
                "2",
                "--timeout",
                "120",
                "--access-logfile",
                "-",
            ],
        )
        say(f"OpenLedger is running at http://{HOST}:{PORT}/  (status: http://{HOST}:{PORT}/healthz)")
        say("demo logins (password: demo-password-123): alice (contributor), carol (curator), admin (staff)")
        say("Ctrl-C stops everything")
        supervisor.watch()
    except KeyboardInterrupt:
        say("stopping")
    finally:
        supervisor.stop()


if __name__ == "__main__":
    main()
