"""A local anvil run as a child process: the tests' chain (``ledger.testing``) and the benchmarks' (which run after
``make setup`` alone, so this module needs nothing but the runtime packages).

``Anvil`` can be stopped and started again, with its saved state (the same chain, as after a restart) or without it
(a reset chain).
"""

from __future__ import annotations

import platform
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
ANVIL_CHAIN_ID = 31337


def anvil_binary() -> Path:
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine().lower()]
    return ROOT / "node_modules" / "@foundry-rs" / f"anvil-linux-{arch}" / "bin" / "anvil"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen[Any], *, timeout: float) -> None:
    """Stop ``proc`` politely (SIGTERM) if it still runs, killing it when it has not exited within ``timeout`` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Anvil:
    """One anvil process on a fixed port, saving its state to ``state_file`` when stopped and every
    ``state_interval`` seconds (None: only when stopped).

    It mines a block per transaction (automine) unless ``mining`` says otherwise (``("--block-time", "2")``, as
    ``make run``'s chain does)."""

    def __init__(
        self,
        *,
        port: int,
        state_file: Path,
        log_file: Path,
        mining: Sequence[str] = (),
        state_interval: int | None = 1,
    ) -> None:
        self.port = port
        self.state_file = state_file
        self.log_file = log_file
        self.mining = tuple(mining)
        self.state_interval = state_interval
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, state: bool = True) -> None:
        """Start anvil; ``state=False`` throws the saved chain away first, so it comes back as a new chain."""
        if self.running:
            return
        if not state:
            self.state_file.unlink(missing_ok=True)
        argv = [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(self.port), "--chain-id", str(ANVIL_CHAIN_ID)]
        argv += ["--state", str(self.state_file), *self.mining, "--silent"]
        if self.state_interval is not None:
            argv += ["--state-interval", str(self.state_interval)]
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.rpc("eth_chainId")
                return
            except OSError:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"anvil exited with {self._proc.returncode}; see {self.log_file}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"anvil did not answer within 20 s; see {self.log_file}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop anvil the way an operator would (SIGTERM): it writes its state file on the way out."""
        if self._proc is None:
            return
        stop_process(self._proc, timeout=20)
        self._proc = None

    def rpc(self, method: str, *params: Any) -> Any:
        """A raw JSON-RPC call (anvil_mine, evm_snapshot, ...) without going through the code under test."""
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        answer = requests.post(self.rpc_url, json=body, timeout=5).json()
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]
