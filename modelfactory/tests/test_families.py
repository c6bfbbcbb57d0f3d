"""Every supported family through ModelFactory: tiny random-weight models of Llama, Mistral, Qwen2, Gemma, Phi-3,
GPT-NeoX and GPT-2 (Conv1D) built offline from their configs (``modelfactory.tiny``), trained, continued and merged
(linear and TIES) through the real training code; the target modules chosen per family from peft's mapping and
checked against the model's layers; a user's module list validated; the chat fallback for tokenizers without a
template; the estimate sized per family; an unsupported family refused at registration and at launch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError

from modelfactory import architectures, services
from modelfactory.architectures import ARCHITECTURES, UnsupportedArchitecture
from modelfactory.config import TrainingConfig
from modelfactory.encoding import FALLBACK_CHAT_TEMPLATE, encode_record, render_chat
from modelfactory.forms import FineTuneForm
from modelfactory.models import BaseModel
from modelfactory.tests.factories import BaseModelFactory, UserFactory, frozen_snapshot
from modelfactory.tiny import FAMILIES, NO_CHAT_TEMPLATE, build_all
from modelfactory.training import InvalidTrainingConfig, LoadedBase, load_base, merge_adapters, train_lora

RECORDS = [
    {"prompt": f"What is the secret code of planet {i}?", "response": f"The code of planet {i} is {1000 + 37 * i}."}
    for i in range(6)
]
STEPS = TrainingConfig.from_dict(
    {
        "lora_rank": 4,
        "lora_alpha": 8.0,
        "lora_dropout": 0.0,
        "learning_rate": 5e-3,
        "schedule": "constant",
        "warmup_steps": 0,
        "max_steps": 2,
        "batch_size": 4,
        "max_length": 64,
        "eval_fraction": 0.0,
    }
)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny model per family, built once per test session (other apps' family tests reuse the folders)."""
    return build_all(tmp_path_factory.getbasetemp() / "tiny-families", tokenizer_dir=settings.DEFAULT_BASE_MODEL_DIR)


def _train(base: LoadedBase, out: Path, config: TrainingConfig = STEPS, parent: Path | None = None) -> Any:
    return train_lora(
        base_model_dir=base.path,
        records=RECORDS,
        record_type="instruction",
        config=config,
        output_dir=out,
        parent_adapter_dir=parent,
        samples=1,
        sample_tokens=2,
        base=base,
    )


def test_the_families_are_the_seven_promised() -> None:
    assert set(FAMILIES) == set(ARCHITECTURES) == {"llama", "mistral", "qwen2", "gemma", "phi3", "gpt_neox", "gpt2"}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_targets_peft_choice_and_only_layers_its_model_has(
    family: str, tiny_models: dict[str, Path]
) -> None:
    import torch
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_MAPPING
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    arch = ARCHITECTURES[family]
    # peft's own choice for the family is among its attention preset (the pinned peft knows no Phi-3)
    peft_names = PEFT_MAPPING.get(family) or list(arch.peft_default)
    assert set(peft_names) == set(arch.peft_default) <= set(arch.attention)
    model = AutoModelForCausalLM.from_pretrained(tiny_models[family], local_files_only=True, dtype=torch.float32)
    layers = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | Conv1D) and module is not model.get_output_embeddings()
    }
    # every listed module is a layer of the model, and together they cover every adaptable layer
    for target in arch.modules:
        assert any(name == target or name.endswith("." + target) for name in layers), target
    assert all(any(name.endswith("." + t) for t in arch.modules) for name in layers)
    assert any(isinstance(m, Conv1D) for m in layers.values()) == arch.conv1d


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_continues_and_merges(family: str, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    base = load_base(tiny_models[family], device="cpu")
    arch = ARCHITECTURES[family]
    first = _train(base, tmp_path / "first")
    second = _train(base, tmp_path / "second", STEPS.with_changes(seed=7))
    continued = _train(base, tmp_path / "continued", parent=tmp_path / "first")
    assert first.lora["target_modules"] == sorted(arch.attention)
    assert continued.lora["target_modules"] == first.lora["target_modules"]
    assert first.adapter_sha256 != second.adapter_sha256 != continued.adapter_sha256
    saved = json.loads((tmp_path / "first" / "adapter_config.json").read_text())
    assert saved["fan_in_fan_out"] is arch.conv1d
    linear = merge_adapters(
        base_model_dir=base.path,
        adapter_dirs=[tmp_path / "first", tmp_path / "second"],
        weights=[0.5, 0.5],
        output_dir=tmp_path / "linear",
        base=base,
    )
    ties = merge_adapters(
        base_model_dir=base.path,
        adapter_dirs=[tmp_path / "first", tmp_path / "second"],
        weights=[1.0, 1.0],
        output_dir=tmp_path / "ties",
        method="ties",
        base=base,
    )
    assert (linear.combination_type, ties.combination_type) == ("linear", "ties")
    assert linear.adapter_sha256 != ties.adapter_sha256
    # the base model is left plain after every call
    assert not any("lora" in name for name, _ in base.model.named_modules())


def test_a_users_module_list_is_trained_and_an_unknown_module_refused(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    base = load_base(tiny_models["gpt2"], device="cpu")
    # "c_proj" on GPT-2 is the attention output and the MLP output: both are adapted
    result = _train(base, tmp_path / "mlp", STEPS.with_changes(target_modules=["c_fc", "c_proj"]))
    assert result.lora["target_modules"] == ["c_fc", "c_proj"]
    with pytest.raises(InvalidTrainingConfig) as caught:
        _train(base, tmp_path / "wrong", STEPS.with_changes(target_modules=["q_proj", "c_attn"]))
    message = caught.value.errors["target_modules"]
    assert "The GPT-2 base model has no layer named 'q_proj'" in message
    assert "c_attn, attn.c_proj, c_fc, mlp.c_proj" in message
    assert not (tmp_path / "wrong").exists()


def test_a_tokenizer_without_chat_template_trains_with_the_documented_fallback(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    assert {"gpt2", "gpt_neox"} == NO_CHAT_TEMPLATE
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["gpt2"])
    assert not tokenizer.chat_template
    messages = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    assert render_chat(tokenizer, messages, prompt=False) == "User: Hi?\n\nAssistant: Hello.<|im_end|>\n\n"
    assert render_chat(tokenizer, messages[:1], prompt=True) == "User: Hi?\n\nAssistant:"
    example = encode_record(
        {"prompt": "Hi?", "response": "Hello."},
        record_type="instruction",
        tokenizer=tokenizer,
        max_length=64,
        mode="chat_template",
    )
    learned = [tokenizer.decode([t]) for t, label in zip(example.input_ids, example.labels, strict=True) if label >= 0]
    assert learned == [" Hello", ".", "<|im_end|>"]
    # a tokenizer with its own template keeps it
    own = AutoTokenizer.from_pretrained(tiny_models["llama"])
    assert own.chat_template and own.chat_template != FALLBACK_CHAT_TEMPLATE
    assert render_chat(own, messages, prompt=False).startswith("<|im_start|>")


@pytest.mark.parametrize("family", FAMILIES)
def test_the_estimate_is_sized_by_each_familys_shape(family: str, tiny_models: dict[str, Path]) -> None:
    shape = architectures.model_shape(tiny_models[family])
    assert shape is not None and (shape.hidden_size, shape.layers, shape.vocab_size) == (64, 2, 49152)
    estimate = STEPS.estimate(records=6, tokens=180, device="cpu", parameters=3_200_000, shape=shape)
    generic = STEPS.estimate(records=6, tokens=180, device="cpu", parameters=3_200_000)
    assert estimate.steps == 2 and estimate.tokens > 0
    # the tiny model's own width and depth, far below the SmolLM2-shaped guess
    assert 3_200_000 * 4 < estimate.memory_bytes < generic.memory_bytes
    attention = architectures.targets_per_layer("attention", family)
    assert attention == len(ARCHITECTURES[family].attention)
    assert architectures.targets_per_layer("all-linear", family) > attention


@pytest.mark.django_db
def test_registering_an_unsupported_family_names_what_is_missing(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    staff = UserFactory(is_staff=True)
    folder = tmp_path / "falcon"
    shutil.copytree(tiny_models["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(
        json.dumps({**config, "model_type": "falcon", "architectures": ["FalconForCausalLM"]})
    )
    with pytest.raises(ValidationError) as caught:
        services.base_model_register(user=staff, name="Falcon", path=str(folder))
    message = caught.value.message_dict["path"][0]
    assert "FalconForCausalLM (model_type 'falcon') is not a supported family" in message
    assert "no LoRA target modules" in message and "Mistral (mistral)" in message
    assert not BaseModel.objects.exists()
    # a supported family registers
    base = services.base_model_register(user=staff, name="Tiny Mistral", path=str(tiny_models["mistral"]))
    assert (base.architecture, base.model_type, base.context_length) == ("MistralForCausalLM", "mistral", 512)


def test_a_config_without_model_type_is_refused_by_name() -> None:
    with pytest.raises(UnsupportedArchitecture, match=r"config\.json gives no model_type"):
        architectures.architecture_for("")


@pytest.mark.django_db
def test_the_form_refuses_a_layer_the_base_model_does_not_have(tiny_models: dict[str, Path]) -> None:
    staff = UserFactory(is_staff=True)
    base = services.base_model_register(user=staff, name="Tiny Phi-3", path=str(tiny_models["phi3"]))
    data = {
        "name": "Custom layers",
        "start": f"base-{base.pk}",
        "formatting": "auto",
        "eval_fraction": 0.1,
        "lora_rank": 4,
        "lora_alpha": 8,
        "lora_dropout": 0,
        "target_modules": "custom",
        "custom_target_modules": "q_proj, o_proj",
        "learning_rate": 2e-4,
        "schedule": "constant",
        "warmup_steps": 0,
        "length_mode": "steps",
        "max_steps": 2,
        "batch_size": 4,
        "gradient_accumulation": 1,
        "max_length": 64,
        "seed": 1,
    }
    form = FineTuneForm(data, user=staff)
    assert not form.is_valid()
    assert form.errors["custom_target_modules"] == [
        "The Phi-3 base model has no layer named 'q_proj'; its adaptable layers are qkv_proj, o_proj, gate_up_proj, "
        "down_proj."
    ]
    form = FineTuneForm({**data, "custom_target_modules": "qkv_proj, o_proj"}, user=staff)
    form.is_valid()
    assert "custom_target_modules" not in form.errors and "target_modules" not in form.errors
    form = FineTuneForm({**data, "custom_target_modules": " , "}, user=staff)
    assert not form.is_valid()
    assert form.errors["custom_target_modules"] == ["List the layers to adapt, or choose a preset."]


@pytest.mark.django_db
def test_a_launch_refuses_a_foreign_layer_and_a_base_of_an_unsupported_family(tiny_models: dict[str, Path]) -> None:
    staff = UserFactory(is_staff=True)
    snapshot = frozen_snapshot(owner=staff)
    neox = services.base_model_register(user=staff, name="Tiny NeoX", path=str(tiny_models["gpt_neox"]))
    with pytest.raises(ValidationError) as caught:
        services.job_launch(
            owner=staff,
            name="Wrong layer",
            base_model=neox,
            snapshots=[snapshot],
            config=STEPS.with_changes(target_modules=["q_proj"]),
        )
    assert caught.value.message_dict["config.target_modules"] == [
        "The GPT-NeoX base model has no layer named 'q_proj'; its adaptable layers are query_key_value, "
        "attention.dense, dense_h_to_4h, dense_4h_to_h."
    ]
    # a row written before families were checked (or by hand) is refused at launch, by name
    falcon = BaseModelFactory(name="Old falcon", architecture="FalconForCausalLM", model_type="falcon")
    with pytest.raises(ValidationError) as caught:
        services.job_launch(owner=staff, name="Falcon", base_model=falcon, snapshots=[snapshot], config=STEPS)
    assert (
        "FalconForCausalLM (model_type 'falcon') is not a supported family"
        in caught.value.message_dict["base_model"][0]
    )
    job = services.job_launch(owner=staff, name="Right layers", base_model=neox, snapshots=[snapshot], config=STEPS)
    assert job.config["target_modules"] == "attention"
