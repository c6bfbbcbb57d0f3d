"""Data-parallel fine-tunes: one job trained by several processes (CPU processes over gloo, or one per GPU over nccl).

The training worker calls ``train_distributed``; it writes the job's inputs to a private run folder and starts
``torchrun --standalone --nproc_per_node N -m modelfactory.distributed <folder>`` (``python -m torch.distributed.run``).
Each process (``main``) joins the process group and runs ``training.train_lora`` with its ``ProcessGroup``: every
step's global batch is shared out row by row and the LoRA gradients are summed, so N processes train the adapter one
process would, within floating-point rounding. Rank 0 alone reports progress (JSON lines the launcher passes to the
job's ``progress``), writes checkpoints and saves the adapter into ``output_dir``; the others train into their own
scratch folder, thrown away. A cancellation (``should_stop``) reaches the processes as a file in the run folder,
and they stop together at the next step boundary.

Any process failing fails the run: torchrun stops the others, each process writes what it raised to the run folder,
and the launcher raises the first failure with its rank (a ``TrainingCancelled`` or ``NonFiniteAdapter`` keeps its
type). The processes load the base model themselves (the worker's loaded copy is not shared), so a run holds N + 1
copies of the base model in memory on a CPU worker.

The CUDA path (nccl, one GPU per local rank) is written but has not run here: the development machine has no GPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist

from . import training
from .config import TrainingConfig
from .encoding import DroppedRecord

ROOT = Path(__file__).resolve().parent.parent
SPEC = "spec.json"
EVENTS = "events.jsonl"
RESULT = "result.json"
STOP = "stop"
LOG = "torchrun.log"
# how often the launcher forwards rank 0's progress and asks should_stop()
POLL_SECONDS = 0.5
# how long the processes wait for each other in a collective before the run fails (a lost peer is found sooner:
# torchrun stops the group as soon as one process exits with an error)
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
# the failures that keep their type when they cross from a process to the launcher; any other becomes TrainingError
_KEPT_ERRORS: dict[str, type[training.TrainingError]] = {
    "TrainingCancelled": training.TrainingCancelled,
    "NonFiniteAdapter": training.NonFiniteAdapter,
    "AdapterBaseMismatch": training.AdapterBaseMismatch,
}


class WorkerCannotRun(training.TrainingError):
    """The job asks for a device or a number of processes this worker does not have."""


def capacity(device: str) -> int:
    """How many data-parallel processes this machine runs for a job of ``device`` ("auto" or "cuda"): its CUDA GPUs
    when it has any, else (for "auto") its CPU cores; 0 for a "cuda" job on a machine without CUDA."""
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    if device == "cuda":
        return 0
    return _cpu_cores()


def _cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_worker(config: TrainingConfig, worker: str) -> None:
    """Raise ``WorkerCannotRun`` when this machine cannot run ``config``: a "cuda" job without a CUDA GPU, or more
    processes than it has GPUs (or, on CPU, cores). The message names the worker and what it has."""
    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise WorkerCannotRun(
            f"this job needs a CUDA GPU and worker {worker} has none: it should have gone to the training-gpu "
            "queue, which only CUDA workers consume; launch it again, or choose device auto"
        )
    have = capacity(config.device)
    if config.processes > have:
        what = f"{have} CUDA GPU{'s' if have != 1 else ''}" if cuda else f"{have} CPU core{'s' if have != 1 else ''}"
        raise WorkerCannotRun(
            f"this job asks for {config.processes} processes and worker {worker} has {what}: launch it with at most "
            f"{have} processes"
        )


def train_distributed(
    *,
    processes: int,
    base_model_dir: str | Path,
    records: Sequence[dict[str, Any]],
    record_type: str,
    config: TrainingConfig,
    output_dir: str | Path,
    parent_adapter_dir: str | Path | None = None,
    progress: Callable[[training.ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 50,
    samples: int = 3,
    sample_tokens: int = 32,
    poll_seconds: float = POLL_SECONDS,
) -> training.TrainingResult:
    """``training.train_lora`` of the same arguments, run by ``processes`` processes together (``torchrun``).

    Promises what ``train_lora`` does (``output_dir`` complete or absent, ``should_stop`` asked while training and a
    True raising ``TrainingCancelled``, ``progress`` hearing every step, resuming from ``checkpoint_dir``), and an
    adapter equal to a one-process run's within floating-point rounding when LoRA dropout is 0. The result's
    ``world_size`` is ``processes``. A failure of any process raises ``TrainingError`` (or the failure's own
    ``TrainingCancelled`` / ``NonFiniteAdapter`` / ``AdapterBaseMismatch``) naming the rank and what it raised.
    """
    if processes < 1:
        raise training.TrainingError("a run needs at least one process")
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise training.TrainingError(f"{output_dir} already exists; adapters are never overwritten")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    run_dir = output_dir.with_name(f".{output_dir.name}.ddp-{uuid.uuid4().hex[:8]}")
    run_dir.mkdir()
    try:
        spec = {
            "base_model_dir": str(base_model_dir),
            "records": list(records),
            "record_type": record_type,
            "config": config.to_dict(),
            "output_dir": str(output_dir),
            "parent_adapter_dir": str(parent_adapter_dir) if parent_adapter_dir else None,
            "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
            "checkpoint_every": checkpoint_every,
            "samples": samples,
            "sample_tokens": sample_tokens,
        }
        (run_dir / SPEC).write_text(json.dumps(spec), encoding="utf-8")
        returncode = _run(run_dir, processes, progress, should_stop, poll_seconds)
        if returncode != 0:
            raise _failure(run_dir, processes, returncode)
        data = json.loads((run_dir / RESULT).read_text(encoding="utf-8"))
        data["dropped"] = [DroppedRecord(**d) for d in data["dropped"]]
        known = {f.name for f in fields(training.TrainingResult)}
        return training.TrainingResult(**{k: v for k, v in data.items() if k in known})
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _env(processes: int) -> dict[str, str]:
    env = dict(os.environ)
    # the CPU processes share the cores (torchrun would otherwise pin each to one thread)
    env.setdefault("OMP_NUM_THREADS", str(max(1, _cpu_cores() // processes)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _run(
    run_dir: Path,
    processes: int,
    progress: Callable[[training.ProgressEvent], None] | None,
    should_stop: Callable[[], bool] | None,
    poll_seconds: float,
) -> int:
    """Start torchrun and watch it: forward rank 0's events, pass a stop on; its exit status."""
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "modelfactory.distributed",
        str(run_dir),
    ]
    events, offset = run_dir / EVENTS, 0
    with (run_dir / LOG).open("wb") as log:
        child = subprocess.Popen(argv, cwd=ROOT, env=_env(processes), stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                finished = child.poll() is not None
                offset = _forward(events, offset, progress)
                if finished:
                    return int(child.returncode)
                if should_stop is not None and not (run_dir / STOP).exists() and should_stop():
                    (run_dir / STOP).touch()
                time.sleep(poll_seconds)
        finally:
            if child.poll() is None:  # the launcher itself failed (or was interrupted): take the processes along
                child.terminate()
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()


def _forward(events: Path, offset: int, progress: Callable[[training.ProgressEvent], None] | None) -> int:
    """Pass the complete lines of ``events`` after ``offset`` to ``progress``; the new offset."""
    if not events.exists():
        return offset
    with events.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    for line in complete.splitlines():
        if progress is not None and line.strip():
            progress(training.ProgressEvent(**json.loads(line)))
    return offset + len(complete)


def _failure(run_dir: Path, processes: int, returncode: int) -> training.TrainingError:
    """The error a failed run raises: the first failure a process recorded, else torchrun's own last words."""
    recorded = []
    for path in run_dir.glob("error-rank*.json"):
        with contextlib.suppress(OSError, ValueError):
            recorded.append(json.loads(path.read_text(encoding="utf-8")))
    if recorded:
        first = min(recorded, key=lambda e: e["at"])
        kept = _KEPT_ERRORS.get(first["type"])
        if kept is not None:
            return kept(first["message"])
        return training.TrainingError(
            f"process {first['rank']} of {processes} failed: {first['type']}: {first['message']}"
        )
    tail = ""
    with contextlib.suppress(OSError):
        tail = (run_dir / LOG).read_text(encoding="utf-8", errors="replace")[-1500:].strip()
    return training.TrainingError(
        f"the {processes}-process run failed (torchrun exit status {returncode}) and no process recorded an error "
        f"(killed by the system, out of memory?); torchrun's last output: {tail or '(none)'}"
    )


# --- one process of the run (torchrun starts it with RANK, WORLD_SIZE and LOCAL_RANK set) -------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Train this process's part of the run described in the run folder ``argv[0]``; 0 on success. Whatever it
    raises is written to ``error-rank<R>.json`` in the folder before the process exits with status 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    run_dir = Path(args[0])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    try:
        spec = json.loads((run_dir / SPEC).read_text(encoding="utf-8"))
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            device, backend = torch.device("cpu"), "gloo"
        torch_dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        try:
            result = _train_rank(spec, run_dir, training.ProcessGroup(rank=rank, world_size=world, device=device))
        finally:
            torch_dist.destroy_process_group()
        if rank == 0:
            _write_json(run_dir / RESULT, result.to_dict())
        return 0
    except BaseException as exc:
        _write_json(
            run_dir / f"error-rank{rank}.json",
            {
                "rank": rank,
                "type": type(exc).__name__,
                "message": str(exc) or type(exc).__name__,
                "at": time.time(),
                "traceback": traceback.format_exc()[-4000:],
            },
        )
        traceback.print_exc()
        return 1


def _train_rank(spec: dict[str, Any], run_dir: Path, group: training.ProcessGroup) -> training.TrainingResult:
    events = run_dir / EVENTS

    def report(event: training.ProgressEvent) -> None:
        with events.open("a", encoding="utf-8") as f:
            f.write(json.dumps(event.__dict__) + "\n")

    output_dir = spec["output_dir"] if group.leads else str(run_dir / f"rank-{group.rank}" / "adapter")
    return training.train_lora(
        base_model_dir=spec["base_model_dir"],
        records=spec["records"],
        record_type=spec["record_type"],
        config=TrainingConfig.from_dict(spec["config"]),
        output_dir=output_dir,
        parent_adapter_dir=spec["parent_adapter_dir"],
        progress=report if group.leads else None,
        should_stop=lambda: (run_dir / STOP).exists(),
        checkpoint_dir=spec["checkpoint_dir"],
        checkpoint_every=int(spec["checkpoint_every"]),
        samples=int(spec["samples"]) if group.leads else 0,
        sample_tokens=int(spec["sample_tokens"]),
        device=str(group.device),
        group=group,
    )


def _write_json(path: Path, data: Any) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, path)


if __name__ == "__main__":
    sys.exit(main())
