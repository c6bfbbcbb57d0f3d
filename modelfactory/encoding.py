"""How records become training examples, without torch: each record's tokens and labels (only answer tokens are
learned), the seeded train/eval split and a record's sample prompt.

Training (``training.train_lora``) uses it, and so does any app above that must tokenize a version's records exactly
as its job did; it needs a tokenizer, never a model, so importing it loads neither torch nor transformers.

Labels are built by hand (see DESIGN.md): SmolLM2's pad token is its end token ``<|im_end|>``, so a collator that
masks padding would also mask the end of every answer and the model would never learn to stop.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import FORMATTING_MODES, RECORD_TYPES, TrainingConfig, eval_split_sizes

IGNORE_INDEX = -100
# The chat format of a base model whose tokenizer has no chat template (GPT-2 and GPT-NeoX ship none): role-labelled
# turns separated by blank lines, each assistant turn closed by the end token so the model learns to stop; the
# generation prompt is "Assistant:". It renders turn by turn (each prefix of a conversation renders as the start of
# the whole), which the answer masking needs. Documented in docs/architecture.md (Model families).
FALLBACK_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}"
    "{%- if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}Assistant:{% endif -%}"
)
# Truncation keeps at least this share of max_length for the answer, so a long prompt cannot squeeze it out.
ANSWER_SHARE = 0.25


class RecordError(ValueError):
    """One record that cannot become a training example; the message says why."""


@dataclass(frozen=True)
class EncodedRecord:
    """One training example: ``index`` is the record's position in the input list."""

    index: int
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def trainable_tokens(self) -> int:
        # the first label is never predicted: a causal LM scores token i from tokens before it
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


@dataclass(frozen=True)
class DroppedRecord:
    index: int
    reason: str


@dataclass
class EncodedRecords:
    examples: list[EncodedRecord]
    dropped: list[DroppedRecord]


def record_messages(record: dict[str, Any], record_type: str) -> list[dict[str, str]]:
    """The conversation a chat, instruction or classification record stands for (classification trains as an
    instruction: the text is the prompt, the label the answer)."""
    if record_type == "chat":
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RecordError("a chat record needs a non-empty 'messages' list")
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise RecordError("every chat message needs a 'role' and a text 'content'")
            if message.get("role") not in ("system", "user", "assistant"):
                raise RecordError(f"unknown chat role {message.get('role')!r}")
        if not any(m["role"] == "assistant" for m in messages):
            raise RecordError("the conversation has no assistant turn to learn from")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    prompt, response = _prompt_response(record, record_type)
    messages = []
    if isinstance(record.get("system"), str) and record["system"]:
        messages.append({"role": "system", "content": record["system"]})
    return [*messages, {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def _prompt_response(record: dict[str, Any], record_type: str) -> tuple[str, str]:
    keys = ("prompt", "response") if record_type == "instruction" else ("text", "label")
    values = [record.get(key) for key in keys]
    if record_type == "classification" and isinstance(values[1], int | float) and not isinstance(values[1], bool):
        values[1] = str(values[1])
    if not all(isinstance(v, str) for v in values):
        raise RecordError(f"{record_type} records need text fields {keys[0]!r} and {keys[1]!r}")
    return values[0], values[1]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_template_of(tokenizer: Any) -> str | None:
    """The template chats are rendered with: None (the tokenizer's own) when it has one, else
    ``FALLBACK_CHAT_TEMPLATE``. Training, serving and attribution all render through here, so a model without a
    template is trained and asked in the same format."""
    return None if has_chat_template(tokenizer) else FALLBACK_CHAT_TEMPLATE


def render_chat(tokenizer: Any, messages: list[dict[str, str]], *, prompt: bool) -> str:
    if not messages and prompt:
        return ""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=prompt, chat_template=chat_template_of(tokenizer)
    )


def chat_prompt_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """The token ids of ``messages`` followed by the assistant's turn opening, as the inference engine and the
    attribution scorer encode a question (the template writes its own special tokens)."""
    encoded = tokenizer.apply_chat_template(
        [dict(m) for m in messages],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        chat_template=chat_template_of(tokenizer),
    )
    return list(encoded["input_ids"])


def _chat_text_and_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The templated conversation and the character spans of its assistant turns, each ending just after the end
    token (so ``<|im_end|>`` is learned) and before whatever the template puts between turns."""
    full = render_chat(tokenizer, messages, prompt=False)
    spans = []
    eos = tokenizer.eos_token or ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], prompt=True)
        upto = render_chat(tokenizer, messages[: i + 1], prompt=False)
        if not (upto.startswith(before) and full.startswith(upto)):
            # templates that rewrite earlier turns (some drop old reasoning) cannot be masked by prefix
            raise RecordError("the chat template does not render this conversation turn by turn")
        end = upto.rfind(eos, len(before)) if eos else -1
        spans.append((len(before), end + len(eos) if end >= 0 else len(upto)))
    return full, spans


def _plain_text_and_spans(
    tokenizer: Any, record: dict[str, Any], record_type: str
) -> tuple[str, list[tuple[int, int]]]:
    eos = tokenizer.eos_token or ""
    if record_type == "text":
        text = record.get("text")
        if not isinstance(text, str):
            raise RecordError("a text record needs a 'text' field")
        return text + eos, [(0, len(text) + len(eos))]
    prompt, response = _prompt_response(record, record_type)
    system = record.get("system") if isinstance(record.get("system"), str) else ""
    head = (system + "\n\n" if system else "") + prompt + "\n\n"
    return head + response + eos, [(len(head), len(head) + len(response) + len(eos))]


def encode_record(
    record: dict[str, Any], *, record_type: str, tokenizer: Any, max_length: int, mode: str
) -> EncodedRecord:
    """Tokenize one record with labels: -100 everywhere except the answer tokens (all tokens of a text record).

    A row longer than ``max_length`` loses the end of its answer first; when the answer starts too late to fit,
    the start of the prompt is cut instead, keeping at least a quarter of ``max_length`` (or the whole answer, if
    shorter) for the answer. Raises ``RecordError`` when no trainable token is left.
    """
    if record_type not in RECORD_TYPES:
        raise RecordError(f"unknown record type {record_type!r}")
    if mode not in FORMATTING_MODES[record_type]:
        raise RecordError(f"{record_type} records cannot be formatted as {mode!r}")
    if mode == "chat_template":
        text, spans = _chat_text_and_spans(tokenizer, record_messages(record, record_type))
        special = False  # the template writes its own special tokens
    else:
        text, spans = _plain_text_and_spans(tokenizer, record, record_type)
        special = True
    encoding = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    labels = [
        token if end > start and any(a <= start < b for a, b in spans) else IGNORE_INDEX
        for token, (start, end) in zip(ids, encoding["offset_mapping"], strict=True)
    ]
    truncated = len(ids) > max_length
    if truncated:
        trainable = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        first = trainable[0] if trainable else 0
        keep = min(len(ids) - first, max(2, int(max_length * ANSWER_SHARE)))
        start = max(0, min(first, first + keep - max_length))
        ids, labels = ids[start : start + max_length], labels[start : start + max_length]
    example = EncodedRecord(index=-1, input_ids=ids, labels=labels, truncated=truncated)
    if example.trainable_tokens == 0:
        raise RecordError("no answer token left to learn from (empty answer, or cut by the max length)")
    return example


def encode_records(
    records: Sequence[dict[str, Any]],
    *,
    record_type: str,
    tokenizer: Any,
    max_length: int,
    formatting: dict[str, str] | None = None,
) -> EncodedRecords:
    """Encode every record; the ones that cannot train are dropped and reported with their index and reason."""
    mode = (formatting or {}).get(record_type) or FORMATTING_MODES.get(record_type, ("plain",))[0]
    examples, dropped = [], []
    for index, record in enumerate(records):
        try:
            example = encode_record(
                record, record_type=record_type, tokenizer=tokenizer, max_length=max_length, mode=mode
            )
        except RecordError as e:
            dropped.append(DroppedRecord(index=index, reason=str(e)))
            continue
        examples.append(EncodedRecord(index, example.input_ids, example.labels, example.truncated))
    return EncodedRecords(examples=examples, dropped=dropped)


def sample_prompt(record: dict[str, Any], record_type: str, mode: str) -> tuple[str | list[dict[str, str]], str]:
    """(prompt, reference answer) of a record, the prompt as chat messages when the record trains as a chat."""
    if record_type == "text":
        words = str(record.get("text", "")).split()
        cut = max(1, len(words) // 2)
        return " ".join(words[:cut]), " ".join(words[cut:])
    if mode == "plain":
        prompt, response = _prompt_response(record, record_type)
        return prompt + "\n\n", response
    messages = record_messages(record, record_type)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def train_eval_split(n: int, config: TrainingConfig) -> tuple[list[int], list[int]]:
    """(train, eval) positions: a seeded shuffle, so the split depends on the seed and the record order only."""
    order = list(range(n))
    random.Random(config.seed).shuffle(order)
    n_eval = eval_split_sizes(n, config.eval_fraction)[1]
    return sorted(order[n_eval:]), sorted(order[:n_eval])
