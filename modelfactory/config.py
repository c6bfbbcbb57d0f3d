"""Fine-tune settings as plain data: the config, its validation, the presets and the pre-launch estimate.

Nothing here imports torch, so the web process can validate a form and show an estimate without loading a framework;
``modelfactory/training.py`` consumes the same dataclass.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .architectures import ALL_LINEAR, ATTENTION, ModelShape, resolve_target_modules, targets_per_layer
from .estimates import (
    CHECKPOINTING_MODES,
    FALLBACK_PARAMETERS,
    PRECISIONS,
    JobSize,
    Throughput,
    checkpointing_on,
    fallback_for,
    memory_bytes,
    phase_seconds,
)

# "attention": the family's attention projections (q, k, v, o on Llama; fused qkv_proj and o_proj on Phi-3; c_attn and
# attn.c_proj on GPT-2); "all-linear": peft's own shortcut, every Linear (and Conv1D) layer except the output head.
# What each resolves to per family is in ``architectures``.
TARGET_PRESETS = (ATTENTION, ALL_LINEAR)
SCHEDULES = ("constant", "linear", "cosine")
RECORD_TYPES = ("text", "instruction", "chat", "classification")
# How each record type may become training text; the first mode of each is the default.
FORMATTING_MODES: dict[str, tuple[str, ...]] = {
    "text": ("plain",),
    "instruction": ("chat_template", "plain"),
    "chat": ("chat_template",),
    "classification": ("chat_template", "plain"),
}
DEFAULT_FORMATTING = {record_type: modes[0] for record_type, modes in FORMATTING_MODES.items()}

# "auto": any training worker (on CUDA where it has a GPU); "cuda": only a worker with a CUDA GPU, which the job
# reaches through the ``training-gpu`` queue (``TRAINING_GPU_QUEUE``) that only such workers consume
DEVICES = ("auto", "cuda")
TRAINING_QUEUE = "training"
TRAINING_GPU_QUEUE = "training-gpu"
# data-parallel processes per job (one per GPU, or CPU processes sharing the cores); what a worker offers is what it
# announces (``selectors.worker_devices``), this only bounds the form
MAX_PROCESSES = 64

MAX_RANK = 256
MAX_ALPHA = 4096
MAX_LEARNING_RATE = 0.01
MIN_MAX_LENGTH = 16
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides what a fine-tune produces, apart from the data and the base model.

    ``max_steps`` (optimizer steps), when set, wins over ``epochs``. ``target_modules`` is a preset name
    ("attention", "all-linear") or an explicit list of module names. ``formatting`` maps a record type to how its
    records become text (see ``FORMATTING_MODES``); missing types use the default mode. ``eval_every`` is in
    optimizer steps, 0 meaning "at the end only". ``gradient_checkpointing`` ("off", "auto", "on"): "auto" turns it
    on when the estimate says the job would not fit the worker's memory without it; it trades a third more time
    for much less activation memory and trains the same adapter (within floating-point rounding). ``processes``:
    how many processes train the job together (data parallel, ``modelfactory.distributed``), each on its share of
    every step's global batch: the same adapter within floating-point rounding (dropout aside); more than 1 needs a
    worker announcing that many devices (GPUs, or CPU cores). ``device``: "auto" or "cuda" (see ``DEVICES``).
    ``precision`` (``estimates.PRECISIONS``): "fp32" runs anywhere; "bf16" and "qlora-nf4" need a CUDA worker,
    which the form and the launch check before a job is queued and the worker checks again.
    """

    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "attention"
    learning_rate: float = 2e-4
    schedule: str = "cosine"
    warmup_steps: int = 10
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    gradient_accumulation: int = 1
    max_length: int = 512
    eval_fraction: float = 0.1
    eval_every: int = 0
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 42
    formatting: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_FORMATTING))
    gradient_checkpointing: str = "auto"
    processes: int = 1
    device: str = "auto"
    precision: str = "fp32"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Build a config from ``to_dict()`` output or form data; unknown keys are refused, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("target_modules"), tuple):
            values["target_modules"] = list(values["target_modules"])
        if "formatting" in values:
            values["formatting"] = {**DEFAULT_FORMATTING, **values["formatting"]}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Every setting with sorted keys (nested too), as it goes into the lineage manifest."""
        return json.loads(json.dumps(asdict(self), sort_keys=True))

    def with_changes(self, **changes: Any) -> TrainingConfig:
        return replace(self, **changes)

    def resolved_target_modules(self, model_type: str = "llama") -> list[str] | str:
        """The value for peft's ``LoraConfig.target_modules`` on a base model of ``model_type`` (by default the
        bundled model's, Llama): a list of names or the "all-linear" shortcut. Raises ValueError for a family
        ModelFactory does not support or a module the family does not have (``architectures``)."""
        return resolve_target_modules(self.target_modules, model_type)

    @property
    def queue(self) -> str:
        """The Celery queue a job of this config goes to: ``training-gpu`` when it needs CUDA, else ``training``."""
        return TRAINING_GPU_QUEUE if self.device == "cuda" else TRAINING_QUEUE

    def formatting_for(self, record_type: str) -> str:
        return self.formatting.get(record_type, DEFAULT_FORMATTING[record_type])

    def validate(self, *, context_length: int) -> dict[str, str]:
        """Return ``{field: message}`` for every bad setting (empty when the config is usable).

        ``context_length`` is the base model's (``max_position_embeddings``); messages are meant to be shown next
        to the form field as they are.
        """
        errors: dict[str, str] = {}

        def whole(name: str, low: int, high: int, what: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                errors[name] = f"{what} must be a whole number."
            elif not low <= value <= high:
                errors[name] = f"{what} must be between {low:,} and {high:,}; {value:,} is out of range."

        def number(name: str) -> float | None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                errors[name] = "Must be a number."
                return None
            return float(value)

        whole("lora_rank", 1, MAX_RANK, "LoRA rank")
        alpha = number("lora_alpha")
        if alpha is not None and not 0 < alpha <= MAX_ALPHA:
            errors["lora_alpha"] = f"LoRA alpha must be above 0 and at most {MAX_ALPHA:,} (usually 1-2x the rank)."
        dropout = number("lora_dropout")
        if dropout is not None and not 0 <= dropout < 1:
            errors["lora_dropout"] = "LoRA dropout is a probability: at least 0 and below 1."

        targets = self.target_modules
        if isinstance(targets, str):
            if targets not in TARGET_PRESETS:
                errors["target_modules"] = (
                    f"Unknown target preset {targets!r}; choose {' or '.join(map(repr, TARGET_PRESETS))}, "
                    "or list module names."
                )
        elif not isinstance(targets, list | tuple) or not targets:
            errors["target_modules"] = "Choose a preset or list at least one module name (for example q_proj)."
        elif bad := [t for t in targets if not isinstance(t, str) or not _MODULE_NAME.match(t)]:
            errors["target_modules"] = f"Not a module name: {', '.join(map(str, bad))}."

        lr = number("learning_rate")
        if lr is not None and lr <= 0:
            errors["learning_rate"] = "Learning rate must be positive (LoRA usually trains well around 1e-4 to 3e-4)."
        elif lr is not None and lr > MAX_LEARNING_RATE:
            errors["learning_rate"] = (
                f"Learning rate {lr:g} is above {MAX_LEARNING_RATE:g}: training would diverge. Try 2e-4."
            )
        if self.schedule not in SCHEDULES:
            errors["schedule"] = f"Schedule must be one of {', '.join(SCHEDULES)}."
        whole("warmup_steps", 0, 100_000, "Warm-up steps")
        whole("epochs", 1, 100, "Epochs")
        if self.max_steps is not None:
            whole("max_steps", 1, 1_000_000, "Max steps")
            if "max_steps" not in errors and "warmup_steps" not in errors and self.warmup_steps >= self.max_steps > 1:
                errors["warmup_steps"] = (
                    f"Warm-up ({self.warmup_steps} steps) must be shorter than the run ({self.max_steps} steps)."
                )
        whole("batch_size", 1, 512, "Batch size")
        whole("gradient_accumulation", 1, 1024, "Gradient accumulation")
        if (
            isinstance(self.max_length, int)
            and not isinstance(self.max_length, bool)
            and (self.max_length > context_length)
        ):
            errors["max_length"] = (
                f"Max sequence length {self.max_length:,} is above the base model's context of {context_length:,} "
                "tokens."
            )
        else:
            whole("max_length", MIN_MAX_LENGTH, context_length, "Max sequence length")
        fraction = number("eval_fraction")
        if fraction is not None and not 0 <= fraction <= 0.5:
            errors["eval_fraction"] = "The evaluation share must be between 0 and 0.5 (0 turns evaluation off)."
        whole("eval_every", 0, 1_000_000, "Evaluation interval")
        norm = number("max_grad_norm")
        if norm is not None and norm <= 0:
            errors["max_grad_norm"] = "Gradient clipping norm must be positive."
        decay = number("weight_decay")
        if decay is not None and not 0 <= decay <= 1:
            errors["weight_decay"] = "Weight decay must be between 0 and 1."
        whole("seed", 0, 2**32 - 1, "Seed")
        if self.gradient_checkpointing not in CHECKPOINTING_MODES:
            errors["gradient_checkpointing"] = (
                f"Gradient checkpointing is one of {', '.join(CHECKPOINTING_MODES)}, "
                f"not {self.gradient_checkpointing!r}."
            )
        if self.precision not in PRECISIONS:
            errors["precision"] = f"Precision is one of {', '.join(PRECISIONS)}, not {str(self.precision)[:40]!r}."

        whole("processes", 1, MAX_PROCESSES, "Processes")
        if self.device not in DEVICES:
            errors["device"] = f"Device is one of {', '.join(DEVICES)}, not {self.device!r}."

        if not isinstance(self.formatting, dict):
            errors["formatting"] = "Formatting must map record types to modes."
        else:
            problems = []
            for record_type, mode in sorted(self.formatting.items()):
                if record_type not in FORMATTING_MODES:
                    problems.append(f"unknown record type {record_type!r}")
                elif mode not in FORMATTING_MODES[record_type]:
                    allowed = ", ".join(FORMATTING_MODES[record_type])
                    problems.append(f"{record_type} records can be formatted as {allowed}, not {mode!r}")
            if problems:
                errors["formatting"] = "; ".join(problems).capitalize() + "."
        return errors

    def memory_bytes(
        self, *, parameters: int, row_tokens: int, checkpointing: bool, shape: ModelShape | None = None
    ) -> int:
        """``estimates.memory_bytes`` for this config. Without ``shape`` a Llama-shaped model of SmolLM2's
        proportions with LoRA on 4 modules a layer for "attention", else 7; with it, the model's own width, depth,
        vocabulary and its family's number of adapted layers per block."""
        if shape is not None:
            dims = {"hidden": shape.hidden_size, "layers": shape.layers, "vocab": shape.vocab_size}
            modules = targets_per_layer(self.target_modules, shape.model_type)
        else:
            dims = {}
            modules = 4 if self.target_modules == ATTENTION else 7
        return memory_bytes(
            parameters=parameters,
            lora_rank=self.lora_rank if isinstance(self.lora_rank, int) else 8,
            lora_modules=modules,
            batch_size=self.batch_size,
            row_tokens=row_tokens,
            checkpointing=checkpointing,
            precision=self.precision,
            **dims,
        )

    def estimate(
        self,
        *,
        records: int,
        tokens: int,
        device: str,
        parameters: int = FALLBACK_PARAMETERS,
        throughput: Throughput | None = None,
        model_loaded: bool = False,
        shape: ModelShape | None = None,
        memory_available: int | None = None,
    ) -> Estimate:
        """Predict steps, tokens, the seconds of every phase and memory of a run before launching it.

        ``records`` and ``tokens`` describe the whole dataset (before the eval split; tokens as the tokenizer
        counts them); ``device`` is "cpu" or "cuda" (a "cuda:1" style name counts as cuda). Rows longer than
        ``max_length`` are counted at ``max_length``. The seconds come from ``throughput``, what the worker that will
        run the job measured on this base model (``estimates.Throughput``); without it from
        ``estimates.FALLBACK`` scaled by the model size (``measured`` is then False). ``model_loaded``: the worker
        holds the base model in memory already. ``shape`` (``architectures.model_shape`` of the base model's folder)
        sizes the memory by the model's own width, depth, vocabulary and family; without it a SmolLM2-shaped model is
        assumed. Memory is a rough upper bound for float32 weights. ``memory_available``: the bytes the worker has
        (None when unknown); "auto" checkpointing compares the job's memory with it, and with checkpointing on the
        memory is lower and the training phase longer.
        """
        kind = "cuda" if device.startswith("cuda") else "cpu"
        split = eval_split_sizes(records, self.eval_fraction)
        train_records = split[0]
        mean_tokens = min(self.max_length, tokens / records) if records else 0.0
        micro_per_epoch = math.ceil(train_records / self.batch_size) if train_records else 0
        steps_per_epoch = math.ceil(micro_per_epoch / self.gradient_accumulation) if micro_per_epoch else 0
        steps = self.max_steps if self.max_steps is not None else steps_per_epoch * self.epochs
        if not train_records:
            steps = 0
        rows = steps * self.batch_size * self.gradient_accumulation
        if self.max_steps is None:
            rows = min(rows, train_records * self.epochs)
        train_tokens = int(rows * mean_tokens)
        # the adapter is evaluated every eval_every steps and after the last one
        passes = math.ceil(steps / self.eval_every) if self.eval_every and steps else 1
        size = JobSize(
            train_tokens=train_tokens,
            eval_tokens=int(split[1] * mean_tokens),
            eval_passes=passes,
            record_tokens=int(records * mean_tokens),
        )
        rates = throughput or fallback_for(kind, parameters)
        row_tokens = math.ceil(mean_tokens)
        plain_memory = self.memory_bytes(parameters=parameters, row_tokens=row_tokens, checkpointing=False, shape=shape)
        checkpointing = checkpointing_on(
            self.gradient_checkpointing, needed_bytes=plain_memory, available_bytes=memory_available
        )
        phases = phase_seconds(size, rates, model_loaded=model_loaded, checkpointing=checkpointing)
        return Estimate(
            train_records=train_records,
            eval_records=split[1],
            steps=steps,
            tokens=train_tokens,
            seconds=round(sum(s for _, s in phases), 1),
            memory_bytes=self.memory_bytes(
                parameters=parameters, row_tokens=row_tokens, checkpointing=checkpointing, shape=shape
            ),
            device=kind,
            tokens_per_s=round(rates.train_tokens_per_s, 1),
            phases=tuple(phases),
            measured=throughput is not None,
            measured_jobs=rates.jobs,
            checkpointing=checkpointing,
            plain_memory_bytes=plain_memory,
            memory_available=memory_available,
        )


@dataclass(frozen=True)
class Estimate:
    train_records: int
    eval_records: int
    steps: int
    tokens: int
    seconds: float
    memory_bytes: int
    device: str
    tokens_per_s: float
    phases: tuple[tuple[str, float], ...] = ()
    measured: bool = False
    measured_jobs: int = 0
    checkpointing: bool = False  # gradient checkpointing, as the job will run ("auto" resolved)
    plain_memory_bytes: int = 0  # the memory without checkpointing
    memory_available: int | None = None


def eval_split_sizes(records: int, eval_fraction: float) -> tuple[int, int]:
    """(train, eval) record counts: at least one eval record when evaluation is on and two records exist."""
    if records < 2 or eval_fraction <= 0:
        return records, 0
    held_out = min(records - 1, max(1, round(records * eval_fraction)))
    return records - held_out, held_out


# Each preset names only what differs from TrainingConfig's defaults; "balanced" is the defaults over two epochs.
PRESETS: dict[str, TrainingConfig] = {
    # seconds on a laptop: proves the pipeline end to end, teaches little
    "quick-test": TrainingConfig(
        lora_rank=4,
        lora_alpha=8.0,
        lora_dropout=0.0,
        learning_rate=3e-4,
        schedule="constant",
        warmup_steps=0,
        max_steps=10,
        batch_size=4,
        max_length=256,
    ),
    "balanced": TrainingConfig(epochs=2),
    "thorough": TrainingConfig(
        lora_rank=16,
        lora_alpha=32.0,
        target_modules="all-linear",
        learning_rate=1e-4,
        warmup_steps=30,
        epochs=3,
        gradient_accumulation=2,
        max_length=1024,
        eval_every=50,
    ),
}
PRESET_LABELS = {"quick-test": "Quick test", "balanced": "Balanced", "thorough": "Thorough"}
