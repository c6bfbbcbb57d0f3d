"""The torch side of Proof of Attribution: building a model version's index at training time, and computing an
answer's projected gradient and verbatim spans at answer time.

Nothing here touches the database: ``attribution.services`` gathers the records (with their ids and how they were
tokenized) and stores the results. torch, transformers and peft are imported inside functions.

Records are tokenized exactly as the training job tokenized them (``modelfactory.training.encode_records`` with the
job's record type, formatting and max length), and a fresh job's records are cut to its train split with the
trainer's own split function: records held out for evaluation never shaped the adapter and are not credited.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attribution.features import FeatureMatrix, TokenizedExample, answer_example, gradient_features, sketch_for
from attribution.spans import SpanIndex, SpanMatch

SPANS_FILE = "spans.npz"
FEATURE_BATCH_SIZE = 8


@dataclass
class RecordGroup:
    """Records tokenized one way. With ``split`` (a training config dict) the records are a job's whole input in
    training order and only the trainer's train split of them is kept; without it every record is kept."""

    record_type: str
    mode: str
    max_length: int
    records: list[tuple[int, dict[str, Any]]]
    split: dict[str, Any] | None = None


@dataclass(frozen=True)
class IndexedRecord:
    record_id: int
    input_ids: list[int]
    labels: list[int]


@dataclass
class BuiltIndex:
    """What a build produced: the folder's files, their hashes, the indexed records, and how each was tokenized."""

    folder: Path
    feature_hash: str
    span_hash: str
    seed: int
    width: int
    method: str
    record_ids: list[int]
    groups: list[dict[str, Any]]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def storage_key(feature_hash: str, span_hash: str) -> str:
    """The content address of an index folder: both files' hashes together."""
    return hashlib.sha256(f"{feature_hash}:{span_hash}".encode()).hexdigest()


def tokenize_groups(tokenizer: Any, groups: Sequence[RecordGroup]) -> tuple[list[IndexedRecord], list[dict[str, Any]]]:
    """Each kept record's training tokens, first occurrence of a record id winning, and the groups as they were
    resolved (record ids after the split), for storing with the index."""
    from modelfactory import training
    from modelfactory.config import TrainingConfig

    seen: set[int] = set()
    out: list[IndexedRecord] = []
    resolved: list[dict[str, Any]] = []
    for group in groups:
        dicts = [record for _, record in group.records]
        encoded = training.encode_records(
            dicts,
            record_type=group.record_type,
            tokenizer=tokenizer,
            max_length=group.max_length,
            formatting={group.record_type: group.mode},
        )
        examples = encoded.examples
        if group.split is not None:
            # the trainer's own split of its encoded examples, so the index holds exactly what was trained on
            train_positions, _ = training.train_eval_split(len(examples), TrainingConfig.from_dict(group.split))
            examples = [examples[i] for i in train_positions]
        kept: list[int] = []
        for example in examples:
            record_id = group.records[example.index][0]
            if record_id in seen:
                continue
            seen.add(record_id)
            kept.append(record_id)
            out.append(IndexedRecord(record_id, list(example.input_ids), list(example.labels)))
        resolved.append(
            {"record_type": group.record_type, "mode": group.mode, "max_length": group.max_length, "record_ids": kept}
        )
    return out, resolved


class _Adapter:
    """A PeftModel over the shared base model with one adapter, removed again on exit (the base stays plain)."""

    def __init__(self, base: Any, adapter_dir: str | Path) -> None:
        self.base = base
        self.adapter_dir = str(adapter_dir)

    def __enter__(self) -> Any:
        from peft import PeftModel

        self.model = PeftModel.from_pretrained(self.base.model, self.adapter_dir)
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.base.model = self.model.unload()
        self.base.model.eval()


def build_index(
    *, base: Any, adapter_dir: str | Path, groups: Sequence[RecordGroup], seed: int, width: int, scratch: Path
) -> BuiltIndex:
    """Compute the gradient features (under the adapter in ``adapter_dir``) and the span index of the groups'
    records, and write them into a new folder under ``scratch``. Raises on any failure; nothing is left behind."""
    started = time.monotonic()
    records, resolved = tokenize_groups(base.tokenizer, groups)
    if not records:
        raise ValueError("no training record to index")
    folder = Path(scratch) / f"index-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    try:
        with _Adapter(base, adapter_dir) as model:
            sketch = sketch_for(model, seed=seed, k=width)
            examples = [TokenizedExample(r.input_ids, r.labels) for r in records]
            features = gradient_features(model, examples, sketch=sketch, batch_size=FEATURE_BATCH_SIZE)
        record_ids = [r.record_id for r in records]
        matrix = FeatureMatrix.create(features, record_ids, sketch=sketch)
        feature_hash = matrix.save(folder)
        spans = SpanIndex.build((r.record_id, r.input_ids) for r in records)
        span_hash = spans.save(folder / SPANS_FILE)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return BuiltIndex(
        folder=folder,
        feature_hash=feature_hash,
        span_hash=span_hash,
        seed=seed,
        width=width,
        method=sketch.method,
        record_ids=record_ids,
        groups=resolved,
        seconds=round(time.monotonic() - started, 3),
    )


def place(built: BuiltIndex, target: Path) -> None:
    """Move a built folder to its content address (read-only); an identical index stored before is reused."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for file in built.folder.iterdir():
        file.chmod(0o444)
    try:
        os.rename(built.folder, target)
    except OSError:
        if not (target / SPANS_FILE).exists():
            raise
        shutil.rmtree(built.folder, ignore_errors=True)
    built.folder = target


# --- answer time -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerScores:
    """Raw per-signal record scores for one answer, and what the spans cover."""

    gradient: dict[int, float]
    span: dict[int, float]
    matches: list[SpanMatch]
    answer_ids: list[int]
    answer_offsets: list[tuple[int, int]]


class Scorer:
    """Holds one base model and a few adapters per process (answer-time scoring runs one task at a time).

    Adapters are loaded into one PeftModel under names derived from their folder, switched with ``set_adapter``,
    and the least recently used is deleted beyond ``max_adapters``.
    """

    def __init__(self, base: Any, max_adapters: int = 4) -> None:
        self.base = base
        self.max_adapters = max_adapters
        self.model: Any = None
        self.loaded: OrderedDict[str, str] = OrderedDict()  # adapter folder -> adapter name
        self.lock = threading.Lock()

    def _activate(self, adapter_dir: str) -> str:
        from peft import PeftModel

        if adapter_dir in self.loaded:
            self.loaded.move_to_end(adapter_dir)
            name = self.loaded[adapter_dir]
        else:
            name = "a" + hashlib.sha256(adapter_dir.encode()).hexdigest()[:16]
            if self.model is None:
                self.model = PeftModel.from_pretrained(self.base.model, adapter_dir, adapter_name=name)
            else:
                self.model.load_adapter(adapter_dir, adapter_name=name)
            self.loaded[adapter_dir] = name
        self.model.set_adapter(name)
        self.model.eval()
        while len(self.loaded) > self.max_adapters:
            _, old = self.loaded.popitem(last=False)
            self.model.delete_adapter(old)
        return name

    def answer_ids(
        self, *, messages: list[dict[str, str]] | None, prompt: str, answer: str, stopped: bool
    ) -> tuple[list[int], list[int], list[tuple[int, int]]]:
        """The prompt's tokens as the inference engine encoded them, the answer's tokens (with the end token when
        the generation stopped on it) and each answer token's character range."""
        tokenizer = self.base.tokenizer
        if messages is not None:
            encoded = tokenizer.apply_chat_template(
                [dict(m) for m in messages], add_generation_prompt=True, tokenize=True, return_dict=True
            )
            prompt_ids = list(encoded["input_ids"])
        else:
            prompt_ids = list(tokenizer(prompt)["input_ids"])
        encoding = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoding["input_ids"])
        offsets = [tuple(o) for o in encoding["offset_mapping"]]
        if stopped and tokenizer.eos_token_id is not None:
            ids.append(int(tokenizer.eos_token_id))
            offsets.append((len(answer), len(answer)))
        return prompt_ids, ids, offsets  # type: ignore[return-value]

    def score(
        self,
        *,
        adapter_dir: str | Path,
        matrix: FeatureMatrix,
        spans: SpanIndex,
        messages: list[dict[str, str]] | None,
        prompt: str,
        answer: str,
        stopped: bool,
        min_span_tokens: int,
        top_k: int | None = None,
    ) -> AnswerScores:
        """Project the answer's gradient as the index was projected and cosine-score it against every record
        (``top_k`` best only, when given); find its verbatim spans of at least ``min_span_tokens`` tokens."""
        from attribution.spans import span_record_scores

        prompt_ids, ids, offsets = self.answer_ids(messages=messages, prompt=prompt, answer=answer, stopped=stopped)
        with self.lock:
            name = self._activate(str(adapter_dir))
            sketch = sketch_for(self.model, seed=matrix.seed, k=matrix.k, adapter_name=name)
            matrix.check_sketch(sketch)
            example = answer_example(prompt_ids, ids)
            feature = gradient_features(self.model, [example], sketch=sketch, adapter_name=name)[0]
        gradient = matrix.top_record_scores(feature, top_k) if top_k else matrix.record_scores(feature)
        eos = self.base.tokenizer.eos_token_id
        text_ids = [t for t in ids if t != eos]
        matches = spans.find_spans(text_ids, min_tokens=min_span_tokens)
        return AnswerScores(
            gradient={int(k): float(v) for k, v in gradient.items()},
            span=span_record_scores(matches, len(text_ids)),
            matches=matches,
            answer_ids=ids,
            answer_offsets=offsets,
        )


_SCORERS: dict[str, Scorer] = {}
_SCORERS_LOCK = threading.Lock()


def scorer_for(base_model_dir: str) -> Scorer:
    """One Scorer per worker process and base model path (the model loads once)."""
    from modelfactory import training

    with _SCORERS_LOCK:  # a threads pool must not load the model twice
        if base_model_dir not in _SCORERS:
            _SCORERS.clear()  # one base model in memory for scoring at a time
            _SCORERS[base_model_dir] = Scorer(training.load_base(base_model_dir))
        return _SCORERS[base_model_dir]


def answer_char_range(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """The characters of the answer covered by tokens ``start:end``."""
    return int(offsets[start][0]), int(offsets[end - 1][1])


def load_index(folder: Path, *, feature_hash: str, span_hash: str) -> tuple[FeatureMatrix, SpanIndex]:
    """Both files of a stored index, refused (FeatureIndexError / SpanIndexError) unless they match the hashes."""
    matrix = FeatureMatrix.load(Path(folder), expected_hash=feature_hash)
    spans = SpanIndex.load(Path(folder) / SPANS_FILE, expected_hash=span_hash)
    return matrix, spans
