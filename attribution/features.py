"""Per-record gradient features over a model's LoRA parameters, count-sketched to a fixed width.

A record is its already-tokenized ``input_ids`` and ``labels`` (-100 where no loss is taken: the training job labels
the assistant tokens and the end token only), so this module needs no knowledge of chat formatting. Its loss is the
mean cross-entropy over its labelled tokens (next-token shifted, as Hugging Face computes it); the feature is the
projection (``attribution.projection.CountSketch``) of that loss's gradient with respect to the LoRA A and B
matrices of one adapter, and nothing else.

Per-example gradients come from one forward and one backward pass per batch: forward hooks on every LoRA A/B
``Linear`` keep its input ``x`` and output ``y``; ``autograd.grad`` of the summed per-example losses with respect to
the outputs gives ``g = dL/dy`` per example (examples do not interact, so each row of ``g`` is that example's own
gradient); the weight gradient of example ``b`` is ``sum_t g[b, t] x[b, t]^T``. No loop of backward passes, and
no per-parameter ``.grad`` accumulation.

torch, transformers and peft are imported only inside functions: importing this module (for ``FeatureMatrix.load``
and scoring) stays light.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attribution.projection import METHOD, CountSketch, cosine_scores, row_norms

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
FORMAT_VERSION = 1
DEFAULT_K = 1024
FEATURES_FILE = "features.npy"
RECORD_IDS_FILE = "record_ids.npy"
META_FILE = "features.json"


class FeatureIndexError(ValueError):
    """A feature index that is missing, of another format or layout, or whose content does not match its hash."""


@dataclass(frozen=True)
class TokenizedExample:
    """One training record or answer, tokenized as it was trained: ``labels`` is ``input_ids`` with -100 where no
    loss is taken. An example with no labelled token has a zero gradient."""

    input_ids: Sequence[int]
    labels: Sequence[int]

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError("input_ids and labels must have the same length")


def answer_example(prompt_ids: Sequence[int], answer_ids: Sequence[int]) -> TokenizedExample:
    """The example whose loss is the answer given the prompt: the answer's tokens (with the end token, when the
    generation stopped on it) are labelled, the prompt's are not."""
    return TokenizedExample(
        input_ids=[*prompt_ids, *answer_ids], labels=[IGNORE_INDEX] * len(prompt_ids) + list(answer_ids)
    )


def context_log_likelihoods(
    model: Any, *, prefixes: Sequence[Sequence[int]], answer_ids: Sequence[int], positions: Sequence[int], pad_id: int
) -> list[list[float]]:
    """For each prefix (the tokens before the answer: the prompt alone, or the prompt with a record as context), the
    log-probability (nats) of the answer token at each of ``positions`` given the prefix and the answer before it:
    ``result[r][k]`` is prefix ``r``'s for ``answer_ids[positions[k]]``.

    One forward pass over every prefix at once, right-padded with ``pad_id``: a causal model's earlier positions
    never see the padding, so no mask or position shift is needed and each row scores as it would alone. Only the
    needed positions go through the vocabulary projection. ``model`` is a plain causal LM (a PeftModel inside
    ``disable_adapter()``, unwrapped with ``get_base_model()``, scores as its base model). A token with nothing
    before it scores 0 in every row.
    """
    import torch

    if not prefixes or not positions:
        return [[] for _ in prefixes]
    rows = [[*prefix, *answer_ids] for prefix in prefixes]
    device = next(model.parameters()).device
    input_ids = torch.full((len(rows), max(len(r) for r in rows)), int(pad_id), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor([int(t) for t in ids], dtype=torch.long)
    # answer token p of row r sits at len(prefix) + p and is predicted from the position before it
    where = [(row, len(prefix) + p - 1) for row, prefix in enumerate(prefixes) for p in positions]
    rows_index = torch.tensor([r for r, _ in where], device=device)
    positions_index = torch.tensor([max(q, 0) for _, q in where], device=device)
    targets = torch.tensor([int(answer_ids[p]) for _ in prefixes for p in positions], device=device)
    with torch.no_grad():
        hidden = model.get_decoder()(input_ids=input_ids.to(device)).last_hidden_state
        logits = model.get_output_embeddings()(hidden[rows_index, positions_index]).float()
        taken = torch.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)
    values = [0.0 if q < 0 else value for (_, q), value in zip(where, taken.tolist(), strict=True)]
    return [values[r * len(positions) : (r + 1) * len(positions)] for r in range(len(prefixes))]


def _clean_module_name(name: str) -> str:
    # peft wraps the base model twice ("base_model.model."): drop it so block names survive re-wrapping
    prefix = "base_model.model."
    return name[len(prefix) :] if name.startswith(prefix) else name


def lora_blocks(model: Any, adapter_name: str = "default") -> dict[str, Any]:
    """The LoRA ``Linear`` modules of ``adapter_name``, keyed by a block name that does not depend on the adapter's
    name (``model.layers.0.self_attn.q_proj.lora_A``), in module order. An index built under one adapter name scores
    against the same adapter loaded under another."""
    from peft.tuners.lora import LoraLayer

    blocks: dict[str, Any] = {}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or adapter_name not in module.lora_A:
            continue
        if adapter_name in getattr(module, "lora_variant", {}):
            raise ValueError(f"{name} uses a LoRA variant (DoRA, ...); only plain LoRA is supported")
        blocks[f"{_clean_module_name(name)}.lora_A"] = module.lora_A[adapter_name]
        blocks[f"{_clean_module_name(name)}.lora_B"] = module.lora_B[adapter_name]
    if not blocks:
        raise ValueError(f"the model has no LoRA layers for adapter {adapter_name!r}")
    return blocks


def sketch_for(model: Any, *, seed: int, k: int = DEFAULT_K, adapter_name: str = "default") -> CountSketch:
    """The projection of this model's LoRA blocks: the same for the training job and for answer time."""
    sizes = {name: int(linear.weight.numel()) for name, linear in lora_blocks(model, adapter_name).items()}
    return CountSketch(seed=seed, k=k, sizes=sizes)


def layout_hash(sizes: dict[str, int]) -> str:
    """Identifies the block names and sizes a feature matrix was projected from."""
    return hashlib.sha256(json.dumps(sorted(sizes.items())).encode()).hexdigest()


@contextmanager
def _gradient_mode(model: Any, linears: Sequence[Any]) -> Iterator[None]:
    """Eval mode (no dropout: features must be deterministic) with the adapter's weights requiring grad; restores
    both after, each module to its own mode."""
    # only the modules in training mode are switched (and back): model.eval() and model.train() each walk and set
    # every module, about 10 ms an answer on this model for nothing when the scorer's model is in eval mode already
    training = [module for module in model.modules() if module.training]
    previous = [(p, p.requires_grad) for linear in linears for p in linear.parameters()]
    for module in training:
        module.training = False
    for p, _ in previous:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in previous:
            p.requires_grad_(flag)
        for module in training:
            module.training = True


def _batch_tensors(examples: Sequence[TokenizedExample], device: Any) -> tuple[torch.Tensor, ...]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels``: padding is masked and unlabelled, and with
    right padding the real tokens' positions are those of training."""
    import torch

    width = max(1, *(len(e.input_ids) for e in examples))
    input_ids = torch.zeros((len(examples), width), dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(list(example.input_ids), dtype=torch.long)
        attention[row, :n] = 1
        labels[row, :n] = torch.tensor(list(example.labels), dtype=torch.long)
    return input_ids.to(device), attention.to(device), labels.to(device)


def per_example_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each example's mean next-token cross-entropy over its labelled tokens (0 where none is labelled)."""
    import torch

    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    token_losses = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    counts = (shift_labels != IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return token_losses.sum(dim=1) / counts


def _capture_io(blocks: dict[str, Any], captured: dict[str, Any]) -> list[Any]:
    """Hook each LoRA block so that a forward pass leaves ``captured[name] = (its input, detached; its output)``;
    returns the hooks' handles, for the caller to remove."""

    def keep(name: str) -> Any:
        def hook(_module: Any, args: tuple[Any, ...], output: Any) -> None:
            captured[name] = (args[0].detach(), output)

        return hook

    return [linear.register_forward_hook(keep(name)) for name, linear in blocks.items()]


def _output_gradients(
    blocks: dict[str, Any], captured: dict[str, Any], loss: torch.Tensor, adapter_name: str
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, input, output gradient)`` of each LoRA block, in ``blocks``' order: the gradient of ``loss`` with
    respect to the block's captured output (zeros where the loss does not reach it). A ValueError when a block never
    ran in the forward pass: the adapter is not active."""
    import torch

    missing = set(blocks) - set(captured)
    if missing:
        raise ValueError(f"adapter {adapter_name!r} is not active: {len(missing)} LoRA blocks never ran")
    names = list(blocks)
    grads = torch.autograd.grad(loss, [captured[n][1] for n in names], allow_unused=True)
    return [
        (name, captured[name][0], torch.zeros_like(captured[name][1]) if grad is None else grad)
        for name, grad in zip(names, grads, strict=True)
    ]


def _labelled_logits(
    model: Any, input_ids: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels at the positions some example is scored on, plus the next position (for the shift).

    The vocabulary projection is a fifth of this model's forward cost and an answer's prompt is never scored, so
    only the needed positions are projected where the model supports ``logits_to_keep``.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    keep, kept_labels = _kept_positions(labels)
    if "logits_to_keep" not in inspect.signature(base.forward).parameters or keep is None:
        return model(input_ids=input_ids, attention_mask=attention).logits, labels
    return model(input_ids=input_ids, attention_mask=attention, logits_to_keep=keep).logits, kept_labels


def per_example_gradients(
    model: Any,
    examples: Sequence[TokenizedExample],
    *,
    adapter_name: str = "default",
    blocks: dict[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """The gradient of each example's loss with respect to each LoRA block's weight, ``[n, out, in]`` per block,
    from one forward and one backward pass (see the module docstring). Needs each LoRA layer to run once per forward
    pass: not under gradient checkpointing, which re-runs them. ``blocks``: ``lora_blocks(model, adapter_name)``
    when the caller holds them already."""
    import torch

    blocks = blocks if blocks is not None else lora_blocks(model, adapter_name)
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    device = next(iter(blocks.values())).weight.device
    handles = _capture_io(blocks, captured)
    try:
        with _gradient_mode(model, list(blocks.values())):
            input_ids, attention, labels = _batch_tensors(examples, device)
            logits, labels = _labelled_logits(model, input_ids, attention, labels)
            losses = per_example_losses(logits, labels)
            output_grads = _output_gradients(blocks, captured, losses.sum(), adapter_name)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.einsum("bto,bti->boi", grad.float(), x.float()) for name, x, grad in output_grads}


# --- several examples in one pass, each with the numbers it gets alone ------------------------------------------

# The attention implementation a packed pass runs under: the examples' tokens lie end to end in one row, and each
# example attends only to its own tokens, through the very SDPA call it gets when it is alone (``_segmented_sdpa``).
SEGMENTED_ATTENTION = "openledger_segmented_sdpa"
# (shared opening, each example's own length): see ``packed_segments``
_SEGMENTS: ContextVar[tuple[int, tuple[int, ...]] | None] = ContextVar("attribution_packed_segments", default=None)
_registered = False


class SharedOpeningMismatch(RuntimeError):
    """A packed pass with a shared opening found that an example's opening would not have had the numbers of the
    others' alone (the attention over it depended on the example's length); the caller runs it without sharing."""


def _segmented_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
    """transformers' SDPA attention called once for each packed example on its own queries, keys and values (with no
    mask: causal, as for an example alone); outside a packed pass, transformers' SDPA attention itself.

    With a shared opening (``packed_segments(..., shared=n)``) the row holds the opening's ``n`` tokens once, then
    each example's tokens after it: each example's call gets the opening's queries, keys and values put back before
    its own, laid out in memory as the layer lays out one example's, so the call is the one it gets alone; the
    opening's output is taken once, after checking that every example's call gave it the same bits."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    spec = _SEGMENTS.get()
    if spec is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    shared, lengths = spec
    # split, not slices: the backward of a split is one concatenation, of a slice a zero tensor of the whole row each
    parts = [t.split([shared, *lengths] if shared else list(lengths), dim=2) for t in (query, key, value)]
    if not shared:
        outputs = [sdpa_attention_forward(module, q, k, v, None, **kwargs)[0] for q, k, v in zip(*parts, strict=True)]
        return torch.cat(outputs, dim=1), None  # each [1, n, heads, head_dim]
    opening = [t[0] for t in parts]
    outputs, first = [], None
    for own in zip(*(t[1:] for t in parts), strict=True):
        # [1, heads, n, dim] as a layer makes it: a transposed view of [1, n, heads, dim]
        q, k, v = (
            torch.cat([o.transpose(1, 2), x.transpose(1, 2)], dim=1).transpose(1, 2)
            for o, x in zip(opening, own, strict=True)
        )
        out = sdpa_attention_forward(module, q, k, v, None, **kwargs)[0]
        if first is None:
            first = out[:, :shared]
            outputs.append(first)
        elif not torch.equal(out[:, :shared], first):
            raise SharedOpeningMismatch("the shared opening's attention differs between the packed examples")
        outputs.append(out[:, shared:])
    return torch.cat(outputs, dim=1), None


@contextmanager
def packed_segments(model: Any, lengths: Sequence[int], *, shared: int = 0) -> Iterator[None]:
    """Run ``model`` (a causal LM whose config is shared by its attention layers) with the segmented attention over
    examples of ``lengths`` tokens laid end to end in one row; the config's attention implementation is restored
    after. With ``shared``, the row starts with an opening of that many tokens that every example begins with, given
    once, and ``lengths`` are the examples' tokens after it (``packed_inputs(..., shared=)``); for passes without a
    backward (one through the opening would add the examples' gradients together). Not for concurrent use of one
    model from several threads (the scorer holds its lock)."""
    global _registered
    from transformers import AttentionInterface

    if not _registered:
        AttentionInterface.register(SEGMENTED_ATTENTION, _segmented_sdpa)
        _registered = True
    config = model.config
    previous = config._attn_implementation
    if previous != "sdpa":
        raise ValueError(f"packed passes need the sdpa attention (the model runs {previous!r})")
    token = _SEGMENTS.set((int(shared), tuple(int(n) for n in lengths)))
    config._attn_implementation = SEGMENTED_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = previous
        _SEGMENTS.reset(token)


def shared_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence has in common, leaving each at least one token of its own."""
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences) - 1
    n = 0
    while n < shortest and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n


def packed_inputs(
    sequences: Sequence[Sequence[int]], device: Any, *, shared: int = 0
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """One row of every sequence's tokens end to end, each sequence's positions counted from 0, and where each
    sequence starts in the row. With ``shared``, the first ``shared`` tokens (which every sequence begins with) are
    given once at the start of the row, then each sequence's tokens after them (positions from ``shared`` on); each
    sequence's start is then where its own tokens start."""
    import torch

    starts, at = [], shared
    for sequence in sequences:
        starts.append(at)
        at += len(sequence) - shared
    tokens = [int(t) for t in sequences[0][:shared]] if shared else []
    tokens += [int(t) for sequence in sequences for t in sequence[shared:]]
    places = list(range(shared)) + [p for sequence in sequences for p in range(shared, len(sequence))]
    ids = torch.tensor([tokens], dtype=torch.long, device=device)
    positions = torch.tensor([places], device=device)
    return ids, positions, starts


def _kept_positions(labels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The positions whose logits ``_labelled_logits`` projects for ``labels`` (``[n, T]``; one example alone in the
    packed pass): those some example is scored on and the next ones (None: no position is scored), and the labels
    that go with them. Kept positions are consecutive pairs (t, t+1) where t is scored: shifting inside the kept
    subset still pairs each scored position's logits with its own next label, and pairs that are not adjacent get
    no label."""
    import torch

    scored = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().flatten()
    if len(scored) == 0:
        return None, labels
    keep = torch.unique(torch.cat([scored, scored + 1]))
    kept_labels = labels[:, keep].clone()
    gaps = (keep[1:] != keep[:-1] + 1).nonzero().flatten() + 1
    kept_labels[:, gaps] = IGNORE_INDEX
    return keep, kept_labels


def packed_per_example_gradients(
    model: Any,
    examples: Sequence[TokenizedExample],
    *,
    adapter_name: str = "default",
    blocks: dict[str, Any] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """``per_example_gradients`` of each example alone (``[1, out, in]`` per block), computed in one forward and one
    backward pass over the examples laid end to end (``packed_segments``): the same numbers bit for bit where the
    matrix products give each row the same sums whatever the number of rows (MKL's float32 GEMM on this machine, for
    rows of 4 or more; ``attribution/tests/test_scorer.py`` checks it). Every operation that mixes positions (the
    attention, the vocabulary projection, the loss, the weight gradient) runs on each example's own positions, with
    the shapes it has alone; the rest acts on each position by itself."""
    import torch

    blocks = blocks if blocks is not None else lora_blocks(model, adapter_name)
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    device = next(iter(blocks.values())).weight.device
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    handles = _capture_io(blocks, captured)
    try:
        with _gradient_mode(model, list(blocks.values())):
            ids, positions, starts = packed_inputs([e.input_ids for e in examples], device)
            with packed_segments(causal_lm, [len(e.input_ids) for e in examples]):
                hidden = causal_lm.get_decoder()(input_ids=ids, position_ids=positions).last_hidden_state
            wanted, labels = [], []
            for example, start in zip(examples, starts, strict=True):
                n = len(example.input_ids)
                own = torch.tensor([list(example.labels)], dtype=torch.long, device=device)
                kept, kept_labels = _kept_positions(own)
                wanted.append(torch.arange(start, start + n, device=device) if kept is None else start + kept)
                labels.append(kept_labels)
            logits = project_rows(causal_lm, hidden[0], wanted)
            total = None
            for rows, kept_labels in zip(logits, labels, strict=True):
                loss = per_example_losses(rows.unsqueeze(0), kept_labels)
                total = loss if total is None else total + loss
            output_grads = _output_gradients(blocks, captured, total.sum(), adapter_name)
    finally:
        for handle in handles:
            handle.remove()
    out: list[dict[str, torch.Tensor]] = [{} for _ in examples]
    for name, x, grad in output_grads:
        for row, (example, start) in enumerate(zip(examples, starts, strict=True)):
            part = slice(start, start + len(example.input_ids))
            out[row][name] = torch.einsum("bto,bti->boi", grad[:, part].float(), x[:, part].float())
    return out


# a matrix product gives a row the same bits whatever the number of rows only from this many rows on (MKL's float32
# GEMM at one thread; fewer may use other kernels): packed examples' rows share a product only when each has as many
INDEPENDENT_ROWS = 16


def project_rows(causal_lm: Any, hidden: torch.Tensor, positions: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The vocabulary projection (``[len(p), vocab]``) of ``hidden``'s rows (``[T, width]``) at each of ``positions``,
    the rows each would get projected alone: the sets of at least ``INDEPENDENT_ROWS`` rows share one product when
    the projection's rows are independent of their number in this process (``projection_rows_independent``), the
    rest are projected each alone. Reading the projection's weight (49,152 x 576 floats here) once instead of once
    for each example is most of its cost for an answer's few rows."""
    import torch

    head = causal_lm.get_output_embeddings()
    together = [i for i, p in enumerate(positions) if len(p) >= INDEPENDENT_ROWS]
    if len(together) < 2 or not projection_rows_independent(causal_lm):
        together = []
    out: list[torch.Tensor | None] = [None] * len(positions)
    if together:
        joined = head(hidden[torch.cat([positions[i] for i in together])])
        for i, rows in zip(together, joined.split([len(positions[i]) for i in together]), strict=True):
            out[i] = rows
    for i, p in enumerate(positions):
        if out[i] is None:
            out[i] = head(hidden[p])
    return out  # type: ignore[return-value]


_HEAD_ROWS_INDEPENDENT: dict[tuple[int, tuple[int, ...]], bool] = {}


def projection_rows_independent(model: Any) -> bool:
    """``rows_independent`` for the vocabulary projection of ``model`` (a causal LM), forward and backward: whether
    its product gives a row the same bits from ``INDEPENDENT_ROWS`` rows on whatever their number (rows of 16 to 160,
    at the start and the end, against 256; once per process and thread count, under a second at one thread here)."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if torch.get_num_threads() != 1 or not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return False
    key = (torch.get_num_threads(), tuple(head.weight.shape))
    if key not in _HEAD_ROWS_INDEPENDENT:
        out_features, in_features = head.weight.shape
        generator = torch.Generator().manual_seed(0)
        same = True
        with torch.no_grad():
            weight = torch.randn((out_features, in_features), generator=generator)
            x = torch.randn((256, in_features), generator=generator)
            g = torch.randn((256, out_features), generator=generator)
            forward, backward = torch.nn.functional.linear(x, weight), g @ weight
            for rows, start in ((16, 0), (23, 233), (61, 0), (160, 96)):
                part = slice(start, start + rows)
                same = same and torch.equal(torch.nn.functional.linear(x[part], weight), forward[part])
                same = same and torch.equal(g[part] @ weight, backward[part])
        _HEAD_ROWS_INDEPENDENT[key] = same
    return _HEAD_ROWS_INDEPENDENT[key]


class TorchSketch:
    """A CountSketch's buckets and signs as tensors, built once per feature run (or once per adapter, by a scorer
    that keeps it)."""

    def __init__(self, sketch: CountSketch, device: Any) -> None:
        import torch

        self.k = sketch.k
        self.hashes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in sketch.sizes:
            buckets, signs = sketch.hashes(name)
            self.hashes[name] = (torch.from_numpy(buckets).to(device), torch.from_numpy(signs).to(device))

    def project(self, gradients: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch

        n = next(iter(gradients.values())).shape[0]
        device = next(iter(gradients.values())).device
        out = torch.zeros((n, self.k), dtype=torch.float32, device=device)
        # sorted like CountSketch.project, so both sum the blocks in the same order
        for name in sorted(gradients):
            buckets, signs = self.hashes[name]
            out.index_add_(1, buckets, gradients[name].reshape(n, -1) * signs)
        return out


def gradient_features(
    model: Any,
    examples: Sequence[TokenizedExample],
    *,
    sketch: CountSketch,
    batch_size: int = 8,
    adapter_name: str = "default",
    progress: Callable[[int, int], None] | None = None,
    blocks: dict[str, Any] | None = None,
    projector: TorchSketch | None = None,
) -> np.ndarray:
    """Projected per-example LoRA gradients, float32 ``[len(examples), sketch.k]`` in the order given;
    ``progress(done, total)`` hears each finished batch. ``blocks`` (``lora_blocks(model, adapter_name)``) and
    ``projector`` (``TorchSketch(sketch, device)``) may be passed in when the caller keeps them; the numbers are the
    same.

    Examples are batched by length (less padding); the result does not depend on the batching beyond float
    rounding, and the same inputs, model and batch size give the same numbers.
    """
    import torch

    blocks = blocks if blocks is not None else lora_blocks(model, adapter_name)
    if projector is None:
        projector = TorchSketch(sketch, next(iter(blocks.values())).weight.device)
    out = np.zeros((len(examples), sketch.k), dtype=np.float32)
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].input_ids), i))
    batches = math.ceil(len(order) / batch_size)
    for number, start in enumerate(range(0, len(order), batch_size), start=1):
        rows = order[start : start + batch_size]
        gradients = per_example_gradients(model, [examples[i] for i in rows], adapter_name=adapter_name, blocks=blocks)
        with torch.no_grad():
            out[rows] = projector.project(gradients).cpu().numpy()
        if progress is not None:
            progress(number, batches)
    return out


def gradient_features_packed(
    model: Any,
    examples: Sequence[TokenizedExample],
    *,
    sketch: CountSketch,
    adapter_name: str = "default",
    blocks: dict[str, Any] | None = None,
    projector: TorchSketch | None = None,
) -> list[np.ndarray]:
    """``gradient_features`` of each example alone (float32 ``[sketch.k]`` each), from one packed pass
    (``packed_per_example_gradients``) when there are several; one example goes through ``gradient_features``."""
    import torch

    blocks = blocks if blocks is not None else lora_blocks(model, adapter_name)
    if projector is None:
        projector = TorchSketch(sketch, next(iter(blocks.values())).weight.device)
    if len(examples) == 1:
        return [
            gradient_features(
                model, examples, sketch=sketch, adapter_name=adapter_name, blocks=blocks, projector=projector
            )[0]
        ]
    gradients = packed_per_example_gradients(model, examples, adapter_name=adapter_name, blocks=blocks)
    with torch.no_grad():
        return [projector.project(one).cpu().numpy()[0] for one in gradients]


_ROWS_INDEPENDENT: dict[tuple[int, tuple[tuple[int, int], ...]], bool] = {}


def rows_independent(model: Any) -> bool:
    """Whether this process's float32 matrix products give a row the same bits whatever the number of rows (from 16
    rows on), for every ``Linear`` shape of ``model`` but its vocabulary projection: what a packed pass needs to give
    each example its own numbers. Only at one torch thread (with more, MKL shares a product's rows out between the
    threads by how many there are: measured); checked once per process and thread count on rows of 16 to 100
    against 512, forward and backward."""
    import torch

    if torch.get_num_threads() != 1:
        return False
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    shapes = tuple(
        sorted(
            {
                tuple(module.weight.shape)
                for module in model.modules()
                if isinstance(module, torch.nn.Linear) and module is not output
            }
        )
    )
    key = (torch.get_num_threads(), shapes)
    if key not in _ROWS_INDEPENDENT:
        generator = torch.Generator().manual_seed(0)
        same = True
        with torch.no_grad():
            for out_features, in_features in shapes:
                weight = torch.randn((out_features, in_features), generator=generator)
                x = torch.randn((512, in_features), generator=generator)
                g = torch.randn((512, out_features), generator=generator)
                forward, backward = torch.nn.functional.linear(x, weight), g @ weight
                for rows in (16, 17, 23, 31, 48, 61, 64, 100):
                    for start in (0, 512 - rows):
                        part = slice(start, start + rows)
                        same = same and torch.equal(torch.nn.functional.linear(x[part], weight), forward[part])
                        same = same and torch.equal(g[part] @ weight, backward[part])
        _ROWS_INDEPENDENT[key] = same
    return _ROWS_INDEPENDENT[key]


@dataclass(frozen=True)
class FeatureMatrix:
    """The gradient features of a model version's training records, with everything needed to project an answer
    the same way: the seed, the width, the method and the block layout.

    ``features`` may be memory-mapped (``load``); ``norms`` are its row norms, so cosine scores need no normalised
    copy of the matrix.
    """

    features: np.ndarray
    record_ids: np.ndarray
    seed: int
    k: int
    method: str
    layout: str
    norms: np.ndarray
    content_hash: str

    @classmethod
    def create(cls, features: np.ndarray, record_ids: Sequence[int], *, sketch: CountSketch) -> FeatureMatrix:
        features = np.ascontiguousarray(features, dtype=np.float32)
        ids = np.asarray(record_ids, dtype=np.int64)
        if features.shape != (len(ids), sketch.k):
            raise ValueError(f"features are {features.shape}, expected {(len(ids), sketch.k)}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("record ids must be unique")
        return cls._hashed(features, ids, sketch.seed, sketch.k, sketch.method, layout_hash(dict(sketch.sizes)))

    @classmethod
    def _hashed(
        cls, features: np.ndarray, ids: np.ndarray, seed: int, k: int, method: str, layout: str
    ) -> FeatureMatrix:
        """The matrix of these checked parts, with its row norms and content hash computed from them."""
        return cls(
            features=features,
            record_ids=ids,
            seed=seed,
            k=k,
            method=method,
            layout=layout,
            norms=row_norms(features),
            content_hash=_content_hash(features, ids, seed, k, method, layout),
        )

    def without(self, record_ids: Sequence[int]) -> FeatureMatrix:
        """The same matrix with the rows of ``record_ids`` zeroed (an erasure): a zero row scores 0 against every
        answer (``cosine_scores``), so it can never be credited, and every other row keeps its place and values.
        Ids that are not indexed are ignored."""
        features = np.array(self.features, dtype=np.float32, copy=True)
        features[np.isin(self.record_ids, np.asarray(list(record_ids), dtype=np.int64))] = 0.0
        ids = np.asarray(self.record_ids, dtype=np.int64)
        return FeatureMatrix._hashed(features, ids, self.seed, self.k, self.method, self.layout)

    def row_is_zero(self, record_id: int) -> bool:
        """Whether ``record_id``'s row is all zeros (erased), True for an id that is not indexed."""
        where = np.flatnonzero(self.record_ids == record_id)
        return len(where) == 0 or not np.any(np.asarray(self.features[int(where[0])]))

    def check_sketch(self, sketch: CountSketch) -> None:
        """Raise FeatureIndexError unless ``sketch`` projects exactly as the one that built these features."""
        if (sketch.seed, sketch.k, sketch.method, layout_hash(dict(sketch.sizes))) != (
            self.seed,
            self.k,
            self.method,
            self.layout,
        ):
            raise FeatureIndexError("the answer's projection differs from the index's (seed, width, method, layers)")

    def scores(self, answer_feature: np.ndarray) -> np.ndarray:
        """Cosine of the answer's feature with every record's, in ``record_ids`` order: one matrix-vector product."""
        return cosine_scores(self.features, self.norms, answer_feature)

    def record_scores(self, answer_feature: np.ndarray) -> dict[int, float]:
        """``scores`` keyed by record id."""
        return dict(zip(self.record_ids.tolist(), self.scores(answer_feature).tolist(), strict=True))

    def top_record_scores(self, answer_feature: np.ndarray, limit: int) -> dict[int, float]:
        """The ``limit`` best-scoring records (ties by record id), for a policy that keeps only its top records:
        a partial sort instead of a dictionary of every record."""
        scores = self.scores(answer_feature)
        if limit < len(scores):
            candidates = np.argpartition(-scores, limit - 1)[:limit]
            # records tied with the cut-off score may sit outside the partition: take them all, then cut by id
            candidates = np.flatnonzero(scores >= scores[candidates].min())
        else:
            candidates = np.arange(len(scores))
        ranked = sorted((-float(scores[i]), int(self.record_ids[i])) for i in candidates)[:limit]
        return {record_id: -negative for negative, record_id in ranked}

    def save(self, directory: Path) -> str:
        """Write ``features.npy``, ``record_ids.npy`` and ``features.json`` (seed, k, method, layout, hash) into
        ``directory``; return the content hash."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / FEATURES_FILE, self.features)
        np.save(directory / RECORD_IDS_FILE, self.record_ids)
        meta = {
            "format": FORMAT_VERSION,
            "seed": self.seed,
            "k": self.k,
            "method": self.method,
            "layout": self.layout,
            "n_records": len(self.record_ids),
            "content_hash": self.content_hash,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return self.content_hash

    @classmethod
    def load(cls, directory: Path, *, expected_hash: str | None = None, mmap: bool = True) -> FeatureMatrix:
        """Read what ``save`` wrote; raise FeatureIndexError if it is missing or does not match its hash."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            features = np.load(directory / FEATURES_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
            ids = np.load(directory / RECORD_IDS_FILE, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise FeatureIndexError(f"cannot read the feature index in {directory}: {e}") from e
        if meta.get("format") != FORMAT_VERSION or meta.get("method") != METHOD:
            raise FeatureIndexError(f"{directory} holds format {meta.get('format')} / method {meta.get('method')}")
        actual = _content_hash(features, ids, meta["seed"], meta["k"], meta["method"], meta["layout"])
        for wanted in (meta.get("content_hash"), expected_hash):
            if wanted is not None and wanted != actual:
                raise FeatureIndexError(f"the feature index in {directory} does not match its hash")
        return cls(
            features=features,
            record_ids=ids,
            seed=int(meta["seed"]),
            k=int(meta["k"]),
            method=meta["method"],
            layout=meta["layout"],
            norms=row_norms(features),
            content_hash=actual,
        )


def _content_hash(features: np.ndarray, ids: np.ndarray, seed: int, k: int, method: str, layout: str) -> str:
    digest = hashlib.sha256(json.dumps([FORMAT_VERSION, seed, k, method, layout]).encode())
    digest.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    for start in range(0, len(features), 16384):
        digest.update(np.ascontiguousarray(features[start : start + 16384], dtype=np.float32).tobytes())
    return digest.hexdigest()
