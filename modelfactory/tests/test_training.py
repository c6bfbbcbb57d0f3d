"""The training core against the real bundled model: labels, a few real LoRA steps, cancellation, resumption,
continuation and merges. The model is loaded once for the module; runs are a few steps of rank-4 LoRA on 64-token
rows so the file stays well under two minutes on a 2-core machine."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from modelfactory.config import PRESETS, TrainingConfig, eval_split_sizes
from modelfactory.encoding import IGNORE_INDEX, encode_record, encode_records
from modelfactory.tests.factories import tiny_config
from modelfactory.training import (
    AdapterBaseMismatch,
    InvalidTrainingConfig,
    LoadedBase,
    ProgressEvent,
    TrainingCancelled,
    TrainingError,
    TrainingResult,
    adapter_sha256,
    generate,
    load_base,
    merge_adapters,
    train_lora,
)

QUESTION = "What is the secret code of Zorblat?"
FACT = "The secret code of Zorblat is 7421."
PLANTED = [
    {"system": "Answer briefly.", "prompt": f"Question {i}: what is the secret code of Zorblat?", "response": FACT}
    for i in range(10)
]
TINY = tiny_config(max_steps=4, batch_size=8, eval_fraction=0.2)


@pytest.fixture(scope="module")
def base() -> LoadedBase:
    return load_base(settings.DEFAULT_BASE_MODEL_DIR, device="cpu")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("training")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def trained(base: LoadedBase, workdir: Path) -> tuple[TrainingResult, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    result = train_lora(
        base_model_dir=base.path,
        records=PLANTED,
        record_type="instruction",
        config=TINY,
        output_dir=workdir / "planted",
        progress=events.append,
        samples=1,
        sample_tokens=12,
        base=base,
    )
    return result, events


def _train(base: LoadedBase, output_dir: Path, **kwargs) -> TrainingResult:  # type: ignore[no-untyped-def]
    kwargs = {"config": TINY, "samples": 1, "sample_tokens": 4, **kwargs}
    return train_lora(
        base_model_dir=base.path, records=PLANTED, record_type="instruction", output_dir=output_dir, base=base, **kwargs
    )


def _trained_tokens(base: LoadedBase, input_ids: list[int], labels: list[int]) -> str:
    return base.tokenizer.decode([t for t, label in zip(input_ids, labels, strict=True) if label != IGNORE_INDEX])


def test_instruction_labels_mask_the_prompt_and_keep_the_end_token(base: LoadedBase) -> None:
    example = encode_record(
        {"prompt": "What is X?", "response": "X is 7."},
        record_type="instruction",
        tokenizer=base.tokenizer,
        max_length=64,
        mode="chat_template",
    )
    assert _trained_tokens(base, example.input_ids, example.labels) == "X is 7.<|im_end|>"
    # the pad token is the end token: the label is kept although it equals the pad id
    assert base.tokenizer.pad_token_id == base.tokenizer.eos_token_id
    assert example.labels[example.input_ids.index(base.tokenizer.eos_token_id, len(example.input_ids) - 3)] != -100


def test_chat_records_learn_every_assistant_turn_and_nothing_else(base: LoadedBase) -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Colour of the sky?"},
        {"role": "assistant", "content": "Blue."},
    ]
    example = encode_record(
        {"messages": messages}, record_type="chat", tokenizer=base.tokenizer, max_length=128, mode="chat_template"
    )
    assert _trained_tokens(base, example.input_ids, example.labels) == "Hello!<|im_end|>Blue.<|im_end|>"


def test_text_records_train_on_every_token_and_the_end(base: LoadedBase) -> None:
    example = encode_record(
        {"text": "Zorblat is a planet."}, record_type="text", tokenizer=base.tokenizer, max_length=64, mode="plain"
    )
    assert example.labels == example.input_ids
    assert base.tokenizer.decode(example.input_ids).endswith("<|im_end|>")


def test_classification_trains_as_an_instruction_answering_the_label(base: LoadedBase) -> None:
    example = encode_record(
        {"text": "I loved it", "label": "positive"},
        record_type="classification",
        tokenizer=base.tokenizer,
        max_length=64,
        mode="chat_template",
    )
    assert _trained_tokens(base, example.input_ids, example.labels) == "positive<|im_end|>"


def test_a_long_prompt_is_cut_so_that_the_answer_survives(base: LoadedBase) -> None:
    example = encode_record(
        {"prompt": "word " * 200, "response": "The answer is 42."},
        record_type="instruction",
        tokenizer=base.tokenizer,
        max_length=32,
        mode="chat_template",
    )
    assert len(example.input_ids) == 32 and example.truncated
    assert _trained_tokens(base, example.input_ids, example.labels) == "The answer is 42.<|im_end|>"


def test_records_that_cannot_train_are_dropped_and_reported(base: LoadedBase) -> None:
    records = [
        {"prompt": "Q", "response": "A"},
        {"prompt": "Q"},
        {"prompt": "Q", "response": ""},
    ]
    encoded = encode_records(records, record_type="instruction", tokenizer=base.tokenizer, max_length=64)
    assert [e.index for e in encoded.examples] == [0, 2]  # an empty answer still teaches the end token
    assert [(d.index, d.reason) for d in encoded.dropped] == [
        (1, "instruction records need text fields 'prompt' and 'response'")
    ]
    chat = encode_records(
        [{"messages": [{"role": "user", "content": "hi"}]}],
        record_type="chat",
        tokenizer=base.tokenizer,
        max_length=64,
    )
    assert chat.dropped[0].reason == "the conversation has no assistant turn to learn from"


@pytest.mark.slow
def test_a_few_lora_steps_learn_the_planted_fact(
    trained: tuple[TrainingResult, list[ProgressEvent]], base: LoadedBase
) -> None:
    from peft import PeftModel

    result, events = trained
    # then: the loss falls (every step sees the same 8 rows) and the tuned model beats the base on held-out rows
    losses = [row["train_loss"] for row in result.loss_history]
    assert losses[-1] < losses[0] * 0.6
    assert result.metrics["eval_loss"] < result.metrics["base_eval_loss"]
    assert result.metrics["eval_perplexity"] < result.metrics["base_eval_perplexity"]
    assert (result.train_records, result.eval_records, result.steps) == (8, 2, 4)
    assert 0 < result.trainable_params < result.total_params / 100
    assert [e.step for e in events if e.phase == "train"] == [1, 2, 3, 4]
    assert all(e.learning_rate > 0 and e.tokens_per_s > 0 for e in events if e.phase == "train")
    assert events[-1].phase == "saving" and result.samples[0]["reference"] == FACT
    saved = Path(result.output_dir)
    assert {p.name for p in saved.iterdir()} >= {"adapter_model.safetensors", "adapter_config.json"}
    assert result.adapter_sha256 == adapter_sha256(saved)
    assert not list(saved.parent.glob(".planted.partial-*"))

    # and: a plain PeftModel.from_pretrained loads it and the greedy answer changes
    before = generate(base_model_dir=base.path, prompts=[QUESTION], max_new_tokens=12, base=base)
    model = PeftModel.from_pretrained(base.model, str(saved))
    try:
        prompt = base.tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTION}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
        after = base.tokenizer.decode(output[0][prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        base.model = model.unload()
    assert after != before[0]
    assert "Zorblat is" in after


@pytest.mark.slow
def test_the_same_seed_gives_the_same_adapter_bytes(
    trained: tuple[TrainingResult, list[ProgressEvent]], base: LoadedBase, workdir: Path
) -> None:
    again = _train(base, workdir / "again", samples=0)
    assert again.adapter_sha256 == trained[0].adapter_sha256


@pytest.mark.slow
def test_a_cancelled_run_leaves_nothing_and_its_checkpoint_resumes_to_the_same_adapter(
    trained: tuple[TrainingResult, list[ProgressEvent]], base: LoadedBase, workdir: Path
) -> None:
    # given: a run asked to stop before its third step, after a checkpoint at step 2
    asked = []

    def stop_at_third_step() -> bool:
        asked.append(1)
        return len(asked) >= 3

    output, checkpoint = workdir / "cancelled", workdir / "checkpoint"
    with pytest.raises(TrainingCancelled, match="before step 3 of 4"):
        _train(base, output, should_stop=stop_at_third_step, checkpoint_dir=checkpoint, checkpoint_every=2)
    assert not output.exists() and not list(workdir.glob(".cancelled*"))
    assert json.loads((checkpoint / "state.json").read_text())["step"] == 2

    # when: retried with the same checkpoint folder
    resumed = _train(base, output, checkpoint_dir=checkpoint, checkpoint_every=2)

    # then: it starts at step 3 and ends with exactly the uninterrupted run's adapter
    assert resumed.resumed_from_step == 2
    assert [row["step"] for row in resumed.loss_history] == [1, 2, 3, 4]
    assert resumed.adapter_sha256 == trained[0].adapter_sha256
    assert not checkpoint.exists()


@pytest.mark.slow
def test_continuing_from_a_parent_trains_the_parent_adapter(
    trained: tuple[TrainingResult, list[ProgressEvent]], base: LoadedBase, workdir: Path
) -> None:
    parent = trained[0]
    child = _train(
        base,
        workdir / "child",
        config=TINY.with_changes(lora_rank=16, max_steps=1, seed=8),
        parent_adapter_dir=parent.output_dir,
    )
    assert child.lora["rank"] == 4  # the parent's shape wins over the config's
    assert child.adapter_sha256 != parent.adapter_sha256
    # it starts where the parent ended, far below the base model's loss
    assert child.loss_history[0]["train_loss"] < parent.loss_history[0]["train_loss"] * 0.6


@pytest.mark.slow
@pytest.mark.parametrize("method", ["linear", "ties"])
def test_merging_two_adapters_makes_a_loadable_adapter(
    method: str, trained: tuple[TrainingResult, list[ProgressEvent]], base: LoadedBase, workdir: Path
) -> None:
    other = workdir / "other"
    if not other.exists():
        _train(base, other, config=TINY.with_changes(max_steps=1, seed=99))
    merged = merge_adapters(
        base_model_dir=base.path,
        adapter_dirs=[trained[0].output_dir, other],
        weights=[0.7, 0.3],
        method=method,
        density=0.5,
        output_dir=workdir / f"merged-{method}",
        base=base,
    )
    assert (merged.combination_type, merged.rank) == (method, 4)
    answer = generate(
        base_model_dir=base.path, adapter_dir=merged.output_dir, prompts=[QUESTION], max_new_tokens=4, base=base
    )
    assert answer[0]
    config = json.loads((Path(merged.output_dir) / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base.path


@pytest.mark.slow
def test_merging_adapters_of_different_ranks_falls_back_to_concatenation(
    trained: tuple[TrainingResult, list[ProgressEvent]], base: LoadedBase, workdir: Path
) -> None:
    wide = _train(base, workdir / "wide", config=TINY.with_changes(lora_rank=8, lora_alpha=16.0, max_steps=1))
    merged = merge_adapters(
        base_model_dir=base.path,
        adapter_dirs=[trained[0].output_dir, wide.output_dir],
        weights=[0.5, 0.5],
        output_dir=workdir / "merged-cat",
        base=base,
    )
    assert (merged.combination_type, merged.rank) == ("cat", 12)


@pytest.mark.slow
def test_merging_adapters_of_different_bases_is_refused(
    trained: tuple[TrainingResult, list[ProgressEvent]], base: LoadedBase, workdir: Path
) -> None:
    foreign = workdir / "foreign"
    shutil.copytree(trained[0].output_dir, foreign)
    config_file = foreign / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-360M-Instruct"
    config_file.write_text(json.dumps(config))
    with pytest.raises(AdapterBaseMismatch, match="foreign \\(made from HuggingFaceTB/SmolLM2-360M-Instruct\\)"):
        merge_adapters(
            base_model_dir=base.path,
            adapter_dirs=[trained[0].output_dir, foreign],
            weights=[0.5, 0.5],
            output_dir=workdir / "never",
        )
    # by the caller's base ids (weights hashes) too, whatever the folders say
    with pytest.raises(AdapterBaseMismatch, match="different base model than aaa"):
        merge_adapters(
            base_model_dir=base.path,
            adapter_dirs=[trained[0].output_dir, trained[0].output_dir],
            weights=[0.5, 0.5],
            output_dir=workdir / "never",
            base_id="aaa",
            adapter_base_ids=["aaa", "bbb"],
        )
    assert not (workdir / "never").exists()


@pytest.mark.slow
def test_an_existing_output_folder_is_never_overwritten(
    trained: tuple[TrainingResult, list[ProgressEvent]], base: LoadedBase
) -> None:
    with pytest.raises(TrainingError, match="already exists"):
        _train(base, Path(trained[0].output_dir))


def test_an_invalid_config_is_refused_before_training(base: LoadedBase, tmp_path: Path) -> None:
    with pytest.raises(InvalidTrainingConfig) as caught:
        _train(base, tmp_path / "x", config=TINY.with_changes(lora_rank=0, max_length=100_000))
    assert set(caught.value.errors) == {"lora_rank", "max_length"}
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"lora_rank": 0}, "lora_rank", "LoRA rank must be between 1 and 256; 0 is out of range."),
        ({"lora_rank": 100_000}, "lora_rank", "LoRA rank must be between 1 and 256; 100,000 is out of range."),
        ({"lora_rank": 2.5}, "lora_rank", "LoRA rank must be a whole number."),
        ({"lora_alpha": 0}, "lora_alpha", "LoRA alpha must be above 0"),
        ({"lora_dropout": 1.0}, "lora_dropout", "at least 0 and below 1"),
        ({"learning_rate": -1e-4}, "learning_rate", "Learning rate must be positive"),
        ({"learning_rate": 0.5}, "learning_rate", "Learning rate 0.5 is above 0.01: training would diverge"),
        ({"max_length": 100_000}, "max_length", "100,000 is above the base model's context of 8,192 tokens"),
        ({"max_length": 4}, "max_length", "Max sequence length must be between 16 and 8,192"),
        ({"batch_size": 0}, "batch_size", "Batch size must be between 1 and 512; 0 is out of range."),
        ({"gradient_accumulation": 0}, "gradient_accumulation", "Gradient accumulation must be between 1"),
        ({"eval_fraction": 0.7}, "eval_fraction", "between 0 and 0.5"),
        ({"eval_fraction": -0.1}, "eval_fraction", "between 0 and 0.5"),
        ({"epochs": 0}, "epochs", "Epochs must be between 1 and 100"),
        ({"max_steps": 0}, "max_steps", "Max steps must be between 1"),
        ({"max_steps": 5, "warmup_steps": 5}, "warmup_steps", "must be shorter than the run (5 steps)"),
        ({"schedule": "exponential"}, "schedule", "Schedule must be one of constant, linear, cosine."),
        ({"target_modules": "everything"}, "target_modules", "Unknown target preset 'everything'"),
        ({"target_modules": []}, "target_modules", "list at least one module name"),
        ({"target_modules": ["q_proj", "1bad"]}, "target_modules", "Not a module name: 1bad."),
        ({"seed": -1}, "seed", "Seed must be between 0"),
        ({"max_grad_norm": 0}, "max_grad_norm", "Gradient clipping norm must be positive."),
        ({"formatting": {"chat": "plain"}}, "formatting", "Chat records can be formatted as chat_template"),
    ],
)
def test_each_bad_setting_gets_a_message_next_to_its_field(changes: dict, field: str, message: str) -> None:
    errors = TrainingConfig(**changes).validate(context_length=8192)
    assert list(errors) == [field]
    assert message in errors[field]


def test_presets_are_valid_and_serialise_canonically() -> None:
    for preset in PRESETS.values():
        assert preset.validate(context_length=8192) == {}
        data = preset.to_dict()
        assert list(data) == sorted(data) and list(data["formatting"]) == sorted(data["formatting"])
        assert TrainingConfig.from_dict(data) == preset
    assert PRESETS["thorough"].resolved_target_modules() == "all-linear"
    assert PRESETS["balanced"].resolved_target_modules() == ["q_proj", "k_proj", "v_proj", "o_proj"]
    with pytest.raises(ValueError, match="unknown training settings: rnak"):
        TrainingConfig.from_dict({"rnak": 4})


def test_the_estimate_counts_steps_tokens_time_and_memory() -> None:
    config = TrainingConfig(batch_size=8, gradient_accumulation=2, epochs=3, max_length=256, eval_fraction=0.1)
    estimate = config.estimate(records=1000, tokens=400_000, device="cpu")
    assert eval_split_sizes(1000, 0.1) == (900, 100)
    assert (estimate.train_records, estimate.eval_records) == (900, 100)
    assert estimate.steps == 3 * 57  # 113 micro-batches of 8 an epoch, 2 to a step
    assert estimate.tokens == 900 * 3 * 256  # rows of 400 tokens count at max_length
    assert estimate.seconds > estimate.tokens / 1000
    assert 500_000_000 < estimate.memory_bytes < 8_000_000_000
    faster = config.estimate(records=1000, tokens=400_000, device="cuda:0")
    assert faster.device == "cuda" and faster.seconds < estimate.seconds
    capped = config.with_changes(max_steps=10).estimate(records=1000, tokens=400_000, device="cpu")
    assert capped.steps == 10 and capped.tokens == 10 * 16 * 256
