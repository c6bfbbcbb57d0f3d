"""Celery wrappers around the attribution services: ids in, a service call out. ``attribution_*`` tasks are routed
to the ``attribution`` queue (CELERY_TASK_ROUTES), consumed by the inference worker unless dedicated workers run."""

from __future__ import annotations

import os
import sys

from celery import shared_task

from . import revocation, services


@shared_task(acks_late=True)
def attribution_run_task(run_id: int) -> str | None:
    """Attribute one finished run (with the answers of its version waiting in the queue: ``services.run_attribute``)
    and accrue its fee; a redelivered message finds the attribution finished."""
    _share_the_cores()
    attribution = services.run_attribute(run_id=run_id, processes=worker_processes(sys.argv))
    return attribution.status if attribution is not None else None


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=30, retry_backoff_max=600, max_retries=10)
def attribution_revocation_erase_task(revocation_ids: list[int]) -> int:
    """Take erased records out of every attribution index and stored span (``revocation.revocation_erase``);
    idempotent, so a failure is retried with backoff and a redelivered message does nothing more. Returns how many
    indexes were re-issued."""
    return len(revocation.revocation_erase(revocation_ids=revocation_ids))


# Deliberately not named attribution_*: that prefix routes to the attribution queue, whose backlog (or lost worker)
# is what this task recovers from. It runs on the default queue.
@shared_task(acks_late=True)
def runs_attribution_retry_task() -> dict[str, int]:
    """Retry failed attributions whose backoff is over and requeue lost ones (run by celery beat)."""
    return services.run_attributions_retry()


def _worker_option(argv: list[str], flag: str) -> str:
    for at, arg in enumerate(argv):
        if arg == flag and at + 1 < len(argv):
            return argv[at + 1]
        if arg.startswith(flag) and len(arg) > len(flag):  # -Qattribution, -c2
            return arg[len(flag) :]
    return ""


def worker_processes(argv: list[str]) -> int:
    """The processes of the worker started with ``argv`` (``-c``), among which the waiting answers are shared; 1
    outside a worker (the task function called directly)."""
    try:
        return max(1, int(_worker_option(argv, "-c") or 1))
    except ValueError:
        return 1


def torch_threads_for(argv: list[str], cpus: int) -> int:
    """Torch threads for each process of a worker started with ``argv``: the cores shared out between its processes
    when it serves the attribution queue alone; 0 (torch's default) for any other worker."""
    if _worker_option(argv, "-Q").split(",") != ["attribution"]:
        return 0
    processes = int(_worker_option(argv, "-c") or cpus or 1)
    return max(1, cpus // max(1, processes))


_threads_set = False


def _share_the_cores() -> None:
    # Each attribution process runs torch with every core by default: N processes then run N x cores spinning threads,
    # which on a busy machine made one answer's scoring up to 20x slower (1.3-19 s against 0.7 s with one thread
    # each, two processes on two shared cores). Set on the first task, not at process start: importing torch there
    # can outlast Celery's wait for a new pool process.
    global _threads_set
    if _threads_set:
        return
    _threads_set = True
    threads = torch_threads_for(sys.argv, os.cpu_count() or 1)
    if threads:
        import torch  # every process imports this module (receivers): only an attribution worker loads torch

        from modelfactory import training

        torch.set_num_threads(threads)
        # a process that only scores: freed activations stay in the heap for the next pass (``reuse_freed_memory``)
        training.reuse_freed_memory()
