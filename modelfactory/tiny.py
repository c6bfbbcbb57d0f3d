"""Tiny random-weight models of every supported family, built offline from a config: for the families tests and
``bench/families.py`` (this module imports nothing of pytest or of the tests, so a benchmark can use it).

Each model has two layers of width 64 and the vocabulary of a tokenizer already on disk (the bundled SmolLM2's), so
nothing is ever downloaded: the config is built with tiny sizes, the weights drawn from a seeded generator and
saved with ``save_pretrained`` next to a copy of the tokenizer. GPT-2 and GPT-NeoX folders get no chat template, as
their real tokenizers have none: they exercise the documented fallback (``encoding.FALLBACK_CHAT_TEMPLATE``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from .architectures import ARCHITECTURES

# The families in the order reports list them.
FAMILIES = ("llama", "mistral", "qwen2", "gemma", "phi3", "gpt_neox", "gpt2")
# Families whose real tokenizers have no chat template.
NO_CHAT_TEMPLATE = frozenset({"gpt_neox", "gpt2"})
HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
INTERMEDIATE = 128
CONTEXT = 512


def tiny_config(family: str, *, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> Any:
    """The transformers config of a two-layer model of ``family`` (a ``model_type`` of ``ARCHITECTURES``)."""
    import transformers  # heavy: a build loads it, not the tests' collection that reads FAMILIES

    if family not in ARCHITECTURES:
        raise ValueError(f"no tiny model for {family!r}; families: {', '.join(FAMILIES)}")
    ids = {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id, "vocab_size": vocab_size}
    decoder = {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": CONTEXT,
        "tie_word_embeddings": True,
    }
    if family == "gpt2":
        return transformers.GPT2Config(
            n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=INTERMEDIATE, n_positions=CONTEXT, **ids
        )
    if family == "gpt_neox":
        return transformers.GPTNeoXConfig(**decoder, **ids)
    classes = {
        "llama": transformers.LlamaConfig,
        "mistral": transformers.MistralConfig,
        "qwen2": transformers.Qwen2Config,
        "gemma": transformers.GemmaConfig,
        "phi3": transformers.Phi3Config,
    }
    extra: dict[str, Any] = {"num_key_value_heads": KV_HEADS}
    if family == "gemma":
        extra["head_dim"] = HIDDEN // HEADS
    return classes[family](**decoder, **extra, **ids)


def build_tiny_model(family: str, target: str | Path, *, tokenizer_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight ``family`` model (safetensors, config, the tokenizer of ``tokenizer_dir``) into
    ``target``, which must not exist yet; the same seed gives the same weights. The folder is written beside and
    renamed into place, so it appears complete or not at all. Returns the folder."""
    import torch  # heavy: a build loads it, not the tests' collection that reads FAMILIES
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists already")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    eos = int(tokenizer.eos_token_id)
    pad = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else eos
    bos = int(tokenizer.bos_token_id) if tokenizer.bos_token_id is not None else eos
    config = tiny_config(family, vocab_size=len(tokenizer), bos_id=bos, eos_id=eos, pad_id=pad)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    staging = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(str(staging))
        if family in NO_CHAT_TEMPLATE:
            tokenizer.chat_template = None
        tokenizer.save_pretrained(str(staging))
        template = staging / "chat_template.jinja"
        if family in NO_CHAT_TEMPLATE and template.exists():
            template.unlink()
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_all(root: str | Path, *, tokenizer_dir: str | Path, families: tuple[str, ...] = FAMILIES) -> dict[str, Path]:
    """A tiny model of each family under ``root`` (``root/<family>``), built once: an existing folder is reused."""
    root = Path(root)
    folders = {}
    for family in families:
        folder = root / family
        if not folder.is_dir():
            build_tiny_model(family, folder, tokenizer_dir=tokenizer_dir)
        folders[family] = folder
    return folders
