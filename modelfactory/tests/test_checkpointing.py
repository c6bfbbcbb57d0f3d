"""Gradient checkpointing (issue 18, item 2): the same adapter with it as without, the estimate's "auto", "on" and
"off", the form option and the lineage record. The training runs are a few rank-4 steps of the bundled model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from django.conf import settings
from django.contrib.auth import get_user_model
from safetensors.torch import load_file

from modelfactory.config import TrainingConfig
from modelfactory.estimates import CHECKPOINTING_TIME_FACTOR, checkpointing_on
from modelfactory.forms import FineTuneForm
from modelfactory.tests.factories import tiny_config
from modelfactory.training import ADAPTER_WEIGHTS, LoadedBase, load_base, memory_available, train_lora

RECORDS = [
    {"system": "Answer briefly.", "prompt": f"What is the code of planet {i}?", "response": f"It is {100 + 7 * i}."}
    for i in range(8)
]


@pytest.fixture(scope="module")
def base() -> LoadedBase:
    return load_base(settings.DEFAULT_BASE_MODEL_DIR, device="cpu")


@pytest.mark.slow
def test_checkpointing_on_trains_the_same_adapter_as_off(base: LoadedBase, tmp_path: Path) -> None:
    # dropout on, so the recomputed layers must draw the same masks as the first forward pass did
    config = tiny_config(lora_dropout=0.1, eval_fraction=0.0)
    results = {}
    for mode in ("off", "on"):
        results[mode] = train_lora(
            base_model_dir=base.path,
            records=RECORDS,
            record_type="instruction",
            config=config.with_changes(gradient_checkpointing=mode),
            output_dir=tmp_path / mode,
            samples=0,
            base=base,
        )
    assert results["off"].gradient_checkpointing is False
    assert results["on"].gradient_checkpointing is True
    assert not base.model.is_gradient_checkpointing  # the shared base model is left as it was found
    off, on = (load_file(str(tmp_path / mode / ADAPTER_WEIGHTS)) for mode in ("off", "on"))
    assert off.keys() == on.keys() and len(off) == 2 * 4 * 30
    for name in off:
        assert not torch.equal(off[name], torch.zeros_like(off[name])) or "lora_B" in name
        torch.testing.assert_close(on[name], off[name], rtol=1e-5, atol=1e-6, msg=name)
    losses = {mode: [row["train_loss"] for row in result.loss_history] for mode, result in results.items()}
    assert losses["on"] == pytest.approx(losses["off"], rel=1e-5)


def test_auto_turns_checkpointing_on_only_when_the_job_would_not_fit() -> None:
    assert checkpointing_on("auto", needed_bytes=2_000, available_bytes=1_000)
    assert not checkpointing_on("auto", needed_bytes=500, available_bytes=1_000)
    assert not checkpointing_on("auto", needed_bytes=2_000, available_bytes=None)  # unknown: never on
    assert checkpointing_on("on", needed_bytes=1, available_bytes=10**12)
    assert not checkpointing_on("off", needed_bytes=10**12, available_bytes=1)


def test_the_estimate_with_checkpointing_needs_less_memory_and_more_time() -> None:
    config = TrainingConfig(batch_size=16, max_length=1024, epochs=1)
    size = {"records": 2000, "tokens": 2000 * 900, "device": "cpu"}
    plain = config.estimate(**size, memory_available=10**12)
    assert not plain.checkpointing
    small_machine = config.estimate(**size, memory_available=plain.memory_bytes // 2)
    assert small_machine.checkpointing
    assert small_machine.plain_memory_bytes == plain.memory_bytes
    assert small_machine.memory_bytes < plain.memory_bytes / 2
    train = {name: dict(e.phases)["train"] for name, e in (("plain", plain), ("checkpointed", small_machine))}
    assert train["checkpointed"] == pytest.approx(train["plain"] * CHECKPOINTING_TIME_FACTOR, rel=0.01)
    assert small_machine.seconds > plain.seconds
    forced = config.with_changes(gradient_checkpointing="on").estimate(**size, memory_available=None)
    assert forced.checkpointing and forced.memory_bytes == small_machine.memory_bytes
    never = config.with_changes(gradient_checkpointing="off").estimate(**size, memory_available=1)
    assert not never.checkpointing and never.memory_bytes == plain.memory_bytes


def test_an_unknown_checkpointing_mode_is_refused_with_a_message() -> None:
    errors = TrainingConfig(gradient_checkpointing="sometimes").validate(context_length=8192)
    assert errors == {"gradient_checkpointing": "Gradient checkpointing is one of off, auto, on, not 'sometimes'."}
    assert TrainingConfig().to_dict()["gradient_checkpointing"] == "auto"  # recorded with the hyperparameters


def test_this_machine_reports_memory_a_job_may_use(base: LoadedBase) -> None:
    # at least the model the process holds already, at most the machine's memory plus it
    assert 500 * 2**20 < memory_available(base.device) < 2**50


@pytest.mark.django_db
def test_the_form_offers_off_auto_on_with_auto_by_default() -> None:
    form = FineTuneForm(user=get_user_model().objects.create_user(username="ckpt", password="x" * 12))
    field = form.fields["gradient_checkpointing"]
    assert [value for value, _ in field.choices] == ["auto", "off", "on"]
    assert form.initial["gradient_checkpointing"] == "auto"
