"""The model families ModelFactory trains, serves, merges and attributes, and the LoRA target modules of each: plain
data, no torch, so the web process can refuse an unsupported folder or a wrong module name before any job runs.

A family is keyed by the ``model_type`` of its ``config.json``. Its presets start from peft's own choice
(``peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``: q_proj and v_proj on Llama, c_attn on
GPT-2, query_key_value on GPT-NeoX; the pinned peft has no entry for Phi-3, whose fused ``qkv_proj`` stands in) and
complete it: "attention" is every attention projection of the family, "all-linear" is peft's shortcut for every
Linear (and GPT-2 Conv1D) layer but the output head. ``modelfactory/tests/test_families.py`` checks that peft's
names for each family are among its attention modules and that every name listed here is a layer of a real model
of the family. A user may list module names instead of a preset; names that are not layers of the family are
refused with the list of those that are.

GPT-2 writes its projections as ``Conv1D`` layers, whose weight is stored transposed (``[in, out]``); peft adapts
them with ``fan_in_fan_out`` and the LoRA matrices keep the usual ``A [r, in]``, ``B [out, r]`` shapes, so serving
and attribution treat them like Linear layers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The presets a TrainingConfig may name instead of a module list (config.TARGET_PRESETS holds the same names).
ATTENTION = "attention"
ALL_LINEAR = "all-linear"


class UnsupportedArchitecture(ValueError):
    """A model folder of a family ModelFactory does not train; the message names what is missing."""


@dataclass(frozen=True)
class Architecture:
    """One family: its ``model_type``, a name for people, its attention and MLP projections (the module names peft
    matches, by their last dotted parts), and whether its projections are GPT-2 style ``Conv1D`` layers."""

    model_type: str
    label: str
    attention: tuple[str, ...]
    mlp: tuple[str, ...]
    peft_default: tuple[str, ...]
    conv1d: bool = False

    @property
    def modules(self) -> tuple[str, ...]:
        """Every module name a user may target."""
        return self.attention + self.mlp

    def leaf_names(self) -> set[str]:
        """The last dotted part of each module name (``attn.c_proj`` -> ``c_proj``), also accepted from a user."""
        return {name.rsplit(".", 1)[-1] for name in self.modules}


_LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")
_PEFT_QV = ("q_proj", "v_proj")

ARCHITECTURES: dict[str, Architecture] = {
    a.model_type: a
    for a in (
        Architecture("llama", "Llama", _LLAMA_ATTENTION, _LLAMA_MLP, _PEFT_QV),
        Architecture("mistral", "Mistral", _LLAMA_ATTENTION, _LLAMA_MLP, _PEFT_QV),
        Architecture("qwen2", "Qwen2", _LLAMA_ATTENTION, _LLAMA_MLP, _PEFT_QV),
        Architecture("gemma", "Gemma", _LLAMA_ATTENTION, _LLAMA_MLP, _PEFT_QV),
        Architecture("phi3", "Phi-3", ("qkv_proj", "o_proj"), ("gate_up_proj", "down_proj"), ("qkv_proj",)),
        Architecture(
            "gpt_neox",
            "GPT-NeoX",
            ("query_key_value", "attention.dense"),
            ("dense_h_to_4h", "dense_4h_to_h"),
            ("query_key_value",),
        ),
        # GPT-2 names its attention output and its MLP output both c_proj: the parent's name tells them apart
        Architecture("gpt2", "GPT-2", ("c_attn", "attn.c_proj"), ("c_fc", "mlp.c_proj"), ("c_attn",), conv1d=True),
    )
}


def supported_summary() -> str:
    return ", ".join(f"{a.label} ({a.model_type})" for a in ARCHITECTURES.values())


def architecture_for(model_type: str, architecture: str = "") -> Architecture:
    """The family of a ``config.json``'s ``model_type``; raises ``UnsupportedArchitecture`` naming what is missing."""
    if not model_type:
        raise UnsupportedArchitecture(
            "config.json gives no model_type, so the LoRA target modules cannot be chosen; "
            f"supported families: {supported_summary()}"
        )
    family = ARCHITECTURES.get(model_type)
    if family is None:
        named = f"{architecture} (model_type {model_type!r})" if architecture else f"model_type {model_type!r}"
        raise UnsupportedArchitecture(
            f"{named} is not a supported family: ModelFactory has no LoRA target modules, serving hooks or tests for "
            f"it; supported families: {supported_summary()}"
        )
    return family


def architecture_of_folder(folder: str | Path) -> Architecture:
    """The family of a model folder, from its ``config.json`` (read, never loaded)."""
    config = _read_config(Path(folder))
    names = config.get("architectures") or [""]
    return architecture_for(str(config.get("model_type") or ""), str(names[0]))


def target_module_error(targets: Any, model_type: str) -> str | None:
    """Why ``targets`` (a preset name or a module list) cannot adapt a model of ``model_type``; None when it can.

    A listed name must be one of the family's module names or the last part of one (``c_proj`` on GPT-2 targets
    both the attention and the MLP output)."""
    try:
        family = architecture_for(model_type)
    except UnsupportedArchitecture as e:
        return str(e)
    if isinstance(targets, str):
        return None if targets in (ATTENTION, ALL_LINEAR) else f"Unknown target preset {targets!r}."
    known = set(family.modules) | family.leaf_names()
    unknown = [t for t in targets if t not in known]
    if unknown:
        return (
            f"The {family.label} base model has no layer named {', '.join(map(repr, unknown))}; "
            f"its adaptable layers are {', '.join(family.modules)}."
        )
    return None


def resolve_target_modules(targets: str | list[str], model_type: str) -> list[str] | str:
    """The value for peft's ``LoraConfig.target_modules`` on a model of ``model_type``: the family's attention
    projections for "attention", peft's "all-linear" shortcut as it is, a checked list otherwise. Raises
    ``UnsupportedArchitecture`` or ``ValueError`` (with ``target_module_error``'s message)."""
    family = architecture_for(model_type)
    if error := target_module_error(targets, model_type):
        raise ValueError(error)
    if targets == ATTENTION:
        return list(family.attention)
    if targets == ALL_LINEAR:
        return ALL_LINEAR
    return list(targets)


def targets_per_layer(targets: Any, model_type: str) -> int:
    """How many layers of each transformer block ``targets`` adapts (for the memory estimate)."""
    family = ARCHITECTURES.get(model_type)
    if family is None:
        return 4 if targets == ATTENTION else 7
    if targets == ATTENTION:
        return len(family.attention)
    if targets == ALL_LINEAR or isinstance(targets, str):
        return len(family.modules)
    leaves = {t.rsplit(".", 1)[-1] for t in targets}
    return max(1, sum(1 for name in family.modules if name in targets or name.rsplit(".", 1)[-1] in leaves))


@dataclass(frozen=True)
class ModelShape:
    """The sizes the memory estimate needs, read from ``config.json`` under each family's names."""

    hidden_size: int
    layers: int
    vocab_size: int
    model_type: str


def model_shape(folder: str | Path) -> ModelShape | None:
    """The shape of a model folder, or None when its config.json is missing or does not say."""
    try:
        config = _read_config(Path(folder))
    except UnsupportedArchitecture:
        return None
    hidden = config.get("hidden_size") or config.get("n_embd")
    layers = config.get("num_hidden_layers") or config.get("n_layer")
    vocab = config.get("vocab_size")
    if not all(isinstance(v, int) and v > 0 for v in (hidden, layers, vocab)):
        return None
    return ModelShape(int(hidden), int(layers), int(vocab), str(config.get("model_type") or ""))


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnsupportedArchitecture(f"{folder}/config.json cannot be read: {e}") from e
