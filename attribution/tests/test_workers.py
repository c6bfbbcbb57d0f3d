"""The attribution worker's layout: ATTRIBUTION_WORKERS processes (scripts/run.py and the Procfile), each with its
share of the cores for torch (attribution.tasks.torch_threads_for) and of the answers waiting in the queue
(attribution.tasks.worker_processes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from attribution.tasks import torch_threads_for, worker_processes

ROOT = Path(__file__).resolve().parents[2]


def _run_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("openledger_run", ROOT / "scripts" / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_attribution_worker_runs_as_many_processes_as_configured(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ATTRIBUTION_WORKERS", "3")
    argv = _run_module().celery_argvs(ROOT / "var")["worker-attribution"]
    assert argv[argv.index("-Q") + 1] == "attribution" and argv[argv.index("-c") + 1] == "3"
    monkeypatch.delenv("ATTRIBUTION_WORKERS")
    argv = _run_module().celery_argvs(ROOT / "var")["worker-attribution"]
    assert argv[argv.index("-c") + 1] == "2"
    assert "-c ${ATTRIBUTION_WORKERS:-2}" in (ROOT / "Procfile").read_text()


def test_each_attribution_process_gets_its_share_of_the_cores() -> None:
    worker = ["celery", "-A", "openledger_web", "worker", "-Q", "attribution", "-c", "2", "-n", "a@h"]
    assert torch_threads_for(worker, 2) == 1
    assert torch_threads_for(worker, 16) == 8
    assert torch_threads_for(["celery", "worker", "-Qattribution", "-c4"], 2) == 1
    # a worker serving other queues too (the tests' all-queue worker, the inference engine) keeps torch's default
    assert torch_threads_for(["celery", "worker", "-Q", "default,attribution", "-c", "1"], 2) == 0
    assert torch_threads_for(["celery", "worker", "-Q", "inference", "-P", "threads", "-c", "32"], 2) == 0


def test_the_waiting_answers_are_shared_by_the_workers_process_count() -> None:
    assert worker_processes(["celery", "-A", "openledger_web", "worker", "-Q", "attribution", "-c", "3"]) == 3
    assert worker_processes(["celery", "worker", "-Qattribution", "-c2"]) == 2
    # outside a worker (the task function called directly, a test) the task takes what waits, up to the batch limit
    assert worker_processes(["pytest", "-q"]) == 1
    assert worker_processes(["celery", "worker", "-c", "many"]) == 1
