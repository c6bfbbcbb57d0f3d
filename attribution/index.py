"""The torch side of Proof of Attribution: building a model version's index at training time, and computing an
answer's projected gradient and verbatim spans at answer time.

Nothing here touches the database: ``attribution.services`` gathers the records (with their ids and how they were
tokenized) and stores the results. torch, transformers and peft are imported inside functions.

Records are tokenized exactly as the training job tokenized them (``modelfactory.encoding.encode_records`` with the
job's record type, formatting and max length), and a fresh job's records are cut to its train split with the
trainer's own split function: records held out for evaluation never shaped the adapter and are not credited.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from attribution.features import (
    FEATURES_FILE,
    IGNORE_INDEX,
    META_FILE,
    RECORD_IDS_FILE,
    FeatureMatrix,
    SharedOpeningMismatch,
    TokenizedExample,
    TorchSketch,
    answer_example,
    context_log_likelihoods,
    gradient_features,
    gradient_features_packed,
    lora_blocks,
    packed_inputs,
    packed_segments,
    project_rows,
    projection_rows_independent,
    rows_independent,
    shared_prefix,
    sketch_for,
)
from attribution.projection import CountSketch
from attribution.spans import SpanIndex, SpanMatch, echo_mask, shared_span_lengths, span_record_scores
from modelfactory import encoding
from modelfactory.config import TrainingConfig
from modelfactory.encoding import chat_prompt_ids

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
    seen: set[int] = set()
    out: list[IndexedRecord] = []
    resolved: list[dict[str, Any]] = []
    for group in groups:
        dicts = [record for _, record in group.records]
        encoded = encoding.encode_records(
            dicts,
            record_type=group.record_type,
            tokenizer=tokenizer,
            max_length=group.max_length,
            formatting={group.record_type: group.mode},
        )
        examples = encoded.examples
        if group.split is not None:
            # the trainer's own split of its encoded examples, so the index holds exactly what was trained on
            train_positions, _ = encoding.train_eval_split(len(examples), TrainingConfig.from_dict(group.split))
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
    *,
    base: Any,
    adapter_dir: str | Path,
    groups: Sequence[RecordGroup],
    seed: int,
    width: int,
    scratch: Path,
    progress: Callable[[int, int], None] | None = None,
) -> BuiltIndex:
    """Compute the gradient features (under the adapter in ``adapter_dir``) and the span index of the groups'
    records, and write them into a new folder under ``scratch``; ``progress(done, total)`` hears each batch of
    features. Raises on any failure; nothing is left behind."""
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
            features = gradient_features(
                model, examples, sketch=sketch, batch_size=FEATURE_BATCH_SIZE, progress=progress
            )
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


def place(built: BuiltIndex | ReissuedIndex, target: Path) -> None:
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
class CandidateEvidence:
    """What one candidate record shows about an answer: how much of the question's subject it contains
    (``relevance``, 0-1), which answer tokens lie in an n-gram it contains verbatim (``covered``) and how long the
    verbatim span around each is (``lengths``)."""

    record_id: int
    relevance: float
    covered: tuple[int, ...]
    lengths: tuple[int, ...] = ()  # for each covered token, the longest verbatim span around it in this record
    # for each content token (``SupportEvidence.content`` order), its log-probability under the base model with this
    # record placed before the prompt (the in-context test); empty when the record was not tested
    context_logp: tuple[float, ...] = ()
    # content tokens not in ``covered`` whose whole word (letters and digits, any casing) the record contains
    same_word: tuple[int, ...] = ()


@dataclass(frozen=True)
class SupportEvidence:
    """The inputs of the support verdict (``scoring.assess``), all measured on this answer.

    ``surprisal``: each answer token's surprisal (nats) under the base model alone, given the prompt and the answer
    so far (what the base model could not have said by itself); ``echo``: tokens copied from the prompt; ``content``:
    the answer positions that carry its content (not echo, not the end token); ``key_tokens``: the question's tokens
    the base model could not predict (its subject), weighted by surprisal x inverse document frequency over the
    indexed records; ``candidates``: the records that contain any key token, or that the gradient or span signal
    ranked; ``base_logp``: each content token's log-probability under the base model with no record before the
    prompt, measured in the same batch as the candidates' ``context_logp`` (empty when the in-context test did not
    run); ``word_start``: which answer tokens begin a word (a letter or digit run: " Qu", "istrel" is one word).
    """

    surprisal: tuple[float, ...]
    echo: tuple[bool, ...]
    content: tuple[int, ...]
    key_tokens: dict[int, float]
    candidates: tuple[CandidateEvidence, ...]
    base_logp: tuple[float, ...] = ()
    word_start: tuple[bool, ...] = ()  # for each answer token, whether it begins a word (the in-context test's unit)


@dataclass(frozen=True)
class AnswerScores:
    """Raw per-signal record scores for one answer, what the spans cover, and the support evidence."""

    gradient: dict[int, float]
    span: dict[int, float]
    matches: list[SpanMatch]
    answer_ids: list[int]
    answer_offsets: list[tuple[int, int]]
    support: SupportEvidence | None = None


# question tokens the base model gives less than e^-3 (5%) are the question's subject (names, rare words)
KEY_TOKEN_NATS = 3.0
ECHO_NGRAM = 3
SUPPORT_NGRAM = 2
MAX_CANDIDATES = 64
# the in-context test conditions the base model on the records most about the question, at most this many
CONTEXT_CANDIDATES = 8
# the base pass projects only the positions it reads onto the vocabulary when there are at least this many: MKL's
# float32 GEMM computes 16 rows or more with kernels whose rows do not depend on how many there are on this machine's
# CPU (4 or more on the CPU it was first measured on; fewer use other kernels, whose sums differ in the last bits);
# with fewer it projects every position, as the full pass does
MIN_PROJECTED_ROWS = 16
# answers scored together share one packed model pass when each has at least this many tokens (prompt and answer):
# a matrix product gives a row the same bits whatever the number of rows only from 16 rows on (MKL's float32 GEMM at
# one thread, measured on every layer shape of the bundled model), so a shorter one is scored alone; and a pack holds
# at most MAX_PACKED_TOKENS tokens (its activations are kept for the backward pass)
MIN_PACKED_TOKENS = 16
MAX_PACKED_TOKENS = 4096
# answers whose base passes are packed together give the opening they all begin with (a chat template's system turn)
# once when it is at least this many tokens (``features.packed_segments``'s ``shared``)
MIN_SHARED_OPENING = 8


def question_positions(tokenizer: Any, prompt_ids: Sequence[int], question: str) -> list[int]:
    """Where the question's own tokens sit in the encoded prompt (the last occurrence), so that the chat template
    and a system prompt every record shares are not taken for the question's subject. All positions when the
    question cannot be found (a tokenization that differs inside the template)."""
    wanted = list(tokenizer(question, add_special_tokens=False)["input_ids"])
    for trim in (0, 1):
        needle = wanted[trim:]
        if not needle:
            break
        for start in range(len(prompt_ids) - len(needle), -1, -1):
            if list(prompt_ids[start : start + len(needle)]) == needle:
                return list(range(start, start + len(needle)))
    return list(range(len(prompt_ids)))


WORD = re.compile(r"[^\W_]+")  # a word: a run of letters and digits


def token_words(texts: Sequence[str]) -> list[frozenset[str]]:
    """For each token's text, the words (``WORD``, casefolded) of the text joined that the token lies in, whole:
    "Am", "ber", "." give {"amber"}, {"amber"}, {} (a word split across tokens belongs to each of them)."""
    starts, at = [], 0
    for text in texts:
        starts.append(at)
        at += len(text)
    joined = "".join(texts).casefold()
    words: list[set[str]] = [set() for _ in texts]
    k = 0
    for match in WORD.finditer(joined):
        while k + 1 < len(texts) and starts[k + 1] <= match.start():
            k += 1
        j = k
        while j < len(texts) and starts[j] < match.end():
            if starts[j] + len(texts[j]) > match.start():
                words[j].add(match.group())
            j += 1
    return [frozenset(w) for w in words]


def word_starts(texts: Sequence[str]) -> list[bool]:
    """For each token's text, whether it begins a word: it starts with a character that is not a letter or digit,
    or the token before it ends with one (or it is the first token)."""
    starts = []
    for i, text in enumerate(texts):
        before = texts[i - 1] if i else ""
        starts.append(not before or not text or not text[0].isalnum() or not before[-1:].isalnum())
    return starts


def shared_opening(record_ids: Sequence[int], prompt_ids: Sequence[int], *, before: int) -> int:
    """How many leading tokens a record and a prompt share as whole turns that end before prompt position
    ``before`` (where the question's own turn begins): their common prefix, cut back to the last place at or before
    ``before`` where the prompt's opening token (a chat template's turn start) begins a turn again; 0 when they share
    no whole turn (or the template does not start every turn with its opening token)."""
    if not prompt_ids:
        return 0
    common = 0
    for a, b in zip(record_ids, prompt_ids, strict=False):
        if a != b:
            break
        common += 1
    opening = prompt_ids[0]
    return next((i for i in range(min(common, before, len(prompt_ids) - 1), 0, -1) if prompt_ids[i] == opening), 0)


@dataclass(frozen=True)
class _Projection:
    """One loaded adapter's LoRA blocks and the projection of their gradients, kept while the adapter is loaded."""

    blocks: dict[str, Any]
    sketch: CountSketch
    torch_sketch: TorchSketch


@dataclass(frozen=True)
class AnswerRequest:
    """One answer to score (``Scorer.score``'s arguments)."""

    adapter_dir: str | Path
    matrix: FeatureMatrix
    spans: SpanIndex
    messages: list[dict[str, str]] | None
    prompt: str
    answer: str
    stopped: bool
    min_span_tokens: int
    top_k: int | None = None
    content_gradient: bool = True
    evidence: bool = True
    echo_free_spans: bool = True
    context_relevance: float | None = None
    exclude: frozenset[int] = frozenset()  # records that may not be credited (``Scorer.score``)


@dataclass(frozen=True)
class _Prepared:
    request: AnswerRequest
    prompt_ids: list[int]
    ids: list[int]
    offsets: list[tuple[int, int]]
    echo: list[bool]
    content: list[int]
    example: TokenizedExample
    question: str
    asked: list[int]


class Scorer:
    """Holds one base model and a few adapters per process (answer-time scoring runs one task at a time).

    Adapters are loaded into one PeftModel under names derived from their folder, switched with ``set_adapter``,
    and the least recently used is deleted beyond ``max_adapters``. What does not change between answers is kept:
    each loaded adapter's LoRA blocks and their projection; an answer's scores are the same numbers whether they were
    kept or not.
    """

    def __init__(self, base: Any, max_adapters: int = 4) -> None:
        self.base = base
        self.max_adapters = max_adapters
        self.model: Any = None
        self.loaded: OrderedDict[str, str] = OrderedDict()  # adapter folder -> adapter name
        self.lock = threading.Lock()
        self._projections: dict[tuple[str, int, int], _Projection] = {}
        self._tuner_layers: list[Any] | None = None

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
            self._tuner_layers = None
            self.model.eval()  # a loaded adapter's new modules start in training mode (dropout on)
            # what a packed pass checks once a process (and thread count), done while the adapter loads rather than
            # in the time of the first answers packed together
            rows_independent(self.model)
            projection_rows_independent(self.model.get_base_model())
        self.model.set_adapter(name)
        if self.model.training:
            self.model.eval()
        while len(self.loaded) > self.max_adapters:
            _, old = self.loaded.popitem(last=False)
            self.model.delete_adapter(old)
            self._tuner_layers = None
            self._projections = {key: p for key, p in self._projections.items() if key[0] != old}
        return name

    def _projection(self, name: str, *, seed: int, k: int) -> _Projection:
        """The active adapter's LoRA blocks and their projection (``sketch_for``), built on its first answer."""
        key = (name, seed, k)
        if key not in self._projections:
            blocks = lora_blocks(self.model, name)
            sketch = sketch_for(self.model, seed=seed, k=k, adapter_name=name)
            device = next(iter(blocks.values())).weight.device
            self._projections[key] = _Projection(blocks, sketch, TorchSketch(sketch, device))
        return self._projections[key]

    @contextmanager
    def _base_only(self) -> Iterator[Any]:
        """The base model with every adapter layer off, as peft's ``disable_adapter()`` gives it, without its
        per-call model status walk (about 30 ms an answer here); yields the plain causal LM."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        if self._tuner_layers is None:
            self._tuner_layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
        for layer in self._tuner_layers:
            layer.enable_adapters(False)
        try:
            yield self.model.get_base_model()
        finally:
            for layer in self._tuner_layers:
                layer.enable_adapters(True)

    def answer_ids(
        self, *, messages: list[dict[str, str]] | None, prompt: str, answer: str, stopped: bool
    ) -> tuple[list[int], list[int], list[tuple[int, int]]]:
        """The prompt's tokens as the inference engine encoded them, the answer's tokens (with the end token when
        the generation stopped on it) and each answer token's character range."""
        tokenizer = self.base.tokenizer
        if messages is not None:
            prompt_ids = chat_prompt_ids(tokenizer, messages)
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
        content_gradient: bool = True,
        evidence: bool = True,
        echo_free_spans: bool = True,
        context_relevance: float | None = None,
        exclude: frozenset[int] = frozenset(),
    ) -> AnswerScores:
        """Project the answer's gradient as the index was projected and cosine-score it against every record
        (``top_k`` best only, when given); find its verbatim spans of at least ``min_span_tokens`` tokens; gather the
        support evidence (``SupportEvidence``) unless ``evidence`` is False; with ``context_relevance`` the evidence
        includes the in-context test of the records at least that relevant to the question (``_in_context``).

        With ``content_gradient`` the answer's loss is taken over its content tokens only (not the tokens it copied
        from the prompt, not the end token every record shares), so the gradient follows what the answer says, not
        its phrasing; an answer that is all echo falls back to every answer token. With ``echo_free_spans`` span
        credit never counts tokens copied from the prompt. (Both off: policy v1's signals, for the benchmark.)

        ``exclude``: records that may not be credited (revoked, ``attribution.revocation``): they get no gradient
        score, are left out of every span's record list (the span's full record count stays, so their part of a
        shared span is credited to no one) and are never candidates of the support evidence. Empty: the scores are
        exactly those computed without it.
        """
        request = AnswerRequest(
            adapter_dir=adapter_dir,
            matrix=matrix,
            spans=spans,
            messages=messages,
            prompt=prompt,
            answer=answer,
            stopped=stopped,
            min_span_tokens=min_span_tokens,
            top_k=top_k,
            content_gradient=content_gradient,
            evidence=evidence,
            echo_free_spans=echo_free_spans,
            context_relevance=context_relevance,
            exclude=exclude,
        )
        return self.score_many([request])[0]

    def score_many(self, requests: Sequence[AnswerRequest]) -> list[AnswerScores]:
        """``score`` for each request, in order, with the model passes of the answers that share an adapter packed
        into one gradient pass and the base passes of all of them into one (``_packs``): each answer's scores are
        the numbers ``score`` gives it alone, bit for bit, whichever answers it is scored with."""
        prepared = [self._prepare(request) for request in requests]
        features: list[Any] = [None] * len(prepared)
        surprisals: list[dict[int, float]] = [{} for _ in prepared]
        with self.lock:
            by_adapter: dict[str, list[int]] = {}
            for at, item in enumerate(prepared):
                by_adapter.setdefault(str(item.request.adapter_dir), []).append(at)
            for adapter_dir, members in by_adapter.items():
                name = self._activate(adapter_dir)
                by_projection: dict[tuple[int, int], list[int]] = {}
                for at in members:
                    matrix = prepared[at].request.matrix
                    by_projection.setdefault((matrix.seed, matrix.k), []).append(at)
                for (seed, k), group in by_projection.items():
                    projection = self._projection(name, seed=seed, k=k)
                    for at in group:
                        prepared[at].request.matrix.check_sketch(projection.sketch)
                    for pack in self._packs([prepared[at].example.input_ids for at in group]):
                        rows = gradient_features_packed(
                            self.model,
                            [prepared[group[i]].example for i in pack],
                            sketch=projection.sketch,
                            adapter_name=name,
                            blocks=projection.blocks,
                            projector=projection.torch_sketch,
                        )
                        for i, row in zip(pack, rows, strict=True):
                            features[group[i]] = row
            wanted = [at for at, item in enumerate(prepared) if item.request.evidence]
            sequences = [[*prepared[at].prompt_ids, *prepared[at].ids] for at in wanted]
            for pack in self._packs(sequences):
                found = self._base_surprisals(
                    [(prepared[wanted[i]].prompt_ids, prepared[wanted[i]].ids, prepared[wanted[i]].asked) for i in pack]
                )
                for i, surprisal in zip(pack, found, strict=True):
                    surprisals[wanted[i]] = surprisal
        return [
            self._finish(item, feature, surprisal)
            for item, feature, surprisal in zip(prepared, features, surprisals, strict=True)
        ]

    def _packs(self, sequences: Sequence[Sequence[int]]) -> list[list[int]]:
        """Which sequences (by position) share a packed pass: all those of at least ``MIN_PACKED_TOKENS`` tokens, in
        packs of at most ``MAX_PACKED_TOKENS`` tokens, when the model runs the sdpa attention and this process's
        matrix products give each row the same bits whatever the number of rows (``features.rows_independent``);
        every other sequence alone."""
        model = self.model if self.model is not None else self.base.model
        long = [i for i, s in enumerate(sequences) if len(s) >= MIN_PACKED_TOKENS]
        sdpa = getattr(model.config, "_attn_implementation", None) == "sdpa"  # what the packed attention calls
        if len(long) < 2 or not sdpa or not rows_independent(model):
            return [[i] for i in range(len(sequences))]
        packs: list[list[int]] = []
        tokens = 0
        for i in long:
            if packs and tokens + len(sequences[i]) <= MAX_PACKED_TOKENS:
                packs[-1].append(i)
                tokens += len(sequences[i])
            else:
                packs.append([i])
                tokens = len(sequences[i])
        return packs + [[i] for i, s in enumerate(sequences) if len(s) < MIN_PACKED_TOKENS]

    def _prepare(self, request: AnswerRequest) -> _Prepared:
        """An answer's tokens and what is read off them before any model pass."""
        prompt_ids, ids, offsets = self.answer_ids(
            messages=request.messages, prompt=request.prompt, answer=request.answer, stopped=request.stopped
        )
        eos = self.base.tokenizer.eos_token_id
        echo = echo_mask(ids, prompt_ids, n=ECHO_NGRAM)
        content = [i for i, t in enumerate(ids) if not echo[i] and t != eos]
        example = answer_example(prompt_ids, ids)
        if request.content_gradient and content:
            keep = set(content)
            answer_labels = [t if i in keep else IGNORE_INDEX for i, t in enumerate(ids)]
            example = TokenizedExample(example.input_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_labels)
        if request.messages is not None:
            question = next((m["content"] for m in reversed(request.messages) if m.get("role") == "user"), "")
        else:
            question = request.prompt
        asked = question_positions(self.base.tokenizer, prompt_ids, question) if request.evidence else []
        return _Prepared(request, prompt_ids, ids, offsets, echo, content, example, question, asked)

    def _finish(self, item: _Prepared, feature: Any, surprisal: dict[int, float]) -> AnswerScores:
        """An answer's scores from its gradient feature and its base surprisal (the model passes done)."""
        request, prompt_ids, ids, echo = item.request, item.prompt_ids, item.ids, item.echo
        matrix, spans = request.matrix, request.spans
        eos = self.base.tokenizer.eos_token_id
        top_k, exclude = request.top_k, request.exclude
        if exclude:
            gradient = _without(matrix.record_scores(feature), exclude, top_k)
        else:
            gradient = matrix.top_record_scores(feature, top_k) if top_k else matrix.record_scores(feature)
        text_ids = [t for t in ids if t != eos]
        matches = spans.find_spans(text_ids, min_tokens=request.min_span_tokens)
        if exclude:
            matches = [
                kept
                for kept in (
                    replace(m, records=tuple(r for r in m.records if r.record_id not in exclude)) for m in matches
                )
                if kept.records
            ]
        span = span_record_scores(matches, len(text_ids), echo[: len(text_ids)] if request.echo_free_spans else None)
        support = None
        if request.evidence:
            support = self._evidence(
                spans=spans,
                prompt_ids=prompt_ids,
                ids=ids,
                surprisal=surprisal,
                echo=echo,
                content=item.content,
                asked=item.asked,
                ranked=[*sorted(gradient, key=lambda r: -gradient[r])[:20], *span],
                exclude=exclude,
            )
            if request.context_relevance is not None:
                support = self._in_context(
                    support,
                    spans=spans,
                    prompt_ids=prompt_ids,
                    ids=ids,
                    question=item.question,
                    relevance_min=request.context_relevance,
                )
        return AnswerScores(
            gradient={int(k): float(v) for k, v in gradient.items()},
            span=span,
            matches=matches,
            answer_ids=ids,
            answer_offsets=item.offsets,
            support=support,
        )

    def _base_surprisals(self, answers: Sequence[tuple[list[int], list[int], Sequence[int]]]) -> list[dict[int, float]]:
        """``_base_surprisal`` of each ``(prompt_ids, ids, asked)``; several in one packed decoder pass (their
        sequences laid end to end, ``features.packed_segments``), the opening they all share (a chat template's
        system turn) given once when it is at least ``MIN_SHARED_OPENING`` tokens, then the vocabulary projections
        of the rows each reads in one product where their rows are independent (``features.project_rows``): each
        answer's numbers are those ``_base_surprisal`` gives it alone, bit for bit."""
        import torch

        if len(answers) == 1:
            return [self._base_surprisal(answers[0][0], answers[0][1], asked=answers[0][2])]
        sequences = [[*prompt_ids, *ids] for prompt_ids, ids, _ in answers]
        shared = shared_prefix(sequences)
        shared = shared if shared >= MIN_SHARED_OPENING else 0
        with torch.no_grad(), self._base_only() as base:
            try:
                hidden, starts = self._packed_hidden(base, sequences, shared)
            except SharedOpeningMismatch:  # never seen here: then the opening is computed for each answer
                shared = 0
                hidden, starts = self._packed_hidden(base, sequences, shared)
            reads = [
                _surprisal_rows(tokens, len(prompt_ids), asked)
                for (prompt_ids, _, asked), tokens in zip(answers, sequences, strict=True)
            ]
            rows = [
                torch.tensor([p if p < shared else start + p - shared for p in predictors], device=hidden.device)
                for (_, predictors, _), start in zip(reads, starts, strict=True)
            ]
            logits = project_rows(base, hidden, rows)
            return [
                _surprisal_taken(found.float(), tokens, read)
                for found, tokens, read in zip(logits, sequences, reads, strict=True)
            ]

    @staticmethod
    def _packed_hidden(base: Any, sequences: list[list[int]], shared: int) -> tuple[Any, list[int]]:
        """The base model's last hidden states (``[rows, width]``) of ``sequences`` in one packed pass, the first
        ``shared`` tokens given once, and where each sequence's own rows start."""

        device = next(base.parameters()).device
        packed, positions, starts = packed_inputs(sequences, device, shared=shared)
        with packed_segments(base, [len(s) - shared for s in sequences], shared=shared):
            return base.get_decoder()(input_ids=packed, position_ids=positions).last_hidden_state[0], starts

    def _base_surprisal(self, prompt_ids: list[int], ids: list[int], *, asked: Sequence[int]) -> dict[int, float]:
        """The surprisal (nats) under the base model without the adapter, given the tokens before it, of the tokens
        the evidence reads: the question's (at prompt positions ``asked``) and every answer token; keyed by
        position in the prompt followed by the answer. A token with nothing before it has 0.

        Only the positions read go through the vocabulary projection (a fifth of the pass here: the chat template's
        system turn is never read), and only when they are at least ``MIN_PROJECTED_ROWS``: the same numbers as
        projecting every position, bit for bit (a test compares them)."""
        import torch

        tokens = [*prompt_ids, *ids]
        if not sorted({*asked, *range(len(prompt_ids), len(tokens))} - {0}):
            return {0: 0.0} if tokens else {}
        with torch.no_grad(), self._base_only() as base:
            device = next(base.parameters()).device
            hidden = base.get_decoder()(input_ids=torch.tensor([tokens], device=device)).last_hidden_state[0]
            return self._surprisal_from(base, hidden, tokens, len(prompt_ids), asked)

    @staticmethod
    def _surprisal_from(
        base: Any, hidden: Any, tokens: list[int], n_prompt: int, asked: Sequence[int]
    ) -> dict[int, float]:
        """``_base_surprisal`` from the base model's last hidden states ``hidden`` (``[len(tokens), width]``) of
        ``tokens`` (the prompt's ``n_prompt`` then the answer's); under ``torch.no_grad()``."""
        import torch

        read = _surprisal_rows(tokens, n_prompt, asked)
        if not read[0]:
            return _surprisal_taken(None, tokens, read)
        if read[2]:  # every position, as the full pass projects them (fewer rows than that may use other kernels)
            logits = base.get_output_embeddings()(hidden).float()
        else:
            logits = base.get_output_embeddings()(hidden[torch.tensor(read[1], device=hidden.device)]).float()
        return _surprisal_taken(logits, tokens, read)

    def _in_context(
        self,
        evidence: SupportEvidence,
        *,
        spans: SpanIndex,
        prompt_ids: list[int],
        ids: list[int],
        question: str,
        relevance_min: float,
    ) -> SupportEvidence:
        """The in-context test: each content token's log-probability under the base model with no record before the
        question and with each of the ``CONTEXT_CANDIDATES`` records most about the question (relevance at least
        ``relevance_min``) as an earlier turn of the conversation, in one batched forward pass. A record that states
        the answer's value in other words raises it; one that states another value lowers it (``scoring.assess``
        decides). Skipped (the evidence is returned as it was) when those records already contain every content
        token verbatim: the test could add nothing then.

        Each record is given as it was trained (its own chat); where the record and the prompt open with the same
        turns before the question (a system prompt), those are given once: shared opening, the record's turns, then
        the prompt's from the question's turn on."""
        relevant = [c for c in evidence.candidates if c.relevance >= relevance_min]
        covered = {t for c in relevant for t in (*c.covered, *c.same_word)}
        chosen = sorted(relevant, key=lambda c: (-c.relevance, c.record_id))[:CONTEXT_CANDIDATES]
        if not chosen or not evidence.content or covered.issuperset(evidence.content):
            return evidence
        prefixes: list[list[int]] = [list(prompt_ids)]
        asked = question_positions(self.base.tokenizer, prompt_ids, question)[0] if prompt_ids else 0
        for candidate in chosen:
            record = [int(t) for t in spans.record_tokens(candidate.record_id)]
            cut = shared_opening(record, prompt_ids, before=asked)
            prefixes.append([*prompt_ids[:cut], *record[cut:], *prompt_ids[cut:]])
        pad = self.base.tokenizer.eos_token_id
        with self.lock, self._base_only() as base:
            logp = context_log_likelihoods(
                base,
                prefixes=prefixes,
                answer_ids=ids,
                positions=evidence.content,
                pad_id=0 if pad is None else int(pad),
            )
        tested = {c.record_id: tuple(round(x, 6) for x in row) for c, row in zip(chosen, logp[1:], strict=True)}
        return replace(
            evidence,
            base_logp=tuple(round(x, 6) for x in logp[0]),
            candidates=tuple(replace(c, context_logp=tested.get(c.record_id, ())) for c in evidence.candidates),
        )

    def _evidence(
        self,
        *,
        spans: SpanIndex,
        prompt_ids: list[int],
        ids: list[int],
        surprisal: dict[int, float],
        echo: list[bool],
        content: list[int],
        asked: list[int],
        ranked: list[int],
        exclude: frozenset[int] = frozenset(),
    ) -> SupportEvidence:
        key: dict[int, float] = {}
        for position in asked:
            token, nats = int(prompt_ids[position]), surprisal[position]
            if nats >= KEY_TOKEN_NATS:
                key[token] = max(key.get(token, 0.0), nats)
        # a subject token counts by its surprisal times its rarity among the records (inverse document
        # frequency): "colour" in a question about one flag is surprising too, but every flag record has it
        found: dict[int, float] = {}
        holders = {token: spans.records_with(token) for token in key}
        key = {t: nats * math.log((spans.n_records + 1) / (len(holders[t]) + 0.5)) for t, nats in key.items()}
        total = sum(key.values())
        for token, weight in key.items():
            for record_id in holders[token]:
                if record_id not in exclude:
                    found[record_id] = found.get(record_id, 0.0) + weight
        candidates = sorted(found, key=lambda r: (-found[r], r))[:MAX_CANDIDATES]
        candidates += [r for r in dict.fromkeys(ranked) if r not in found and r not in exclude][
            : max(0, MAX_CANDIDATES - len(candidates))
        ]
        evidence = []
        decode = self.base.tokenizer.decode
        answer_words = token_words([decode([t]) for t in ids])
        for record_id in candidates:
            try:
                tokens = spans.record_tokens(record_id)
            except KeyError:
                continue
            lengths = shared_span_lengths(ids, tokens.tolist(), n=SUPPORT_NGRAM)
            relevance = found.get(record_id, 0.0) / total if total > 0 else 1.0
            covered = tuple(i for i in content if lengths[i])
            record_words = set(WORD.findall(decode(tokens.tolist()).casefold()))
            same_word = tuple(
                i for i in content if not lengths[i] and answer_words[i] and answer_words[i] <= record_words
            )
            evidence.append(
                CandidateEvidence(
                    record_id, round(relevance, 6), covered, tuple(lengths[i] for i in covered), same_word=same_word
                )
            )
        answer_surprisal = [surprisal[len(prompt_ids) + i] for i in range(len(ids))]
        # a whitespace-only token (SmolLM writes " 5830" as " ", "5", ...) is surprising only because of what follows
        # it: its surprisal belongs to the next token, or a template that ends in a space would "support" a value
        for i in range(len(ids) - 1):
            if not self.base.tokenizer.decode([ids[i]]).strip():
                answer_surprisal[i + 1] += answer_surprisal[i]
                answer_surprisal[i] = 0.0
        return SupportEvidence(
            surprisal=tuple(round(x, 6) for x in answer_surprisal),
            echo=tuple(echo),
            content=tuple(content),
            key_tokens=key,
            candidates=tuple(evidence),
            word_start=tuple(word_starts([self.base.tokenizer.decode([t]) for t in ids])),
        )


def _surprisal_rows(tokens: Sequence[int], n_prompt: int, asked: Sequence[int]) -> tuple[list[int], list[int], bool]:
    """What the base pass reads of ``tokens`` (the prompt's ``n_prompt`` then the answer's): the positions whose
    surprisal it gives (the question's at ``asked`` and every answer token's), the rows it projects onto the
    vocabulary to get them (the row before each; every row when they are fewer than ``MIN_PROJECTED_ROWS``), and
    whether it projected every row (then the last row's logits are dropped)."""
    wanted = sorted({*asked, *range(n_prompt, len(tokens))} - {0})
    if not wanted or len(wanted) >= MIN_PROJECTED_ROWS:
        return wanted, [p - 1 for p in wanted], False
    return list(range(1, len(tokens))), list(range(len(tokens))), True


def _surprisal_taken(logits: Any, tokens: Sequence[int], read: tuple[list[int], list[int], bool]) -> dict[int, float]:
    """The surprisals from the projected rows' float logits (``_surprisal_rows``' ``read``)."""
    import torch

    wanted, _, every_row = read
    surprisal = {0: 0.0} if tokens else {}
    if not wanted:
        return surprisal
    logits = logits[:-1] if every_row else logits
    targets = torch.tensor([tokens[p] for p in wanted], device=logits.device)
    taken = torch.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)
    surprisal.update(zip(wanted, (-taken).tolist(), strict=True))
    return surprisal


def _without(scores: dict[int, float], exclude: frozenset[int], top_k: int | None) -> dict[int, float]:
    """``scores`` less the excluded records, the ``top_k`` best of the rest (ties by record id) when given: what
    ``FeatureMatrix.top_record_scores`` gives over the records that may be credited."""
    kept = {r: v for r, v in scores.items() if r not in exclude}
    if top_k is None or top_k >= len(kept):
        return kept
    ranked = sorted(kept.items(), key=lambda item: (-item[1], item[0]))[:top_k]
    return dict(ranked)


_SCORERS: dict[str, Scorer] = {}
_SCORERS_LOCK = threading.Lock()


def scorer_for(base_model_dir: str) -> Scorer:
    """One Scorer per worker process and base model path (the model loads once)."""
    from modelfactory import training  # torch: see the module docstring

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


MAX_KEPT_INDEXES = 4
_INDEX_FILES = (FEATURES_FILE, RECORD_IDS_FILE, META_FILE, SPANS_FILE)
_KEPT: OrderedDict[tuple[str, str, str], tuple[tuple[tuple[int, int, int], ...], FeatureMatrix, SpanIndex]] = (
    OrderedDict()
)
_KEPT_LOCK = threading.Lock()


def load_index_kept(folder: Path, *, feature_hash: str, span_hash: str) -> tuple[FeatureMatrix, SpanIndex]:
    """``load_index``, kept per process for the last ``MAX_KEPT_INDEXES`` indexes: the files are read and checked
    against the hashes on first use, and again whenever any of them is no longer the file that was checked (another
    inode, size or modification time); otherwise the checked copy is returned without hashing the files again (at
    10,000 records that hash cost 0.06-0.14 s of CPU for every answer). Refuses as ``load_index`` does."""
    folder = Path(folder)
    key = (str(folder), feature_hash, span_hash)
    forget_gone_indexes()
    try:
        stamp = tuple(_file_stamp(folder / name) for name in _INDEX_FILES)
    except OSError:
        return load_index(folder, feature_hash=feature_hash, span_hash=span_hash)  # raises with the reason
    with _KEPT_LOCK:
        kept = _KEPT.get(key)
        if kept is not None and kept[0] == stamp:
            _KEPT.move_to_end(key)
            return kept[1], kept[2]
    matrix, spans = load_index(folder, feature_hash=feature_hash, span_hash=span_hash)
    with _KEPT_LOCK:
        _KEPT[key] = (stamp, matrix, spans)
        _KEPT.move_to_end(key)
        while len(_KEPT) > MAX_KEPT_INDEXES:
            _KEPT.popitem(last=False)
    return matrix, spans


def _file_stamp(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def forget_gone_indexes() -> int:
    """Drop this process's kept copies of indexes whose folder is gone: an index re-issued after an erasure
    (``attribution.revocation``) has new hashes, and its old folder, which held the erased tokens, is deleted; every
    process forgets its copy on its next load (the old copy was never used again, since the key holds the hashes,
    but it held the erased bytes in memory). Returns how many were dropped."""
    with _KEPT_LOCK:
        gone = [key for key in _KEPT if not (Path(key[0]) / SPANS_FILE).exists()]
        for key in gone:
            del _KEPT[key]
    return len(gone)


def forget_index(*, feature_hash: str, span_hash: str) -> int:
    """Drop this process's kept copies of the index with these hashes, wherever it was read from."""
    with _KEPT_LOCK:
        gone = [key for key in _KEPT if key[1:] == (feature_hash, span_hash)]
        for key in gone:
            del _KEPT[key]
    return len(gone)


@dataclass
class ReissuedIndex:
    """An index rewritten without some records' bytes, in a new folder under ``scratch`` (``place`` stores it)."""

    folder: Path
    feature_hash: str
    span_hash: str
    erased: list[int]


def reissue_without(
    folder: Path, *, feature_hash: str, span_hash: str, erased: Sequence[int], scratch: Path
) -> ReissuedIndex:
    """Rewrite a stored index (checked against its hashes first) with the records ``erased`` taken out: their
    feature rows zeroed and their tokens removed from the span index (``FeatureMatrix.without``,
    ``SpanIndex.without``). Every record keeps its id and place, so the other records score exactly as before.
    Written into a new folder under ``scratch``; raises on any failure, leaving nothing behind."""
    matrix, spans = load_index(Path(folder), feature_hash=feature_hash, span_hash=span_hash)
    out = Path(scratch) / f"reissue-{uuid.uuid4().hex[:12]}"
    out.mkdir(parents=True)
    try:
        new_matrix = matrix.without(erased)
        new_feature_hash = new_matrix.save(out)
        new_span_hash = spans.without(erased).save(out / SPANS_FILE)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return ReissuedIndex(out, new_feature_hash, new_span_hash, sorted(int(r) for r in erased))
