"""GPU precisions (issue 18, item 4): bf16 and QLoRA are offered only while a live CUDA worker announces them, refused
with a message otherwise (form, API, the worker itself), and the estimate counts each one's memory.

No GPU exists here: the CUDA worker of the "offered" tests is a heartbeat row written by the test (its name says
"faked"); nothing trains on it. Training in bf16 and QLoRA is measured on a CUDA machine by bench/gpu_check.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from modelfactory import estimates, selectors
from modelfactory.config import TrainingConfig
from modelfactory.forms import FineTuneForm, preset_initial
from modelfactory.models import FineTuneJob, TrainingWorker
from modelfactory.tests.factories import UserFactory, default_base, frozen_snapshot, instructions, tiny_config
from modelfactory.training import TrainingError, load_base, train_lora

QUICK = {"max_steps": 3, "max_length": 64, "lora_rank": 4, "warmup_steps": 0}


@pytest.fixture
def owner(db: None) -> Any:
    return UserFactory(username="vera")


@pytest.fixture
def base(db: None) -> Any:
    return default_base()


# What a worker on a machine with one H100 announces (``selectors.worker_devices``): faked, no GPU exists here.
FAKED_CUDA_DEVICES = {
    "kind": "cuda",
    "cpu": {"cores": 16, "memory_bytes": 128 << 30},
    "cuda": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 80 << 30}],
    "max_processes": 1,
    "bitsandbytes": True,
}


def _faked_heartbeat(hostname: str, queues: list[str], *, seen: Any = None) -> TrainingWorker:
    """A training worker's row as its heartbeat keeps it: on a faked CUDA machine when it lists ``training-gpu``."""
    cuda = "training-gpu" in queues
    return TrainingWorker.objects.create(
        hostname=hostname, device="cuda" if cuda else "cpu", device_label="faked", last_seen=seen or timezone.now(),
        devices=FAKED_CUDA_DEVICES if cuda else selectors.worker_devices(),
    )  # fmt: skip


def _form(owner: Any, base: Any, **changes: Any) -> FineTuneForm:
    snapshot = frozen_snapshot(owner=owner, records=instructions(8))
    data = {key: "" if value is None else value for key, value in preset_initial("quick-test").items()}
    data.update(name="precise", start=f"base-{base.pk}", snapshots=[str(snapshot.pk)], formatting="auto", **changes)
    return FineTuneForm(data, user=owner)


def _offered(form: FineTuneForm) -> list[str]:
    return [value for value, _ in form.fields["precision"].widget.choices]


@pytest.mark.parametrize("precision", ["bf16", "qlora-nf4"])
def test_a_gpu_precision_is_refused_with_a_message_when_no_cuda_worker_is_online(
    owner: Any, base: Any, precision: str
) -> None:
    _faked_heartbeat("cpu@box", ["celery", "training", "inference"])  # a live worker, but no GPU queue
    form = _form(owner, base, precision=precision)
    assert _offered(form) == ["fp32"]
    assert not form.is_valid()
    message = form.errors["precision"][0]
    assert "needs a CUDA GPU worker" in message and "training-gpu" in message and "choose fp32" in message
    assert form.config is None


def test_fp32_is_offered_and_chosen_by_default_without_a_gpu(owner: Any, base: Any) -> None:
    form = _form(owner, base)
    assert form.is_valid(), form.errors
    assert form.config is not None and form.config.precision == "fp32"
    assert form.config.to_dict()["precision"] == "fp32"  # recorded with the hyperparameters


@pytest.mark.parametrize("precision", ["bf16", "qlora-nf4"])
def test_a_gpu_precision_is_offered_and_accepted_with_a_faked_cuda_worker_heartbeat(
    owner: Any, base: Any, precision: str
) -> None:
    _faked_heartbeat("gpu@faked", ["training-gpu"])
    form = _form(owner, base, precision=precision)
    assert _offered(form) == ["fp32", "bf16", "qlora-nf4"]
    assert form.is_valid(), form.errors
    assert form.config is not None and form.config.precision == precision


def test_a_stale_faked_cuda_heartbeat_offers_nothing(owner: Any, base: Any) -> None:
    long_ago = timezone.now() - timedelta(seconds=4 * settings.WORKER_HEARTBEAT_SECONDS)
    _faked_heartbeat("gpu@gone", ["training-gpu"], seen=long_ago)
    assert set(selectors.precision_refusals()) == {"bf16", "qlora-nf4"}
    assert _offered(_form(owner, base)) == ["fp32"]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("fp64", "not a precision; choose fp32, bf16, qlora-nf4"),
        ("<script>alert(1)</script>", "not a precision"),
        ("x" * 5000, "not a precision"),
    ],
)
def test_a_hostile_precision_in_the_form_is_refused_with_a_message(
    owner: Any, base: Any, value: str, words: str
) -> None:
    form = _form(owner, base, precision=value)
    assert not form.is_valid()
    assert words in form.errors["precision"][0]


@pytest.mark.parametrize("value", ["fp64", "", ["bf16"], {"a": 1}, 16, None, "x" * 10_000])
def test_the_config_refuses_an_unknown_precision(value: Any) -> None:
    errors = TrainingConfig(precision=value).validate(context_length=8192)
    assert errors["precision"].startswith("Precision is one of fp32, bf16, qlora-nf4, not ")
    assert len(errors["precision"]) < 120  # a long value is cut, not echoed whole


def test_the_api_refuses_a_gpu_precision_without_a_cuda_worker_and_writes_nothing(owner: Any, base: Any) -> None:
    snapshot = frozen_snapshot(owner=owner)
    client = APIClient()
    client.force_authenticate(owner)
    body = {"name": "x", "snapshots": [snapshot.pk], "config": {**QUICK, "precision": "qlora-nf4"}}
    response = client.post(reverse("modelfactory-api:job_launch"), body, format="json")
    assert response.status_code == 400, response.content
    assert "QLoRA (4-bit NF4) training needs a CUDA GPU worker" in response.json()["fields"]["config.precision"][0]
    assert FineTuneJob.objects.count() == 0


@pytest.mark.parametrize(
    ("devices", "bf16", "qlora"),
    [
        (None, True, True),  # no announcement beyond the queue: the worker's own check decides at run time
        ([], True, True),
        (["cuda:0"], True, True),
        ([{"type": "cuda", "name": "NVIDIA H100", "capability": [9, 0]}], True, True),
        ([{"type": "cuda", "capability": [7, 5]}], False, False),  # a T4: no bfloat16
        ([{"type": "cuda", "compute_capability": "8.6", "bitsandbytes": False}], True, False),
        ({"cuda": [{"type": "cuda", "bf16": True}], "bitsandbytes": False}, True, False),
        ([{"type": "cpu"}], False, False),  # it lists its devices, none is CUDA
        (["cpu", 7, None, {"type": ["cuda"]}], False, False),  # garbage is not a GPU
        ("cuda", True, True),  # a shape this reader does not know says nothing
        ({}, True, True),  # a worker of before devices were announced
        (FAKED_CUDA_DEVICES, True, True),  # what selectors.worker_devices announces on a GPU machine
        ({**FAKED_CUDA_DEVICES, "bitsandbytes": False}, True, False),  # the same without QLoRA's library
        ({"kind": "cpu", "cpu": {"cores": 2, "memory_bytes": 1 << 34}, "cuda": [], "max_processes": 2}, False, False),
    ],
)
def test_a_gpu_workers_device_announcement_is_read_defensively(devices: Any, bf16: bool, qlora: bool) -> None:
    found = selectors._cuda_devices(devices)
    worker = devices if isinstance(devices, dict) else {}
    listed = found if found is not None else [{}]
    assert any(selectors._runs_bf16(d) for d in listed) == bf16
    assert any(selectors._runs_qlora(d, worker) for d in listed) == qlora


def test_the_estimate_needs_half_the_weights_in_bf16_and_four_bits_a_weight_in_qlora() -> None:
    shape = {"records": 200, "tokens": 200 * 60, "device": "cuda", "memory_available": None}
    fp32, bf16, qlora = (
        TrainingConfig(precision=p, batch_size=8, max_length=64).estimate(**shape)
        for p in ("fp32", "bf16", "qlora-nf4")
    )
    assert fp32.memory_bytes > bf16.memory_bytes > qlora.memory_bytes
    size = {
        "parameters": 134_515_008,
        "lora_rank": 8,
        "lora_modules": 4,
        "batch_size": 8,
        "row_tokens": 60,
        "checkpointing": False,
    }
    memory = {p: estimates.memory_bytes(**size, precision=p) for p in estimates.PRECISIONS}
    tokens_part = 8 * 60 * 576 * 24 * 30  # the activations, per byte of an activation
    # bf16: half of each weight and of each activation
    assert memory["fp32"] - memory["bf16"] == pytest.approx(134_515_008 * 2 + tokens_part * 2, abs=1)
    # QLoRA: the embeddings (49,152 x 576) in bfloat16, every other weight in 4.127 bits
    embeddings = 49_152 * 576
    weights = embeddings * 2 + (134_515_008 - embeddings) * 4.127 / 8
    assert memory["bf16"] - memory["qlora-nf4"] == pytest.approx(134_515_008 * 2 - weights, abs=1)
    assert memory["qlora-nf4"] < memory["fp32"] / 2


def test_a_cpu_worker_refuses_a_gpu_precision_with_a_message() -> None:
    for precision in ("bf16", "qlora-nf4"):
        with pytest.raises(TrainingError, match=f"{precision} training needs a CUDA GPU; this worker trains on cpu"):
            load_base(settings.DEFAULT_BASE_MODEL_DIR, device="cpu", precision=precision)


def test_train_lora_refuses_a_gpu_precision_on_cpu_before_writing_anything(tmp_path: Any) -> None:
    with pytest.raises(TrainingError, match="bf16 training needs a CUDA GPU"):
        train_lora(
            base_model_dir=settings.DEFAULT_BASE_MODEL_DIR,
            records=instructions(4),
            record_type="instruction",
            config=tiny_config(precision="bf16"),
            output_dir=tmp_path / "adapter",
            device="cpu",
        )
    assert not (tmp_path / "adapter").exists()


def test_the_job_page_lists_gpu_precisions_only_with_a_faked_cuda_worker_heartbeat(owner: Any, base: Any) -> None:
    client = Client()
    client.force_login(owner)
    page = client.get(reverse("modelfactory:job_new")).content.decode()
    assert 'name="precision"' in page and 'value="fp32"' in page
    assert 'value="bf16"' not in page and 'value="qlora-nf4"' not in page

    _faked_heartbeat("gpu@faked", ["training-gpu"])
    page = client.get(reverse("modelfactory:job_new")).content.decode()
    assert 'value="bf16"' in page and 'value="qlora-nf4"' in page
