"""Data-parallel fine-tunes (issue 18, item 3): two CPU processes over gloo, started by torchrun, train the adapter one
process trains on the same global batch (within floating-point rounding), report rank 0's progress, stop together
when cancelled, and a failing process fails the run with a message naming it. The runs are three rank-4 steps of the
bundled model."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from django.conf import settings
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from safetensors.torch import load_file

from ledger import hashing
from modelfactory import lineage, selectors, services
from modelfactory.distributed import WorkerCannotRun, capacity, check_worker, train_distributed
from modelfactory.forms import FineTuneForm, preset_initial
from modelfactory.models import FineTuneJob, TrainingWorker
from modelfactory.selectors import processes_error
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, tiny_config
from modelfactory.training import (
    ADAPTER_WEIGHTS,
    LoadedBase,
    ProgressEvent,
    TrainingCancelled,
    TrainingError,
    load_base,
    train_lora,
)
from openledger_web.signals import gpu_queue_change
from openledger_web.testing import celery_worker_process
from outbox.models import OutboxMessage

RECORDS = [
    {"system": "Answer briefly.", "prompt": f"What is the code of planet {i}?", "response": f"It is {100 + 7 * i}."}
    for i in range(11)
]
# batches of 3 rows: the two processes get 2 and 1 rows of each, so an uneven split is covered too
CONFIG = tiny_config(batch_size=3, eval_fraction=0.2, lora_dropout=0.0)


@pytest.fixture(scope="module")
def base() -> LoadedBase:
    return load_base(settings.DEFAULT_BASE_MODEL_DIR, device="cpu")


@pytest.mark.slow
def test_two_gloo_processes_train_the_adapter_one_process_trains(base: LoadedBase, tmp_path: Path) -> None:
    one = train_lora(
        base_model_dir=base.path,
        records=RECORDS,
        record_type="instruction",
        config=CONFIG,
        output_dir=tmp_path / "one",
        samples=1,
        sample_tokens=4,
        base=base,
    )
    events: list[ProgressEvent] = []
    two = train_distributed(
        processes=2,
        base_model_dir=base.path,
        records=RECORDS,
        record_type="instruction",
        config=CONFIG.with_changes(processes=2),
        output_dir=tmp_path / "two",
        progress=events.append,
        checkpoint_dir=tmp_path / "checkpoint",
        checkpoint_every=2,
        samples=1,
        sample_tokens=4,
        poll_seconds=0.1,
    )
    assert (one.world_size, two.world_size) == (1, 2)
    assert two.output_dir == str(tmp_path / "two") and (tmp_path / "two" / ADAPTER_WEIGHTS).is_file()
    # nothing of the run is left beside the adapter: no run folder, no scratch adapter of rank 1, no checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    a, b = (load_file(str(tmp_path / name / ADAPTER_WEIGHTS)) for name in ("one", "two"))
    assert a.keys() == b.keys() and len(a) == 2 * 4 * 30
    # B starts at zero: its size is what training did; the two adapters differ by rounding, a tiny share of that
    moved = sum(float(t.norm()) for n, t in a.items() if "lora_B" in n)
    apart = {n: float((a[n] - b[n]).norm()) for n in a}
    worst = max(apart, key=apart.__getitem__)
    close = {n: float((a[n] - b[n]).abs().max()) for n in a}
    assert moved > 0 and sum(apart.values()) < 1e-3 * moved, (moved, apart[worst], worst, max(close.values()))
    # the same data seen, the same losses (token-weighted over both processes' rows)
    assert (two.steps, two.train_records, two.eval_records, two.tokens_seen) == (
        one.steps,
        one.train_records,
        one.eval_records,
        one.tokens_seen,
    )
    losses = [(row["train_loss"], row["eval_loss"]) for row in one.loss_history]
    assert [(row["train_loss"], row["eval_loss"]) for row in two.loss_history] == [
        (pytest.approx(t, rel=1e-4), pytest.approx(e, rel=1e-4) if e is not None else None) for t, e in losses
    ]
    assert two.metrics["base_eval_loss"] == pytest.approx(one.metrics["base_eval_loss"], rel=1e-5)
    # rank 0's progress reached the caller: start, every step, the evaluation, samples and saving
    train_steps = [e.step for e in events if e.phase == "train"]
    assert train_steps == [1, 2, 3]
    assert [e.phase for e in events][:2] == ["eval_base", "start"] and events[-1].phase == "saving"
    assert len(two.samples) == 1 and two.samples[0]["prompt"] == one.samples[0]["prompt"]


@pytest.mark.slow
def test_a_cancelled_two_process_run_stops_every_process_and_keeps_nothing(tmp_path: Path) -> None:
    with pytest.raises(TrainingCancelled, match="cancelled before step 1 of 3"):
        train_distributed(
            processes=2,
            base_model_dir=settings.DEFAULT_BASE_MODEL_DIR,
            records=RECORDS,
            record_type="instruction",
            config=CONFIG.with_changes(processes=2, eval_fraction=0.0),
            output_dir=tmp_path / "adapter",
            should_stop=lambda: True,
            poll_seconds=0.1,
        )
    assert list(tmp_path.iterdir()) == []


def test_a_failing_process_fails_the_run_with_its_rank_and_message(tmp_path: Path) -> None:
    # every process fails to find the base model; the first one recorded is named
    with pytest.raises(TrainingError, match=r"process [01] of 2 failed: OSError: .*not-a-model"):
        train_distributed(
            processes=2,
            base_model_dir=tmp_path / "not-a-model",
            records=RECORDS,
            record_type="instruction",
            config=CONFIG.with_changes(processes=2),
            output_dir=tmp_path / "adapter",
            poll_seconds=0.1,
        )
    assert [p.name for p in tmp_path.iterdir()] == []


def test_an_existing_output_folder_is_refused_before_any_process_starts(tmp_path: Path) -> None:
    (tmp_path / "adapter").mkdir()
    with pytest.raises(TrainingError, match="already exists"):
        train_distributed(
            processes=2,
            base_model_dir=settings.DEFAULT_BASE_MODEL_DIR,
            records=RECORDS,
            record_type="instruction",
            config=CONFIG.with_changes(processes=2),
            output_dir=tmp_path / "adapter",
        )


# The job: launched with 2 processes, checked against what the workers announce, routed, run by a real worker


def test_the_worker_refuses_more_processes_than_it_has_cores_and_cuda_it_lacks() -> None:
    cuda = torch.cuda.is_available()
    have = capacity("auto")
    assert have == (torch.cuda.device_count() if cuda else len(os.sched_getaffinity(0)))
    unit = "CUDA GPU" if cuda else "CPU core"
    with pytest.raises(WorkerCannotRun, match=f"asks for {have + 1} processes and worker w@h has {have} {unit}"):
        check_worker(CONFIG.with_changes(processes=have + 1), "w@h")
    if not cuda:
        with pytest.raises(WorkerCannotRun, match="needs a CUDA GPU and worker w@h has none"):
            check_worker(CONFIG.with_changes(device="cuda"), "w@h")
    check_worker(CONFIG.with_changes(processes=have), "w@h")  # no error


@pytest.mark.django_db
def test_processes_are_checked_against_what_the_live_training_workers_announce() -> None:
    two = CONFIG.with_changes(processes=2)
    assert processes_error(CONFIG) is None  # one process: any worker, live or not yet
    assert "No live training worker announces its devices" in processes_error(two)
    services.training_worker_touch(hostname="training@here")  # this machine's real announcement
    offered = selectors.worker_devices()["max_processes"]
    assert processes_error(CONFIG.with_changes(processes=offered)) is None
    assert processes_error(CONFIG.with_changes(processes=offered + 1)) == (
        f"The live training workers run at most {offered} processes (devices (GPUs, or CPU cores on a worker "
        f"without GPUs)); {offered + 1} asked for."
    )
    if selectors.worker_devices()["kind"] == "cpu":
        assert "No live training worker with a CUDA GPU" in processes_error(CONFIG.with_changes(device="cuda"))
    # a worker that stopped beating offers nothing
    TrainingWorker.objects.update(last_seen=timezone.now() - timedelta(hours=1))
    assert "No live training worker" in processes_error(two)


@pytest.mark.django_db
def test_a_cuda_job_goes_to_the_training_gpu_queue_with_a_faked_cuda_worker() -> None:
    # FAKED: no GPU here, so a training worker's announcement of one is written by hand
    TrainingWorker.objects.create(
        hostname="gpu@faked",
        device="cuda",
        device_label="faked",
        last_seen=timezone.now(),
        devices={"kind": "cuda", "cuda": [{"index": 0, "name": "faked"}, {"index": 1}], "max_processes": 2},
    )
    owner = UserFactory()
    snapshot = frozen_snapshot(owner=owner)
    with pytest.raises(ValidationError, match="at most 2 processes"):
        services.job_launch(
            owner=owner,
            name="too wide",
            base_model=default_base(),
            snapshots=[snapshot],
            config=CONFIG.with_changes(processes=3, device="cuda"),
        )
    job = services.job_launch(
        owner=owner,
        name="on a gpu",
        base_model=default_base(),
        snapshots=[snapshot],
        config=CONFIG.with_changes(processes=2, device="cuda"),
    )
    sent = OutboxMessage.objects.get(task_id=job.celery_task_id)
    assert sent.queue == "training-gpu"
    plain = services.job_launch(
        owner=owner, name="anywhere", base_model=default_base(), snapshots=[snapshot], config=CONFIG
    )
    assert OutboxMessage.objects.get(task_id=plain.celery_task_id).queue == ""  # routed by name: training


def test_only_a_cuda_worker_consumes_the_training_gpu_queue() -> None:
    assert gpu_queue_change(["training"], cuda=False) is None
    assert gpu_queue_change(["training", "training-gpu"], cuda=False) == ("drop", "training-gpu")
    assert gpu_queue_change(["default"], cuda=True) is None  # only training workers take GPU jobs
    assert gpu_queue_change(["training"], cuda=True) == ("add", "training-gpu")  # FAKED cuda=True: no GPU here
    assert gpu_queue_change(["training", "training-gpu"], cuda=True) is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("processes", "message"),
    [
        (0, "Processes must be between 1 and 64; 0 is out of range."),
        (-3, "Processes must be between 1 and 64; -3 is out of range."),
        (65, "Processes must be between 1 and 64; 65 is out of range."),
        ("2", "Processes must be a whole number."),
        (True, "Processes must be a whole number."),
        (2.5, "Processes must be a whole number."),
        (10**12, "Processes must be between 1 and 64; 1,000,000,000,000 is out of range."),
    ],
)
def test_hostile_processes_are_refused_by_the_api_with_a_message(processes: Any, message: str) -> None:
    owner = UserFactory()
    default_base()
    snapshot = frozen_snapshot(owner=owner)
    client = APIClient()
    client.force_authenticate(owner)
    config = {**CONFIG.to_dict(), "processes": processes}
    response = client.post(
        reverse("modelfactory-api:job_launch"),
        {"name": "hostile", "snapshots": [snapshot.pk], "config": config},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert message in json.dumps(response.json())
    assert not FineTuneJob.objects.exists()


@pytest.mark.django_db
def test_hostile_device_and_processes_are_refused_by_the_form() -> None:
    owner = UserFactory()
    base = default_base()
    snapshot = frozen_snapshot(owner=owner)
    data = {
        **{k: v for k, v in preset_initial("quick-test").items() if v is not None},
        "name": "hostile",
        "start": f"base-{base.pk}",
        "snapshots": [snapshot.pk],
        "formatting": "auto",
        "target_modules": "attention",
    }
    for change, field in (
        ({"device": "tpu"}, "device"),
        ({"processes": "many"}, "processes"),
        ({"processes": "0"}, "processes"),
        ({"processes": "2"}, "processes"),  # no live worker announces 2
    ):
        form = FineTuneForm(data={**data, **change}, user=owner)
        assert not form.is_valid() and field in form.errors, (change, form.errors)
    assert FineTuneForm(data=data, user=owner).is_valid()


@pytest.mark.slow
def test_a_two_process_job_runs_on_a_real_worker_and_its_lineage_records_the_world_size(
    transactional_db: None, settings: Any, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    owner = UserFactory()
    default_base()
    snapshot = frozen_snapshot(owner=owner)
    client = APIClient()
    client.force_authenticate(owner)
    worker = celery_worker_process(queues="training", name="ddp", timeout=90, MEDIA_ROOT=str(settings.MEDIA_ROOT))
    with worker:
        # the worker announced its cores, so a 2-process job is accepted
        response = client.post(
            reverse("modelfactory-api:job_launch"),
            {"name": "two", "snapshots": [snapshot.pk], "config": CONFIG.with_changes(processes=2).to_dict()},
            format="json",
        )
        assert response.status_code == 201, response.json()
        job = FineTuneJob.objects.get(pk=response.json()["id"])
        deadline = time.monotonic() + 600
        while not job.is_finished and time.monotonic() < deadline:
            time.sleep(0.5)
            job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED, (job.status, job.error, job.log_tail[-5:])
    assert (job.step, job.total_steps, len(job.loss_history)) == (3, 3, 3)  # rank 0's progress reached the row
    version = job.version
    manifest = json.loads(version.manifest)
    assert manifest["world_size"] == 2 and manifest["config"]["processes"] == 2
    assert hashing.keccak_hex(version.manifest.encode()) == version.manifest_hash
    assert version.training["world_size"] == 2
    page = Client()
    page.force_login(owner)
    shown = page.get(reverse("modelfactory:version_detail", args=[version.pk])).content.decode()
    assert "by 2 data-parallel processes" in shown


def test_the_manifest_states_the_world_size_only_above_one_process() -> None:
    common: dict[str, Any] = {
        "base_model": {"name": "b", "weights_sha256": "00"},
        "parents": [],
        "snapshots": [{"datanet": "a", "number": 1, "id": 3, "merkle_root": "0x1"}],
        "config": CONFIG.to_dict(),
        "seed": 7,
        "record_type": "instruction",
        "code_version": "unknown",
        "adapter_sha256": "ab" * 32,
        "adapter_files": [
            {"name": "adapter_model.safetensors", "sha256": "ab" * 32, "bytes": 10},
            {"name": "adapter_config.json", "sha256": "cd" * 32, "bytes": 2},
        ],
        "metrics": {"train_loss": 1.5},
    }
    plain = lineage.build_manifest(**common)
    # one process: the bytes a manifest had before world sizes existed (no key; the default is not written)
    assert plain == lineage.build_manifest(**common, world_size=1) and b"world_size" not in plain
    two = json.loads(lineage.build_manifest(**common, world_size=2))
    assert two["world_size"] == 2 and {k: v for k, v in two.items() if k != "world_size"} == json.loads(plain)
    with pytest.raises(ValueError, match="a world size is at least 1, got 0"):
        lineage.build_manifest(**common, world_size=0)
