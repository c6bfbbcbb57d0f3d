"""Data-parallel fine-tunes (issue 18, item 3): two CPU processes over gloo, started by torchrun, train the adapter one
process trains on the same global batch (within floating-point rounding), report rank 0's progress, stop together
when cancelled, and a failing process fails the run with a message naming it. The runs are three rank-4 steps of the
bundled model."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from safetensors.torch import load_file

from modelfactory.distributed import train_distributed
from modelfactory.tests.factories import tiny_config
from modelfactory.training import (
    ADAPTER_WEIGHTS,
    LoadedBase,
    ProgressEvent,
    TrainingCancelled,
    TrainingError,
    load_base,
    train_lora,
)

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
