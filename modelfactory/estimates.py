"""How long a fine-tune takes, phase by phase, from what finished jobs measured: plain data, no torch, no database.

A training job goes through ``PHASES`` in order and records, for each, its seconds and the work it did (tokens,
records, answers) in ``FineTuneJob.phases``. ``throughput_from`` turns the phases of a worker's recent jobs into
rates (``Throughput``), which the worker publishes on its ``TrainingWorker`` row; ``phase_seconds`` applies them to
a new job's size. Nothing measured yet: ``FALLBACK`` stands in, and the estimate says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

# Every phase of a training job, in order, with what the job page calls it.
PHASES: dict[str, str] = {
    "load": "Loading the base model and the data",
    "eval_base": "Evaluating the base model",
    "train": "Training",
    "eval": "Evaluating the adapter",
    "samples": "Writing sample answers",
    "saving": "Saving the adapter",
    "index": "Building the attribution index",
    "store": "Storing and anchoring the version",
}
MERGE_PHASES: dict[str, str] = {
    "load": "Loading the base model",
    "merge": "Merging the adapters",
    "samples": "Writing sample answers",
    "index": "Building the attribution index",
    "store": "Storing and anchoring the version",
}
ALL_PHASES = {**PHASES, **MERGE_PHASES}

# How many recent jobs of a worker (or of a device kind) the rates average over: recent enough to follow a machine
# that got busier, enough to smooth one noisy run.
RECENT_JOBS = 5


@dataclass(frozen=True)
class Throughput:
    """Rates measured on real jobs: tokens a second of training (non-padding tokens, as the job counts them), of
    evaluation passes and of the attribution index build (over all the job's records, after its fixed part
    ``index_fixed_s``: the sketch, the adapter, the span index), and the seconds of the phases whose cost hardly
    depends on the data size. ``jobs`` is how many jobs the figures come from."""

    train_tokens_per_s: float
    eval_tokens_per_s: float
    index_tokens_per_s: float
    index_fixed_s: float
    load_cold_s: float
    load_warm_s: float
    samples_s: float
    saving_s: float
    store_s: float
    jobs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Throughput:
        """The published figures; a field published before it existed is 0 (``index_fixed_s``)."""
        return cls(**{k: data.get(k, 0.0) for k in cls.__dataclass_fields__})


# For a worker that has measured nothing yet. "cpu": SmolLM2-135M on the project's 2-vCPU development machine
# (float32, OMP_NUM_THREADS=1, load average 11-15 from other work), from bench/estimate.py's three jobs of
# 2026-12-06 (12, 24 and 48 records); an idle or bigger machine is faster. "cuda": not measured here (no GPU was
# lent to the run), a cautious guess.
FALLBACK: dict[str, Throughput] = {
    "cpu": Throughput(
        train_tokens_per_s=33.0,
        eval_tokens_per_s=60.0,
        index_tokens_per_s=64.0,
        index_fixed_s=24.0,
        load_cold_s=16.0,
        load_warm_s=0.6,
        samples_s=20.0,
        saving_s=0.4,
        store_s=0.2,
    ),
    "cuda": Throughput(
        train_tokens_per_s=20_000.0,
        eval_tokens_per_s=60_000.0,
        index_tokens_per_s=5_000.0,
        index_fixed_s=5.0,
        load_cold_s=15.0,
        load_warm_s=0.5,
        samples_s=4.0,
        saving_s=0.5,
        store_s=0.5,
    ),
}
FALLBACK_PARAMETERS = 134_515_008  # the model FALLBACK was measured with; rates scale inversely with model size


def _entries(phases: Iterable[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {p["phase"]: p for p in phases or () if isinstance(p, dict) and "phase" in p}


def _rate(jobs: list[dict[str, dict[str, Any]]], phase: str, work: str = "tokens") -> float | None:
    done = [(float(j[phase].get(work) or 0), float(j[phase].get("seconds") or 0)) for j in jobs if phase in j]
    amount, seconds = sum(a for a, _ in done), sum(s for _, s in done)
    return amount / seconds if amount > 0 and seconds > 0 else None


def _fixed_and_rate(points: list[tuple[float, float]], fallback_fixed: float) -> tuple[float, float] | None:
    """(fixed seconds, tokens a second) of a phase that costs ``fixed + tokens / rate``, from (tokens, seconds) of
    finished jobs: a least-squares line when the jobs had different sizes, else the fallback's fixed part (at most
    half the measured time) and the rate of the rest. None without a measurement."""
    points = [(t, s) for t, s in points if t > 0 and s > 0]
    if not points:
        return None
    if len({t for t, _ in points}) >= 2:
        mean_t = sum(t for t, _ in points) / len(points)
        mean_s = sum(s for _, s in points) / len(points)
        slope = sum((t - mean_t) * (s - mean_s) for t, s in points) / sum((t - mean_t) ** 2 for t, _ in points)
        if slope > 0 and mean_s - slope * mean_t >= 0:
            return mean_s - slope * mean_t, 1 / slope
    fixed = min(fallback_fixed, 0.5 * min(s for _, s in points))
    return fixed, sum(t for t, _ in points) / sum(s - fixed for _, s in points)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def throughput_from(job_phases: Iterable[list[dict[str, Any]]], *, fallback: Throughput) -> Throughput | None:
    """Rates over the given jobs' ``phases`` (most recent first is the caller's business); None when none of them
    trained. A rate that no job measured (no eval split, say) comes from ``fallback``."""
    jobs = [j for j in (_entries(p) for p in job_phases) if "train" in j]
    if not jobs:
        return None
    evals = [{"e": j[phase]} for j in jobs for phase in ("eval_base", "eval") if phase in j]
    loads = [j["load"] for j in jobs if "load" in j]

    def seconds(phase: str) -> float | None:
        return _mean([float(j[phase]["seconds"]) for j in jobs if phase in j])

    index = _fixed_and_rate(
        [(float(j["index"].get("tokens") or 0), float(j["index"].get("seconds") or 0)) for j in jobs if "index" in j],
        fallback.index_fixed_s,
    ) or (fallback.index_fixed_s, fallback.index_tokens_per_s)
    return Throughput(
        train_tokens_per_s=_rate(jobs, "train") or fallback.train_tokens_per_s,
        eval_tokens_per_s=_rate(evals, "e") or fallback.eval_tokens_per_s,
        index_tokens_per_s=index[1],
        index_fixed_s=index[0],
        load_cold_s=_mean([float(x["seconds"]) for x in loads if x.get("cold")]) or fallback.load_cold_s,
        load_warm_s=_mean([float(x["seconds"]) for x in loads if not x.get("cold")]) or fallback.load_warm_s,
        samples_s=seconds("samples") or fallback.samples_s,
        saving_s=seconds("saving") or fallback.saving_s,
        store_s=seconds("store") or fallback.store_s,
        jobs=len(jobs),
    )


def fallback_for(device: str, parameters: int) -> Throughput:
    """``FALLBACK`` for ``device`` ("cpu", "cuda", "cuda:1"), its rates scaled to a model of ``parameters``."""
    base = FALLBACK["cuda" if device.startswith("cuda") else "cpu"]
    scale = FALLBACK_PARAMETERS / max(parameters, 1)
    return Throughput(
        **{
            **base.to_dict(),
            "train_tokens_per_s": base.train_tokens_per_s * scale,
            "eval_tokens_per_s": base.eval_tokens_per_s * scale,
            "index_tokens_per_s": base.index_tokens_per_s * scale,
            "jobs": 0,
        }
    )


@dataclass(frozen=True)
class JobSize:
    """What a job will process: non-padding tokens of training (all steps), of one eval pass, how many eval passes
    after the base model's, and the tokens of every record (what the index build reads)."""

    train_tokens: int
    eval_tokens: int
    eval_passes: int
    record_tokens: int


def phase_seconds(
    size: JobSize, rates: Throughput, *, model_loaded: bool, checkpointing: bool = False
) -> list[tuple[str, float]]:
    """Seconds of each phase of ``PHASES`` for a job of ``size`` at ``rates``; ``model_loaded`` when the worker
    holds the base model in memory already (it loads each base once); ``checkpointing``: the job trains with
    gradient checkpointing (``CHECKPOINTING_TIME_FACTOR``), which the rates were not measured with."""
    has_eval = size.eval_tokens > 0
    seconds = {
        "load": rates.load_warm_s if model_loaded else rates.load_cold_s,
        "eval_base": size.eval_tokens / rates.eval_tokens_per_s if has_eval else 0.0,
        "train": size.train_tokens / rates.train_tokens_per_s * (CHECKPOINTING_TIME_FACTOR if checkpointing else 1),
        "eval": size.eval_tokens * size.eval_passes / rates.eval_tokens_per_s if has_eval else 0.0,
        "samples": rates.samples_s,
        "saving": rates.saving_s,
        "index": rates.index_fixed_s + size.record_tokens / rates.index_tokens_per_s if size.record_tokens else 0.0,
        "store": rates.store_s,
    }
    return [(phase, round(seconds[phase], 1)) for phase in PHASES if math.isfinite(seconds[phase])]


# Gradient checkpointing keeps one tensor a layer through the forward pass and recomputes the rest of each layer
# during the backward pass: one more forward pass a step. LoRA's backward pass costs about one forward pass (the
# frozen weights need no gradients), so a step goes from about two forward passes to three. bench/train.py measured
# 1.8 s a LoRA step against 2.9 s a full fine-tune step (three forward passes) on the bundled model: 1.8 + 1.0 s.
CHECKPOINTING_TIME_FACTOR = 1.5
CHECKPOINTING_MODES = ("off", "auto", "on")

# The loss computes the output head's logits this many bytes (float32) at a time and again, a chunk at a time, in
# the backward pass (``training._head_loss``): the bundled model's 49,152-word vocabulary gives 42 positions a
# chunk, and about four chunks' worth (logits, log-softmax and both gradients) at the peak.
LOSS_CHUNK_BYTES = 8 << 20

# How the base model's weights are held and the math run (issue 18, item 4). "fp32": float32 weights (on a CUDA
# device with bf16 support the forward passes run under bf16 autocast, as they always have); "bf16": bfloat16
# weights and math, CUDA only; "qlora-nf4": the decoder's linear weights in 4-bit NF4 through bitsandbytes (QLoRA),
# the rest in bfloat16, bfloat16 math, CUDA only. The LoRA weights, their gradients and Adam's moments stay float32.
PRECISIONS = ("fp32", "bf16", "qlora-nf4")
GPU_PRECISIONS = ("bf16", "qlora-nf4")
PRECISION_LABELS = {
    "fp32": "fp32: float32 weights (any worker)",
    "bf16": "bf16: bfloat16 weights and math, half the memory (a CUDA worker)",
    "qlora-nf4": "QLoRA: 4-bit NF4 base weights through bitsandbytes, bfloat16 math (a CUDA worker)",
}
# Bytes a weight: NF4 packs two weights a byte and keeps one scale per block of 64 (8 bits, with the scales
# themselves quantized: "double quantization"), 4.127 bits a weight in all (the QLoRA paper, section 3).
_WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "qlora-nf4": 4.127 / 8}
# Bytes an activation: the math runs in bfloat16 for "bf16" and "qlora-nf4".
_ACTIVATION_BYTES = {"fp32": 4, "bf16": 2, "qlora-nf4": 2}


def memory_bytes(
    *,
    parameters: int,
    lora_rank: int,
    lora_modules: int,
    batch_size: int,
    row_tokens: int,
    checkpointing: bool,
    hidden: int | None = None,
    layers: int | None = None,
    vocab: int | None = None,
    precision: str = "fp32",
) -> int:
    """A rough upper bound of a LoRA job's memory: weights, LoRA weights with gradient and two Adam moments (float32),
    activations, the answer tokens' logits (a chunk at a time, ``LOSS_CHUNK_BYTES``).

    Without ``hidden``, ``layers`` and ``vocab`` (the model's own, from its config) the constants fit a Llama-shaped
    model of SmolLM2's proportions (hidden ~ 576, 30 layers, 49k vocabulary); this is for a "will it fit" hint, not
    an allocator. With ``checkpointing`` the activations are one hidden state
    a layer plus one layer's worth, recomputed in the backward pass. ``precision`` (``PRECISIONS``): "bf16" halves
    the weights and the activations; "qlora-nf4" holds the decoder's weights in 4 bits (the embeddings, about
    ``vocab * hidden`` of them, stay bfloat16) and halves the activations.
    """
    hidden = hidden or (576 if parameters < 300_000_000 else 2048)
    layers = layers or (30 if parameters < 300_000_000 else 24)
    vocab = vocab or 49_152
    if precision == "qlora-nf4":
        embeddings = min(parameters, vocab * hidden)
        weights = embeddings * 2 + (parameters - embeddings) * _WEIGHT_BYTES[precision]
    else:
        weights = parameters * _WEIGHT_BYTES.get(precision, 4.0)
    unit = _ACTIVATION_BYTES.get(precision, 4)
    lora = layers * lora_modules * 2 * hidden * lora_rank * 4 * 4
    tokens = batch_size * max(row_tokens, 1)
    per_layer = tokens * hidden * unit * 24
    activations = (tokens * hidden * unit * layers + per_layer) if checkpointing else per_layer * layers
    logits = 4 * min(tokens * vocab * 4, LOSS_CHUNK_BYTES)
    return int(weights + lora + activations + logits)


def checkpointing_on(mode: str, *, needed_bytes: int, available_bytes: int | None) -> bool:
    """Whether a job runs with gradient checkpointing: ``mode`` "on" or "off" as asked; "auto" turns it on when
    the job's memory without it (``needed_bytes``) is more than the worker has (``available_bytes``; None when
    unknown, which never turns it on)."""
    if mode == "auto":
        return available_bytes is not None and needed_bytes > available_bytes
    return mode == "on"
