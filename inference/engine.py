"""The serving engine: one base model in memory, many LoRA adapters on demand, mixed-adapter batches, streamed tokens.

A long-lived worker process holds one ``Engine`` per base model and device. Requests name an adapter by id (the caller
resolves the id to a folder, content-addressed, and passes the path along or registers it); the engine loads the
adapter's safetensors straight into an LRU cache bounded by count and by bytes, and applies every cached adapter itself
rather than through peft: each Linear layer of the base model carries a forward hook that adds, per row of the batch,
that row's LoRA delta (the S-LoRA/Punica idea). So loading an adapter is a file read and a dict insert, a cached adapter
costs its tensor bytes and nothing more, and one forward pass serves rows that use different adapters, or none.

torch, transformers and peft are imported inside functions: this module stays importable by the web process, which
only needs the request and result types.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import os
import queue
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from modelfactory.encoding import chat_prompt_ids

if TYPE_CHECKING:
    import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Above this many bytes of per-row stacked LoRA weights in one batch, rows are grouped by adapter instead: slower
# with many adapters, but its memory does not grow with the batch.
ROW_STACK_BUDGET_BYTES = 512 * 1024 * 1024
# With this few adapters in a batch a loop over adapter groups is cheaper than stacking weights per row.
GROUP_LOOP_MAX_ADAPTERS = 2
# On CPU, a Linear called with this many rows (the decode steps of a full batch) multiplies by a copy of its weight in
# MKL's packed GEMM layout: about twice as fast as the plain float32 matmul at 16 rows, where decoding spends its time,
# and bit for bit the same result (measured for every layer shape of the bundled model). Below 16 rows MKL's plain
# path uses other kernels, whose sums differ in the last bits, and above 64 (prefill) the plain path is as fast.
PACKED_ROWS = range(16, 65)
# Prompts of different lengths are prefilled in groups of similar length: a cut saves the shorter group's padding and
# costs one more forward pass (its dispatch and its reads of the weights), worth about this many tokens of prefill.
PREFILL_SPLIT_TOKENS = 32
# LoRA variants whose forward pass differs from base(x) + B(A(x)) * scaling: served wrongly if ignored, so refused.
# ``fan_in_fan_out`` only says how the base weight is stored (GPT-2's transposed Conv1D layers): the LoRA matrices
# keep their usual shapes and the forward pass is the same, so it is accepted where every target is a Conv1D layer.
UNSUPPORTED_CONFIG_FLAGS = (
    "use_dora",
    "lora_bias",
    "modules_to_save",
    "trainable_token_indices",
    "target_parameters",
    "layer_replication",
    "alora_invocation_tokens",
    "arrow_config",
    "use_bdlora",
    "kasa_config",
    "monteclora_config",
    "velora_config",
    "use_qalora",
)
CLOSED_MESSAGE = "the engine was closed before this request ran"
# The counters of the warm and cold tiers in ``state()["tiers"]`` (the hot tier's are ``hits``, ``misses``,
# ``evictions`` of ``state()``, kept at the top level as before there were tiers).
_WARM_COUNTERS = (
    "warm_hits",
    "warm_misses",
    "warm_writes",
    "warm_write_failures",
    "warm_evictions",
    "warm_corrupt",
    "evictions_to_warm",
    "cold_loads",
)
# A warm-tier folder is named after the process that owns it, so a later engine can tell the folders of dead ones.
_WARM_FOLDER = re.compile(r"^engine-(?P<pid>[0-9]+)-[a-z0-9_]+$")
_LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")

# The adapters of the rows of the batch now in a forward pass; read by the LoRA hooks on the base model's layers.
_PLAN: contextvars.ContextVar[_Plan | None] = contextvars.ContextVar("inference_engine_plan", default=None)
# Per row of the step the engine is running, whether its next token is the argmax (greedy) rather than sampled: the
# output head's screen (``_screened_head``) serves a step only when all of its rows are greedy.
_GREEDY_ROWS: contextvars.ContextVar[tuple[bool, ...] | None] = contextvars.ContextVar(
    "inference_engine_greedy_rows", default=None
)
# bfloat16's unit roundoff (8 significant bits).
_BF16_UNIT = 2.0**-8


class AdapterError(ValueError):
    """An adapter that cannot be served: missing files, an unsupported config, weights that do not fit the base."""


class EngineClosed(RuntimeError):
    """The engine was closed: it takes no more requests."""


COMPOSITION_METHODS = ("linear", "ties", "dare_linear", "dare_ties")


@dataclass(frozen=True)
class CompositeComponent:
    """One adapter of a composite, with its weight; ``adapter_path`` as in ``GenerationRequest``."""

    adapter_id: str
    weight: float
    adapter_path: str | Path | None = None


@dataclass(frozen=True)
class Composition:
    """Several adapters combined at request time (``inference.composition``: peft's linear, TIES or DARE math).

    The components are taken in their canonical order, by adapter id, whatever order they are given in: the order
    changes DARE's draws and the rounding of the sums, and a composite is one thing whatever order it was asked in.
    ``density`` (the share of each update kept) matters for ties and DARE, ``seed`` for DARE's random draws.
    """

    components: tuple[CompositeComponent, ...]
    method: str = "linear"
    density: float = 1.0
    seed: int = 0

    def ordered(self) -> tuple[CompositeComponent, ...]:
        return tuple(sorted(self.components, key=lambda c: c.adapter_id))

    @property
    def key(self) -> str:
        """The composite's cache key: a hash of its canonical description (sorted components and weights, method,
        density, seed), so that equal composites share one cached adapter."""
        document = {
            "components": [[c.adapter_id, repr(float(c.weight))] for c in self.ordered()],
            "method": self.method,
            "density": repr(float(self.density)) if self.method != "linear" else None,
            "seed": int(self.seed) if self.method.startswith("dare") else None,
        }
        text = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return "composite-" + hashlib.sha256(text.encode()).hexdigest()

    def validate(self) -> None:
        """Raise ValueError for a composition no engine could build."""
        if len(self.components) < 2:
            raise ValueError("a composition needs at least two components")
        if len({c.adapter_id for c in self.components}) != len(self.components):
            raise ValueError("a composition names each adapter once")
        if self.method not in COMPOSITION_METHODS:
            raise ValueError(f"unknown composition method {self.method!r}; choose {', '.join(COMPOSITION_METHODS)}")
        if not all(isinstance(c.weight, int | float) and math.isfinite(c.weight) for c in self.components):
            raise ValueError("composition weights must be finite numbers")
        if not (math.isfinite(self.density) and 0 < self.density <= 1):
            raise ValueError("density must be above 0 and at most 1")


@dataclass(frozen=True)
class GenerationRequest:
    """One completion to generate.

    Give ``prompt`` (raw text, sent as is) or ``messages`` (chat messages, rendered with the model's chat template).
    ``adapter_id`` None means the base model (or ``composition``, several adapters combined at request time).
    ``adapter_path`` is the adapter's folder when the engine cannot resolve the id itself. ``temperature`` 0 is
    greedy; ``seed`` makes sampling reproducible. ``ignore_eos`` generates exactly ``max_new_tokens`` (unless a stop
    sequence ends it first): for benchmarks.
    """

    adapter_id: str | None = None
    prompt: str | None = None
    messages: Sequence[dict[str, str]] | None = None
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None
    adapter_path: str | Path | None = None
    ignore_eos: bool = False
    composition: Composition | None = None

    def validate(self) -> None:
        """Raise ValueError for a request no model could answer, before it takes a place in a batch."""
        if self.composition is not None:
            if self.adapter_id is not None:
                raise ValueError("give an adapter id or a composition, not both")
            self.composition.validate()
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError("temperature must be a finite number >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop sequences must be non-empty strings")


@dataclass
class GenerationResult:
    """What a request produced. ``finish_reason`` is "stop" (end token or stop sequence), "length", "cancelled" (see
    ``GenerationHandle.cancel``) or "error".

    ``completion_tokens`` counts every generated token, the end token included; ``token_ids`` leave the end token out;
    ``text`` stops before a stop sequence. Times are seconds from submission.
    """

    text: str
    finish_reason: str
    adapter_id: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    time_to_first_token_s: float | None = None
    queue_s: float = 0.0
    seed: int | None = None
    error: str | None = None
    token_ids: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class GenerationHandle:
    """A submitted request. Iterate it for text deltas as they are generated; ``result()`` waits for the end.

    Iteration ends when the request ends, whether it succeeded or not: check ``result().error`` afterwards.
    ``cancel()`` stops it. Each handle is meant for one consumer.
    """

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.submitted_at = time.perf_counter()
        self._events: queue.SimpleQueue[str | GenerationResult] = queue.SimpleQueue()
        self._done = threading.Event()
        self._result: GenerationResult | None = None
        # Guards the hand-over between cancel() and the scheduler claiming the request for a batch.
        self._lock = threading.Lock()
        self._started = False
        self.cancelled = False

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._events.get()
            if isinstance(item, GenerationResult):
                return
            yield item

    def result(self, timeout: float | None = None) -> GenerationResult:
        """The final result; raises TimeoutError if it is not there within ``timeout`` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError("the request has not finished")
        assert self._result is not None
        return self._result

    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Stop the request. A queued one is answered at once; a running one leaves its batch before the next decode
        step (the other rows go on). Either way its result has finish_reason "cancelled", no error, and the text
        generated so far. Does nothing once the request has finished."""
        with self._lock:
            self.cancelled = True
            answer_now = not self._started and not self._done.is_set()
        if answer_now:
            self._finish(
                GenerationResult(
                    text="",
                    finish_reason="cancelled",
                    adapter_id=self.request.adapter_id,
                    latency_s=time.perf_counter() - self.submitted_at,
                )
            )

    def _claim(self) -> bool:
        """Mark the request as taken into a batch; False (take it no further) when it was cancelled or answered."""
        with self._lock:
            if self.cancelled or self._done.is_set():
                return False
            self._started = True
            return True

    def _push(self, delta: str) -> None:
        if delta:
            self._events.put(delta)

    def _finish(self, result: GenerationResult) -> None:
        # The first answer stands: a request cancelled while queued may still be failed by close() afterwards.
        with self._lock:
            if self._done.is_set():
                return
            self._result = result
            self._done.set()
        self._events.put(result)


@dataclass(frozen=True)
class AdapterInfo:
    adapter_id: str
    path: str
    bytes: int
    file_bytes: int
    rank: int
    modules: int
    last_used: float
    pinned: bool


@dataclass
class _Adapter:
    adapter_id: str
    path: Path
    # module name -> (A [r, in], B * scaling [out, r]) on the engine's device and dtype
    layers: dict[str, tuple[Any, Any]]
    nbytes: int
    file_bytes: int
    rank: int
    last_used: float = 0.0
    pinned: bool = False

    def info(self) -> AdapterInfo:
        return AdapterInfo(
            adapter_id=self.adapter_id,
            path=str(self.path),
            bytes=self.nbytes,
            file_bytes=self.file_bytes,
            rank=self.rank,
            modules=len(self.layers),
            last_used=self.last_used,
            pinned=self.pinned,
        )


@dataclass
class _WarmEntry:
    """An adapter in the warm tier: already checked and converted, in one safetensors file of the warm folder."""

    file: Path
    source: Path
    nbytes: int
    sha256: str


class _WarmCorrupt(Exception):
    """A warm file that is not what the engine wrote (its hash differs, or it does not parse)."""


@dataclass(frozen=True)
class _Layer:
    """An adaptable layer of the base model: a Linear, or a GPT-2 Conv1D (weight stored ``[in, out]``)."""

    in_features: int
    out_features: int
    conv1d: bool


def _adaptable_layer(module: Any) -> _Layer | None:
    import torch
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, torch.nn.Linear):
        return _Layer(module.in_features, module.out_features, conv1d=False)
    if isinstance(module, Conv1D):
        return _Layer(int(module.weight.shape[0]), int(module.nf), conv1d=True)
    return None


@dataclass
class _Plan:
    """Per layer, how to add the LoRA deltas of the batch's rows: ("one", A, B) when every row uses the same adapter,
    ("rows", A_stack, B_stack) with one zero-padded slice per row, or ("groups", [(row_index, A, B), ...])."""

    layers: dict[str, tuple]


def _packed_linear(module: Any, packed: Any, mkl_linear: Any, linear: Any, is_grad_enabled: Any, x: Any) -> Any:
    """``module.forward`` for a Linear whose weight has a packed copy (see ``PACKED_ROWS``)."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if rows in PACKED_ROWS and not is_grad_enabled():
        return mkl_linear(x.contiguous(), packed, module.weight, module.bias, rows)
    return linear(x, module.weight, module.bias)


def _screened_head(forward: Any, weight: Any, screen: Any, x: Any) -> Any:
    """The output head's ``forward`` on CPU (see ``Engine._screen_head``): for a step whose rows are all greedy,
    logits whose argmax is the float32 head's, at about half its cost; any other call is ``forward`` as before.

    One bfloat16 product (half the bytes of the float32 head to read, and the CPU's bf16 dot products) of the hidden
    state, with its norm appended, by ``screen``, the head's weight with ``4u |w_j|`` appended (u = 2^-8), gives
    every token an upper bound of its float32 logit: ``z_j + 4u |h| |w_j|``, and the rounding of the hidden state, of
    the weight row and of the result costs at most about ``3u |h| |w_j|`` (float32 sums add under u/100 at these
    widths). The token with the highest bound has its float32 logit computed: a floor under the best logit. Only
    the tokens whose bound reaches a row's floor can be its argmax, and they are few (usually under ten of the
    bundled model's 49,152): their logits are computed in float32 and replace their bounds, every other token keeps
    a bound below its row's floor, and ``argmax`` of the result is the float32 head's (a NaN or infinite floor falls
    back to ``forward``). A step with a sampled row runs ``forward``: that row needs its whole distribution, and
    the float32 head costs about as much for one row as for thirty-two (it is the weight's bytes that take the
    time)."""
    import torch
    import torch.nn.functional as F

    greedy = _GREEDY_ROWS.get()
    if greedy is None or x.dim() != 3 or x.shape[1] != 1 or x.shape[0] != len(greedy) or not all(greedy):
        return forward(x)
    hidden = x[:, 0, :]
    norms = hidden.norm(dim=1)
    stacked = torch.cat([hidden, norms.unsqueeze(1)], dim=1).to(torch.bfloat16)
    # (a bfloat16 argmax is twice as slow as the float32 copy and its argmax together)
    logits = F.linear(stacked, screen).to(x.dtype)
    top_weights = weight.index_select(0, logits.argmax(dim=1))
    # the top tokens' float32 logits, less a hair for a float32 sum taken in another order than the head's
    floor = (hidden * top_weights).sum(dim=1) - 2.0**-12 * norms * top_weights.norm(dim=1)
    if not bool(torch.isfinite(floor).all()):
        return forward(x)
    candidates = (logits >= floor.unsqueeze(1)).any(dim=0).nonzero().squeeze(1)
    logits[:, candidates] = F.linear(hidden, weight.index_select(0, candidates))
    return logits.unsqueeze(1)


def _lora_hook(key: str, module: Any, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    plan = _PLAN.get()
    if plan is None:
        return None
    entry = plan.layers.get(key)
    if entry is None:
        return None
    import torch
    import torch.nn.functional as F

    x = args[0]
    kind = entry[0]
    if kind == "one":
        return output + F.linear(F.linear(x, entry[1]), entry[2])
    if kind == "rows":
        return output + torch.bmm(torch.bmm(x, entry[1]), entry[2])
    for rows, a, b in entry[1]:
        output.index_add_(0, rows, F.linear(F.linear(x.index_select(0, rows), a), b))
    return output


class _Row:
    """A request in a running batch: its tokens, its text as streamed so far, its sampler."""

    def __init__(self, handle: GenerationHandle, prompt_ids: list[int], adapter: _Adapter | None, engine: Engine):
        import torch

        self.handle = handle
        self.request = handle.request
        self.prompt_ids = prompt_ids
        self.adapter = adapter
        self.tokenizer = engine.tokenizer
        self.tokens: list[int] = []
        self.text = ""
        self.sent = 0
        self.prefix_offset = 0
        self.read_offset = 0
        self.started_at = time.perf_counter()
        self.first_token_at: float | None = None
        self.generated = 0
        self.finished = False
        self.seed = self.request.seed
        self.generator = None
        if self.request.temperature > 0:
            if self.seed is None:
                self.seed = secrets.randbits(63)
            self.generator = torch.Generator(device=engine.device)
            self.generator.manual_seed(self.seed)

    def add_token(self, token: int, eos_ids: set[int]) -> None:
        """Take one generated token: stream the text it completes, and finish on an end token, a stop sequence or
        the token limit."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.generated += 1
        if token in eos_ids and not self.request.ignore_eos:
            self._flush_text()
            self.finish("stop")
            return
        self.tokens.append(token)
        self.text += self._decode_increment()
        stops = self.request.stop
        if stops:
            cut = min((i for i in (self.text.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                self.text = self.text[:cut]
                self.finish("stop")
                return
        if len(self.tokens) >= self.request.max_new_tokens:
            self._flush_text()
            self.finish("length")
            return
        # Hold back a tail that might be the start of a stop sequence, so a stop is never half-streamed.
        hold = max((_overlap(self.text, s) for s in stops), default=0)
        self._send(len(self.text) - hold)

    def _decode_increment(self) -> str:
        # Decode a short window before the new tokens and diff, as vLLM does: linear in the length, keeps the spaces
        # a tokenizer only renders in context, and waits while a multi-byte character is still incomplete.
        decode = partial(self.tokenizer.decode, skip_special_tokens=True)
        before = decode(self.tokens[self.prefix_offset : self.read_offset])
        now = decode(self.tokens[self.prefix_offset :])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.tokens)
            return now[len(before) :]
        return ""

    def _flush_text(self) -> None:
        decode = partial(self.tokenizer.decode, skip_special_tokens=True)
        before = decode(self.tokens[self.prefix_offset : self.read_offset])
        now = decode(self.tokens[self.prefix_offset :])
        if len(now) > len(before):
            self.text += now[len(before) :]

    def _send(self, upto: int) -> None:
        if upto > self.sent:
            self.handle._push(self.text[self.sent : upto])
            self.sent = upto

    def finish(self, reason: str) -> None:
        self._send(len(self.text))
        self.finished = True
        now = time.perf_counter()
        self.handle._finish(
            GenerationResult(
                text=self.text,
                finish_reason=reason,
                adapter_id=self.request.adapter_id,
                prompt_tokens=len(self.prompt_ids),
                completion_tokens=self.generated,
                latency_s=now - self.handle.submitted_at,
                time_to_first_token_s=(self.first_token_at - self.handle.submitted_at) if self.first_token_at else None,
                queue_s=self.started_at - self.handle.submitted_at,
                seed=self.seed,
                token_ids=list(self.tokens),
            )
        )


def _overlap(text: str, stop: str) -> int:
    """The length of the longest end of ``text`` that is a beginning of ``stop``."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


class _Batch:
    """Rows decoding together. Their KV caches share one length, each row left-padded: ``mask`` [rows, length] marks
    each row's real cache positions, ``positions`` [rows, 1] the position of its last token, ``next_ids`` the token
    each row feeds in next; ``plan`` is the LoRA plan of the rows' adapters."""

    def __init__(self, rows: list[_Row], cache: Any, mask: Any, positions: Any, plan: _Plan | None) -> None:
        self.rows = rows
        self.cache = cache
        self.mask = mask
        self.positions = positions
        self.plan = plan
        self.next_ids: list[int] = []


def _length_groups(lengths: Sequence[int], split_tokens: int = PREFILL_SPLIT_TOKENS) -> list[list[int]]:
    """The indexes of ``lengths`` (prompt lengths) in the groups to prefill apart, each padded to its longest: sorted
    by length and cut where the padding a cut saves outweighs ``split_tokens`` (a forward pass's own cost, in
    tokens). The fewest padded tokens plus ``split_tokens`` a group, by dynamic programming over the sorted lengths."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    cost = [0] + [math.inf] * len(order)
    start_of = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]
        for start in range(end):
            total = cost[start] + split_tokens + longest * (end - start)
            if total < cost[end]:
                cost[end], start_of[end] = total, start
    groups = []
    end = len(order)
    while end > 0:
        groups.append(order[start_of[end] : end])
        end = start_of[end]
    return groups[::-1]


def _joinable(cache: Any) -> bool:
    """Whether rows can join and leave a running batch with this cache: every layer a plain ``DynamicLayer`` (a
    growing tensor per layer, which can be padded and sliced along the sequence). A sliding-window or otherwise
    special cache lets its batch run to its end with the rows it started with, as before continuous batching."""
    from transformers.cache_utils import DynamicLayer

    return cache is not None and all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)


def _fail(handle: GenerationHandle, error: str, prompt_tokens: int = 0) -> None:
    handle._finish(
        GenerationResult(
            text="",
            finish_reason="error",
            adapter_id=handle.request.adapter_id,
            prompt_tokens=prompt_tokens,
            latency_s=time.perf_counter() - handle.submitted_at,
            error=error,
        )
    )


class Engine:
    """One base model on one device, serving many LoRA adapters.

    Promises: the base model is loaded once; adapters load on first use (or ``load_adapter``/``pin``) and stay cached
    until the least recently used unpinned one must go to keep within ``max_adapters`` and ``max_adapter_bytes``;
    a batch's rows may use different adapters or none and are computed in one forward pass per step, each row giving
    the tokens it gives alone (up to floating-point reordering); a request whose adapter cannot load fails alone.
    Adapter memory is tiered: the in-memory cache above is the hot tier; with ``warm_dir`` and ``max_warm_bytes``,
    an adapter evicted from it is written, already checked and converted, to a warm tier of files on local disk
    (least recently used out first, within ``max_warm_bytes``), and a later miss reads it back from there, checked by
    its hash, without reading and checking its folder again (the cold tier); a warm file that fails its hash is
    dropped and the adapter read cold. Per-tier counters are in ``state()["tiers"]``.
    ``submit`` queues a request for the background scheduler, which batches at the level of decode steps: an idle
    engine gathers requests for ``batch_window_ms`` (up to ``max_batch_size``) into a new batch, and while it decodes,
    a request that arrives joins it before the next step (up to ``max_batch_size`` rows in flight) rather than
    waiting for it to end, prefill first: requests that arrive while others are prefilled are prefilled too before
    that step, so a request's first token waits for the step in flight and the prefills ahead of it, not for decode
    steps; finished and cancelled rows leave it after each step. A joining request that fails (its
    adapter, its prompt, its prefill) fails alone. ``generate_batch`` runs a batch now, in the calling thread.
    Thread-safe; one batch computes at a time.
    """

    def __init__(
        self,
        base_model_dir: str | Path,
        *,
        device: str | None = None,
        dtype: str = "float32",
        max_adapters: int = 64,
        max_adapter_bytes: int = 1 << 30,
        batch_window_ms: float = 10.0,
        max_batch_size: int = 16,
        max_context_tokens: int | None = None,
        adapter_resolver: Any = None,
        base_model_aliases: Sequence[str] = (),
        warm_dir: str | Path | None = None,
        max_warm_bytes: int = 0,
        head_screen: bool = True,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
        from transformers.cache_utils import DynamicLayer

        self.base_model_dir = Path(base_model_dir).resolve()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = getattr(torch, dtype)
        self.max_adapters = max_adapters
        self.max_adapter_bytes = max_adapter_bytes
        self.batch_window_s = batch_window_ms / 1000
        self.max_batch_size = max_batch_size
        self.adapter_resolver = adapter_resolver
        self.tokenizer = AutoTokenizer.from_pretrained(self.base_model_dir, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.base_model_dir, local_files_only=True, dtype=self.dtype
        ).to(self.device)
        self.model.eval()
        self.max_context_tokens = max_context_tokens or int(
            getattr(self.model.config, "max_position_embeddings", 0) or 4096
        )
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.eos_ids = self._end_token_ids()
        self._base_names = self._known_base_names(base_model_aliases)
        # Hook every Linear (and GPT-2 Conv1D) of the decoder (not the output head, which adapters here never
        # target): a hook costs a dict lookup when no row of the batch adapts its layer.
        head = self.model.get_output_embeddings()
        self._linears: dict[str, _Layer] = {}
        for name, module in self.model.named_modules():
            layer = _adaptable_layer(module)
            if layer is not None and module is not head:
                self._linears[name] = layer
                module.register_forward_hook(partial(_lora_hook, name))
        self.packed_weight_bytes = self._pack_weights()
        # every layer of the model's cache a plain DynamicLayer: rows can join and leave it, prefills can be merged
        self._mergeable_cache = all(
            type(layer) is DynamicLayer for layer in DynamicCache(config=self.model.config).layers
        )
        self.head_screen_bytes = self._screen_head() if head_screen else 0

        self._cache: OrderedDict[str, _Adapter] = OrderedDict()
        self._paths: dict[str, Path] = {}
        self._cache_lock = threading.RLock()
        self._model_lock = threading.Lock()
        self._stats = {
            "hits": 0,
            "misses": 0,
            "evictions": 0,
            "load_failures": 0,
            "batches": 0,
            "tokens": 0,
            "steps": 0,
            "joined": 0,
        }
        self._last_load_ms: float | None = None
        self._warm: OrderedDict[str, _WarmEntry] = OrderedDict()
        self._warm_stats = dict.fromkeys(_WARM_COUNTERS, 0)
        self.max_warm_bytes = max_warm_bytes
        self.warm_folder = self._warm_folder_create(warm_dir) if warm_dir is not None and max_warm_bytes > 0 else None
        self._running = 0
        self._queue: queue.Queue[GenerationHandle | None] = queue.Queue()
        self._closed = False
        self._scheduler: threading.Thread | None = None

    def _pack_weights(self) -> int:
        """On CPU in float32 with MKL, give every Linear (lm_head included) a packed copy of its weight for the
        decode steps of full batches (``PACKED_ROWS``); returns the bytes those copies hold (the base's Linear weights
        once more). Where it is used the packed GEMM gives the plain one's results bit for bit: only speed changes."""
        import torch
        import torch.nn.functional as F

        if self.device.type != "cpu" or self.dtype != torch.float32 or not torch.backends.mkl.is_available():
            return 0
        mkl = torch.ops.mkl
        if not (hasattr(mkl, "_mkl_reorder_linear_weight") and hasattr(mkl, "_mkl_linear")):
            return 0
        total = 0
        with torch.no_grad():
            for module in self.model.modules():
                if not isinstance(module, torch.nn.Linear):
                    continue
                weight = module.weight.detach()
                packed = mkl._mkl_reorder_linear_weight(weight, 16)
                module.forward = partial(
                    _packed_linear, module, packed, mkl._mkl_linear, F.linear, torch.is_grad_enabled
                )
                total += weight.nbytes
        return total

    def _screen_head(self) -> int:
        """On a CPU with bfloat16 dot products, in float32, give the output head a bfloat16 copy of its weight with
        a column of bounds (``_screened_head``), and serve greedy steps through it (the same tokens, the head at about
        half its cost: at 32 rows it is a quarter of a decode step for the bundled model); returns the bytes added.
        Skipped for a head with a bias, which no supported family has."""
        import torch

        head = self.model.get_output_embeddings()
        if (
            self.device.type != "cpu"
            or self.dtype != torch.float32
            or not isinstance(head, torch.nn.Linear)
            or head.bias is not None
            or not torch.backends.mkldnn.is_available()
            or not torch.ops.mkldnn._is_mkldnn_bf16_supported()
        ):
            return 0
        with torch.no_grad():
            weight = head.weight.detach()
            # 4u |w_j| and a hair more, for the bf16 rounding of this column and of the hidden state's norm
            slack = weight.norm(dim=1, keepdim=True) * (4 * _BF16_UNIT * (1 + 4 * _BF16_UNIT))
            screen = torch.cat([weight, slack], dim=1).to(torch.bfloat16)
        head.forward = partial(_screened_head, head.forward, weight, screen)
        return screen.nbytes

    # -- adapters ---------------------------------------------------------------------------------------------------

    def register_adapter(self, adapter_id: str, path: str | Path) -> None:
        """Remember where adapter ``adapter_id`` lives; nothing is read until it is used."""
        with self._cache_lock:
            self._paths[adapter_id] = Path(path)

    def load_adapter(self, adapter_id: str, path: str | Path | None = None) -> AdapterInfo:
        """Make ``adapter_id`` resident (a cache hit if it already is) and mark it most recently used.

        Raises AdapterError when the adapter cannot be served or no room can be made for it.
        """
        return self._acquire(adapter_id, path).info()

    def pin(self, adapter_id: str, path: str | Path | None = None) -> AdapterInfo:
        """Load ``adapter_id`` if needed and keep it resident until ``unpin``; pinned adapters are never evicted."""
        with self._cache_lock:
            adapter = self._acquire(adapter_id, path)
            adapter.pinned = True
            return adapter.info()

    def unpin(self, adapter_id: str) -> None:
        """Make ``adapter_id`` evictable again (no-op if it is not resident)."""
        with self._cache_lock:
            if adapter_id in self._cache:
                self._cache[adapter_id].pinned = False
                self._evict_over(0, 0)

    def unload_adapter(self, adapter_id: str) -> bool:
        """Drop ``adapter_id`` from the cache, pinned or not, and its warm copy; returns whether it was resident."""
        with self._cache_lock:
            self._warm_drop(adapter_id)
            return self._cache.pop(adapter_id, None) is not None

    def adapters(self) -> list[AdapterInfo]:
        """Resident adapters, least recently used first."""
        with self._cache_lock:
            return [a.info() for a in self._cache.values()]

    def acquire_composite(self, composition: Composition) -> _Adapter:
        """The composite adapter of ``composition``, built from its components' cached tensors on first use and
        cached under ``composition.key`` like any adapter (it counts against the cache's bounds, is evicted least
        recently used first, and serves in mixed batches beside plain adapters). Each component is acquired as a
        plain adapter first (so it is checked like one: its config, its shapes, its base model).

        Raises AdapterError when a component cannot be served or the components cannot be combined.
        """
        from .composition import CompositionError, compose

        key = composition.key
        with self._cache_lock:
            adapter = self._cached(key)
            if adapter is not None:
                return adapter
            started = time.perf_counter()
            try:
                parts = [
                    self._component_layers(self._acquire(c.adapter_id, c.adapter_path), c.weight)
                    for c in composition.ordered()
                ]
                layers = compose(
                    parts,
                    module_order=list(self._linears),
                    method=composition.method,
                    density=composition.density,
                    seed=composition.seed,
                )
            except CompositionError as e:
                self._stats["load_failures"] += 1
                raise AdapterError(f"cannot compose {len(composition.components)} adapters: {e}") from e
            except AdapterError:
                self._stats["load_failures"] += 1
                raise
            served = {m: (a.to(self.device, self.dtype), b.to(self.device, self.dtype)) for m, (a, b) in layers.items()}
            nbytes = sum(a.nbytes + b.nbytes for a, b in served.values())
            rank = max(a.shape[0] for a, _ in served.values())
            adapter = _Adapter(key, Path(key), served, nbytes, 0, rank)
            self._make_room(1, nbytes)
            self._last_load_ms = (time.perf_counter() - started) * 1000
            adapter.last_used = time.time()
            self._cache[key] = adapter
            return adapter

    def _component_layers(self, adapter: _Adapter, weight: float) -> Any:
        """A cached adapter's raw LoRA matrices (B without its folded scaling) in float32 on the CPU, with its
        scalings, for ``composition.compose``."""
        from .composition import ComponentLayers

        try:
            config = json.loads((adapter.path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AdapterError(f"adapter {adapter.adapter_id!r}: cannot read its {ADAPTER_CONFIG}: {e}") from e
        layers, scalings = {}, {}
        for module, (a, b) in adapter.layers.items():
            scaling = lora_scaling(config, module, a.shape[0])
            b = b.float().cpu()
            layers[module] = (a.float().cpu(), b / scaling if scaling != 1 else b)
            scalings[module] = scaling
        return ComponentLayers(weight=float(weight), layers=layers, scalings=scalings)

    def _cached(self, key: str) -> _Adapter | None:
        """The adapter cached under ``key``, now the most recently used (a hit), or None (a miss); counted either way.
        Called under the cache lock."""
        adapter = self._cache.get(key)
        if adapter is None:
            self._stats["misses"] += 1
            return None
        self._stats["hits"] += 1
        self._cache.move_to_end(key)
        adapter.last_used = time.time()
        return adapter

    def _acquire(self, adapter_id: str, path: str | Path | None) -> _Adapter:
        with self._cache_lock:
            if path is not None:
                self._paths[adapter_id] = Path(path)
            adapter = self._cached(adapter_id)
            if adapter is not None:
                return adapter
            try:
                folder = self._resolve(adapter_id)
                started = time.perf_counter()
                adapter = self._read_warm(adapter_id, folder)
                if adapter is None:
                    adapter = self._read_adapter(adapter_id, folder)
                    self._warm_stats["cold_loads"] += 1
                self._last_load_ms = (time.perf_counter() - started) * 1000
                self._make_room(1, adapter.nbytes)
            except AdapterError:
                self._stats["load_failures"] += 1
                raise
            adapter.last_used = time.time()
            self._cache[adapter_id] = adapter
            return adapter

    def _resolve(self, adapter_id: str) -> Path:
        if adapter_id in self._paths:
            return self._paths[adapter_id]
        if self.adapter_resolver is not None:
            path = self.adapter_resolver(adapter_id)
            if path is not None:
                return Path(path)
        raise AdapterError(f"adapter {adapter_id!r} is unknown to this engine (no path given or registered)")

    def _make_room(self, count: int, nbytes: int) -> None:
        """Evict least recently used unpinned adapters until ``count`` more adapters of ``nbytes`` fit the bounds;
        raise AdapterError, evicting nothing, when even that cannot make room."""
        pinned = [a for a in self._cache.values() if a.pinned]
        if nbytes > self.max_adapter_bytes:
            raise AdapterError(f"adapter needs {nbytes} bytes, more than the cache holds ({self.max_adapter_bytes})")
        if len(pinned) + count > self.max_adapters or sum(a.nbytes for a in pinned) + nbytes > self.max_adapter_bytes:
            raise AdapterError("no room in the adapter cache: pinned adapters fill it")
        self._evict_over(count, nbytes)

    def _evict_over(self, count: int, nbytes: int) -> None:
        while (
            len(self._cache) + count > self.max_adapters
            or sum(a.nbytes for a in self._cache.values()) + nbytes > self.max_adapter_bytes
        ):
            victim = next((k for k, a in self._cache.items() if not a.pinned), None)
            if victim is None:
                return
            self._warm_put(self._cache.pop(victim))
            self._stats["evictions"] += 1

    # -- the warm tier: checked, converted adapters in files on local disk -------------------------------------------

    def _warm_folder_create(self, warm_dir: str | Path) -> Path:
        """A folder of this engine's own under ``warm_dir`` (another process's engine may share ``warm_dir``), after
        removing the folders of engines whose process is gone: a warm file is trusted only by the engine that wrote
        it, whose memory holds its hash."""
        root = Path(warm_dir)
        root.mkdir(parents=True, exist_ok=True)
        for folder in root.iterdir():
            match = _WARM_FOLDER.match(folder.name)
            if match and folder.is_dir() and not psutil.pid_exists(int(match["pid"])):
                shutil.rmtree(folder, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f"engine-{os.getpid()}-", dir=root))

    def _warm_put(self, adapter: _Adapter) -> None:
        """Keep an adapter leaving the hot tier in the warm tier (a no-op when its current copy is already there),
        evicting the least recently used warm files to stay within ``max_warm_bytes``. A failed write (a full disk)
        only loses the warm copy: the adapter's folder is still there."""
        from safetensors.torch import save

        if self.warm_folder is None or self._closed or not (adapter.path / ADAPTER_WEIGHTS).is_file():
            return
        entry = self._warm.get(adapter.adapter_id)
        if entry is not None and entry.source == adapter.path:
            self._warm.move_to_end(adapter.adapter_id)
            self._warm_stats["evictions_to_warm"] += 1
            return
        self._warm_drop(adapter.adapter_id)
        tensors: dict[str, Any] = {}
        for module, (a, b) in adapter.layers.items():
            tensors[f"{module}.A"], tensors[f"{module}.B"] = a.cpu(), b.cpu()
        metadata = {
            "adapter_id": adapter.adapter_id,
            "source": str(adapter.path),
            "file_bytes": str(adapter.file_bytes),
            "rank": str(adapter.rank),
        }
        data = save(tensors, metadata=metadata)
        if len(data) > self.max_warm_bytes:
            return
        while self._warm and self._warm_bytes() + len(data) > self.max_warm_bytes:
            self._warm_drop(next(iter(self._warm)))
            self._warm_stats["warm_evictions"] += 1
        # The file's name is a digest of the id, so no id (whatever its characters) can name a path outside the folder.
        file = self.warm_folder / f"{hashlib.sha256(adapter.adapter_id.encode()).hexdigest()}.safetensors"
        partial_file = file.with_suffix(".partial")
        try:
            partial_file.write_bytes(data)
            partial_file.replace(file)
        except OSError:
            partial_file.unlink(missing_ok=True)
            self._warm_stats["warm_write_failures"] += 1
            return
        self._warm[adapter.adapter_id] = _WarmEntry(file, adapter.path, len(data), hashlib.sha256(data).hexdigest())
        self._warm_stats["warm_writes"] += 1
        self._warm_stats["evictions_to_warm"] += 1

    def _read_warm(self, adapter_id: str, folder: Path) -> _Adapter | None:
        """The adapter from its warm file, or None when the warm tier lacks it (or holds a copy of another folder's
        adapter under this id). A warm file whose bytes do not hash to what was written is dropped and counted as
        corrupt; the caller then reads the adapter's folder."""
        if self.warm_folder is None:
            return None
        entry = self._warm.get(adapter_id)
        if entry is None or entry.source != folder:
            self._warm_stats["warm_misses"] += 1
            return None
        try:
            adapter = self._warm_load(adapter_id, entry)
        except _WarmCorrupt:
            self._warm_drop(adapter_id)
            self._warm_stats["warm_corrupt"] += 1
            self._warm_stats["warm_misses"] += 1
            return None
        self._warm.move_to_end(adapter_id)
        self._warm_stats["warm_hits"] += 1
        return adapter

    def _warm_load(self, adapter_id: str, entry: _WarmEntry) -> _Adapter:
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            data = entry.file.read_bytes()
        except OSError as e:
            raise _WarmCorrupt(str(e)) from e
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise _WarmCorrupt(f"{entry.file} does not hash to what was written")
        try:
            tensors = load(data)
        except SafetensorError as e:
            raise _WarmCorrupt(str(e)) from e
        meta = _safetensors_metadata(data)
        layers: dict[str, tuple[Any, Any]] = {}
        nbytes = 0
        for key in tensors:
            if key.endswith(".A"):
                module = key.removesuffix(".A")
                # Copies, into memory the allocator aligns (as _read_adapter copies): tensors viewing the read bytes
                # may sit at any offset, and the CPU kernels sum in another order for unaligned data.
                a = tensors[key].to(self.device, copy=True)
                b = tensors[f"{module}.B"].to(self.device, copy=True)
                layers[module] = (a, b)
                nbytes += a.nbytes + b.nbytes
        return _Adapter(adapter_id, entry.source, layers, nbytes, int(meta["file_bytes"]), int(meta["rank"]))

    def _warm_drop(self, adapter_id: str) -> None:
        entry = self._warm.pop(adapter_id, None)
        if entry is not None:
            entry.file.unlink(missing_ok=True)

    def _warm_bytes(self) -> int:
        return sum(e.nbytes for e in self._warm.values())

    def _warm_close(self) -> None:
        if self.warm_folder is None:
            return
        with self._cache_lock:
            self._warm.clear()
            shutil.rmtree(self.warm_folder, ignore_errors=True)

    def _read_adapter(self, adapter_id: str, folder: Path) -> _Adapter:
        """Read and check a peft LoRA folder; the weights go to the engine's device and dtype, scaling folded in B."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        config_file, weights_file = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
        if not config_file.is_file() or not weights_file.is_file():
            raise AdapterError(f"adapter {adapter_id!r}: {folder} lacks {ADAPTER_CONFIG} or {ADAPTER_WEIGHTS}")
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AdapterError(f"adapter {adapter_id!r}: {ADAPTER_CONFIG} is not valid JSON: {e}") from e
        self._check_config(adapter_id, config)
        try:
            tensors = load_file(weights_file, device=str(self.device))
        except (OSError, SafetensorError) as e:
            raise AdapterError(f"adapter {adapter_id!r}: cannot read {ADAPTER_WEIGHTS}: {e}") from e

        parts: dict[str, dict[str, Any]] = {}
        for key, tensor in tensors.items():
            match = _LORA_KEY.match(key)
            if match is None:
                raise AdapterError(f"adapter {adapter_id!r}: unexpected tensor {key} (only LoRA A/B are served)")
            parts.setdefault(match["module"], {})[match["part"]] = tensor
        if not parts:
            raise AdapterError(f"adapter {adapter_id!r} has no LoRA weights")

        layers: dict[str, tuple[Any, Any]] = {}
        nbytes, rank = 0, 0
        for module, ab in parts.items():
            linear = self._linears.get(module)
            if linear is None:
                raise AdapterError(f"adapter {adapter_id!r} targets {module}, which is not a Linear layer of the base")
            if config.get("fan_in_fan_out") and not linear.conv1d:
                raise AdapterError(
                    f"adapter {adapter_id!r} uses fan_in_fan_out on {module}, which is not a Conv1D layer"
                )
            if set(ab) != {"A", "B"}:
                raise AdapterError(f"adapter {adapter_id!r}: {module} lacks its lora_A or lora_B weight")
            a, b = ab["A"], ab["B"]
            r = a.shape[0]
            if a.ndim != 2 or b.ndim != 2 or a.shape[1] != linear.in_features or b.shape != (linear.out_features, r):
                raise AdapterError(
                    f"adapter {adapter_id!r}: {module} has A {tuple(a.shape)} and B {tuple(b.shape)}, which do not fit "
                    f"a {linear.in_features}->{linear.out_features} layer (a different base model?)"
                )
            scaling = lora_scaling(config, module, r)
            # Copies even when the dtype is already right: the read tensors sit at the file's offsets, and the
            # CPU kernels sum in another order for unaligned data; an aligned copy gives the same logits as the same
            # adapter read back from the warm tier.
            a = a.to(self.dtype, copy=True).contiguous()
            b = b.to(self.dtype)
            b = (b * scaling if scaling != 1 else b.clone()).contiguous()
            layers[module] = (a, b)
            nbytes += a.nbytes + b.nbytes
            rank = max(rank, r)
        return _Adapter(adapter_id, folder, layers, nbytes, weights_file.stat().st_size, rank)

    def _check_config(self, adapter_id: str, config: dict) -> None:
        peft_type = str(config.get("peft_type", "")).upper()
        if peft_type != "LORA":
            raise AdapterError(f"adapter {adapter_id!r} is a {peft_type or 'unknown'} adapter; only LoRA is served")
        for flag in UNSUPPORTED_CONFIG_FLAGS:
            if config.get(flag):
                raise AdapterError(f"adapter {adapter_id!r} uses {flag}, which this engine does not serve")
        if config.get("bias", "none") != "none":
            raise AdapterError(f"adapter {adapter_id!r} trains biases (bias={config['bias']!r}), which is not served")
        base = str(config.get("base_model_name_or_path") or "")
        if base and not self._is_our_base(base):
            raise AdapterError(f"adapter {adapter_id!r} was trained on {base!r}, not on {self.base_model_dir.name!r}")

    def _known_base_names(self, aliases: Sequence[str]) -> set[str]:
        names = {self.base_model_dir.name.lower(), *(a.lower() for a in aliases)}
        marker = self.base_model_dir / "openledger.json"
        if marker.is_file():
            name = json.loads(marker.read_text(encoding="utf-8")).get("name")
            if name:
                names.add(str(name).lower())
        return names

    def _is_our_base(self, base: str) -> bool:
        # An adapter names its base by the path or hub id it was trained from: the same folder, or a name we know.
        candidate = Path(base)
        if candidate.is_dir() and candidate.resolve() == self.base_model_dir:
            return True
        return base.lower() in self._base_names or candidate.name.lower() in self._base_names

    # -- generation -------------------------------------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> GenerationHandle:
        """Queue ``request`` for the next batch and return its handle at once.

        Raises ValueError for an invalid request and EngineClosed after ``close``.
        """
        request.validate()
        if self._closed:
            raise EngineClosed("the engine is closed")
        handle = GenerationHandle(request)
        self._ensure_scheduler()
        self._queue.put(handle)
        return handle

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Run ``requests`` as one batch now, in this thread; results in the same order, failures as error results."""
        handles = []
        for request in requests:
            request.validate()
            handles.append(GenerationHandle(request))
        self._run(handles)
        return [h.result() for h in handles]

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run one request alone, now."""
        return self.generate_batch([request])[0]

    def close(self, timeout: float | None = 30) -> None:
        """Stop taking requests, finish the rows in flight (no new row joins them), and answer every still-queued
        request with an error."""
        self._closed = True
        if self._scheduler is not None:
            self._queue.put(None)
            self._scheduler.join(timeout)
        self._warm_close()
        while True:
            try:
                handle = self._queue.get_nowait()
            except queue.Empty:
                break
            if handle is not None:
                _fail(handle, CLOSED_MESSAGE)

    def _ensure_scheduler(self) -> None:
        with self._cache_lock:
            if self._scheduler is None or not self._scheduler.is_alive():
                self._scheduler = threading.Thread(target=self._schedule, name="inference-engine", daemon=True)
                self._scheduler.start()

    def _schedule(self) -> None:
        """The scheduler thread, iteration-level: an idle engine gathers requests for ``batch_window_ms`` into a new
        batch; while a batch runs, the requests that arrived since the last step (and those that arrive while they are
        prefilled) join it before the next one (up to ``max_batch_size`` rows), and finished or cancelled rows leave
        it after each step."""
        batch: _Batch | None = None
        while True:
            if batch is None:
                handles = self._gather()
                if handles is None:
                    return
                with self._model_lock:
                    batch = self._start(handles)
            else:
                with self._model_lock:
                    if not self._closed:
                        self._admit(batch)
                    batch = self._advance(batch)
            self._running = len(batch.rows) if batch is not None else 0

    def _gather(self) -> list[GenerationHandle] | None:
        """Wait for a request, then up to ``batch_window_ms`` for more (up to ``max_batch_size``); None once the
        engine is closed (a request taken after that is answered with an error)."""
        first = self._queue.get()
        if first is None or self._closed:
            if first is not None:
                _fail(first, CLOSED_MESSAGE)
            return None
        handles = [first]
        deadline = time.perf_counter() + self.batch_window_s
        while len(handles) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # seen again once this batch is done
                break
            handles.append(item)
        return handles

    def _waiting(self, room: int) -> list[GenerationHandle]:
        """Up to ``room`` queued requests, without waiting."""
        handles: list[GenerationHandle] = []
        while len(handles) < room:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            handles.append(item)
        return handles

    def _run(self, handles: list[GenerationHandle]) -> None:
        """Run ``handles`` as one batch to its end, in this thread (``generate_batch``); nothing joins it."""
        with self._model_lock:
            self._running = len(handles)
            try:
                batch = self._start(handles)
                while batch is not None:
                    batch = self._advance(batch)
            finally:
                self._running = 0

    def _start(self, handles: list[GenerationHandle]) -> _Batch | None:
        """Prepare each request alone (its adapter, its prompt), so a bad one fails alone; prefill the rest as a new
        batch. None when no row is left to decode; every request that is not in the batch has been answered."""
        try:
            rows = [row for handle in handles if (row := self._prepare(handle)) is not None]
            if not rows:
                return None
            self._stats["batches"] += 1
            batch = self._prefill(rows)
        except Exception as e:
            # A failure of the batch as a whole (out of memory, a bug) must still answer every request.
            for handle in handles:
                _fail(handle, f"the batch failed: {type(e).__name__}: {e}")
            return None
        return batch if batch.rows else None

    def _admit(self, batch: _Batch) -> None:
        """Let the requests queued since the last step join ``batch``, prefill first: the requests waiting now are
        prepared alone and prefilled together in a cache of their own, and as long as more arrive meanwhile (and the
        batch has room for them) they are prefilled too, before the running rows' next step; then all of them are
        merged into ``batch`` at once. A request's first token so waits for at most the step in flight and the
        prefills queued before it, never for decode steps; the running rows wait for at most ``max_batch_size``
        prefills. A joining request that fails (its adapter, its prompt, even its prefill) fails alone; the running
        rows never see it."""
        if not _joinable(batch.cache):
            return
        joining: list[_Batch] = []
        while not self._closed:
            room = self.max_batch_size - len(batch.rows) - sum(len(j.rows) for j in joining)
            handles = self._waiting(room)
            if not handles:
                break
            try:
                rows = [row for handle in handles if (row := self._prepare(handle)) is not None]
                if not rows:
                    continue
                prefilled = self._prefill(rows)
            except Exception as e:
                for handle in handles:
                    _fail(handle, f"joining the running batch failed: {type(e).__name__}: {e}")
                continue
            self._stats["joined"] += len(rows)
            if prefilled.rows:
                joining.append(prefilled)
        if not joining:
            return
        try:
            self._merge(batch, joining)
        except Exception as e:
            for prefilled in joining:
                for row in prefilled.rows:
                    _fail(row.handle, f"joining the running batch failed: {type(e).__name__}: {e}")

    def _advance(self, batch: _Batch) -> _Batch | None:
        """One decode step of ``batch``; None when no row is left. A failure of the step fails the batch's rows."""
        try:
            self._step(batch)
        except Exception as e:
            for row in batch.rows:
                _fail(row.handle, f"the batch failed: {type(e).__name__}: {e}")
            return None
        return batch if batch.rows else None

    def _prepare(self, handle: GenerationHandle) -> _Row | None:
        """The request as a row ready to prefill, or None when it was cancelled or has failed alone (answered)."""
        if not handle._claim():
            return None
        request = handle.request
        adapter = None
        if request.adapter_id is not None or request.composition is not None:
            try:
                if request.composition is not None:
                    adapter = self.acquire_composite(request.composition)
                else:
                    adapter = self._acquire(request.adapter_id, request.adapter_path)
            except AdapterError as e:
                _fail(handle, str(e))
                return None
        try:
            prompt_ids = self._encode(request)
        except Exception as e:
            _fail(handle, f"cannot encode the prompt: {e}")
            return None
        if not prompt_ids:
            _fail(handle, "the prompt is empty")
            return None
        if len(prompt_ids) + request.max_new_tokens > self.max_context_tokens:
            _fail(
                handle,
                f"prompt ({len(prompt_ids)} tokens) plus max_new_tokens ({request.max_new_tokens}) exceeds the "
                f"context of {self.max_context_tokens} tokens",
                prompt_tokens=len(prompt_ids),
            )
            return None
        return _Row(handle, prompt_ids, adapter, self)

    def _encode(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            # the tokenizer's chat template, or the documented fallback the job trained with when it has none
            return chat_prompt_ids(self.tokenizer, request.messages)
        return list(self.tokenizer(request.prompt)["input_ids"])

    def _prefill(self, rows: list[_Row]) -> _Batch:
        """Prefill ``rows`` and give each its first token; returns them as one batch ready for its next decode step
        (rows that already finished have left it). Prompts of different lengths are prefilled in groups of similar
        length (``_length_groups``) whose caches are then merged, where the model's cache can be merged: padding
        every prompt to the longest would compute the padding too."""
        groups = _length_groups([len(r.prompt_ids) for r in rows]) if self._mergeable_cache else [range(len(rows))]
        parts = [self._prefill_padded([rows[i] for i in group]) for group in groups]
        live = [part for part in parts if part.rows]
        if len(live) > 1:
            self._merge(live[0], live[1:])
        return live[0] if live else parts[0]

    def _prefill_padded(self, rows: list[_Row]) -> _Batch:
        """Run the left-padded prompts of ``rows`` in a fresh KV cache and give each row its first token."""
        import torch
        from transformers import DynamicCache

        with torch.inference_mode():
            width = max(len(r.prompt_ids) for r in rows)
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
                mask[i, width - len(row.prompt_ids) :] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = DynamicCache(config=self.model.config)
            plan = self._plan([r.adapter for r in rows])
            logits = self._forward(plan, ids, mask, positions, cache, rows)
            batch = _Batch(rows, cache, mask, positions[:, -1:], plan)
            self._take_tokens(batch, logits)
        return batch

    def _step(self, batch: _Batch) -> None:
        """One decode step: each row's last token in, its next token out; rows cancelled since the last step leave
        first."""
        import torch

        with torch.inference_mode():
            self._keep_running(batch)
            if not batch.rows:
                return
            ids = torch.tensor(batch.next_ids, device=self.device).unsqueeze(1)
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
            batch.positions = batch.positions + 1
            logits = self._forward(batch.plan, ids, batch.mask, batch.positions, batch.cache, batch.rows)
            self._take_tokens(batch, logits)

    def _forward(
        self, plan: _Plan | None, ids: Any, mask: Any, positions: Any, cache: Any, rows: list[_Row]
    ) -> torch.Tensor:
        """The model on ``ids`` with the batch's LoRA plan; the logits of each row's last position [rows, vocab]
        (for a greedy row, logits whose argmax is the float32 head's: see ``_screened_head``)."""
        token = _PLAN.set(plan)
        greedy = _GREEDY_ROWS.set(tuple(row.request.temperature <= 0 for row in rows))
        try:
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        finally:
            _GREEDY_ROWS.reset(greedy)
            _PLAN.reset(token)
        return out.logits[:, -1, :]

    def _take_tokens(self, batch: _Batch, logits: torch.Tensor) -> None:
        batch.next_ids = self._pick(logits, batch.rows)
        for row, token in zip(batch.rows, batch.next_ids, strict=True):
            row.add_token(token, self.eos_ids)
        self._stats["tokens"] += len(batch.rows)
        self._stats["steps"] += 1
        self._keep_running(batch)

    def _keep_running(self, batch: _Batch) -> None:
        """Answer cancelled rows, then drop every finished row from the batch and its cache at once; then drop the
        cache columns that only the rows that left had used (the padding in front of every remaining row)."""
        import torch

        for row in batch.rows:
            if row.handle.cancelled and not row.finished:
                row.finish("cancelled")
        keep = [i for i, r in enumerate(batch.rows) if not r.finished]
        if len(keep) == len(batch.rows):
            return
        batch.rows = [batch.rows[i] for i in keep]
        batch.next_ids = [batch.next_ids[i] for i in keep]
        if not keep:
            batch.cache = None
            return
        index = torch.tensor(keep, device=self.device)
        batch.cache.batch_select_indices(index)
        batch.mask, batch.positions = batch.mask[index], batch.positions[index]
        batch.plan = self._plan([r.adapter for r in batch.rows])
        if _joinable(batch.cache):
            unused = int(batch.mask.any(dim=0).int().argmax())
            if unused:
                for layer in batch.cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]
                batch.mask = batch.mask[:, unused:]

    def _merge(self, batch: _Batch, joining: list[_Batch]) -> None:
        """Append the rows of the ``joining`` batches to ``batch``. All caches are left-padded, so the shorter ones are
        padded further on the left with zero keys and values that their masks hide; each row keeps its own positions.
        The running batch changes only once every merged tensor exists, so a failure here leaves it as it was."""
        import torch

        parts = [batch, *joining]
        length = max(p.mask.shape[1] for p in parts)

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = length - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        layers = [
            (torch.cat([pad(p.keys, 2) for p in per_layer]), torch.cat([pad(p.values, 2) for p in per_layer]))
            for per_layer in zip(*(p.cache.layers for p in parts), strict=True)
        ]
        mask = torch.cat([pad(p.mask, 1) for p in parts])
        positions = torch.cat([p.positions for p in parts])
        rows = [row for p in parts for row in p.rows]
        next_ids = [token for p in parts for token in p.next_ids]
        plan = self._plan([r.adapter for r in rows])
        for layer, (keys, values) in zip(batch.cache.layers, layers, strict=True):
            layer.keys, layer.values = keys, values
        batch.rows, batch.next_ids = rows, next_ids
        batch.mask, batch.positions, batch.plan = mask, positions, plan

    def _pick(self, logits: torch.Tensor, rows: list[_Row]) -> list[int]:
        """Greedy rows take the argmax; sampling rows draw from temperature- and top-p-shaped probabilities with
        their own seeded generator, so a seed gives the same tokens whatever else is in the batch."""
        import torch

        picks = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            request = row.request
            if request.temperature <= 0:
                continue
            probs = torch.softmax(logits[i].float() / request.temperature, dim=-1)
            if request.top_p < 1:
                sorted_probs, order = probs.sort(descending=True)
                # Keep the smallest head whose mass reaches top_p (always at least the most likely token).
                drop = sorted_probs.cumsum(-1) - sorted_probs >= request.top_p
                sorted_probs[drop] = 0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            picks[i] = int(torch.multinomial(probs, 1, generator=row.generator).item())
        return picks

    def _plan(self, adapters: list[_Adapter | None]) -> _Plan | None:
        """Decide, per adapted layer, how the batch's rows get their LoRA deltas (see ``_Plan``)."""
        import torch

        distinct = {id(a): a for a in adapters if a is not None}
        if not distinct:
            return None
        keys = {k for a in distinct.values() for k in a.layers}
        n = len(adapters)
        layers: dict[str, tuple] = {}
        stacked_bytes = 0
        for key in keys:
            have = [a for a in distinct.values() if key in a.layers]
            if len(have) == 1 and all(a is have[0] for a in adapters):
                layers[key] = ("one", *have[0].layers[key])
                continue
            linear = self._linears[key]
            r = max(a.layers[key][0].shape[0] for a in have)
            stacked_bytes += n * r * (linear.in_features + linear.out_features) * have[0].layers[key][0].element_size()
            layers[key] = ("groups", have)
        grouped = len(distinct) <= GROUP_LOOP_MAX_ADAPTERS or stacked_bytes > ROW_STACK_BUDGET_BYTES
        for key, entry in layers.items():
            if entry[0] != "groups":
                continue
            have = entry[1]
            if grouped:
                groups = []
                for a in have:
                    rows = torch.tensor([i for i, x in enumerate(adapters) if x is a], device=self.device)
                    groups.append((rows, *a.layers[key]))
                layers[key] = ("groups", groups)
            else:
                layers[key] = ("rows", *self._stack(key, adapters))
        return _Plan(layers)

    def _stack(self, key: str, adapters: list[_Adapter | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row A^T [n, in, r] and B^T [n, r, out], zero for rows whose adapter skips this layer and zero-padded to
        the batch's largest rank, so one bmm pair serves every row exactly."""
        import torch
        import torch.nn.functional as F

        linear = self._linears[key]
        r = max(a.layers[key][0].shape[0] for a in adapters if a is not None and key in a.layers)
        # One stack of per-row views (a copy per row, in one call: a per-row slice assignment costs a Python call
        # each, tens of milliseconds a plan for a full batch); the rows that skip this layer share one zero pair.
        zero_a = zero_b = None
        a_parts, b_parts = [], []
        for adapter in adapters:
            if adapter is not None and key in adapter.layers:
                a, b = adapter.layers[key]
                missing = r - a.shape[0]
                a_parts.append(F.pad(a.t(), (0, missing)) if missing else a.t())
                b_parts.append(F.pad(b.t(), (0, 0, 0, missing)) if missing else b.t())
                continue
            if zero_a is None:
                zero_a = torch.zeros((linear.in_features, r), dtype=self.dtype, device=self.device)
                zero_b = torch.zeros((r, linear.out_features), dtype=self.dtype, device=self.device)
            a_parts.append(zero_a)
            b_parts.append(zero_b)
        return torch.stack(a_parts), torch.stack(b_parts)

    def forward_logits(self, prompt: str, adapter_id: str | None = None) -> torch.Tensor:
        """Logits [1, tokens, vocab] of ``prompt`` under ``adapter_id`` (None: the base): for checking the LoRA math."""
        import torch

        adapter = self._acquire(adapter_id, None) if adapter_id is not None else None
        ids = torch.tensor([self._encode(GenerationRequest(prompt=prompt))], device=self.device)
        with self._model_lock, torch.inference_mode():
            token = _PLAN.set(self._plan([adapter]))
            try:
                return self.model(input_ids=ids).logits.float().cpu()
            finally:
                _PLAN.reset(token)

    def batch_logits(self, prompts: Sequence[str], adapter_ids: Sequence[str | None]) -> list[torch.Tensor]:
        """Each prompt's logits [tokens, vocab] under its own adapter (None: the base), computed as one left-padded
        mixed batch as ``generate_batch`` prefills it: for checking the mixed-adapter LoRA math against peft."""
        import torch

        if len(prompts) != len(adapter_ids):
            raise ValueError("give one adapter id (or None) per prompt")
        adapters = [self._acquire(a, None) if a is not None else None for a in adapter_ids]
        rows = [self._encode(GenerationRequest(prompt=p)) for p in prompts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with self._model_lock, torch.inference_mode():
            token = _PLAN.set(self._plan(adapters))
            try:
                logits = self.model(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    position_ids=positions.to(self.device),
                ).logits
            finally:
                _PLAN.reset(token)
        return [logits[i, width - len(row) :].float().cpu() for i, row in enumerate(rows)]

    def _end_token_ids(self) -> set[int]:
        ids: set[int] = set()
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        for name in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(name)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return ids

    # -- state ------------------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot for the status page: adapters, cache counters, memory, queue, device."""
        import torch

        with self._cache_lock:
            adapters = [a.info().__dict__ for a in self._cache.values()]
            stats = dict(self._stats)
            tiers = self._tiers_state()
        memory = {
            "rss_bytes": psutil.Process().memory_info().rss,
            "adapter_bytes": sum(a["bytes"] for a in adapters),
            "adapter_bytes_limit": self.max_adapter_bytes,
        }
        if self.device.type == "cuda":
            memory["device_allocated_bytes"] = torch.cuda.memory_allocated(self.device)
        return {
            "base_model": str(self.base_model_dir),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "adapters": adapters,
            "adapter_count": len(adapters),
            "max_adapters": self.max_adapters,
            **stats,
            "last_load_ms": self._last_load_ms,
            "memory": memory,
            "tiers": tiers,
            "queue_length": self._queue.qsize(),
            "running": self._running,
            "closed": self._closed,
        }

    def _tiers_state(self) -> dict[str, dict[str, Any]]:
        """Per tier, what it holds and its counters: hot (in memory), warm (local disk), cold (adapter folders)."""
        w = self._warm_stats
        return {
            "hot": {
                "adapters": len(self._cache),
                "bytes": sum(a.nbytes for a in self._cache.values()),
                "bytes_limit": self.max_adapter_bytes,
                "max_adapters": self.max_adapters,
                "hits": self._stats["hits"],
                "misses": self._stats["misses"],
                "evictions": self._stats["evictions"],
                "evictions_to_warm": w["evictions_to_warm"],
            },
            "warm": {
                "enabled": self.warm_folder is not None,
                "folder": str(self.warm_folder) if self.warm_folder is not None else None,
                "adapters": len(self._warm),
                "bytes": self._warm_bytes(),
                "bytes_limit": self.max_warm_bytes,
                "hits": w["warm_hits"],
                "misses": w["warm_misses"],
                "writes": w["warm_writes"],
                "write_failures": w["warm_write_failures"],
                "evictions": w["warm_evictions"],
                "corrupt": w["warm_corrupt"],
            },
            "cold": {"loads": w["cold_loads"], "load_failures": self._stats["load_failures"]},
        }


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (8 bytes of length, then that much JSON)."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]).get("__metadata__") or {}


def lora_scaling(config: dict[str, Any], module: str, rank: int) -> float:
    """peft's LoRA scaling of ``module`` for an adapter_config.json: ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA),
    with the module's ``alpha_pattern`` entry when it has one."""
    alpha = float(config.get("lora_alpha") or config.get("r") or 1)
    module_alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, alpha))
    return module_alpha / math.sqrt(rank) if config.get("use_rslora") else module_alpha / rank


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """peft's rank/alpha pattern lookup: a pattern matches a module name by its last dotted parts."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default
