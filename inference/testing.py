"""Helpers for tests and benches that need real LoRA adapters without training one: ``make_synthetic_adapter`` saves a
peft adapter with seeded random weights for a base model. Needs only the runtime packages (torch, peft,
transformers), so a bench runs after ``make setup`` alone; torch and peft are imported inside functions, as in
``inference.engine``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_SYNTHETIC_MODELS: dict[tuple, Any] = {}


def make_synthetic_adapter(
    base_model_dir: str | Path,
    out_dir: str | Path,
    *,
    rank: int = 8,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    seed: int = 0,
    alpha: int | None = None,
    scale: float = 0.2,
) -> Path:
    """Save a real peft LoRA adapter for ``base_model_dir`` into ``out_dir`` with seeded random A and non-zero B.

    peft starts B at zero, which would make every fresh adapter equal the base; here B ~ N(0, ``scale``), so
    different seeds give adapters that answer differently. The peft model is kept per (base, rank, targets, alpha) to
    make many adapters quickly; ``release_synthetic_models()`` frees it.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    key = (str(Path(base_model_dir).resolve()), rank, tuple(targets), alpha)
    model = _SYNTHETIC_MODELS.get(key)
    if model is None:
        base = AutoModelForCausalLM.from_pretrained(base_model_dir, local_files_only=True, dtype=torch.float32)
        config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules=list(targets), task_type="CAUSAL_LM")
        model = _SYNTHETIC_MODELS[key] = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_A." in name:
                bound = 1 / math.sqrt(param.shape[1])
                param.copy_((torch.rand(param.shape, generator=generator) * 2 - 1) * bound)
            elif ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    out = Path(out_dir)
    model.save_pretrained(out)
    return out


def release_synthetic_models() -> None:
    """Free the models ``make_synthetic_adapter`` keeps."""
    _SYNTHETIC_MODELS.clear()


def copy_synthetic_adapter(template_dir: str | Path, out_dir: str | Path, *, seed: int, scale: float = 0.2) -> Path:
    """Save a new adapter of ``template_dir``'s config, tensor names and shapes (one ``make_synthetic_adapter`` made)
    with seeded random weights drawn as ``make_synthetic_adapter`` draws them, without building a peft model: for
    benches that need a thousand distinct adapters in seconds."""
    import torch
    from safetensors.torch import load_file, save_file

    template, out = Path(template_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(template / "adapter_config.json", out / "adapter_config.json")
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, tensor in sorted(load_file(template / "adapter_model.safetensors").items()):
        if ".lora_A." in name:
            bound = 1 / math.sqrt(tensor.shape[1])
            tensors[name] = (torch.rand(tensor.shape, generator=generator) * 2 - 1) * bound
        else:
            tensors[name] = torch.randn(tensor.shape, generator=generator) * scale
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    return out
