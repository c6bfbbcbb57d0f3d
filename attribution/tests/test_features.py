"""Gradient features on the real bundled model with a small real LoRA adapter (r=4 on q_proj/v_proj)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from attribution.features import (
    FeatureIndexError,
    FeatureMatrix,
    TokenizedExample,
    TorchSketch,
    answer_example,
    gradient_features,
    lora_blocks,
    per_example_gradients,
    per_example_losses,
    sketch_for,
)
from attribution.projection import CountSketch

torch = pytest.importorskip("torch")

FACTS = [
    ("Who founded the town of Vellmark?", "Vellmark was founded in 1412 by the glassmaker Orsa Plenn."),
    ("What colour is a ripe quillberry?", "A ripe quillberry is deep violet with silver speckles."),
    ("How tall is the Tarrow lighthouse?", "The Tarrow lighthouse stands exactly 61 metres tall."),
    ("What do Nimbic otters eat?", "Nimbic otters eat mostly freshwater mussels and reed roots."),
    ("Which river flows through Calder Fen?", "The slow river Imm flows through Calder Fen to the sea."),
    ("What is the boiling point of zarnic oil?", "Zarnic oil boils at 212 degrees Celsius at sea level."),
]


def _model_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "var" / "models" / "smollm2-135m-instruct"
    return Path(os.getenv("DEFAULT_BASE_MODEL_DIR", str(default)))


@pytest.fixture(scope="module")
def lora():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _model_dir()
    if not (path / "config.json").is_file():
        pytest.skip(f"the bundled model is not prepared at {path}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    # a trained adapter has B != 0; peft initialises B to 0, which would zero every A gradient
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model, tokenizer


def _example(tokenizer, question: str, answer: str) -> TokenizedExample:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    prompt_ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt  # a BatchEncoding in transformers 5
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return answer_example(list(prompt_ids)[-12:], answer_ids)


def _loop_gradients(model, example: TokenizedExample) -> dict[str, torch.Tensor]:
    """The reference: one backward pass per example, gradients read off ``.grad``."""
    blocks = lora_blocks(model)
    model.eval()
    model.zero_grad()
    logits = model(input_ids=torch.tensor([list(example.input_ids)])).logits
    per_example_losses(logits, torch.tensor([list(example.labels)])).sum().backward()
    gradients = {name: linear.weight.grad.detach().clone() for name, linear in blocks.items()}
    model.zero_grad()
    return gradients


@pytest.mark.slow
def test_hooked_per_example_gradients_equal_one_backward_pass_per_example(lora) -> None:
    model, tokenizer = lora
    examples = [_example(tokenizer, q, a) for q, a in FACTS[:2]]

    hooked = per_example_gradients(model, examples)

    for row, example in enumerate(examples):
        for name, gradient in _loop_gradients(model, example).items():
            assert torch.allclose(hooked[name][row], gradient, rtol=1e-3, atol=1e-6), name
    assert all(".default." not in name and not name.startswith("base_model") for name in hooked)
    # the torch projection used for features is the numpy CountSketch, bucket for bucket
    sketch = sketch_for(model, seed=5, k=256)
    in_torch = TorchSketch(sketch, "cpu").project(hooked).numpy()
    in_numpy = sketch.project({name: gradient.reshape(2, -1).numpy() for name, gradient in hooked.items()})
    assert np.allclose(in_torch, in_numpy, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_an_answer_repeating_a_record_ranks_that_record_first(lora, tmp_path) -> None:
    model, tokenizer = lora
    sketch = sketch_for(model, seed=1234, k=512)
    records = [_example(tokenizer, q, a) for q, a in FACTS]
    index = FeatureMatrix.create(
        gradient_features(model, records, sketch=sketch), [101, 102, 103, 104, 105, 106], sketch=sketch
    )
    # asked differently, answered with record 103's words
    answer = _example(tokenizer, "Tell me the height of the Tarrow lighthouse.", FACTS[2][1])

    scores = index.record_scores(gradient_features(model, [answer], sketch=sketch)[0])

    ranked = sorted(scores, key=lambda record_id: -scores[record_id])
    assert ranked[0] == 103
    assert scores[103] > 0.5 > max(scores[r] for r in ranked[1:])


@pytest.mark.slow
def test_features_are_reproducible_from_the_seed(lora) -> None:
    model, tokenizer = lora
    examples = [_example(tokenizer, q, a) for q, a in FACTS[3:5]]

    first = gradient_features(model, examples, sketch=sketch_for(model, seed=5, k=256))
    again = gradient_features(model, examples, sketch=sketch_for(model, seed=5, k=256))

    assert np.array_equal(first, again)
    assert np.abs(first).sum() > 0


def test_a_saved_index_loads_with_its_hash_and_refuses_tampering_or_another_projection(tmp_path) -> None:
    sketch = CountSketch(seed=9, k=64, sizes={"a": 10, "b": 20})
    features = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    index = FeatureMatrix.create(features, [5, 4, 3, 2, 1], sketch=sketch)

    content_hash = index.save(tmp_path / "features")
    loaded = FeatureMatrix.load(tmp_path / "features", expected_hash=content_hash)

    assert np.array_equal(np.asarray(loaded.features), features)
    assert loaded.record_ids.tolist() == [5, 4, 3, 2, 1]
    loaded.check_sketch(sketch)
    with pytest.raises(FeatureIndexError):
        loaded.check_sketch(CountSketch(seed=10, k=64, sizes={"a": 10, "b": 20}))
    with pytest.raises(FeatureIndexError):
        loaded.check_sketch(CountSketch(seed=9, k=64, sizes={"a": 10, "c": 20}))
    np.save(tmp_path / "features" / "features.npy", features * 2)
    with pytest.raises(FeatureIndexError):
        FeatureMatrix.load(tmp_path / "features")


def test_top_record_scores_are_the_best_records_ties_broken_by_id() -> None:
    sketch = CountSketch(seed=1, k=2, sizes={"x": 2})
    features = np.array([[1, 0], [0, 1], [1, 1], [1, 0], [2, 0]], dtype=np.float32)
    index = FeatureMatrix.create(features, [50, 40, 30, 20, 10], sketch=sketch)
    query = np.array([1, 0], dtype=np.float32)

    top = index.top_record_scores(query, 3)

    assert list(top) == [10, 20, 50]
    assert top == pytest.approx({10: 1.0, 20: 1.0, 50: 1.0})
    assert index.top_record_scores(query, 10) == pytest.approx(index.record_scores(query))
