"""LoRA fine-tuning, adapter merging and small-scale generation: the only torch/transformers/peft code of modelfactory.

The Celery job calls ``train_lora`` and ``merge_adapters``; both write into a hidden sibling folder and rename it
into place at the very end, so a crash or a cancellation never leaves a half-made adapter where one is expected.
Adapters are saved with peft's ``save_pretrained`` (``adapter_model.safetensors`` and ``adapter_config.json``) and
load with a plain ``PeftModel.from_pretrained``.

Records become examples (tokens, hand-built labels, the train/eval split) in ``encoding``, shared with the apps
above that must tokenize a version's records exactly as its job did.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import importlib.util
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.utils import load_peft_weights
from safetensors import safe_open
from torch.utils.checkpoint import checkpoint
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedTokenizerBase,
    get_scheduler,
)

from .architectures import UnsupportedArchitecture, architecture_for
from .config import TrainingConfig
from .encoding import (
    IGNORE_INDEX,
    DroppedRecord,
    EncodedRecord,
    encode_records,
    render_chat,
    sample_prompt,
    train_eval_split,
)
from .estimates import GPU_PRECISIONS, LOSS_CHUNK_BYTES, checkpointing_on

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
MERGE_METHODS = ("linear", "ties", "cat")
_DTYPE_LABELS = {
    "fp32": "float32",
    "bf16": "bfloat16 weights, bfloat16 autocast",
    "qlora-nf4": "4-bit NF4 base weights (bitsandbytes), bfloat16 autocast",
}
# DARE (drop and rescale, then linear or TIES), seeded: what request-time composition (inference.composition) offers
# beside linear and TIES, so its answers can be checked against an offline merge; merge jobs keep MERGE_METHODS.
DARE_METHODS = ("dare_linear", "dare_ties")
_SCHEDULER_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


class TrainingError(Exception):
    """A fine-tune that cannot run as asked; the message is meant for the person who launched it."""


class TrainingCancelled(TrainingError):
    """``should_stop()`` answered True: training stopped at a step boundary and nothing was written to output_dir."""


class InvalidTrainingConfig(TrainingError):
    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in sorted(errors.items())))


class AdapterBaseMismatch(TrainingError):
    """Adapters (or an adapter and the base model) that were not made from the same base model."""


class NonFiniteAdapter(TrainingError):
    """A trained or merged adapter holding inf or NaN weights: never stored, served or anchored."""


@dataclass(frozen=True)
class ProgressEvent:
    """Reported after every optimizer step (phase "train"), once before the first ("start", with the base model's
    eval loss), at the start of each evaluation pass ("eval_base" before the base model's, "eval" before the
    adapter's) and while finishing ("samples", "saving"). Losses are token-weighted means. Only "train" and
    "start" events carry a real learning rate and speed; the others report 0 for both."""

    phase: str
    step: int
    total_steps: int
    train_loss: float | None
    learning_rate: float
    tokens_per_s: float
    eta_s: float
    elapsed_s: float
    eval_loss: float | None = None


@dataclass(frozen=True)
class TrainingResult:
    output_dir: str
    adapter_sha256: str
    device: str
    dtype: str
    steps: int
    resumed_from_step: int
    train_records: int
    eval_records: int
    dropped: list[DroppedRecord]
    truncated_records: int
    trainable_params: int
    total_params: int
    tokens_seen: int
    seconds: float
    metrics: dict[str, float | None]
    loss_history: list[dict[str, float | int | None]]
    samples: list[dict[str, str]]
    lora: dict[str, Any]
    # the work of each phase, for the throughput the estimate learns from: "train" (tokens, steps, seconds of the
    # step loop without its evaluations), "eval_base" and "eval" (tokens evaluated), "data" (records and tokens
    # of every example, what the index reads)
    phase_work: dict[str, dict[str, float]] = field(default_factory=dict)
    # whether the run used gradient checkpointing (the config's "auto" resolved against the worker's memory)
    gradient_checkpointing: bool = False
    # the processes that trained it together (data parallel, ``ProcessGroup``); 1 for an ordinary run
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MergeResult:
    output_dir: str
    adapter_sha256: str
    combination_type: str
    rank: int


@dataclass
class LoadedBase:
    """A base model and tokenizer held in memory, to share between calls (a worker, a test module).

    The functions here wrap it with LoRA layers and strip them again before returning, so the model stays the
    plain base model between calls. Not safe for two calls at once.
    """

    path: str
    model: Any
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    autocast_dtype: torch.dtype | None
    precision: str = "fp32"  # estimates.PRECISIONS: how the weights are held

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 0)

    @property
    def model_type(self) -> str:
        return str(getattr(self.model.config, "model_type", "") or "")


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a data-parallel fine-tune over ``torch.distributed`` (initialised by the caller,
    ``modelfactory.distributed``): rank ``rank`` of ``world_size`` processes, each holding the whole model.

    Every optimizer step's global batch (the config's ``batch_size`` x ``gradient_accumulation`` rows, the same rows
    in the same order as a one-process run) is dealt out row by row, ``rows[rank::world_size]`` of each micro-batch;
    each process backpropagates its rows' summed loss divided by the step's global token count, and the LoRA
    gradients are summed over the processes before clipping and the optimizer step. So every process takes the same
    step, and the step is the one a single process takes on the whole batch up to floating-point rounding (the
    order of the sums differs). LoRA dropout draws its masks per process: with dropout the adapter is the same in
    distribution only, without it the same within rounding. ``device`` is where the collective's tensors live
    (CPU for gloo, the process's GPU for nccl).
    """

    rank: int
    world_size: int
    device: torch.device

    @property
    def leads(self) -> bool:
        """Rank 0: the process that reports progress, writes checkpoints and keeps the adapter."""
        return self.rank == 0

    def shard(self, rows: Sequence[Any]) -> list[Any]:
        """This process's share of ``rows`` (every world_size-th one from its rank; may be empty)."""
        return list(rows[self.rank :: self.world_size])

    def sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed element-wise over the processes (float64)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        return [float(v) for v in tensor.tolist()]

    def any(self, flag: bool) -> bool:
        """True on every process when it is True on any: decisions that all processes must take together."""
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def sum_gradients(self, parameters: Sequence[torch.Tensor]) -> None:
        """Replace each parameter's gradient by its sum over the processes, in one all-reduce; a process whose share
        of the step was empty contributes zeros."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
        torch_dist.all_reduce(flat, op=torch_dist.ReduceOp.SUM)
        offset = 0
        for p in parameters:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
            offset += n

    def same_parameters(self, parameters: Sequence[torch.Tensor]) -> None:
        """Give every process rank 0's values of ``parameters`` (the adapter's starting weights)."""
        with torch.no_grad():
            for p in parameters:
                torch_dist.broadcast(p.data, src=0)


def pick_device(device: str | None = None) -> torch.device:
    """CUDA whenever available, else CPU; ``device`` forces one ("cpu", "cuda", "cuda:1")."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_base(base_model_dir: str | Path, *, device: str | None = None, precision: str = "fp32") -> LoadedBase:
    """Load a local Hugging Face causal LM and its tokenizer (never downloads). With ``precision`` "fp32" the weights
    stay float32, and on a CUDA device with bf16 support the forward passes run under bf16 autocast, which keeps the
    trained LoRA weights in float32 and stable. "bf16" (bfloat16 weights) and "qlora-nf4" (the decoder's linear
    weights in 4-bit NF4 through bitsandbytes, the rest bfloat16) run under bf16 autocast and need a CUDA device
    with bf16, and "qlora-nf4" the bitsandbytes package; without them ``TrainingError`` says what is missing."""
    path = str(Path(base_model_dir).resolve())
    target = pick_device(device)
    return_freed_memory()
    bf16 = target.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision != "fp32":
        _require_gpu_precision(precision, target, bf16)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if precision == "qlora-nf4":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=torch.bfloat16, quantization_config=quantization, device_map={"": target}
        )
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype).to(target)
    model.eval()
    autocast = torch.bfloat16 if bf16 else None
    return LoadedBase(
        path=path, model=model, tokenizer=tokenizer, device=target, autocast_dtype=autocast, precision=precision
    )


def _require_gpu_precision(precision: str, target: torch.device, bf16: bool) -> None:
    """Refuse a GPU precision where it cannot run, naming what is missing (the form refuses it earlier, when no
    worker announces it; this is the worker's own check)."""
    if precision not in GPU_PRECISIONS:
        raise TrainingError(f"unknown precision {precision!r}; choose fp32, {', '.join(GPU_PRECISIONS)}")
    if target.type != "cuda":
        raise TrainingError(f"{precision} training needs a CUDA GPU; this worker trains on {target}: choose fp32")
    if not bf16:
        raise TrainingError(f"{precision} training needs a GPU with bfloat16 (compute capability 8.0 or above)")
    if precision == "qlora-nf4" and importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingError(
            "QLoRA training needs the bitsandbytes package on the worker, which is not installed: choose bf16 or fp32"
        )


def return_freed_memory() -> None:
    """Make glibc's malloc hand the memory of freed tensors back to the system (Linux with glibc; elsewhere a no-op).

    By default glibc raises its mmap threshold up to 32 MiB as large blocks are freed, after which a training step's
    activations (a few MiB each) come from the heap; freed between steps in another order than they were made, they
    leave holes that the next step's slightly different shapes do not fill, and the process grows by hundreds of MiB
    over a few steps (bench/train.py: a LoRA step's peak went from 1.4 to 1.9 GiB in four steps). A fixed
    threshold keeps every block above 128 KiB in its own mapping, returned when freed. Process-wide and idempotent;
    nothing in a process that chose ``reuse_freed_memory``.
    """
    if not _reused_freed_memory:
        _mallopt({_M_MMAP_THRESHOLD: 128 * 1024})


def reuse_freed_memory() -> None:
    """The opposite of ``return_freed_memory``, for a process that runs the same short passes over and over (an
    attribution worker's scoring): blocks up to 32 MiB (glibc's own largest dynamic threshold) come from the heap and
    stay there when freed, up to 512 MiB free at its top (a packed pass's activations). With every block above 128 KiB
    in its own mapping, each activation of a scoring pass was a fresh mapping whose pages the kernel zeroed and
    faulted in again: 10-20% of a packed scoring pass's CPU on this machine. Later ``return_freed_memory`` calls
    (``load_base``) leave it so. Process-wide and idempotent."""
    global _reused_freed_memory
    _reused_freed_memory = True
    _mallopt({_M_MMAP_THRESHOLD: 32 * 1024 * 1024, _M_TRIM_THRESHOLD: 512 * 1024 * 1024})


def _mallopt(values: dict[int, int]) -> None:
    name = ctypes.util.find_library("c")
    if not name or os.uname().sysname != "Linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        library = ctypes.CDLL(name)
        for option, value in values.items():
            library.mallopt(option, value)


_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_reused_freed_memory = False


def memory_available(device: torch.device) -> int:
    """Bytes a job on ``device`` may use: free GPU memory plus what torch holds there already (the base model), or
    on CPU the system's available memory plus what this process holds already (``MemAvailable`` + ``VmRSS``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_allocated(device))
    fields: dict[str, int] = {}
    for source in ("/proc/meminfo", "/proc/self/status"):
        with contextlib.suppress(OSError), open(source, encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("MemAvailable", "VmRSS"):
                    fields[name] = int(rest.split()[0]) * 1024
    return fields.get("MemAvailable", 0) + fields.get("VmRSS", 0)


def _checkpointing(config: TrainingConfig, base: LoadedBase, examples: Sequence[EncodedRecord]) -> bool:
    """The config's "off"/"on", or for "auto" whether the job's estimated memory without checkpointing (at its
    longest row) is more than the device has."""
    longest = max((len(e.input_ids) for e in examples), default=1)
    parameters = sum(p.numel() for p in base.model.parameters())
    needed = config.memory_bytes(parameters=parameters, row_tokens=longest, checkpointing=False)
    if config.gradient_checkpointing != "auto":
        return config.gradient_checkpointing == "on"
    return checkpointing_on("auto", needed_bytes=needed, available_bytes=memory_available(base.device))


# --- training ----------------------------------------------------------------------------------------------------


def _batch(examples: Sequence[EncodedRecord], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    # right padding; padded label positions are -100 by construction, never by comparing with the pad id
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _autocast(base: LoadedBase) -> contextlib.AbstractContextManager[Any]:
    if base.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=base.device.type, dtype=base.autocast_dtype)


def _loss_sum(model: Any, batch: dict[str, torch.Tensor], base: LoadedBase) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch's trainable tokens, and their count.

    The output head runs only on the positions that have a label: with a 49k vocabulary the full logits cost as
    much as a third of the model, and prompts are masked anyway. Models that post-process logits (soft-capping)
    take the ordinary full path.
    """
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    with _autocast(base):
        if getattr(inner.config, "final_logit_softcapping", None):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][keep]
            return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())
        hidden = inner.get_decoder()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        )
        loss = _head_loss(inner.get_output_embeddings(), hidden.last_hidden_state[:, :-1][keep], targets[keep])
    return loss, int(keep.sum())


def _head_loss(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of ``head(hidden)`` against ``targets`` without holding every position's logits.

    With more positions than one chunk holds, each chunk's logits are computed, reduced to its summed loss and
    dropped; the backward pass computes them again, one chunk at a time (``torch.utils.checkpoint``). Same
    numbers as one cross-entropy over all positions, summed in another order (bench/train.py, docs/decisions.md).
    """
    chunk = max(1, LOSS_CHUNK_BYTES // (4 * int(head.weight.shape[0])))
    if len(targets) <= chunk:
        return _chunk_loss(head, hidden, targets)
    grad = torch.is_grad_enabled()
    losses = [
        checkpoint(_chunk_loss, head, hidden[i : i + chunk], targets[i : i + chunk], use_reentrant=False)
        if grad
        else _chunk_loss(head, hidden[i : i + chunk], targets[i : i + chunk])
        for i in range(0, len(targets), chunk)
    ]
    return torch.stack(losses).sum()


def _chunk_loss(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


class _GatedProduct(torch.autograd.Function):
    """``act(gate) * up`` that keeps only ``gate`` and ``up`` for the backward pass and computes ``act(gate)`` there
    again: one elementwise function per layer, instead of holding a third tensor of the MLP's width."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> Any:
        ctx.act = act
        ctx.save_for_backward(gate, up)
        return act(gate) * up

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        gate, up = ctx.saved_tensors
        with torch.enable_grad():
            gate = gate.detach().requires_grad_(True)
            activated = ctx.act(gate)
            (grad_gate,) = torch.autograd.grad(activated, gate, grad * up)
        return grad_gate, grad * activated.detach(), None


def _gated_mlp_forward(mlp: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return mlp.down_proj(_GatedProduct.apply(mlp.gate_proj(x), mlp.up_proj(x), mlp.act_fn))

    return forward


@contextlib.contextmanager
def lean_activations(model: Any) -> Iterator[None]:
    """For the block, the gated MLPs of ``model`` (``down_proj(act_fn(gate_proj(x)) * up_proj(x))``: Llama,
    Mistral, Qwen2, Gemma) hold two of their three wide tensors for the backward pass rather than three; the same
    outputs and gradients (modelfactory/tests/test_lean_training.py). Other MLPs run as they are. ``train_lora`` trains
    under it; the model is left as it was found."""
    patched = [
        module
        for module in model.modules()
        if all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn"))
        and "forward" not in vars(module)
    ]
    for module in patched:
        module.forward = _gated_mlp_forward(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


@torch.no_grad()
def _eval_loss(
    model: Any,
    examples: Sequence[EncodedRecord],
    base: LoadedBase,
    batch_size: int,
    group: ProcessGroup | None = None,
) -> float | None:
    # with a group, each process evaluates its share and the sums are added up: every process gets the same mean
    if not examples:
        return None
    if group is not None:
        examples = group.shard(examples)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        loss, n = _loss_sum(model, _batch(examples[start : start + batch_size], _pad_id(base), base.device), base)
        total, count = total + float(loss), count + n
    model.train(was_training)
    if group is not None:
        total, count = group.sum([total, count])
    return total / max(count, 1)


def _pad_id(base: LoadedBase) -> int:
    return int(base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else base.tokenizer.eos_token_id)


def _step_plan(n_train: int, config: TrainingConfig) -> list[list[list[int]]]:
    """Optimizer steps, each a list of micro-batches of train-example positions.

    Every epoch shuffles with a generator seeded by (seed, epoch), so the order never depends on global RNG state
    and a resumed run replays exactly the same batches.
    """
    micro_per_epoch = math.ceil(n_train / config.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / config.gradient_accumulation)
    total = config.max_steps if config.max_steps is not None else steps_per_epoch * config.epochs
    plan: list[list[list[int]]] = []
    epoch = 0
    while len(plan) < total:
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(config.seed * 1000 + epoch)).tolist()
        micro = [order[i : i + config.batch_size] for i in range(0, n_train, config.batch_size)]
        for i in range(0, len(micro), config.gradient_accumulation):
            plan.append(micro[i : i + config.gradient_accumulation])
        epoch += 1
    return plan[:total]


def _adapter_base(adapter_dir: Path) -> str:
    config_file = Path(adapter_dir) / ADAPTER_CONFIG
    if not config_file.is_file():
        raise TrainingError(f"{adapter_dir} is not a saved adapter (no {ADAPTER_CONFIG})")
    return _normal_base(json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path") or "")


def _normal_base(name: str) -> str:
    return str(Path(name).resolve()) if name and Path(name).is_dir() else name


def _check_same_base(
    adapter_dirs: Sequence[Path], base_path: str, base_id: str | None, adapter_base_ids: Sequence[str] | None
) -> None:
    """Refuse adapters made from another base model, by the ids the caller passes (e.g. base weights hashes) or,
    without them, by the base path recorded in each adapter_config.json."""
    if adapter_base_ids is not None:
        if len(adapter_base_ids) != len(adapter_dirs):
            raise TrainingError("give one base id per adapter")
        expected = base_id if base_id is not None else adapter_base_ids[0]
        bases = list(adapter_base_ids)
    else:
        expected, bases = _normal_base(base_path), [_adapter_base(d) for d in adapter_dirs]
    wrong = [f"{Path(d).name} (made from {b})" for d, b in zip(adapter_dirs, bases, strict=True) if b != expected]
    if wrong:
        raise AdapterBaseMismatch(
            f"these adapters were made from a different base model than {expected}: {', '.join(wrong)}; "
            "only adapters of the same base model can be combined"
        )


@contextlib.contextmanager
def _staging(output_dir: Path) -> Iterator[Path]:
    """A hidden sibling of ``output_dir`` to write into; renamed into place on success, deleted on any failure."""
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise TrainingError(f"{output_dir} already exists; adapters are never overwritten")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f".{output_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        yield staging
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _wrapped(base: LoadedBase, build: Callable[[Any], Any]) -> Iterator[Any]:
    """Wrap the shared base model with LoRA layers for the duration of the block, then restore the plain model."""
    peft_model = build(base.model)
    try:
        yield peft_model
    finally:
        base.model = peft_model.unload()
        base.model.eval()


@contextlib.contextmanager
def _checkpointed(model: Any, on: bool) -> Iterator[None]:
    """Gradient checkpointing on the wrapped model's layers for the block (non-reentrant: dropout draws the same
    masks when a layer is recomputed), off again after so the shared base model stays as it was."""
    if not on:
        yield
        return
    inner = model.get_base_model()
    inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        inner.gradient_checkpointing_disable()


def _fingerprint(config: TrainingConfig, base: LoadedBase, examples: Sequence[EncodedRecord], parent: str) -> str:
    digest = hashlib.sha256(json.dumps([config.to_dict(), base.path, parent], sort_keys=True).encode())
    for example in examples:
        digest.update(json.dumps([example.input_ids, example.labels]).encode())
    return digest.hexdigest()


def train_lora(
    *,
    base_model_dir: str | Path,
    records: Sequence[dict[str, Any]],
    record_type: str,
    config: TrainingConfig,
    output_dir: str | Path,
    parent_adapter_dir: str | Path | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 50,
    samples: int = 3,
    sample_tokens: int = 32,
    base: LoadedBase | None = None,
    device: str | None = None,
    group: ProcessGroup | None = None,
) -> TrainingResult:
    """Fine-tune a LoRA adapter on ``records`` and save it to ``output_dir`` (which must not exist yet).

    Promises: the same inputs, seed and device give the same adapter bytes; ``output_dir`` appears complete or
    not at all; ``should_stop()`` is asked before every optimizer step and a True raises ``TrainingCancelled``;
    ``progress`` hears every step. With ``parent_adapter_dir`` training continues that adapter (its rank, alpha and
    targets win over the config's; the result's ``lora`` says what was used). With ``checkpoint_dir`` the state is
    saved every ``checkpoint_every`` steps and a later call with the same inputs resumes from it (the folder is
    removed after success). ``base`` reuses a loaded model (it is left as it was found).
    ``group``: this call is one process of a data-parallel run (``ProcessGroup``, ``modelfactory.distributed``
    starts them): every process calls it with the same inputs, a ``should_stop`` that any of them may answer (all
    stop together), and its own ``output_dir``; only rank 0 writes checkpoints, and its adapter is the run's.
    Raises ``InvalidTrainingConfig``, ``TrainingError`` (nothing to train on, existing output, foreign parent).
    """
    started = time.monotonic()
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise TrainingError(f"{output_dir} already exists; adapters are never overwritten")
    if base is None or (config.precision in GPU_PRECISIONS and base.precision != config.precision):
        # a shared base held another way is left alone: this job loads the model as its precision asks
        base = load_base(base_model_dir, device=device, precision=config.precision)
    if errors := config.validate(context_length=base.context_length):
        raise InvalidTrainingConfig(errors)
    try:
        family = architecture_for(base.model_type, type(base.model).__name__)
    except UnsupportedArchitecture as e:
        raise TrainingError(str(e)) from e
    parent = Path(parent_adapter_dir) if parent_adapter_dir else None
    target_modules: list[str] | str = []  # a continued adapter keeps its parent's
    if parent is not None:
        _check_same_base([parent], base.path, None, None)
    else:
        try:
            # the family's own modules for a preset; a listed module the family lacks is refused here
            target_modules = config.resolved_target_modules(family.model_type)
        except ValueError as e:
            raise InvalidTrainingConfig({"target_modules": str(e)}) from e

    encoded = encode_records(
        records,
        record_type=record_type,
        tokenizer=base.tokenizer,
        max_length=config.max_length,
        formatting=config.formatting,
    )
    train_pos, eval_pos = train_eval_split(len(encoded.examples), config)
    train = [encoded.examples[i] for i in train_pos]
    evals = [encoded.examples[i] for i in eval_pos]
    if not train:
        reasons = sorted({d.reason for d in encoded.dropped})
        raise TrainingError(f"no record can be trained on ({'; '.join(reasons) or 'no records'})")

    plan = _step_plan(len(train), config)
    total_steps = len(plan)
    checkpoint = Path(checkpoint_dir) if checkpoint_dir else None
    fingerprint = _fingerprint(config, base, encoded.examples, str(parent or ""))

    def build(model: Any) -> Any:
        # LoRA's A matrices are drawn from the global generator, as is dropout: seed it right before
        torch.manual_seed(config.seed)
        if parent is not None:
            return PeftModel.from_pretrained(model, str(parent), is_trainable=True)
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=target_modules,
            # GPT-2's Conv1D layers store their weight transposed; peft would set this itself, with a warning
            fan_in_fan_out=family.conv1d,
            task_type="CAUSAL_LM",
        )
        if base.precision == "qlora-nf4":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        peft_model = get_peft_model(model, lora)
        if group is not None:
            # the same seed draws the same A matrices everywhere already; this makes it a promise
            group.same_parameters([p for p in peft_model.parameters() if p.requires_grad])
        return peft_model

    def emit(event: ProgressEvent) -> None:
        if progress is not None:
            progress(event)

    eval_bs = max(config.batch_size, 8)
    checkpointing = _checkpointing(config, base, train)
    with (
        _staging(output_dir) as staging,
        _wrapped(base, build) as model,
        _checkpointed(model, checkpointing),
        lean_activations(model),
    ):
        lora_config = model.peft_config["default"]
        trainable = [p for p in model.parameters() if p.requires_grad]
        trainable_params = sum(p.numel() for p in trainable)
        total_params = sum(p.numel() for p in model.parameters())
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        scheduler = get_scheduler(
            _SCHEDULER_NAMES[config.schedule],
            optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=total_steps,
        )
        eval_tokens = sum(len(e.input_ids) for e in evals)
        if evals:
            emit(ProgressEvent("eval_base", 0, total_steps, None, 0.0, 0.0, 0.0, time.monotonic() - started))
        with model.disable_adapter():
            base_eval = _eval_loss(model, evals, base, eval_bs, group)
        history: list[dict[str, float | int | None]] = []
        done, tokens_seen = 0, 0
        if checkpoint is not None:
            # in a group every process reads rank 0's checkpoint: none may delete a foreign one under the others
            done, tokens_seen, history = _checkpoint_load(
                checkpoint, fingerprint, model, optimizer, scheduler, discard=group is None
            )
        resumed_from = done
        emit(
            ProgressEvent(
                "start",
                done,
                total_steps,
                None,
                scheduler.get_last_lr()[0],
                0.0,
                0.0,
                time.monotonic() - started,
                base_eval,
            )
        )
        loop_started, loop_tokens, loop_eval_s, eval_passes = time.monotonic(), 0, 0.0, 0
        model.train()
        for step in range(done + 1, total_steps + 1):
            stop = should_stop is not None and should_stop()
            if group is not None:
                stop = group.any(stop)
            if stop:
                raise TrainingCancelled(f"cancelled before step {step} of {total_steps}")
            micro_batches = [[train[i] for i in micro] for micro in plan[step - 1]]
            step_tokens = sum(e.trainable_tokens for micro in micro_batches for e in micro)
            step_loss, step_batch_tokens = 0.0, 0
            for micro in micro_batches:
                rows = micro if group is None else group.shard(micro)
                if not rows:
                    continue  # a batch smaller than the group: this process adds zeros to the step's gradient
                batch = _batch(rows, _pad_id(base), base.device)
                loss, _ = _loss_sum(model, batch, base)
                # token-weighted over the whole accumulated step, whatever the micro-batch lengths
                (loss / step_tokens).backward()
                step_loss += float(loss.detach())
                step_batch_tokens += int(batch["attention_mask"].sum())
            if group is not None:
                group.sum_gradients(trainable)
                step_loss, summed_tokens = group.sum([step_loss, step_batch_tokens])
                step_batch_tokens = int(summed_tokens)
            loop_tokens += step_batch_tokens
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            eval_loss = None
            if evals and (step == total_steps or (config.eval_every and step % config.eval_every == 0)):
                emit(ProgressEvent("eval", step, total_steps, None, 0.0, 0.0, 0.0, time.monotonic() - started))
                eval_started = time.monotonic()
                eval_loss = _eval_loss(model, evals, base, eval_bs, group)
                loop_eval_s += time.monotonic() - eval_started
                eval_passes += 1
            if not all(math.isfinite(x) for x in (step_loss, eval_loss or 0.0)):
                # the weights are inf or NaN by now: stop here rather than train on noise for the remaining steps
                raise NonFiniteAdapter(
                    f"training diverged: the loss at step {step} of {total_steps} is not a finite number (inf or NaN); "
                    "nothing was stored: try a lower learning rate, or check the parent version's weights"
                )
            history.append(
                {
                    "step": step,
                    "train_loss": step_loss / step_tokens,
                    "learning_rate": learning_rate,
                    "eval_loss": eval_loss,
                }
            )
            elapsed_loop = time.monotonic() - loop_started - loop_eval_s
            emit(
                ProgressEvent(
                    phase="train",
                    step=step,
                    total_steps=total_steps,
                    train_loss=step_loss / step_tokens,
                    learning_rate=learning_rate,
                    tokens_per_s=loop_tokens / elapsed_loop if elapsed_loop else 0.0,
                    eta_s=elapsed_loop / (step - done) * (total_steps - step),
                    elapsed_s=time.monotonic() - started,
                    eval_loss=eval_loss,
                )
            )
            leads = group is None or group.leads
            if checkpoint is not None and step % checkpoint_every == 0 and step < total_steps and leads:
                _checkpoint_save(
                    checkpoint, fingerprint, model, optimizer, scheduler, step, tokens_seen + loop_tokens, history
                )
        tokens_seen += loop_tokens
        train_loop_s = time.monotonic() - loop_started - loop_eval_s
        model.eval()
        tuned_eval = history[-1]["eval_loss"] if history and evals else None

        mode = config.formatting_for(record_type)
        sample_records = [records[e.index] for e in (evals or train)[:samples]]
        emit(ProgressEvent("samples", total_steps, total_steps, None, 0.0, 0.0, 0.0, time.monotonic() - started))
        prompts = [sample_prompt(r, record_type, mode) for r in sample_records]
        tuned = _generate_with(model, base, [p for p, _ in prompts], sample_tokens)
        with model.disable_adapter():
            before = _generate_with(model, base, [p for p, _ in prompts], sample_tokens)
        sample_rows = [
            {"prompt": _prompt_text(p), "reference": ref, "base": b, "tuned": t}
            for (p, ref), b, t in zip(prompts, before, tuned, strict=True)
        ]

        emit(ProgressEvent("saving", total_steps, total_steps, None, 0.0, 0.0, 0.0, time.monotonic() - started))
        model.save_pretrained(str(staging))
        require_finite_adapter(
            staging,
            what="training diverged: the adapter",
            advice="try a lower learning rate, or check the parent version's weights",
        )
        lora = {
            "rank": int(lora_config.r),
            "alpha": float(lora_config.lora_alpha),
            "dropout": float(lora_config.lora_dropout),
            "target_modules": sorted(lora_config.target_modules),
        }
    if checkpoint is not None and (group is None or group.leads):
        shutil.rmtree(checkpoint, ignore_errors=True)

    final_train = history[-1]["train_loss"] if history else None
    return TrainingResult(
        output_dir=str(output_dir),
        adapter_sha256=adapter_sha256(output_dir),
        device=str(base.device),
        dtype=_DTYPE_LABELS[base.precision]
        if base.precision != "fp32" or base.autocast_dtype is None
        else ("float32 weights, bfloat16 autocast"),
        steps=total_steps,
        resumed_from_step=resumed_from,
        train_records=len(train),
        eval_records=len(evals),
        dropped=encoded.dropped,
        truncated_records=sum(e.truncated for e in encoded.examples),
        trainable_params=trainable_params,
        total_params=total_params,
        tokens_seen=tokens_seen,
        seconds=round(time.monotonic() - started, 2),
        metrics={
            "train_loss": final_train,
            "eval_loss": tuned_eval,
            "eval_perplexity": _perplexity(tuned_eval),
            "base_eval_loss": base_eval,
            "base_eval_perplexity": _perplexity(base_eval),
        },
        loss_history=history,
        samples=sample_rows,
        lora=lora,
        phase_work={
            "train": {
                "tokens": loop_tokens,
                "steps": total_steps - resumed_from,
                "loop_seconds": round(train_loop_s, 3),
            },
            "eval_base": {"tokens": eval_tokens if base_eval is not None else 0},
            "eval": {"tokens": eval_tokens * eval_passes, "passes": eval_passes},
            "data": {"records": len(encoded.examples), "tokens": sum(len(e.input_ids) for e in encoded.examples)},
        },
        gradient_checkpointing=checkpointing,
        world_size=group.world_size if group is not None else 1,
    )


def _perplexity(loss: float | None) -> float | None:
    return None if loss is None else math.exp(min(loss, 50.0))


def _checkpoint_save(
    folder: Path,
    fingerprint: str,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    step: int,
    tokens: int,
    history: list[dict[str, Any]],
) -> None:
    # written beside the previous checkpoint and swapped in, so a kill mid-save keeps the older one usable
    staging = folder.with_name(f".{folder.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    model.save_pretrained(str(staging / "adapter"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state()},
        staging / "state.pt",
    )
    state = {"fingerprint": fingerprint, "step": step, "tokens": tokens, "history": history}
    (staging / "state.json").write_text(json.dumps(state), encoding="utf-8")
    old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)


def _checkpoint_load(
    folder: Path, fingerprint: str, model: Any, optimizer: Any, scheduler: Any, *, discard: bool = True
) -> tuple[int, int, list[dict[str, Any]]]:
    """Restore a checkpoint made by the same inputs; anything else (none, another run's) means starting at 0.
    Another run's checkpoint is deleted when ``discard`` (else the first save replaces it)."""
    state_file = folder / "state.json"
    if not state_file.is_file():
        return 0, 0, []
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if state.get("fingerprint") != fingerprint:
        if discard:
            shutil.rmtree(folder, ignore_errors=True)
        return 0, 0, []
    set_peft_model_state_dict(model, load_peft_weights(str(folder / "adapter"), device=str(model.device)))
    saved = torch.load(folder / "state.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    return int(state["step"]), int(state["tokens"]), list(state["history"])


# --- generation --------------------------------------------------------------------------------------------------


def _prompt_text(prompt: str | list[dict[str, str]]) -> str:
    if isinstance(prompt, str):
        return prompt.strip()
    return "\n".join(m["content"] for m in prompt if m["role"] == "user")


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, str]]) -> list[int]:
    if isinstance(prompt, list):
        return tokenizer(render_chat(tokenizer, prompt, prompt=True), add_special_tokens=False)["input_ids"]
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


@torch.no_grad()
def _generate_with(
    model: Any, base: LoadedBase, prompts: Sequence[str | list[dict[str, str]]], max_new_tokens: int
) -> list[str]:
    if not prompts:
        return []
    rows = [_prompt_ids(base.tokenizer, p) for p in prompts]
    width = max(len(r) for r in rows)
    pad = _pad_id(base)
    # left padding, so every row's new tokens start at the same column
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=base.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=base.device)
    with _autocast(base):
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=base.tokenizer.eos_token_id,
        )
    return [base.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def generate(
    *,
    base_model_dir: str | Path,
    prompts: Sequence[str | list[dict[str, str]]],
    adapter_dir: str | Path | None = None,
    max_new_tokens: int = 32,
    base: LoadedBase | None = None,
) -> list[str]:
    """Greedy answers, one per prompt. A string prompt is a user message sent through the chat template (the
    fallback template when the tokenizer has none, as training used); a list is taken as chat messages.
    ``adapter_dir`` is loaded with a plain ``PeftModel.from_pretrained``."""
    if base is None:
        base = load_base(base_model_dir)
    chats = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    if adapter_dir is None:
        return _generate_with(base.model, base, chats, max_new_tokens)
    with _wrapped(base, lambda model: PeftModel.from_pretrained(model, str(adapter_dir))) as model:
        model.eval()
        return _generate_with(model, base, chats, max_new_tokens)


# --- adapters ----------------------------------------------------------------------------------------------------


def adapter_sha256(adapter_dir: str | Path) -> str:
    """SHA-256 of the adapter's weights file (``adapter_model.safetensors``): the adapter's identity."""
    digest = hashlib.sha256()
    with (Path(adapter_dir) / ADAPTER_WEIGHTS).open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def require_finite_adapter(adapter_dir: str | Path, *, what: str = "the adapter", advice: str = "") -> None:
    """Raise ``NonFiniteAdapter`` unless every weight saved in ``adapter_dir`` is a finite number.

    Reads the saved file, not the model in memory: the file is what would be stored, hashed and anchored.
    """
    bad: list[str] = []
    with safe_open(str(Path(adapter_dir) / ADAPTER_WEIGHTS), framework="pt") as weights:
        names = list(weights.keys())
        for name in names:
            if not torch.isfinite(weights.get_tensor(name)).all():
                bad.append(name)
    if bad:
        raise NonFiniteAdapter(
            f"{what} has weights that are not finite numbers (inf or NaN) in {len(bad)} of {len(names)} tensors "
            f"(first: {bad[0]}); it was not stored" + (f": {advice}" if advice else "")
        )


def _dare_reweigh(model: Any, names: list[str], weights: list[float], method: str, density: float, seed: int) -> None:
    """Set the merged adapter "default" to peft's DARE merge of ``names``, its random draws seeded with ``seed``.

    peft's ``add_weighted_adapter`` draws DARE's masks from torch's global generator after the new adapter's own
    initialisation has drawn from it too, so seeding before the call would not make the masks depend on the seed
    alone. The adapter is made first (by a linear merge, whose matrices are then replaced), and peft's own per-layer
    DARE math runs on it in peft's order (the model's module order) with the generator seeded just before: the
    masks are then the ones a CPU generator seeded with ``seed`` gives (``inference.composition`` draws the same).
    The caller's random state is restored afterwards."""
    lora_model = model.base_model
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.random.default_generator.manual_seed(seed)
        for _key, target in lora_model.model.named_modules():
            if isinstance(target, LoraLayer) and "default" in target.lora_A:
                a, b = lora_model._generalized_task_arithmetic_weighted_adapter(
                    method, names, weights, target, density, "total"
                )
                target.lora_A["default"].weight.data = a
                target.lora_B["default"].weight.data = b


def merge_adapters(
    *,
    base_model_dir: str | Path,
    adapter_dirs: Sequence[str | Path],
    weights: Sequence[float],
    output_dir: str | Path,
    method: str = "linear",
    density: float = 0.5,
    base_id: str | None = None,
    adapter_base_ids: Sequence[str] | None = None,
    base: LoadedBase | None = None,
    seed: int = 0,
) -> MergeResult:
    """Combine two or more adapters of one base model into a new adapter saved like a trained one.

    ``method``: "linear" (peft's weighted sum of the A and B matrices; needs equal ranks, so adapters of different
    ranks fall back to "cat", the exact weighted sum of their updates at the summed rank), "ties" (TIES: trim to
    ``density``, elect signs, disjoint mean; different ranks fall back to "ties_svd" at the largest rank), "cat", or
    "dare_linear" / "dare_ties" (DARE: keep each entry with probability ``density``, rescaled, then linear / TIES;
    equal ranks only), whose random draws come from the CPU generator seeded with ``seed`` (the base on the CPU:
    on a GPU peft draws from the device's generator instead).
    The base check compares ``adapter_base_ids`` (e.g. base weights hashes) with ``base_id`` when given, else the
    base recorded in each adapter_config.json with ``base_model_dir``; a mismatch raises ``AdapterBaseMismatch``.
    """
    dirs = [Path(d) for d in adapter_dirs]
    if method not in MERGE_METHODS + DARE_METHODS:
        raise TrainingError(f"unknown merge method {method!r}; choose {', '.join(MERGE_METHODS + DARE_METHODS)}")
    if len(dirs) < 2:
        raise TrainingError("a merge needs at least two adapters")
    if len(weights) != len(dirs) or not all(math.isfinite(w) for w in weights):
        raise TrainingError("give one finite weight per adapter")
    if method in ("ties", *DARE_METHODS) and not 0 < density <= 1:
        raise TrainingError(f"{method} density is the share of each update kept: above 0 and at most 1")
    for d in dirs:
        if not (d / ADAPTER_WEIGHTS).is_file():
            raise TrainingError(f"{d} is not a saved adapter (no {ADAPTER_WEIGHTS})")
    base_path = str(Path(base_model_dir).resolve()) if base is None else base.path
    _check_same_base(dirs, base_path, base_id, adapter_base_ids)
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise TrainingError(f"{output_dir} already exists; adapters are never overwritten")
    ranks = {json.loads((d / ADAPTER_CONFIG).read_text(encoding="utf-8"))["r"] for d in dirs}
    combination = method
    if len(ranks) > 1 and method in ("linear", "ties"):
        combination = "cat" if method == "linear" else "ties_svd"
    if len(ranks) > 1 and method in DARE_METHODS:
        raise TrainingError(f"{method} needs adapters of equal rank; these have ranks {sorted(ranks)}")
    if base is None:
        base = load_base(base_model_dir)
    names = [f"source{i}" for i in range(len(dirs))]

    def build(model: Any) -> Any:
        peft_model = PeftModel.from_pretrained(model, str(dirs[0]), adapter_name=names[0])
        for name, d in zip(names[1:], dirs[1:], strict=True):
            peft_model.load_adapter(str(d), adapter_name=name)
        return peft_model

    with _staging(output_dir) as staging, _wrapped(base, build) as model:
        # "default" so that save_pretrained writes into the folder itself rather than a subfolder named after it
        model.add_weighted_adapter(
            adapters=names,
            weights=list(weights),
            adapter_name="default",
            combination_type="linear" if combination in DARE_METHODS else combination,
            density=density if combination not in ("linear", "cat", *DARE_METHODS) else None,
        )
        if combination in DARE_METHODS:
            _dare_reweigh(model, names, list(weights), combination, density, seed)
        model.set_adapter("default")
        for name in names:
            model.delete_adapter(name)
        rank = int(model.peft_config["default"].r)
        model.save_pretrained(str(staging), selected_adapters=["default"])
        require_finite_adapter(
            staging,
            what="the merged adapter",
            advice="use smaller weights, or check the parent versions' weights",
        )
    return MergeResult(
        output_dir=str(output_dir), adapter_sha256=adapter_sha256(output_dir), combination_type=combination, rank=rank
    )
