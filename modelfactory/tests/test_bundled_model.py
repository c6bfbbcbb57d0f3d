from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings

from modelfactory.weights import ModelFolderError, default_model_status, model_folder_inspect


def test_the_prepared_bundled_model_is_a_complete_huggingface_folder() -> None:
    folder = Path(settings.DEFAULT_BASE_MODEL_DIR)
    info = model_folder_inspect(folder)
    assert info.architecture == "LlamaForCausalLM"
    assert 130_000_000 < info.parameters < 140_000_000
    assert info.context_length == 8192 and info.has_chat_template
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert default_model_status()["ok"] is True


@pytest.mark.slow
def test_the_bundled_model_loads_offline_and_answers() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = settings.DEFAULT_BASE_MODEL_DIR
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0][prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "has no config.json"),
        ({"config.json": "{not json"}, "is not valid JSON"),
        ({"config.json": '{"architectures": ["LlamaForCausalLM"]}'}, "has no weights"),
    ],
)
def test_a_folder_without_its_parts_is_refused_with_a_reason(tmp_path: Path, files: dict[str, str], message) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ModelFolderError, match=message):
        model_folder_inspect(tmp_path)
