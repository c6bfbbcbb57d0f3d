"""The serving engine on every supported family (tiny random-weight models built offline, ``modelfactory.tiny``):
its own LoRA hooks, GPT-2's transposed Conv1D layers included, give peft's logits for every row of a mixed-adapter
batch, and a mixed generation batch answers every row, through the chat fallback where the tokenizer has no
template."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from inference.engine import AdapterError, Engine, GenerationRequest
from inference.testing import make_synthetic_adapter, release_synthetic_models
from modelfactory.architectures import ARCHITECTURES
from modelfactory.tiny import FAMILIES, build_all

PROMPTS = ["The code of planet 3 is", "Hello there, how are you today?", "Planet", "Name a colour for me"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_all(tmp_path_factory.getbasetemp() / "tiny-families", tokenizer_dir=settings.DEFAULT_BASE_MODEL_DIR)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_mixed_batch_gives_peft_logits_on_every_family(
    family: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = tiny_models[family]
    arch = ARCHITECTURES[family]
    adapters = {
        "attention": make_synthetic_adapter(folder, tmp_path / "attention", rank=4, targets=arch.attention, seed=1),
        "all": make_synthetic_adapter(folder, tmp_path / "all", rank=2, targets=arch.modules, seed=2),
        "peft": make_synthetic_adapter(folder, tmp_path / "peft", rank=8, targets=arch.peft_default, seed=3),
    }
    release_synthetic_models()
    engine = Engine(folder, device="cpu", max_batch_size=8)
    try:
        for name, path in adapters.items():
            engine.register_adapter(name, path)
        ids: list[str | None] = ["attention", "all", None, "peft"]
        got = engine.batch_logits(PROMPTS, ids)
        reference = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
        for prompt, adapter_id, logits in zip(PROMPTS, ids, got, strict=True):
            tokens = torch.tensor([engine.tokenizer(prompt)["input_ids"]])
            with torch.inference_mode():
                plain = reference(input_ids=tokens).logits[0]
                if adapter_id is None:
                    assert torch.allclose(logits, plain, atol=1e-5)
                    continue
                model = PeftModel.from_pretrained(reference, str(adapters[adapter_id]))
                expected = model(input_ids=tokens).logits[0]
                reference = model.unload()
            assert torch.allclose(logits, expected, atol=1e-4), (adapter_id, float((logits - expected).abs().max()))
            assert not torch.allclose(expected, plain, atol=1e-2), "the adapter changes the logits"
        results = engine.generate_batch(
            [
                GenerationRequest(
                    adapter_id=a, messages=[{"role": "user", "content": p}], max_new_tokens=3, ignore_eos=True
                )
                for a, p in zip(ids, PROMPTS, strict=True)
            ]
        )
        assert [(r.error, r.completion_tokens) for r in results] == [(None, 3)] * 4
    finally:
        engine.close()


def test_fan_in_fan_out_is_refused_on_a_linear_layer(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    import json

    adapter = make_synthetic_adapter(tiny_models["llama"], tmp_path / "a", rank=2, targets=("q_proj",))
    release_synthetic_models()
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "fan_in_fan_out": True}))
    engine = Engine(tiny_models["llama"], device="cpu")
    try:
        with pytest.raises(AdapterError, match=r"fan_in_fan_out on model\.layers\.0\.self_attn\.q_proj, which is not"):
            engine.load_adapter("a", adapter)
    finally:
        engine.close()
